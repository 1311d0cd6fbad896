/**
 * The stream engine loaded on demand (what a browser bundle does: the
 * stream halves are a chunk of their own, fetched the first time a
 * connection streams), run here with a loader the test releases:
 * - a `sendStream` made before the engine is loaded returns its Transfer at
 *   once (progress, cancel) and starts once it is; its progress (a stand-in:
 *   `Progress` comes with the engine) follows the transfer's, by event and by
 *   async iteration, or fails when the engine cannot be loaded;
 * - frames that arrive while it loads are held and handed on in arrival
 *   order (a message sent after a stream's frames is not delivered before
 *   the stream starts);
 * - a peer cannot make this side hold more than its receive window (plus
 *   1 MiB) meanwhile: ERR_FLOW_CONTROL.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { connect } from "../../src/client/connect.ts";
import { crc32c } from "../../src/codec/crc32c.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { Feature } from "../../src/codec/settings.ts";
import { encodeStreamEnd, encodeStreamHead } from "../../src/codec/stream-prefix.ts";
import { resetStreamEngine } from "../../src/connection/stream-engine.ts";
import { createServer, type PointSubError } from "../../src/index.ts";
import { heldLoader, portable } from "../helpers/held-loader.ts";
import { handshake, rawServer } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

const enc = new TextEncoder();
const startFrame = (id: number, route: string) =>
  encodeFrame(
    FrameType.STREAM,
    Flag.START,
    id,
    encodeStreamHead({ total: undefined, offset: 0, prefixCrc: 0, route, codec: 0, meta: new Uint8Array(0) }),
  );

describe("the stream engine loaded on demand", () => {
  after(() => resetStreamEngine());

  it("sendStream before the engine is loaded: the Transfer is there at once and completes once it loads", async () => {
    const server = createServer({ runtime: portable("lazy-test") });
    server.handleStream("/len/1", async (s) => String((await s.bytes()).length));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const gate = heldLoader();
    resetStreamEngine(gate.load);
    const conn = await connect(url, { runtime: portable("lazy-test") });
    try {
      const seen: number[] = [];
      const t = conn.sendStream("/len/1", [new Uint8Array(300_000), new Uint8Array(200_000)], {
        total: 500_000,
        transferId: "t-1",
        onProgress: (p) => seen.push(p.bytes),
      });
      assert.equal(t.id, "t-1");
      assert.equal(t.snapshot().bytes, 0);
      // Cancelled before the engine loaded: rejects with ERR_CANCELLED once it has.
      const cancelled = conn.sendStream("/len/1", [new Uint8Array(10)]);
      cancelled.cancel("changed my mind");
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(gate.calls(), 1, "one load for both transfers");
      assert.equal(t.snapshot().status, "initializing", "nothing started before the engine loaded");
      gate.release();
      assert.equal(new TextDecoder().decode(await t), "500000");
      assert.equal(t.snapshot().status, "completed");
      assert.equal(seen.at(-1), 500_000, "the progress handed out first is the transfer's");
      await assert.rejects(cancelled.done, { code: "ERR_CANCELLED" });
      // Loaded now: the next stream takes the synchronous path.
      assert.equal(new TextDecoder().decode(await conn.sendStream("/len/1", [new Uint8Array(7)])), "7");
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("the progress of a sendStream made before the load: iteration follows the transfer; a failed load fails it", async () => {
    const server = createServer({ runtime: portable("lazy-test") });
    server.handleStream("/len/1", async (s) => String((await s.bytes()).length));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // The engine cannot be loaded (offline): the transfer fails, its progress says so, the next load is tried again.
    resetStreamEngine(() => Promise.reject(new Error("offline")));
    const conn = await connect(url, { runtime: portable("lazy-test") });
    try {
      const failed = conn.sendStream("/len/1", [new Uint8Array(10)], { total: 10 });
      await assert.rejects(
        failed.done,
        (e: PointSubError) => e.code === "ERR_CONNECTION_CLOSED" && /offline/.test(e.message),
      );
      const end = failed.snapshot();
      assert.deepEqual(
        [end.status, end.bytes, end.error?.code, failed.progress.done],
        ["failed", 0, "ERR_CONNECTION_CLOSED", true],
      );
      const failedReports: string[] = [];
      for await (const p of failed.progress) failedReports.push(p.status);
      assert.deepEqual(failedReports, ["failed"]);

      const gate = heldLoader();
      resetStreamEngine(gate.load);
      const t = conn.sendStream("/len/1", [new Uint8Array(300_000), new Uint8Array(200_000)], { total: 500_000 });
      assert.equal(t.progress.total, 500_000);
      assert.deepEqual(
        [t.progress.status, t.progress.bytes, t.progress.done, t.snapshot().percent],
        ["initializing", 0, false, 0],
      );
      const statuses: string[] = [];
      let last = -1;
      const iterated = (async () => {
        for await (const p of t.progress) {
          statuses.push(p.status);
          last = p.bytes;
        }
      })();
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(statuses, ["initializing"], "nothing but the start before the engine loaded");
      gate.release();
      assert.equal(new TextDecoder().decode(await t), "500000");
      await iterated;
      assert.equal(statuses.at(-1), "completed", statuses.join(", "));
      assert.equal(last, 500_000);
      assert.deepEqual(
        [t.progress.status, t.progress.bytes, t.progress.done, t.snapshot().percent],
        ["completed", 500_000, true, 100],
      );
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("frames that arrive while it loads are held and handed on in arrival order", async () => {
    const raw = await rawServer();
    const gate = heldLoader();
    resetStreamEngine(gate.load);
    const conn = await (async () => {
      const pending = connect(raw.url, { runtime: portable("lazy-test") });
      const peer = await raw.peer;
      peer.socket.write(handshake({ features: Feature.STREAMS }));
      return { conn: await pending, peer };
    })();
    const events: string[] = [];
    let body = "";
    conn.conn.handleStream("/push/1", async (s) => {
      events.push("stream");
      body = new TextDecoder().decode(await s.bytes());
      events.push("stream-end");
      return "ok";
    });
    conn.conn.on("message", (m) => events.push(`message:${m.text()}`));
    try {
      const content = enc.encode("pushed by the server");
      conn.peer.socket.write(
        Buffer.concat([
          startFrame(2, "/push/1"),
          encodeFrame(FrameType.STREAM, 0, 2, content),
          encodeFrame(FrameType.STREAM, Flag.END, 2, encodeStreamEnd(content.length, crc32c(content))),
          encodeFrame(FrameType.MSG, Flag.START | Flag.END, 4, enc.encode("after")),
        ]),
      );
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(events.join(), "", "everything after the first STREAM frame waits for the engine");
      assert.equal(gate.calls(), 1);
      gate.release();
      await until(() => events.includes("stream-end"), 5000);
      await until(() => events.includes("message:after"), 5000);
      assert.equal(events[0], "stream", "the stream started before the message that followed it was delivered");
      assert.equal(body, "pushed by the server");
      assert.equal(conn.conn.state, "open");
    } finally {
      conn.conn.destroy();
      conn.peer.socket.destroy();
      await raw.close();
    }
  });

  it("a peer that sends more than its window while frames are held is closed with ERR_FLOW_CONTROL", async () => {
    const raw = await rawServer();
    const gate = heldLoader();
    resetStreamEngine(gate.load);
    const pending = connect(raw.url, { runtime: portable("lazy-test"), connectionWindow: 256 * 1024 });
    const peer = await raw.peer;
    peer.socket.write(handshake({ features: Feature.STREAMS }));
    const conn = await pending;
    conn.handleStream("/push/1", async (s) => {
      await s.bytes();
    });
    const closed = new Promise<PointSubError | undefined>((resolve) => conn.once("close", resolve));
    try {
      const chunk = encodeFrame(FrameType.STREAM, 0, 2, new Uint8Array(60 * 1024));
      // 256 KiB of window + 1 MiB of slack: 2 MiB is over whatever the frames hold.
      const frames = [startFrame(2, "/push/1"), ...Array.from({ length: 34 }, () => chunk)];
      peer.socket.write(Buffer.concat(frames));
      const err = await closed;
      assert.equal(err?.code, "ERR_FLOW_CONTROL");
      assert.match(err?.message ?? "", /beyond its window/);
    } finally {
      gate.release();
      conn.destroy();
      peer.socket.destroy();
      await raw.close();
    }
  });
});
