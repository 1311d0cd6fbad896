/**
 * Assembly buffers of chunked messages dropped unfinished (cancelled, or
 * their connection closed) are reused for the next messages (fewer new
 * ArrayBuffers: what starts V8's full GCs under the fuzzer). A delivered
 * message's buffer is the application's: it is never reused, so no later
 * message's bytes ever land in it.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { afterEach, describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { cancelFrame, chunkFrame, countedSession, startFrame } from "../helpers/chunked-frames.ts";
import { handshake, rawClient } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;

/** A chunked message `id` of `body`, in a START of `first` bytes and continuations of `step`. */
function chunked(id: number, body: Uint8Array, first: number, step: number): Buffer {
  const frames = [startFrame(id, body.length, body.subarray(0, first))];
  for (let p = first; p < body.length; p += step)
    frames.push(chunkFrame(id, body.subarray(p, p + step), p + step >= body.length));
  return Buffer.concat(frames);
}

describe("reused assembly buffers", () => {
  const cleanup: (() => unknown)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it("abandoned messages' buffers are reused; delivered messages are never overwritten", async () => {
    const { server, peer, sizes, got } = await countedSession(cleanup);
    const url = server.urls[0];
    const expected: Uint8Array[] = [];
    let id = 1;
    const deliver = async (body: Uint8Array, first: number, step: number) => {
      expected.push(body.slice());
      peer.socket.write(chunked(id, body, first, step));
      id += 2;
      await until(() => got.length === expected.length);
    };
    // Delivered messages of the sizes the reused buffers have (4-32 KiB), kept by the application.
    for (const size of [3 * KiB, 6 * KiB, 12 * KiB, 20 * KiB, 30 * KiB])
      await deliver(randomFillSync(new Uint8Array(size)), 700, 1500);
    const before = sizes.length;
    let started = 0;
    for (let round = 0; round < 20; round++) {
      // Messages started and cancelled a frame or two in (their buffers dropped, never delivered) ...
      const frames: Uint8Array[] = [];
      for (let i = 0; i < 6; i++) {
        const total = (4 + ((round * 7 + i * 5) % 28)) * KiB;
        frames.push(startFrame(id, total, new Uint8Array(1000).fill(0xee)));
        if (i % 2 === 0) frames.push(chunkFrame(id, new Uint8Array(3000).fill(0xdd), false));
        frames.push(cancelFrame(id));
        id += 2;
        started++;
      }
      peer.socket.write(Buffer.concat(frames));
      // ... messages of another connection that closes with them unfinished ...
      const other = await rawClient(url);
      other.socket.write(Buffer.concat([handshake(), startFrame(1, 16 * KiB, new Uint8Array(2000).fill(0xcc))]));
      other.socket.write(chunkFrame(1, new Uint8Array(5000).fill(0xbb), false));
      started++;
      await new Promise((r) => setTimeout(r, 5));
      other.socket.destroy();
      // ... and complete ones, which may land in their buffers.
      const body = randomFillSync(new Uint8Array((2 + ((round * 3) % 27)) * KiB));
      await deliver(body, 500 + round * 10, 1200 + round * 100);
      started++;
    }
    await until(() => server.sessions.size === 1);
    // Every delivered message, kept since, still holds exactly its own bytes.
    assert.equal(got.length, expected.length);
    for (let i = 0; i < got.length; i++)
      assert.ok(Buffer.from(got[i]).equals(Buffer.from(expected[i])), `message ${i} intact (${got[i].length} B)`);
    // Buffers were reused: fewer new ones than messages started (old code: at least one each).
    const allocated = sizes.slice(before).filter((n) => n >= 1024).length;
    assert.ok(allocated < started / 2, `${allocated} buffers of 1 KiB or more for ${started} messages`);
  });

  it("a message completed in a reused buffer carries only its own bytes", async () => {
    const { peer, got } = await countedSession(cleanup);
    // Fill the pool with buffers full of 0xee, then complete messages of zeros in them.
    const frames: Uint8Array[] = [];
    for (let i = 0; i < 8; i++) {
      const id = 2 * i + 1;
      frames.push(startFrame(id, 8 * KiB, new Uint8Array(2000).fill(0xee)));
      frames.push(chunkFrame(id, new Uint8Array(6000).fill(0xee), false));
      frames.push(cancelFrame(id));
    }
    peer.socket.write(Buffer.concat(frames));
    const body = new Uint8Array(8 * KiB);
    peer.socket.write(chunked(101, body, 1000, 1000));
    peer.socket.write(encodeFrame(FrameType.MSG, Flag.START | Flag.END, 103, Uint8Array.of(1)));
    await until(() => got.length === 2);
    assert.equal(got[0].length, body.length);
    assert.ok(
      got[0].every((b) => b === 0),
      "no byte of an earlier message shows",
    );
  });
});
