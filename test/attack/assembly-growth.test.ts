/**
 * A chunked message's buffer grows with what arrives, not with what its
 * START declares. Under the mutation fuzzer ~90 % of chunked messages never
 * complete (their connection dies first), most after a chunk or two: a
 * first buffer of 64 KiB each made them over half of the server's
 * ArrayBuffer bytes, and V8 starts a full GC after some megabytes of those
 * (the fuzzer's longest event-loop delays were full GCs). Messages that do
 * complete arrive intact whatever the chunk sizes (small steps, then the
 * whole length; bodies read straight into place included).
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { afterEach, describe, it } from "node:test";
import { chunkFrame, countedSession, startFrame } from "../helpers/chunked-frames.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;

describe("attack: chunked messages' buffers", () => {
  const cleanup: (() => unknown)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it("200 messages declaring 60 KiB that send 2 KiB each cost a few KiB apiece, not 60", async () => {
    const { peer, sizes, got } = await countedSession(cleanup);
    const before = sizes.length;
    const n = 200;
    const frames: Uint8Array[] = [];
    for (let i = 0; i < n; i++) {
      const id = 2 * i + 1;
      frames.push(startFrame(id, 60 * KiB, new Uint8Array(KiB)), chunkFrame(id, new Uint8Array(KiB), false));
    }
    // A whole message after them: everything before it was read once it arrives.
    const last = randomFillSync(new Uint8Array(100));
    frames.push(startFrame(2 * n + 1, 100, last.subarray(0, 10)), chunkFrame(2 * n + 1, last.subarray(10), true));
    peer.socket.write(Buffer.concat(frames));
    await until(() => got.length === 1);
    assert.deepEqual(Buffer.from(got[0]), Buffer.from(last));
    const bytes = sizes.slice(before).reduce((a, b) => a + (b >= KiB ? b : 0), 0);
    // 4 KiB each (4x the first chunk): 800 KiB. The old first buffer of 60 KiB each: 12,000 KiB.
    assert.ok(bytes <= n * 8 * KiB, `${Math.round(bytes / KiB)} KiB of buffers for ${n} unfinished messages`);
  });

  it("messages complete intact through every growth step, small and large chunks (read into place) alike", async () => {
    const { peer, got } = await countedSession(cleanup, { maxMessageSize: 8 * 1024 * KiB });
    // Chunk sizes per message: tiny first chunks then growth past 64 KiB; large frames read straight into the buffer.
    const plans = [
      [1, 1, 5000, 3, 20_000, 100_000, 10],
      [100, 300, 4000, 16_000, 50_000],
      [2 * KiB, 60 * KiB, 300 * KiB, 1],
      [16 * KiB, 16 * KiB, 16 * KiB, 16 * KiB, 16 * KiB],
      [3, 4093, 4096, 65_536 - 8192, 8192, 1],
    ];
    const sent: Uint8Array[] = [];
    for (let m = 0; m < plans.length; m++) {
      const plan = plans[m];
      const total = plan.reduce((a, b) => a + b, 0);
      const data = randomFillSync(new Uint8Array(total));
      sent.push(data);
      const id = 2 * m + 1;
      let p = plan[0];
      const frames = [startFrame(id, total, data.subarray(0, p))];
      for (let k = 1; k < plan.length; k++) {
        frames.push(chunkFrame(id, data.subarray(p, p + plan[k]), k === plan.length - 1));
        p += plan[k];
      }
      // Written frame by frame: bodies of 32 KiB and more land straight in the message's buffer.
      for (const f of frames) {
        peer.socket.write(f);
        await new Promise((r) => setImmediate(r));
      }
    }
    await until(() => got.length === plans.length);
    for (let m = 0; m < plans.length; m++) {
      assert.equal(got[m].length, sent[m].length, `message ${m} length`);
      assert.ok(Buffer.from(got[m]).equals(Buffer.from(sent[m])), `message ${m} intact`);
    }
  });
});
