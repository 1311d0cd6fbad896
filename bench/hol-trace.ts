/**
 * Summarises hol ping traces (bench/lib/trace.ts): per run, the ping round
 * trip split into timer lateness (client busy when its ping was due), up (written →
 * arrived at the server: the queue ahead of it) and down (arrived → answer
 * read by the client), with what the writer held ahead of it when written,
 * and `gc`: the GC pauses of any traced process (client, server, runner)
 * within its round trip (the slowest rows name the processes' pids);
 * `proxy`: the shaping proxy's ticks more than 2 ms late within it (hol-slow);
 * `stall`: the longest event-loop stall of any traced process overlapping it,
 * with the CPU that process used meanwhile (near 100 %: busy, e.g. GC; near
 * 0 %: descheduled on a loaded machine — trace.ts).
 * The slowest 1 % of pings are listed with their parts, so the tail's source shows.
 *
 *   POINTSUB_BENCH_TRACE=/tmp/pace/trace node bench/run.ts --impl pointsub --workload hol --quick --out /tmp/pace/x.md
 *   node bench/hol-trace.ts /tmp/pace/trace
 *
 * Over libp2p (`--impl pointsub-libp2p`) the rows also show what yamux, Noise
 * and the TCP socket held below pointsub when the ping was written.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { percentile } from "./lib/stats.ts";

const dir = process.argv[2];
if (dir === undefined) throw new Error("usage: node bench/hol-trace.ts <trace dir>");
const rows = (f: string) =>
  readFileSync(join(dir, f), "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Record<string, number>);
const fmt = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "-");
const q = (xs: number[], p: number) =>
  percentile(
    xs.slice().sort((a, b) => a - b),
    p,
  );

// GC pauses of every traced process (trace.ts): start, end (ms) and pid.
const gcs: { start: number; end: number; pid: string }[] = [];
for (const f of readdirSync(dir).filter((x) => x.startsWith("gc-"))) {
  const pid = f.slice("gc-".length, -".jsonl".length);
  for (const g of rows(f)) gcs.push({ start: g.start, end: g.start + g.ms, pid });
}
/** GC pause time (ms) within [from, to], and the pids it came from. */
function gcWithin(from: number, to: number): { ms: number; pids: string } {
  let ms = 0;
  const pids = new Set<string>();
  for (const g of gcs) {
    const o = Math.min(to, g.end) - Math.max(from, g.start);
    if (o > 0) {
      ms += o;
      pids.add(g.pid);
    }
  }
  return { ms, pids: [...pids].join("+") };
}

// Event-loop stalls of every traced process (trace.ts): end, gap and CPU used meanwhile (ms), pid.
const stalls: { end: number; gap: number; cpu: number; pid: string }[] = [];
for (const f of readdirSync(dir).filter((x) => x.startsWith("loop-"))) {
  const pid = f.slice("loop-".length, -".jsonl".length);
  for (const l of rows(f)) stalls.push({ end: l.t, gap: l.gap, cpu: l.cpu, pid });
}
/** The longest stall overlapping [from, to]: its overlap (ms), pid and CPU share while it lasted. */
function stallWithin(from: number, to: number): { ms: number; what: string } {
  let ms = 0;
  let what = "";
  for (const l of stalls) {
    const o = Math.min(to, l.end) - Math.max(from, l.end - l.gap);
    if (o > ms) {
      ms = o;
      what = `${l.pid} ${fmt(l.gap)} ms, cpu ${Math.round((100 * l.cpu) / l.gap)} %`;
    }
  }
  return { ms, what };
}

// The shaping proxy's late ticks (shaper.ts, traced): when, which direction, how late (ms).
const ticks: { end: number; late: number; dir: string }[] = [];
for (const f of readdirSync(dir).filter((x) => x.startsWith("shaper-")))
  for (const t of rows(f)) ticks.push({ end: t.t, late: t.late, dir: String(t.dir) });
/** The proxy's time late (ms) within [from, to]: the late ticks' overlap with it, and their directions. */
function proxyLate(from: number, to: number): { ms: number; dirs: string } {
  let ms = 0;
  const dirs = new Set<string>();
  for (const t of ticks) {
    const o = Math.min(to, t.end) - Math.max(from, t.end - t.late);
    if (o > 0) {
      ms += o;
      dirs.add(t.dir);
    }
  }
  return { ms, dirs: [...dirs].join("+") };
}

for (const f of readdirSync(dir).filter((x) => x.startsWith("client-"))) {
  const pid = f.slice("client-".length, -".jsonl".length);
  const arr = new Map<number, number>();
  try {
    for (const r of rows(`server-${pid}.jsonl`)) arr.set(r.n, r.arr);
  } catch {}
  const pings = rows(f)
    .filter((r) => r.resp !== undefined)
    .map((r): Record<string, number> => {
      const a = arr.get(r.n) ?? Number.NaN;
      // Over libp2p: every byte the layers below pointsub held ahead of the ping.
      const below = r.ywin === undefined ? Number.NaN : r.ystream + r.ywin + r.noise + r.tcpq + r.sock;
      // GC pauses (any process) while the ping was under way; with no GC trace, unknown.
      const gc = gcs.length === 0 ? Number.NaN : gcWithin(r.sent, r.resp).ms;
      // The proxy's late ticks while the ping was under way; with no shaper trace, unknown.
      const proxy = ticks.length === 0 ? Number.NaN : proxyLate(r.sent, r.resp).ms;
      // The longest event-loop stall of a traced process while the ping was under way.
      const stall = stalls.length === 0 ? Number.NaN : stallWithin(r.sent, r.resp).ms;
      return {
        ...r,
        rtt: r.resp - r.sent,
        late: r.sent - r.due,
        up: a - r.sent,
        down: r.resp - a,
        gc,
        proxy,
        stall,
        below,
      };
    });
  if (pings.length === 0) continue;
  console.log(`\nrun ${pid}: ${pings.length} pings`);
  // Over libp2p (bench/impls/pointsub-libp2p.ts) also what each layer below pointsub held, KiB.
  const lower = ["below", "ystream", "ywin", "noise", "tcpq", "sock"].filter((k) =>
    pings.some((r) => Number.isFinite(r[k])),
  );
  // Over a socket (tcp://), `nodeq`: what Node's socket held (handed over, not taken by the kernel yet).
  const nodeq = pings.some((r) => Number.isFinite(r.nodeq)) ? ["nodeq"] : [];
  const kib = new Set(["inflight", "window", "unflushed", "extra", ...nodeq, ...lower]);
  const keys = [
    "rtt",
    "late",
    "up",
    "down",
    "gc",
    "proxy",
    "stall",
    "unflushed",
    ...nodeq,
    "inflight",
    "window",
    "extra",
    "rate",
    "minRtt",
    ...lower,
  ];
  console.log(["", ...keys].join("\t"));
  for (const p of [50, 90, 99]) {
    console.log(
      [
        `p${p}`,
        ...keys.map((k) => {
          const xs = pings.map((r) => r[k]).filter((x) => Number.isFinite(x));
          const v = q(xs, p);
          return kib.has(k) ? fmt(v / 1024) : fmt(v);
        }),
      ].join("\t"),
    );
  }
  const tail = pings.slice().sort((a, b) => b.rtt - a.rtt);
  console.log("slowest (ms; KiB):");
  for (const r of tail.slice(0, Math.max(3, Math.ceil(pings.length / 100)))) {
    console.log(
      `  n=${r.n} rtt=${fmt(r.rtt)} late=${fmt(r.late)} up=${fmt(r.up)} down=${fmt(r.down)} gc=${fmt(r.gc)}${gcs.length === 0 ? "" : ` (${gcWithin(r.sent, r.resp).pids.replace(pid, "client") || "-"})`}${ticks.length === 0 ? "" : ` proxy=${fmt(r.proxy)} (${proxyLate(r.sent, r.resp).dirs || "-"})`}${stalls.length === 0 ? "" : ` stall=${fmt(r.stall)} (${stallWithin(r.sent, r.resp).what.replace(pid, "client") || "-"})`} unflushed=${fmt((r.unflushed ?? Number.NaN) / 1024)} inflight=${fmt((r.inflight ?? Number.NaN) / 1024)} window=${fmt((r.window ?? Number.NaN) / 1024)} rate=${fmt(r.rate ?? Number.NaN)} minRtt=${fmt(r.minRtt ?? Number.NaN)} extra=${fmt((r.extra ?? Number.NaN) / 1024)}${lower.map((k) => ` ${k}=${fmt(r[k] / 1024)}`).join("")}`,
    );
  }
}
