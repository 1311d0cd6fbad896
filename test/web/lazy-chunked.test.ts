/**
 * Messages of several frames with the stream engine loaded on demand (a
 * browser page: the assembly of chunked messages, `connection/assembly.ts`,
 * and the writer's bulk pump, `connection/bulk-pump.ts`, come with the
 * stream chunk), run here with a loader the test releases:
 * - single-frame messages go both ways without loading it;
 * - from the first chunked frame received on, frames are held until it is
 *   loaded and then handed on in arrival order;
 * - a peer cannot make this side hold more than its receive window (plus
 *   1 MiB) meanwhile, with chunked frames or with control frames:
 *   ERR_FLOW_CONTROL;
 * - a message sent in several frames waits for it in the writer's queue
 *   (single-frame ones sent after it go out meanwhile), then goes out whole.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { connect } from "../../src/client/connect.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { writeVarint } from "../../src/codec/varint.ts";
import { resetStreamEngine } from "../../src/connection/stream-engine.ts";
import type { Connection, PointSubError } from "../../src/index.ts";
import { decodeFrames } from "../helpers/frame-sink.ts";
import { heldLoader, portable } from "../helpers/held-loader.ts";
import { handshake, type RawPeer, rawServer } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

const enc = new TextEncoder();
const KiB = 1024;

/** A one-frame MSG from the peer (a server: even ids). */
const single = (id: number, text: string) => encodeFrame(FrameType.MSG, Flag.START | Flag.END, id, enc.encode(text));

/** The frames of a chunked MSG of `data` from the peer, in `chunk`-byte frames. */
function chunked(id: number, data: Uint8Array, chunk: number): Uint8Array[] {
  const frames: Uint8Array[] = [];
  const prefix = new Uint8Array(9);
  const n = writeVarint(prefix, 0, data.length);
  for (let off = 0; off < data.length; off += chunk) {
    const end = Math.min(off + chunk, data.length);
    const body = data.subarray(off, end);
    const payload = off === 0 ? Buffer.concat([prefix.subarray(0, n), body]) : body;
    const flags = (off === 0 ? Flag.START : 0) | (end === data.length ? Flag.END : 0);
    frames.push(encodeFrame(FrameType.MSG, flags, id, payload));
  }
  return frames;
}

/** A client connection (nothing loaded: `gate` holds the stream engine) to a raw peer. */
async function clientOfRawPeer(
  connectionWindow?: number,
): Promise<{ conn: Connection; peer: RawPeer; gate: ReturnType<typeof heldLoader>; close(): Promise<void> }> {
  const raw = await rawServer();
  const gate = heldLoader();
  resetStreamEngine(gate.load);
  const pending = connect(raw.url, { runtime: portable("lazy-chunked"), connectionWindow });
  const peer = await raw.peer;
  peer.socket.write(handshake());
  const conn = await pending;
  return {
    conn,
    peer,
    gate,
    close: async () => {
      gate.release();
      conn.destroy();
      peer.socket.destroy();
      await raw.close();
    },
  };
}

describe("chunked messages with the stream engine loaded on demand", () => {
  after(() => resetStreamEngine());

  it("single-frame messages need no load; frames from the first chunked one on are held, then handed on in order", async () => {
    const { conn, peer, gate, close } = await clientOfRawPeer();
    const got: string[] = [];
    conn.on("message", (m) => got.push(m.data.length > 100 ? `big:${m.data.length}:${m.data[70_000]}` : m.text()));
    try {
      await conn.send("small from the page");
      peer.socket.write(Buffer.concat([single(2, "one"), single(4, "two")]));
      await until(() => got.length === 2, 5000);
      assert.deepEqual(got, ["one", "two"]);
      assert.equal(gate.calls(), 0, "single-frame messages both ways load nothing");

      const big = new Uint8Array(150 * KiB).map((_, i) => i % 251);
      peer.socket.write(Buffer.concat([...chunked(6, big, 32 * KiB), single(8, "after")]));
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(got, ["one", "two"], "everything from the first chunked frame on waits for the engine");
      assert.equal(gate.calls(), 1);
      gate.release();
      await until(() => got.length === 4, 5000);
      assert.deepEqual(got.slice(2), [`big:${150 * KiB}:${70_000 % 251}`, "after"]);
      assert.equal(conn.state, "open");
    } finally {
      await close();
    }
  });

  it("a message of several frames waits for the engine in the writer's queue; single-frame sends go meanwhile", async () => {
    const { conn, peer, gate, close } = await clientOfRawPeer();
    try {
      const big = new Uint8Array(200 * KiB).fill(7);
      let sent = false;
      const sending = conn.send(big).then(() => {
        sent = true;
      });
      await conn.send("after the big one");
      /** The frames the peer received after the preface. */
      const frames = () => decodeFrames(peer.received().subarray(6));
      await until(() => {
        const b = peer.received();
        return b.length > 6 && frames().some((f) => f.type === FrameType.MSG);
      }, 5000);
      await new Promise((r) => setTimeout(r, 50));
      const before = frames().filter((f) => f.type === FrameType.MSG);
      assert.deepEqual(
        before.map((f) => new TextDecoder().decode(f.payload)),
        ["after the big one"],
        "only the single-frame message went out before the engine loaded",
      );
      assert.equal(sent, false);
      assert.equal(gate.calls(), 1, "the chunked send started the load");
      gate.release();
      await sending;
      await peer.waitFor(200 * KiB);
      await until(() => {
        try {
          return frames().some((f) => f.type === FrameType.MSG && (f.flags & Flag.END) !== 0 && f.id !== before[0].id);
        } catch {
          return false; // the last frame is still on its way
        }
      }, 5000);
      const parts = frames().filter((f) => f.type === FrameType.MSG && f.id !== before[0].id);
      assert.ok(parts.length > 1, "sent in several frames");
      assert.equal(parts[0].flags & Flag.START, Flag.START);
      // The START's payload: the total as a varint (3 bytes for 200 KiB), then data.
      const bytes = parts.reduce((n, f, i) => n + f.payload.length - (i === 0 ? 3 : 0), 0);
      assert.equal(bytes, 200 * KiB);
    } finally {
      await close();
    }
  });

  it("a peer that sends chunked frames beyond its window while they are held is closed with ERR_FLOW_CONTROL", async () => {
    const { conn, peer, close } = await clientOfRawPeer(256 * KiB);
    const closed = new Promise<PointSubError | undefined>((resolve) => conn.once("close", resolve));
    try {
      // A chunked message of 4 MiB, sent at once: 256 KiB of window + 1 MiB of slack is what may be held.
      const frames = chunked(2, new Uint8Array(4 * 1024 * KiB), 60 * KiB);
      peer.socket.write(Buffer.concat(frames));
      const err = await closed;
      assert.equal(err?.code, "ERR_FLOW_CONTROL");
      assert.match(err?.message ?? "", /beyond its window/);
    } finally {
      await close();
    }
  });

  it("control frames after a held chunked frame count against the same bound", async () => {
    const { conn, peer, close } = await clientOfRawPeer(256 * KiB);
    const closed = new Promise<PointSubError | undefined>((resolve) => conn.once("close", resolve));
    try {
      // One chunked START (held from here on), then PINGs, which no window limits: ~1.5 MiB of them.
      const ping = encodeFrame(FrameType.PING, 0, 0, new Uint8Array(8));
      const pings = Array.from({ length: (1500 * KiB) / 24 }, () => ping);
      peer.socket.write(Buffer.concat([chunked(2, new Uint8Array(100 * KiB), 32 * KiB)[0], ...pings]));
      const err = await closed;
      assert.equal(err?.code, "ERR_FLOW_CONTROL");
    } finally {
      await close();
    }
  });
});
