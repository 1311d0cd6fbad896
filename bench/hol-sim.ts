/**
 * The pacer in virtual time over a simulated link (bench/lib/pacer-sim.ts):
 * the waits of 64 B pings behind one big message and the transfer's share
 * of the link, the same on any machine at any load — for tuning the pacer
 * (issue 17) where wall-clock hol runs are too noisy.
 *
 *   node bench/hol-sim.ts [rate MB/s=100] [path RTT ms=0.3] [away mean ms=2] [present mean ms=8] [MiB=64] [seed=1] [link MB/s] [jitter ms] [tick ms]
 */
import { simPercentile, simulatePacer } from "./lib/pacer-sim.ts";

const a = process.argv.slice(2).map(Number);
const r = await simulatePacer({
  rateMBps: a[0] || 100,
  pathMs: a[1] ?? 0.3,
  awayMs: a[2] ?? 2,
  presentMs: a[3] || 8,
  bytes: (a[4] || 64) * 1024 * 1024,
  seed: a[5] || 1,
  linkMBps: a[6] || undefined,
  jitterMs: a[7] || 0,
  tickMs: a[8] || 0,
});
const q = (p: number) => +simPercentile(r.waits, p).toFixed(1);
console.log(
  JSON.stringify({
    xp: process.env.PACER_XP ?? "",
    args: process.argv.slice(2).join(" "),
    pings: r.waits.length,
    p50: q(50),
    p90: q(90),
    p99: q(99),
    MBps: +r.mbps.toFixed(1),
    util: +(r.utilisation * 100).toFixed(1),
    inflightMaxKiB: Math.round(r.maxInFlight / 1024),
  }),
);
process.exit(0);
