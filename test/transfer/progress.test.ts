/**
 * Transfer progress: the sliding-window rate (its sample window is made at
 * the first sample, so a transfer that moves no data allocates none).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Progress } from "../../src/transfer/progress.ts";

describe("transfer/progress", () => {
  it("a listener added with a context runs with it as this, once listeners once, a throwing one alone surfaced", async () => {
    const p = new Progress("t", 10, 0);
    const ctx = { name: "ctx" };
    const seen: unknown[] = [];
    let onceRuns = 0;
    p.on(
      "progress",
      function (this: unknown) {
        seen.push(this);
      },
      ctx,
    );
    p.on("progress", function (this: unknown) {
      seen.push(this);
    });
    p.once("progress", () => onceRuns++);
    p.add(1);
    p.add(1);
    assert.deepEqual(seen, [ctx, p, ctx, p]);
    assert.equal(onceRuns, 1);
  });

  it("a listener added with a falsy context (null, 0) runs with the progress as this, as an emitter's does", () => {
    const p = new Progress("t", 10, 0);
    const seen: unknown[] = [];
    const fn = function (this: unknown) {
      seen.push(this);
    };
    p.on("progress", fn, 0);
    p.on(
      "progress",
      function (this: unknown) {
        seen.push(this);
      },
      null,
    );
    p.add(1);
    assert.deepEqual(seen, [p, p]);
    // Removed with the context it was added with.
    p.off("progress", fn, 0);
    assert.equal(p.listenerCount("progress"), 1);
  });

  it("after its final status, bytes added are not counted and emit nothing (events ended with the status)", async () => {
    for (const status of ["failed", "cancelled", "completed"] as const) {
      const p = new Progress("t", undefined, 1);
      const seen: { status: string; bytes: number }[] = [];
      p.on("progress", (s) => seen.push({ status: s.status, bytes: s.bytes }));
      p.add(100);
      p.setStatus(status);
      const final = p.snapshot().bytes;
      p.add(500);
      await new Promise((r) => setTimeout(r, 20));
      p.add(500);
      assert.equal(p.snapshot().bytes, final, status);
      assert.equal(seen.at(-1)?.status, status, JSON.stringify(seen));
      assert.equal(seen.at(-1)?.bytes, final);
    }
  });

  it("rate over the 3 s window: bytes since the oldest sample kept, per second", () => {
    // Progress measures on the monotonic clock (a wall-clock step skewed rates): that clock, stepped by hand.
    const realNow = performance.now;
    let clock = 1_000_000;
    performance.now = () => clock;
    const tick = (ms: number) => {
      clock += ms;
    };
    try {
      const p = new Progress("t", 10_000);
      assert.equal(p.snapshot().rate, 0, "no sample yet");
      p.add(1000); // first sample: 1000 B at t0
      tick(1000);
      p.add(2000); // 3000 B at t0 + 1 s
      assert.equal(p.snapshot().rate, 2000, "2000 B since the oldest sample, over 1 s");
      tick(1000);
      assert.equal(p.snapshot().rate, 1000, "the same bytes over 2 s");
      // Samples older than the window are dropped at the next sample (one is always kept).
      tick(5000);
      p.add(500); // 3500 B at t0 + 7 s: the older samples fall out
      assert.equal(p.snapshot().rate, 0, "only this instant's sample left: no elapsed time");
      tick(500);
      assert.equal(p.snapshot().rate, 0, "no bytes since the only sample");
      p.add(1000);
      assert.equal(p.snapshot().rate, 2000, "1000 B over 0.5 s");
      assert.equal(p.snapshot().bytes, 4500);
      // setBase restarts the window: a resume offset never counts toward the rate.
      p.setBase(9000);
      assert.equal(p.snapshot().rate, 0);
      tick(1000);
      p.add(100);
      tick(1000);
      p.add(300);
      assert.equal(p.snapshot().rate, 300, "300 B since the first sample after the base, over 1 s");
    } finally {
      performance.now = realNow;
    }
  });
});
