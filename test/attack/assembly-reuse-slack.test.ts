/**
 * Attack on reused assembly buffers (session 19's fuzz lane): a chunked
 * message is delivered as a view of a recycled buffer up to 4x its size,
 * and the memory behind the view (`data.buffer`) still holds what another
 * peer sent in a message it cancelled. An application that uses
 * `data.buffer` (a typed array over it, a transfer to a worker) reads
 * another connection's bytes. Before the reuse a chunked message's buffer
 * was exactly its size. Reproduction over many peers:
 * `node scripts/attack/assembly-reuse.ts`.
 */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { createServer } from "../../src/index.ts";
import { cancelFrame, chunkFrame, startFrame } from "../helpers/chunked-frames.ts";
import { handshake, rawClient } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;

describe("reused assembly buffers: another peer's bytes", () => {
  const cleanup: (() => unknown)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it("the memory behind a delivered chunked message holds nothing another peer sent", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    cleanup.push(() => server.close());
    const got: Uint8Array[] = [];
    server.on("message", (m) => got.push(m.data));
    // Peer A: messages of 12 KiB started and cancelled, full of its secret (0xA5).
    const a = await rawClient(url);
    cleanup.push(() => a.socket.destroy());
    const frames: Uint8Array[] = [handshake()];
    for (let i = 0; i < 8; i++) {
      const id = 2 * i + 1;
      frames.push(startFrame(id, 12 * KiB, new Uint8Array(3000).fill(0xa5)));
      frames.push(chunkFrame(id, new Uint8Array(8000).fill(0xa5), false));
      frames.push(cancelFrame(id));
    }
    a.socket.write(Buffer.concat(frames));
    await until(() => server.sessions.size === 1);
    await new Promise((r) => setTimeout(r, 50));
    // Peer B: one chunked message of 4 KiB of zeros.
    const b = await rawClient(url);
    cleanup.push(() => b.socket.destroy());
    b.socket.write(
      Buffer.concat([
        handshake(),
        startFrame(1, 4 * KiB, new Uint8Array(1000)),
        chunkFrame(1, new Uint8Array(4 * KiB - 1000), true),
      ]),
    );
    await until(() => got.length === 1);
    const d = got[0];
    assert.equal(d.length, 4 * KiB);
    assert.ok(
      d.every((x) => x === 0),
      "the message's own bytes are its own",
    );
    const behind = new Uint8Array(d.buffer);
    const foreign = behind.filter((x) => x === 0xa5).length;
    assert.equal(
      foreign,
      0,
      `${foreign} bytes of peer A's cancelled message behind peer B's message (buffer ${behind.length} B)`,
    );
  });
  it("the memory behind a message read in place holds nothing a closed connection sent (read buffers pass between sockets)", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    cleanup.push(() => server.close());
    const got: Uint8Array[] = [];
    server.on("message", (m) => got.push(m.data));
    const one = (n: number, fill: number) =>
      encodeFrame(FrameType.MSG, Flag.START | Flag.END, 1, new Uint8Array(n).fill(fill));
    // Peer A fills its 64 KiB read buffer with its secret (0xA5), then leaves: the buffer goes
    // to the free list for the next socket.
    const a = await rawClient(url);
    a.socket.write(handshake());
    await until(() => server.sessions.size === 1);
    a.socket.write(one(2 * KiB, 0xa5));
    await until(() => got.length === 1);
    a.socket.write(one(60 * KiB, 0xa5));
    await until(() => got.length === 2);
    a.socket.destroy();
    await until(() => server.sessions.size === 0);
    // Peer B: a 2 KiB message fills its small first buffer (the next read takes a 64 KiB one,
    // A's), then a 20 KiB message read in one piece and delivered as a view of that buffer.
    const b = await rawClient(url);
    cleanup.push(() => b.socket.destroy());
    b.socket.write(handshake());
    await until(() => server.sessions.size === 1);
    b.socket.write(one(2 * KiB, 0));
    await until(() => got.length === 3);
    await new Promise((r) => setTimeout(r, 20));
    b.socket.write(one(20 * KiB, 0));
    await until(() => got.length === 4);
    const d = got[3];
    assert.equal(d.length, 20 * KiB);
    const behind = new Uint8Array(d.buffer);
    const foreign = behind.filter((x) => x === 0xa5).length;
    assert.equal(foreign, 0, `${foreign} bytes of peer A's behind peer B's message (buffer ${behind.length} B)`);
  });
});
