/**
 * A peer that starts large chunked messages, sends a little of each (past
 * the point where the receiver allocates the whole declared length) and
 * abandons them (CANCEL, or a new connection) buys a 256 MiB allocation per
 * ~33 KiB: V8 counts it as external memory and runs a full GC every few of
 * them (scripts/attack big-abandon-*: ~35 ms of GC per MiB sent). Once
 * abandoned buffers pass a bound, buffers grow with what arrives instead,
 * and messages still complete intact.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { afterEach, describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { cancelFrame, chunkFrame, countedSession, startFrame } from "../helpers/chunked-frames.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

describe("attack: abandoned large messages", () => {
  const cleanup: (() => unknown)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it("40 messages declaring 256 MiB, 33 KiB sent of each then cancelled, get a few whole buffers, not 40", async () => {
    const { peer, sizes, got } = await countedSession(cleanup);
    const n = 40;
    const chunk = new Uint8Array(32 * KiB);
    for (let i = 0; i < n; i++) {
      const id = 2 * i + 1;
      peer.socket.write(
        Buffer.concat([startFrame(id, 256 * MiB, Uint8Array.of(1)), chunkFrame(id, chunk, false), cancelFrame(id)]),
      );
    }
    // An honest 3 MiB message after them, in 16 KiB chunks: complete and intact.
    const body = randomFillSync(new Uint8Array(3 * MiB));
    const id = 2 * n + 1;
    const frames = [startFrame(id, body.length, body.subarray(0, 16 * KiB))];
    for (let p = 16 * KiB; p < body.length; p += 16 * KiB)
      frames.push(chunkFrame(id, body.subarray(p, p + 16 * KiB), p + 16 * KiB >= body.length));
    peer.socket.write(Buffer.concat(frames));
    await until(() => got.length === 1);
    assert.ok(Buffer.from(got[0]).equals(Buffer.from(body)), "the honest message arrives intact");
    const whole = sizes.filter((s) => s === 256 * MiB).length;
    // Before: one per message (40). The bound lets ~2 through, plus what leaks away while they are read.
    assert.ok(whole <= 10, `${whole} buffers of 256 MiB for ${n} abandoned messages`);
    assert.ok(whole >= 1, "the first abandoned message still got its whole buffer (no change for honest senders)");
  });

  it("40 messages declaring 256 MiB whose START carries 32 KiB, then cancelled, get a few whole buffers, not 40", async () => {
    const { peer, sizes, got } = await countedSession(cleanup);
    const n = 40;
    const first = new Uint8Array(32 * KiB);
    for (let i = 0; i < n; i++) {
      const id = 2 * i + 1;
      peer.socket.write(Buffer.concat([startFrame(id, 256 * MiB, first), cancelFrame(id)]));
    }
    // A one-frame message after them: all of them were read once it arrives.
    peer.socket.write(encodeFrame(FrameType.MSG, Flag.START | Flag.END, 2 * n + 1, Uint8Array.of(7)));
    await until(() => got.length === 1);
    const whole = sizes.filter((s) => s === 256 * MiB).length;
    assert.ok(whole <= 10, `${whole} buffers of 256 MiB for ${n} abandoned messages`);
  });
});
