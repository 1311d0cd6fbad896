/**
 * The pacer in virtual time (bench/lib/pacer-sim.ts) over a set of links and
 * machine loads at once, several seeds each, pooled: for comparing pacer
 * changes (issue 17) on one screen, the same on any machine at any load.
 * Each row: the pings' wait p50 / p99 over all seeds, the median of the
 * runs' p99, and the transfer's share of what the receiver (or the link)
 * could take, mean and worst.
 *
 *   node bench/hol-sweep.ts [seeds=6]
 *
 * Scenarios: `lo-*` loopback-like (0.3 ms round trip, the receiver reading
 * 150–400 MB/s; `awayN`: receiver and sender away for spells of mean N ms
 * in ~10, a loaded machine); `10M-10ms` and `100M-10ms` the hol-slow links
 * (16 MiB, answers up to 1 ms late at random; `-a`: away 1 ms in 11; `-t`: the
 * link moves bytes in ticks 1-2 ms apart, as the bench's shaping proxy).
 */
import { simPercentile, simulatePacer } from "./lib/pacer-sim.ts";

const seeds = Number(process.argv[2] ?? 6);
const MiB = 1024 * 1024;
/** name, receiver MB/s, path RTT ms, away ms, present ms, MiB, link MB/s, link tick ms. */
const scenarios: [string, number, number, number, number, number, number | undefined, number?][] = [
  ["lo-quiet", 150, 0.3, 0, 8, 64, undefined],
  ["lo-away1", 400, 0.3, 1, 10, 64, undefined],
  ["lo-away2", 150, 0.3, 2, 8, 64, undefined],
  ["lo-away4", 300, 0.3, 4, 8, 64, undefined],
  ["10M-10ms", 10, 10, 0, 8, 16, 10],
  ["10M-10ms-a", 10, 10, 1, 10, 16, 10],
  ["100M-10ms", 100, 10, 0, 8, 16, 100],
  ["100M-10ms-a", 100, 10, 1, 10, 16, 100],
  ["10M-10ms-t", 10, 10, 0, 8, 16, 10, 1],
  ["100M-10ms-t", 100, 10, 0, 8, 16, 100, 1],
  ["100M-10ms-at", 100, 10, 1, 10, 16, 100, 1],
];
for (const [name, rate, path, away, present, mib, link, tick] of scenarios) {
  const all: number[] = [];
  const p99s: number[] = [];
  let util = 0;
  let worst = 1;
  // Without away spells a run does not depend on the seed.
  const n = away === 0 && tick === undefined ? 1 : seeds;
  for (let seed = 1; seed <= n; seed++) {
    const r = await simulatePacer({
      rateMBps: rate,
      pathMs: path,
      awayMs: away,
      presentMs: present,
      bytes: mib * MiB,
      seed,
      linkMBps: link,
      jitterMs: path > 1 ? 1 : 0,
      tickMs: tick,
    });
    all.push(...r.waits);
    p99s.push(simPercentile(r.waits, 99));
    util += r.utilisation;
    worst = Math.min(worst, r.utilisation);
  }
  all.sort((a, b) => a - b);
  p99s.sort((a, b) => a - b);
  const f = (x: number) => x.toFixed(1);
  console.log(
    `${name.padEnd(12)} p50 ${f(simPercentile(all, 50))}  p99 ${f(simPercentile(all, 99))}  run p99 ${f(p99s[Math.floor(p99s.length / 2)])}  link ${f((util / n) * 100)} % (worst ${f(worst * 100)})`,
  );
}
process.exit(0);
