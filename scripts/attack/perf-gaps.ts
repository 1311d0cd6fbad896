/**
 * What every thread of the attack server ran in its longest gaps: lines up
 * `perf script` samples of all the server's threads (main thread, V8's
 * workers, libuv's pool) with the gaps of its POINTSUB_ATTACK_TRACE file.
 * On a server pinned to one CPU (`--pin`) a gap's length is the CPU of all
 * its threads, not only the main thread's: this shows whose it was.
 *
 *   POINTSUB_ATTACK_TRACE=/tmp/t.txt perf record -k mono -e cpu-clock:u -F 1999 -g -o /tmp/perf.data -- \
 *     node scripts/attack/run.ts --pin --only fuzz "--server-node-args=--perf-basic-prof"
 *   perf script -i /tmp/perf.data --pid <server pid: /tmp/perf-<pid>.map> -F comm,tid,time,ip,sym > /tmp/p.txt
 *   node scripts/attack/perf-gaps.ts /tmp/p.txt /tmp/t.txt [--top 8] [--by proc|cpu|len]
 *
 * `-k mono` puts perf's sample times on the monotonic clock the trace uses;
 * `--perf-basic-prof` names the JavaScript frames (delete /tmp/perf-<pid>.map
 * afterwards). `cpu-clock:u` counts user time only (what an unprivileged
 * user may sample): system time (page faults, syscalls) does not show.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: "string", default: "8" }, by: { type: "string", default: "proc" } },
});

interface Sample {
  us: number;
  thread: string;
  frames: string[];
}

const samples: Sample[] = [];
let cur: Sample | undefined;
for (const line of readFileSync(positionals[0] ?? "", "utf8").split("\n")) {
  if (line.trim() === "") {
    if (cur !== undefined) samples.push(cur);
    cur = undefined;
    continue;
  }
  if (line[0] !== "\t" && line[0] !== " ") {
    const m = /^(\S+)\s+\d+\s+([\d.]+):/.exec(line);
    if (m !== null) cur = { us: Number(m[2]) * 1e6, thread: m[1], frames: [] };
    continue;
  }
  // "<ip> <symbol>"
  const t = line.trim();
  const sp = t.indexOf(" ");
  cur?.frames.push(sp < 0 ? "?" : t.slice(sp + 1));
}
if (cur !== undefined) samples.push(cur);
samples.sort((a, b) => a.us - b.us);

const gaps: { at: number; ms: number; cpu: number; proc: number }[] = [];
const gcs: { at: number; ms: number; kind: string }[] = [];
for (const line of readFileSync(positionals[1] ?? "", "utf8").split("\n")) {
  const p = line.split(" ");
  if (p[0] === "gap") gaps.push({ at: Number(p[1]), ms: Number(p[2]), cpu: Number(p[4]), proc: Number(p[6]) });
  else if (p[0] === "gc") gcs.push({ at: Number(p[1]), ms: Number(p[2]), kind: p[4] });
}
const by = values.by as "proc" | "cpu" | "ms";
gaps.sort((a, b) => b[by === "ms" ? "ms" : by] - a[by === "ms" ? "ms" : by]);

/** First sample at or after `us`. */
function lowerBound(us: number): number {
  let lo = 0;
  let hi = samples.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (samples[mid].us < us) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const short = (f: string) =>
  f
    .replace(/\(.*/, "")
    .replace(/file:\/\/\/\S*?\/(src|scripts)\//, "$1/")
    .slice(0, 110);
const count = <K>(m: Map<K, number>, k: K) => m.set(k, (m.get(k) ?? 0) + 1);
const top = <K>(m: Map<K, number>, n: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n);

for (const g of gaps.slice(0, Number(values.top))) {
  const end = g.at + g.ms * 1000;
  const threads = new Map<string, number>();
  const leaves = new Map<string, number>();
  const js = new Map<string, number>();
  for (let i = lowerBound(g.at); i < samples.length && samples[i].us <= end; i++) {
    const s = samples[i];
    count(threads, s.thread);
    count(leaves, `${s.thread.slice(0, 12).padEnd(12)} ${short(s.frames[0] ?? "?")}`);
    if (s.thread.startsWith("node-MainThr") || s.thread === "node") {
      const f =
        s.frames.find((x) => x.startsWith("JS:") && x.includes("file:")) ?? s.frames.find((x) => x.startsWith("JS:"));
      count(js, f === undefined ? "-" : short(f));
    }
  }
  const inGc = gcs.filter((x) => x.at >= g.at - 1000 && x.at <= end).map((x) => `${x.ms} ms kind ${x.kind}`);
  console.log(
    `gap at ${g.at} µs: ${g.ms} ms, main thread CPU ${g.cpu} ms, all threads ${g.proc} ms; samples ${JSON.stringify(Object.fromEntries(threads))}; GC ${inGc.join(", ") || "none"}`,
  );
  for (const [k, n] of top(leaves, 10)) console.log(`  ${String(n).padStart(5)} ${k}`);
  console.log("  main thread, innermost JavaScript frame:");
  for (const [k, n] of top(js, 8)) console.log(`  ${String(n).padStart(5)} ${k}`);
}
