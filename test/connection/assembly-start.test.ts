/**
 * A large chunked message's buffer: allocated whole at its START when the
 * first chunk is 32 KiB or more (a sender's large message), so the full GC
 * V8 starts on that much new external memory begins a frame earlier (issue
 * 15); a START with a small first chunk still gets a small buffer that grows
 * (test/attack/assembly-growth.test.ts). Both arrive intact.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { afterEach, describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { chunkFrame, countedSession, startFrame } from "../helpers/chunked-frames.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;

describe("a chunked message's first buffer", () => {
  const cleanup: (() => unknown)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it("is the whole message when its START carries 32 KiB or more, a few KiB when it carries less", async () => {
    const total = 2 * 1024 * KiB;
    const { peer, sizes, got } = await countedSession(cleanup, { maxMessageSize: 8 * 1024 * KiB });
    const big = randomFillSync(new Uint8Array(total));
    const small = randomFillSync(new Uint8Array(total));
    // The STARTs only, then a whole message: once it arrives, both STARTs were read.
    const marker = randomFillSync(new Uint8Array(100));
    const before = sizes.length;
    peer.socket.write(
      Buffer.concat([
        startFrame(1, total, big.subarray(0, 32 * KiB)),
        startFrame(3, total, small.subarray(0, 2 * KiB)),
        encodeFrame(FrameType.MSG, Flag.START | Flag.END, 5, marker),
      ]),
    );
    await until(() => got.length === 1);
    assert.ok(Buffer.from(got[0]).equals(Buffer.from(marker)));
    // Buffers allocated by then (frame bodies read whole included): the first message's whole length, the
    // second's 8 KiB (4x its first chunk). Old code: 128 KiB for the first, the whole length only with its next frame.
    const atStart = sizes.slice(before);
    assert.equal(atStart.filter((n) => n === total).length, 1, `allocated: ${atStart.join(", ")}`);
    assert.equal(atStart.filter((n) => n === 8 * KiB).length, 1, `allocated: ${atStart.join(", ")}`);
    assert.ok(!atStart.includes(128 * KiB), `allocated: ${atStart.join(", ")}`);
    // The rest of both, in 256 KiB frames: each arrives intact.
    const frames: Uint8Array[] = [];
    for (const [id, data, first] of [
      [1, big, 32 * KiB],
      [3, small, 2 * KiB],
    ] as const) {
      for (let p = first; p < total; p += 256 * KiB) {
        const end = Math.min(total, p + 256 * KiB);
        frames.push(chunkFrame(id, data.subarray(p, end), end === total));
      }
    }
    for (const f of frames) {
      if (!peer.socket.write(f)) await new Promise((r) => peer.socket.once("drain", r));
    }
    await until(() => got.length === 3);
    assert.ok(Buffer.from(got[1]).equals(Buffer.from(big)), "the message allocated whole arrives intact");
    assert.ok(Buffer.from(got[2]).equals(Buffer.from(small)), "the message grown step by step arrives intact");
  });
});
