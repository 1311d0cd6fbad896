/**
 * A graceful close with this side's own sends still queued, not started
 * (docs/PROTOCOL.md §3.8: a message is in flight from its START frame).
 * Before: the GOAWAY, a control frame, overtook them; the peer, with both
 * GOAWAYs seen and nothing in flight, ended the byte stream, and the sends
 * failed with ERR_CONNECTION_CLOSED while both `close` events reported a
 * clean close. Seen with a browser's first chunked sends (they wait for the
 * stream engine) and over libp2p (128 of 160 sends lost). Now the GOAWAY
 * goes out once every send accepted before the close has started, and a
 * close whose peer ended while this side still had work reports that loss.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, describe, it } from "node:test";
import { connect } from "../../src/client/connect.ts";
import { resetDispatcher } from "../../src/connection/dispatch-lazy.ts";
import { resetStreamEngine } from "../../src/connection/stream-engine.ts";
import { connect as connectNode, createServer } from "../../src/index.ts";
import { FrameReader, handshake, T } from "../helpers/attacker.ts";
import { heldLoader, portable } from "../helpers/held-loader.ts";
import { closeOutcome, until } from "../helpers/wait.ts";

describe("a graceful close with this side's sends not started yet", () => {
  after(() => resetStreamEngine());

  it("sends waiting for the stream engine go out before the GOAWAY: all delivered, both sides close cleanly", async () => {
    const gate = heldLoader();
    const server = createServer({ runtime: portable("close-unstarted") });
    let got = 0;
    let serverOutcome: ReturnType<typeof closeOutcome> | undefined;
    server.on("session", (s) => {
      serverOutcome = closeOutcome(s);
      s.on("message", (m) => {
        assert.equal(m.data.length, 512 * 1024);
        got++;
      });
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    resetStreamEngine(gate.load);
    resetDispatcher();
    try {
      const conn = await connect(url, { runtime: portable("close-unstarted") });
      const outcome = closeOutcome(conn);
      const chunk = new Uint8Array(512 * 1024).fill(7);
      const sends = Array.from({ length: 8 }, () =>
        conn.send(chunk).then(
          () => "ok",
          (e: { code?: string }) => e.code,
        ),
      );
      const closing = conn.close();
      // The engine arrives later (a page fetching its stream chunk): until then nothing of them went out.
      setTimeout(() => gate.release(), 50);
      await closing;
      assert.deepEqual(await Promise.all(sends), Array(8).fill("ok"));
      await until(() => got === 8 && serverOutcome?.closed === true);
      assert.equal(outcome.closed, true);
      assert.equal(outcome.error, undefined, "the client's close is clean");
      assert.equal(serverOutcome?.error, undefined, "the server's close is clean");
    } finally {
      await server.close();
    }
  });

  it("a peer that ends its side while our send is in flight: the send fails and the close says so", async () => {
    // A peer that ends the byte stream as soon as our GOAWAY arrives, although our message has started
    // (it even granted no credit for the rest): the close cannot be a clean one.
    const sockets = new Set<net.Socket>();
    const server = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      s.write(handshake());
      const reader = new FrameReader((f) => {
        if (f.type === T.GOAWAY) s.end();
      });
      s.on("data", (c) => reader.push(c));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const conn = await connectNode(`tcp://127.0.0.1:${port}`, { keepAliveMs: 0 });
      const outcome = closeOutcome(conn);
      const big = conn.send(new Uint8Array(8 * 1024 * 1024)).then(
        () => "ok",
        (e: { code?: string }) => e.code,
      );
      await until(() => conn.stats().wire.bytesOut > 64 * 1024);
      await conn.close();
      await until(() => outcome.closed);
      assert.equal(await big, "ERR_CONNECTION_CLOSED");
      assert.equal(outcome.error?.code, "ERR_CONNECTION_CLOSED", "the close cut a send: not a clean close");
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
