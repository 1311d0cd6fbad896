/**
 * How often housekeeping runs for a configuration: half the keep-alive
 * interval, a quarter of each other timeout that is on, at least 10 ms.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { housekeepingPeriod } from "../../src/connection/housekeeping.ts";

const t = (keepAliveMs: number, slowPeerTimeoutMs: number, progressTimeoutMs: number, idleTimeoutMs: number) => ({
  keepAliveMs,
  slowPeerTimeoutMs,
  progressTimeoutMs,
  idleTimeoutMs,
});

it("housekeeping period: the shortest of keepalive/2 and each other timeout/4; 0 turns one off", () => {
  assert.equal(housekeepingPeriod(t(30_000, 30_000, 60_000, 0)), 7_500);
  assert.equal(housekeepingPeriod(t(30_000, 0, 0, 0)), 15_000);
  assert.equal(housekeepingPeriod(t(0, 0, 60_000, 0)), 15_000);
  assert.equal(housekeepingPeriod(t(0, 0, 0, 8_000)), 2_000);
  assert.equal(housekeepingPeriod(t(30_000, 30_000, 60_000, 1_000)), 250);
  assert.equal(housekeepingPeriod(t(0, 0, 0, 0)), Number.POSITIVE_INFINITY);
  assert.equal(housekeepingPeriod(t(4, 0, 0, 0)), 10, "never under 10 ms");
});
