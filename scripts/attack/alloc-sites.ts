/**
 * What a run of the attack server allocated, by function (garbage included):
 * sums a sampling heap profile written with POINTSUB_ATTACK_ALLOC_PROFILE=<file>
 * by self size (what the function itself allocated) and prints the top ones.
 *
 *   node scripts/attack/alloc-sites.ts <file> [--top 25]
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
  options: { top: { type: "string", default: "25" } },
});
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
