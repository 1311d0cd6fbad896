/**
 * The length-prefix parser alone: any split of the byte stream gives the
 * same messages; a body grows with what arrived (a few doublings, never a
 * copy per chunk); the declared length is checked before anything is held.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MemoryBudget } from "../../src/connection/budget.ts";
import { PointSubError } from "../../src/errors/error.ts";
import { LpDecoder } from "../../src/lp/decoder.ts";
import { lpFrame } from "../helpers/lp-peer.ts";

/** A budget that counts its charges (one per buffer the decoder allocates). */
class CountingBudget extends MemoryBudget {
  charges = 0;
  override tryCharge(n: number): boolean {
    this.charges++;
    return super.tryCharge(n);
  }
}

function decode(chunks: Uint8Array[], max = 1 << 30, budget?: MemoryBudget): Uint8Array[] {
  const out: Uint8Array[] = [];
  // Messages are copied at once: a view may point into a chunk the test reuses.
  const d = new LpDecoder({ onMessage: (m) => out.push(m.slice()) }, max, budget);
  for (const c of chunks) d.push(c);
  assert.ok(d.idle);
  return out;
}

/** A small deterministic PRNG (xorshift32). */
function rng(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

describe("LpDecoder", () => {
  it("any split of the stream gives the same messages (0 B to 100 KB, 30 random splits)", () => {
    const r = rng(42);
    const sizes = [0, 1, 3, 4, 5, 100, 30_000, 0, 100_000, 2];
    const msgs = sizes.map((n) => Uint8Array.from({ length: n }, () => Math.floor(r() * 256)));
    const stream = Buffer.concat(msgs.map(lpFrame));
    for (let k = 0; k < 30; k++) {
      const chunks: Uint8Array[] = [];
      let pos = 0;
      while (pos < stream.length) {
        const n = Math.max(1, Math.floor(r() ** 3 * 50_000));
        chunks.push(stream.subarray(pos, pos + n));
        pos += n;
      }
      const got = decode(chunks);
      assert.equal(got.length, msgs.length);
      for (let i = 0; i < msgs.length; i++) assert.ok(Buffer.from(got[i]).equals(Buffer.from(msgs[i])));
    }
  });

  it("a 200 KB body in 1-byte chunks: 3 buffers (64 KiB, doubling), never one per chunk; peak < 2 × the body", () => {
    const body = new Uint8Array(200_000).fill(9);
    const stream = lpFrame(body);
    const budget = new CountingBudget(Infinity);
    const out: Uint8Array[] = [];
    const d = new LpDecoder({ onMessage: (m) => out.push(m) }, 1 << 20, budget);
    // One 1-byte chunk, refilled: the decoder copies what it keeps.
    const one = new Uint8Array(1);
    for (let i = 0; i < stream.length; i++) {
      one[0] = stream[i];
      assert.equal(d.push(one), false);
    }
    const [got] = out;
    assert.equal(got.length, 200_000);
    assert.ok(got.every((b) => b === 9));
    assert.equal(budget.charges, 3); // 64 KiB, 128 KiB, then the 200,000 declared
    assert.ok(budget.peak < 2 * 200_000, `peak ${budget.peak}`);
    assert.equal(budget.used, 0);
  });

  it("what is held is what arrived, not what the peer declared", () => {
    const budget = new MemoryBudget(Infinity);
    const d = new LpDecoder({ onMessage() {} }, 0xffff_ffff, budget);
    d.push(Uint8Array.of(0xff, 0xff, 0xff, 0xfe, 1, 2, 3));
    assert.equal(budget.used, 64 * 1024);
    assert.equal(d.partialBytes, 7);
    d.stop();
    assert.equal(budget.used, 0);
  });

  it("a declared length over maxMessageSize throws ERR_MESSAGE_TOO_LARGE before holding anything", () => {
    const budget = new MemoryBudget(Infinity);
    const d = new LpDecoder({ onMessage() {} }, 10, budget);
    assert.throws(
      () => d.push(Uint8Array.of(0, 0, 0, 11)),
      (e: PointSubError) => e.code === "ERR_MESSAGE_TOO_LARGE",
    );
    assert.equal(budget.peak, 0);
  });

  it("a budget too small for the body throws ERR_OVERLOADED and releases what it held", () => {
    const budget = new MemoryBudget(100 * 1024);
    const d = new LpDecoder({ onMessage() {} }, 1 << 20, budget);
    d.push(Uint8Array.of(0, 2, 0, 0)); // 128 KiB declared: a 64 KiB buffer fits
    assert.equal(budget.used, 64 * 1024);
    assert.throws(
      () => d.push(new Uint8Array(70 * 1024)),
      (e: PointSubError) => e instanceof PointSubError && e.code === "ERR_OVERLOADED",
    );
    assert.equal(budget.used, 0);
  });

  it("reads land in place: readTarget offers the body's free room, and such a chunk is not copied", () => {
    const out: Uint8Array[] = [];
    const d = new LpDecoder({ onMessage: (m) => out.push(m) }, 1 << 20, new MemoryBudget(Infinity));
    d.push(Uint8Array.of(0, 1, 0, 0)); // 64 KiB body
    const target = d.readTarget();
    assert.ok(target !== undefined && target.length === 64 * 1024);
    target.fill(5);
    assert.equal(d.push(target), false);
    assert.equal(out.length, 1);
    assert.equal(out[0].buffer, target.buffer);
    assert.ok(out[0].every((b) => b === 5));
  });
});

describe("LpDecoder steps", () => {
  it("hands out at most `step` messages a push; `used` says where it stopped, and the rest gives the same messages", () => {
    const msgs = [0, 1, 2, 0, 70_000, 3, 0, 5, 1].map((n, i) => new Uint8Array(n).fill(i));
    const stream = Buffer.concat(msgs.map(lpFrame));
    for (const split of [1, 3, 7, 100, stream.length]) {
      const out: Uint8Array[] = [];
      let perPush = 0;
      let most = 0;
      const d = new LpDecoder(
        {
          onMessage: (m) => {
            out.push(m.slice());
            most = Math.max(most, ++perPush);
          },
        },
        1 << 30,
        undefined,
        undefined,
        2,
      );
      for (let pos = 0; pos < stream.length; pos += split) {
        let chunk = stream.subarray(pos, pos + split);
        for (;;) {
          perPush = 0;
          d.push(chunk);
          if (d.used === chunk.length) break;
          assert.ok(d.used < chunk.length);
          chunk = chunk.subarray(d.used);
        }
      }
      assert.ok(d.idle);
      assert.ok(most <= 2, `${most} messages in one push`);
      assert.deepEqual(
        out.map((m) => Buffer.from(m).toString("hex")),
        msgs.map((m) => Buffer.from(m).toString("hex")),
      );
    }
  });
});
