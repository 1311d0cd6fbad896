/**
 * The longest busy stretches of a V8 CPU profile (`--cpu-prof`), and what
 * ran in them: the attack runner's server child started with
 * `--server-node-args="--cpu-prof --cpu-prof-dir=/tmp/prof --cpu-prof-interval 200"`
 * writes one profile per scenario; this lists each stretch of samples
 * between two idle samples (an event-loop turn, or several back to back)
 * that lasted at least `--min-ms`, with its time, its garbage-collection
 * share and the functions with the most self time and the most total time
 * in it.
 *
 *   node scripts/attack/long-turns.ts /tmp/prof/CPU.*.cpuprofile [--min-ms 20] [--top 8] [--gaps <trace>]
 *   node scripts/attack/long-turns.ts --gaps <trace> [--min-ms 20]
 *
 * With `--gaps <trace>` (the file POINTSUB_ATTACK_TRACE=<file> made the
 * server write), the stretches are the trace's gaps whose main-thread CPU
 * time is at least `--min-ms`, each with the GC pauses the trace saw in it;
 * without a profile, only that list. Without `--gaps`, a stretch is a run
 * of samples with no `--idle-ms` (default 1) of idle samples in it (libuv's
 * poll phase runs I/O callbacks while V8 counts the thread idle, so single
 * idle samples do not end a turn).
 *
 * Times are the profile's (µs of the monotonic clock, as the attack
 * server's POINTSUB_ATTACK_TRACE gap lines). A stretch's length is wall
 * time while the thread was not idle: on a loaded machine it includes
 * descheduling, which the sample count does not show — compare stretches
 * by their samples × interval as well.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    "min-ms": { type: "string", default: "20" },
    top: { type: "string", default: "8" },
    gaps: { type: "string" },
    "idle-ms": { type: "string", default: "1" },
  },
});
const minUs = Number(values["min-ms"]) * 1000;
const top = Number(values.top);
/** Idle samples in a row that end a stretch: I/O callbacks run while V8 counts the thread idle (libuv's poll phase). */
const idleUs = Number(values["idle-ms"]) * 1000;
/** With --gaps <trace>: the stretches are the attack server's long gaps (POINTSUB_ATTACK_TRACE lines `gap <start µs> <ms> cpu <ms>`). */
const gaps =
  values.gaps === undefined
    ? undefined
    : readFileSync(values.gaps, "utf8")
        .split("\n")
        .map((l) => /^gap (\d+) ([\d.]+) cpu ([\d.]+)(?: proc ([\d.]+))?(.*)$/.exec(l))
        .filter((m) => m !== null && Number(m[3]) * 1000 >= minUs)
        .map((m) => ({
          from: Number(m?.[1]),
          to: Number(m?.[1]) + Number(m?.[2]) * 1000,
          cpu: Number(m?.[3]),
          proc: m?.[4] === undefined ? undefined : Number(m[4]),
          /** What the server decoded in it (POINTSUB_ATTACK_TRACE_FRAMES=1): frames, chunks, frames by type. */
          rest: (m?.[5] ?? "").trim(),
        }));
/** The trace's GC pauses (`gc <start µs> <ms> kind <k>`: kind 4 full, 1 scavenge, 8 incremental marking step). */
const gcs =
  values.gaps === undefined
    ? []
    : readFileSync(values.gaps, "utf8")
        .split("\n")
        .map((l) => /^gc (\d+) ([\d.]+) kind (\d+)/.exec(l))
        .filter((m) => m !== null)
        .map((m) => ({ at: Number(m?.[1]), ms: Number(m?.[2]), kind: Number(m?.[3]) }));
const gcsIn = (from: number, to: number) =>
  gcs
    .filter((g) => g.at + g.ms * 1000 > from && g.at < to)
    .map((g) => `${g.ms} ms (${g.kind === 4 ? "full" : g.kind === 1 ? "scavenge" : `kind ${g.kind}`})`)
    .join(", ");
if (gaps !== undefined && positionals.length === 0) {
  // The trace alone: each long gap with the GC pauses in it.
  for (const g of gaps)
    console.log(
      `gap at ${g.from} µs: ${((g.to - g.from) / 1000).toFixed(1)} ms, main thread ran ${g.cpu} ms${g.proc === undefined ? "" : `, all threads ${g.proc} ms`}; GC in it: ${gcsIn(g.from, g.to) || "none"}${g.rest === "" ? "" : `; ${g.rest}`}`,
    );
}

for (const file of positionals) {
  const p = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const name = (id: number): string => {
    const n = byId.get(id);
    if (n === undefined) return "?";
    const f = n.callFrame;
    const where =
      f.url === "" ? "" : ` ${f.url.replace(/^.*\/(src|scripts|node_modules)\//, "$1/")}:${f.lineNumber + 1}`;
    return `${f.functionName === "" ? "(anonymous)" : f.functionName}${where}`;
  };
  const idle = (id: number) => byId.get(id)?.callFrame.functionName === "(idle)";
  const gc = (id: number) => byId.get(id)?.callFrame.functionName === "(garbage collector)";
  // Sample i is taken at t_i and stands for the time until the next sample.
  const times: number[] = [];
  let t = p.startTime;
  for (const d of p.timeDeltas) {
    t += d;
    times.push(t);
  }
  const stretches: { from: number; to: number; first: number; last: number; cpu?: number }[] = [];
  if (gaps !== undefined) {
    for (const g of gaps) {
      let first = times.findIndex((x) => x >= g.from);
      if (first < 0) continue;
      let last = first;
      while (last + 1 < times.length && times[last + 1] <= g.to) last++;
      if (first > 0) first--;
      stretches.push({ from: g.from, to: g.to, first, last, cpu: g.cpu });
    }
  } else {
    let start = -1;
    let lastBusy = -1;
    for (let i = 0; i < p.samples.length; i++) {
      if (idle(p.samples[i])) {
        if (start >= 0 && times[i] - times[lastBusy] >= idleUs) {
          const from = times[start];
          const to = times[lastBusy + 1];
          if (to - from >= minUs) stretches.push({ from, to, first: start, last: lastBusy });
          start = -1;
        }
      } else {
        if (start < 0) start = i;
        lastBusy = i;
      }
    }
  }
  console.log(
    `${file}: ${p.samples.length} samples over ${((p.endTime - p.startTime) / 1e6).toFixed(1)} s; ${stretches.length} busy stretches >= ${minUs / 1000} ms`,
  );
  for (const s of stretches) {
    const self = new Map<string, number>();
    const total = new Map<string, number>();
    let gcUs = 0;
    let sampled = 0;
    let idleSampled = 0;
    for (let i = s.first; i <= s.last; i++) {
      const dt = times[i + 1] - times[i];
      sampled += dt;
      const id = p.samples[i];
      if (gc(id)) gcUs += dt;
      if (idle(id)) idleSampled += dt;
      self.set(name(id), (self.get(name(id)) ?? 0) + dt);
      const seen = new Set<string>();
      for (let a: number | undefined = id; a !== undefined; a = parent.get(a)) {
        const k = name(a);
        if (seen.has(k)) continue;
        seen.add(k);
        total.set(k, (total.get(k) ?? 0) + dt);
      }
    }
    const fmt = (m: Map<string, number>) =>
      [...m]
        .filter(([k]) => k !== "(root)")
        .sort((a, b) => b[1] - a[1])
        .slice(0, top)
        .map(([k, v]) => `      ${(v / 1000).toFixed(1).padStart(6)} ms  ${k}`)
        .join("\n");
    console.log(
      `\n  at ${Math.round(s.from)} µs: ${((s.to - s.from) / 1000).toFixed(1)} ms ${s.cpu === undefined ? "" : ` (thread CPU ${s.cpu} ms)`} (${s.last - s.first + 1} samples, ${(idleSampled / 1000).toFixed(1)} ms of them "idle": native I/O work), GC ${(gcUs / 1000).toFixed(1)} ms`,
    );
    if (gcs.length !== 0) console.log(`    GC pauses (trace): ${gcsIn(s.from, s.to) || "none"}`);
    console.log(`    self:\n${fmt(self)}`);
    console.log(`    total:\n${fmt(total)}`);
    void sampled;
  }
}
