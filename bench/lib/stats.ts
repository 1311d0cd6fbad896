import v8 from "node:v8";

/** Percentile of sorted numbers (nearest rank). */
export function percentile(sorted: Float64Array | number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** p50/p99/p99.9/max of latencies in microseconds. */
export function latencySummary(samplesUs: Float64Array): { p50: number; p99: number; p999: number; max: number } {
  const s = samplesUs.slice().sort();
  return { p50: percentile(s, 50), p99: percentile(s, 99), p999: percentile(s, 99.9), max: s[s.length - 1] };
}

/**
 * The bytes V8's young generation has committed now (new space and its large objects): V8 doubles it while
 * the bytes surviving its scavenges outgrow it (a server's connections surviving, each kept object counted
 * about twice on its way to the old space), and it does not shrink while the process is idle — most of the
 * conns figures' differences between implementations (docs/BENCHMARKS.md).
 */
export function youngGeneration(): number {
  let n = 0;
  for (const s of v8.getHeapSpaceStatistics()) {
    if (s.space_name === "new_space" || s.space_name === "new_large_object_space") n += s.physical_space_size;
  }
  return n;
}

/** Peak resident set size of this process, bytes. */
export function peakRss(): number {
  return process.resourceUsage().maxRSS * 1024;
}
