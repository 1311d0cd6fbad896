/**
 * The README's headline figures, taken from docs/BENCHMARKS.md (issue 13:
 * they disagreed, having been copied by hand from different runs). The
 * README holds them between `<!-- bench:headline -->` and
 * `<!-- /bench:headline -->`; `npm run bench` and `npm run bench:files` rewrite
 * that block after writing docs/BENCHMARKS.md, and `node bench/headline.ts`
 * does it alone. test/docs/headline.test.ts checks the two agree.
 *
 * The comparisons are with the strongest reference of each workload
 * (`reference-slab`, which coalesces small writes, where the run has it),
 * and the targets the run missed are listed, not only those it met.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const HEADLINE_START = "<!-- bench:headline -->";
export const HEADLINE_END = "<!-- /bench:headline -->";

/** The body of the `## heading…` section of `doc` (up to the next `## `), or undefined. */
function section(doc: string, heading: string): string | undefined {
  const at = doc.indexOf(`\n## ${heading}`);
  if (at < 0) return undefined;
  const next = doc.indexOf("\n## ", at + 4);
  return doc.slice(at, next < 0 ? undefined : next);
}

/** The cells of the table row of `section` whose first cell starts with `name`. */
function row(body: string | undefined, name: string): string[] | undefined {
  for (const line of body?.split("\n") ?? []) {
    const cells = line.split("|").map((c) => c.trim());
    if (cells.length > 2 && cells[1].startsWith(name)) return cells.slice(1, -1);
  }
  return undefined;
}

/** The first number of a cell ("5,444,968 (5,434,260–6,858,241)" → 5444968). */
function num(cell: string | undefined): number | undefined {
  const m = /-?[\d,]+(\.\d+)?/.exec(cell ?? "");
  return m === null ? undefined : Number(m[0].replace(/,/g, ""));
}

const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;

/** The headline lines (markdown) from a docs/BENCHMARKS.md text. */
export function headline(doc: string): string {
  const parts: string[] = [];
  const date = /\| date \| ([^|]+) \|/.exec(doc)?.[1].trim().slice(0, 10);
  const strongest = (body: string | undefined) =>
    row(body, "reference-slab") !== undefined ? "reference-slab" : "reference";

  const flood = section(doc, "flood");
  const fRef = strongest(flood);
  const fP = num(row(flood, "pointsub")?.[1]);
  const fR = num(row(flood, fRef)?.[1]);
  if (fP !== undefined && fR !== undefined) {
    parts.push(`${fmt(fP / 1e6, 2)} M one-way 64-byte messages/s on one connection (${ratio(fP, fR)} \`${fRef}\`)`);
  }
  const large = section(doc, "large");
  const lRef = strongest(large);
  const lP = num(row(large, "pointsub")?.[1]);
  const lR = num(row(large, lRef)?.[1]);
  if (lP !== undefined && lR !== undefined) {
    parts.push(`a 256 MiB message at ${fmt(lP)} MB/s (${ratio(lP, lR)} \`${lRef}\`)`);
  }
  const files = section(doc, "File to file over tcp");
  const sizeMiB = /File to file over tcp \((\d+) MiB/.exec(files ?? "")?.[1];
  const ffP = num(row(files, "pointsub sendFile")?.[1]);
  const ffR = num(row(files, "node:net reference")?.[1]);
  if (ffP !== undefined && ffR !== undefined) {
    parts.push(`a ${sizeMiB} MiB file to file at ${fmt(ffP)} MB/s (${ratio(ffP, ffR)} the \`node:net\` pipe)`);
  }
  const hol = section(doc, "hol");
  const hRef = strongest(hol);
  const hP = num(row(hol, "pointsub")?.[2]);
  const hR = num(row(hol, hRef)?.[2]);
  if (hP !== undefined && hR !== undefined) {
    parts.push(
      `a 64-byte request answered in ${fmt(hP, 1)} ms at p99 while that 256 MiB message is in flight (\`${hRef}\`: ${fmt(hR, 1)} ms)`,
    );
  }
  const conns = section(doc, "conns");
  const cP = num(row(conns, "pointsub")?.[2]);
  const cR = num(row(conns, "reference")?.[2]);
  if (cP !== undefined && cR !== undefined) {
    parts.push(`${fmt(cP, 1)} KB of server memory per idle connection (\`reference\`: ${fmt(cR, 1)} KB)`);
  }
  const many = section(doc, "Many small files over tcp");
  // The bold figure is the send into a serve with its default durability (each file fsynced; tar fsyncs nothing).
  const manyRatio = /Target ≥ 0\.5× tar's speed(?: \([^)]*\))?: \*\*([\d.]+)×\*\*/.exec(many ?? "")?.[1];
  // Run apart (`npm run bench:files -- --only many`): its own date when it is not the report's.
  const manyDate = /^Run of (\d{4}-\d\d-\d\d)/m.exec(many ?? "")?.[1];
  const manyRun = manyDate !== undefined && manyDate !== date ? `, run of ${manyDate}` : "";
  if (manyRatio !== undefined)
    parts.push(
      `2,000 files of 1 KiB sent at ${manyRatio}× the speed of \`tar\` over a socket (each file fsynced${manyRun})`,
    );

  const missed: string[] = [];
  for (const line of (section(doc, "Targets") ?? "").split("\n")) {
    const cells = line.split("|").map((c) => c.trim());
    if (cells.length > 3 && cells[3] === "**missed**") missed.push(`${cells[1]} (measured ${cells[2]})`);
  }
  if (manyRatio !== undefined && Number(manyRatio) < 0.5) {
    missed.push(`2,000 × 1 KiB files ≥ 0.5× tar's speed (measured ${manyRatio}×, each file fsynced${manyRun})`);
  }
  const lines = [
    `On this project's 2-core machine (docs/BENCHMARKS.md${date === undefined ? "" : `, run of ${date}`}): ${parts.join("; ")}.`,
  ];
  if (missed.length > 0) lines.push(`Targets missed in that run: ${missed.join("; ")}.`);
  return lines.join("\n");
}

/** `readme` with its headline block replaced by {@link headline} of `benchmarks` (unchanged without the markers). */
export function withHeadline(readme: string, benchmarks: string): string {
  const start = readme.indexOf(HEADLINE_START);
  const end = readme.indexOf(HEADLINE_END);
  if (start < 0 || end < start) return readme;
  return `${readme.slice(0, start + HEADLINE_START.length)}\n${headline(benchmarks)}\n${readme.slice(end)}`;
}

/** Rewrites README.md's headline block from docs/BENCHMARKS.md. */
export function updateReadme(root = join(dirname(fileURLToPath(import.meta.url)), "..")): void {
  const readmePath = join(root, "README.md");
  const readme = readFileSync(readmePath, "utf8");
  const next = withHeadline(readme, readFileSync(join(root, "docs", "BENCHMARKS.md"), "utf8"));
  if (next !== readme) writeFileSync(readmePath, next);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) updateReadme();
