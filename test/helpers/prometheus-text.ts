/**
 * A parser of the Prometheus text exposition format (version 0.0.4), for
 * tests: every sample as `name{label="value",...}` (labels sorted) → value,
 * plus the TYPE of each metric family.
 */
export interface Exposition {
  /** Samples by `name{a="x",b="y"}` with labels in name order (`name` alone without labels). */
  samples: Map<string, number>;
  /** `# TYPE` of each family. */
  types: Map<string, string>;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*/y;

/** The key of a sample in {@link Exposition.samples}. */
export function sampleKey(name: string, labels: Record<string, string | number> = {}): string {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${labels[k]}"`);
  return parts.length === 0 ? name : `${name}{${parts.join(",")}}`;
}

/** Parses `text`; throws on a line that is neither a comment nor a sample. */
export function parseExposition(text: string): Exposition {
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    if (line.startsWith("#")) {
      const t = /^# TYPE (\S+) (\S+)$/.exec(line);
      if (t !== null) types.set(t[1], t[2]);
      continue;
    }
    const m = LINE.exec(line);
    if (m === null) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    const body = m[2] ?? "";
    LABEL.lastIndex = 0;
    while (LABEL.lastIndex < body.length) {
      const l = LABEL.exec(body);
      if (l === null) throw new Error(`bad labels in: ${line}`);
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    }
    const v = m[3] === "+Inf" ? Number.POSITIVE_INFINITY : m[3] === "-Inf" ? Number.NEGATIVE_INFINITY : Number(m[3]);
    if (Number.isNaN(v) && m[3] !== "NaN") throw new Error(`bad value in: ${line}`);
    samples.set(sampleKey(m[1], labels), v);
  }
  return { samples, types };
}

/** The samples of family `name` (its `_bucket`/`_sum`/`_count` not included), as label sets and values. */
export function family(e: Exposition, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const [key, value] of e.samples) {
    const brace = key.indexOf("{");
    if ((brace < 0 ? key : key.slice(0, brace)) !== name) continue;
    const labels: Record<string, string> = {};
    if (brace >= 0) for (const m of key.slice(brace + 1, -1).matchAll(/(\w+)="([^"]*)"/g)) labels[m[1]] = m[2];
    out.push({ labels, value });
  }
  return out;
}
