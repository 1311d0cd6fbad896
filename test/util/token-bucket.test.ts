/**
 * TokenBucket (src/util/token-bucket.ts) on a fake clock: lazy refill,
 * burst cap, the wait it reports is exactly enough, debt for amounts over
 * the burst; and fuzzed: over any sequence of takes, what was granted never
 * exceeds burst + rate × elapsed (plus one oversized amount's debt).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { perTaskClock, TokenBucket } from "../../src/util/token-bucket.ts";

function fakeClock(): { now: number; clock: () => number } {
  const c = { now: 1000, clock: () => c.now };
  return c;
}

describe("util/token-bucket", () => {
  it("starts full, refills lazily at rate, never above burst", () => {
    const c = fakeClock();
    const b = new TokenBucket(10, 5, c.clock);
    for (let i = 0; i < 5; i++) assert.equal(b.take(), 0);
    assert.equal(b.take(), 100); // one token per 100 ms
    c.now += 50;
    assert.equal(b.take(), 50);
    c.now += 50;
    assert.equal(b.take(), 0);
    c.now += 60_000;
    assert.equal(b.available(), 5);
  });

  it("the wait it reports is enough, and at least 1 ms", () => {
    const c = fakeClock();
    const b = new TokenBucket(3, 1, c.clock);
    assert.equal(b.take(), 0);
    const wait = b.take();
    assert.equal(wait, 334);
    c.now += wait;
    assert.equal(b.take(), 0);
    const fast = new TokenBucket(1e9, 1, c.clock);
    fast.take();
    assert.equal(fast.take(), 1);
  });

  it("an amount over the burst passes on a full bucket and leaves a debt paid back at rate", () => {
    const c = fakeClock();
    const b = new TokenBucket(100, 100, c.clock);
    assert.equal(b.take(250), 0);
    assert.equal(b.available(), -150);
    // 151 tokens short of one: 1.51 s.
    assert.equal(b.take(1), 1510);
    assert.equal(b.delay(250), 2500); // needs a full bucket again
    c.now += 2500;
    assert.equal(b.take(250), 0);
  });

  it("never grants more than burst + rate x elapsed + one oversized debt (fuzzed)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1000 }),
        fc.integer({ min: 1, max: 100 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 50 }), fc.integer({ min: 1, max: 200 })), { maxLength: 200 }),
        (rate, burst, steps) => {
          const c = fakeClock();
          const start = c.now;
          const b = new TokenBucket(rate, burst, c.clock);
          let granted = 0;
          let largest = 0;
          for (const [dt, n] of steps) {
            c.now += dt;
            const d = b.take(n);
            if (d === 0) {
              granted += n;
              largest = Math.max(largest, n);
            } else {
              assert.ok(d >= 1);
              // Waiting what it said is enough.
              c.now += d;
              assert.equal(b.take(n), 0);
              granted += n;
              largest = Math.max(largest, n);
            }
          }
          const allowed = burst + (rate * (c.now - start)) / 1000 + Math.max(0, largest - burst) + 1e-6;
          assert.ok(granted <= allowed, `${granted} > ${allowed}`);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("util/token-bucket: perTaskClock", () => {
  it("reads the clock once per task and again after the microtask checkpoint", async () => {
    let reads = 0;
    const clock = perTaskClock(() => ++reads);
    assert.equal(clock(), 1);
    assert.equal(clock(), 1);
    await Promise.resolve();
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(clock(), 2);
    assert.equal(reads, 2);
  });
});
