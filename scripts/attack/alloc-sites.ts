/**
 * What a run of the attack server allocated, by function (garbage included):
 * sums a sampling heap profile written with POINTSUB_ATTACK_ALLOC_PROFILE=<file>
 * by self size (what the function itself allocated) and prints the top ones.
 *
 *   node scripts/attack/alloc-sites.ts <file> [--top 25]
 *
 * With `--buffers`, <file> is instead a trace written with
 * POINTSUB_ATTACK_TRACE=<file> POINTSUB_ATTACK_TRACE_ALLOC=1
 * POINTSUB_ATTACK_TRACE_ALLOC_MIN=65 (every ArrayBuffer off V8's heap) and
 * POINTSUB_ATTACK_TRACE_EXTERNAL=1: ArrayBuffers by where they were made
 * (the first frame in src/ or node:, the function's name), and how much
 * ArrayBuffer memory grew between full GCs — V8 starts a full GC after some
 * megabytes of it, so under the fuzzer their volume sets the full-GC count.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface Node {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: Node[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: "string", default: "25" }, buffers: { type: "boolean", default: false } },
});
if (values.buffers === true) {
  const lines = readFileSync(positionals[0] ?? "", "utf8").split("\n");
  const by = new Map<string, { n: number; mib: number }>();
  let n = 0;
  let mib = 0;
  for (const l of lines) {
    // alloc <count> <MiB>MiB old <n> <MiB>MiB <how> <size> <frame> < <frame> ...
    const m = /^alloc (\d+) ([\d.]+)MiB old \d+ [\d.]+MiB (\S+(?: Uint8Array)?) \S+ (.*)$/.exec(l);
    if (m === null) continue;
    const frame = m[4].split(" < ").find((f) => /src\/|node:/.test(f)) ?? m[4];
    const key = `${m[3]} ${frame.replace(/ \(.*$/, "").replace(/\)$/, "")}`;
    const e = by.get(key) ?? { n: 0, mib: 0 };
    e.n += Number(m[1]);
    e.mib += Number(m[2]);
    by.set(key, e);
    n += Number(m[1]);
    mib += Number(m[2]);
  }
  console.log(`${n} ArrayBuffers, ${mib.toFixed(1)} MiB`);
  for (const [k, e] of [...by].sort((a, b) => b[1].mib - a[1].mib).slice(0, Number(values.top)))
    console.log(`${e.mib.toFixed(1).padStart(8)} MiB ${String(e.n).padStart(7)}  ${k}`);
  // full <µs> ext min … max … last <MB> after <MB> arrayBuffers min … last <MB> after <MB>
  const growth: number[] = [];
  let after: number | undefined;
  for (const l of lines) {
    const m = /^full \d+ .* arrayBuffers min \S+ last ([\d.]+) after ([\d.]+)/.exec(l);
    if (m === null) continue;
    if (after !== undefined) growth.push(Number(m[1]) - after);
    after = Number(m[2]);
  }
  if (growth.length > 0) {
    growth.sort((a, b) => a - b);
    const mean = growth.reduce((a, b) => a + b, 0) / growth.length;
    console.log(
      `${growth.length + 1} full GCs; ArrayBuffer growth between two: mean ${mean.toFixed(1)} MB, median ${growth[growth.length >> 1].toFixed(1)} MB (sampled every 5 ms)`,
    );
  }
  process.exit(0);
}
const profile = JSON.parse(readFileSync(positionals[0] ?? "", "utf8")) as { head: Node };
const self = new Map<string, number>();
let total = 0;
const walk = (n: Node, parent: string) => {
  const f = n.callFrame;
  const where = f.url === "" ? "" : ` ${f.url.replace(/^.*\/(src|scripts|node_modules)\//, "$1/")}:${f.lineNumber + 1}`;
  const name = `${f.functionName === "" ? "(anonymous)" : f.functionName}${where}`;
  // Allocations in Node's internals are charged with their caller too, to show which of ours made them.
  const key = (f.url.startsWith("node:") || f.url === "") && parent !== "" ? `${name} < ${parent}` : name;
  if (n.selfSize > 0) {
    self.set(key, (self.get(key) ?? 0) + n.selfSize);
    total += n.selfSize;
  }
  for (const c of n.children) walk(c, f.url.startsWith("node:") || f.url === "" ? parent : name);
};
walk(profile.head, "");
console.log(`${(total / 2 ** 20).toFixed(1)} MiB sampled in all`);
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top)))
  console.log(`${(v / 2 ** 20).toFixed(2).padStart(9)} MiB ${((v / total) * 100).toFixed(1).padStart(5)} %  ${k}`);
