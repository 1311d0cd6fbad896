/**
 * The pacer (src/connection/pacer.ts) in virtual time (bench/lib/pacer-sim.ts):
 * a real FrameWriter and Pacer over a simulated link, with `performance.now`
 * driven by the simulation — every figure asserted is a count of the
 * simulation, the same at any machine load.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { simPercentile, simulatePacer } from "../../bench/lib/pacer-sim.ts";

const MiB = 1024 * 1024;

describe("Pacer over a simulated link (virtual time)", () => {
  it("16 MiB through a 100 MB/s link with a 10 ms round trip: ≥ 88 % of the link from the start, pings ≤ RTT + 20 ms", async () => {
    // Before: the first probe (no bulk ahead) gave a rate of a few bytes per ms, the window fell
    // to its 64 KiB floor and grew from there: 74 % of the link for this transfer.
    const r = await simulatePacer({ rateMBps: 100, pathMs: 10, bytes: 16 * MiB });
    assert.ok(r.utilisation >= 0.88, `${(r.utilisation * 100).toFixed(1)} % of the link`);
    assert.ok(r.waits.length >= 10, `${r.waits.length} pings`);
    const p99 = simPercentile(r.waits, 99);
    assert.ok(p99 <= 30, `ping p99 ${p99.toFixed(1)} ms`);
  });

  it("100 MB/s, 10 ms round trip: startup ends on the first probe that saw a queue beyond the target — ping p99 ≤ RTT + 10 ms at ≥ 90 % of the link", async () => {
    // Before: startup's 1.5× window kept ~12 ms of queue for three round trips (p99 25.2 ms, 90.9 %).
    const r = await simulatePacer({ rateMBps: 100, pathMs: 10, bytes: 16 * MiB });
    const p99 = simPercentile(r.waits, 99);
    assert.ok(p99 <= 20, `ping p99 ${p99.toFixed(1)} ms`);
    assert.ok(r.utilisation >= 0.9, `${(r.utilisation * 100).toFixed(1)} % of the link`);
  });

  it("10 MB/s link, 10 ms round trip: after a min-RTT refresh bulk restarts at the rate — only the pings sent into the blind first window wait more than RTT + 10 ms", async () => {
    // Before: each refresh's restart handed the whole window over at once and a ping behind it
    // waited window / rate + RTT (21-22 ms after the refreshes at 250 and 500 ms).
    const r = await simulatePacer({ rateMBps: 10, pathMs: 10, bytes: 16 * MiB, linkMBps: 10 });
    const slow = r.waits.filter((w) => w > 20);
    assert.ok(r.waits.length >= 150, `${r.waits.length} pings`);
    assert.ok(slow.length <= 2, `pings over 20 ms: ${slow.map((w) => w.toFixed(1)).join(", ")}`);
    assert.ok(r.utilisation >= 0.95, `${(r.utilisation * 100).toFixed(1)} % of the link`);
  });

  it("acknowledgements in bursts (receiver and sender away 2 ms in 10): the window's allowance for them is at most 5 ms of the rate", async () => {
    // Before: up to 10 ms of the rate, on top of the 5 ms target.
    const r = await simulatePacer({ rateMBps: 100, pathMs: 0.3, awayMs: 2, presentMs: 8, bytes: 16 * MiB });
    assert.ok(r.maxExtraMs > 1, `allowance ${r.maxExtraMs.toFixed(2)} ms: bursts were seen`);
    assert.ok(r.maxExtraMs <= 5.001, `allowance ${r.maxExtraMs.toFixed(2)} ms of the rate`);
    assert.ok(r.utilisation >= 0.9, `${(r.utilisation * 100).toFixed(1)} % of what the receiver could take`);
  });
});
