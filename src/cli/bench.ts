import { type ClientAuthFlags, clientConnectOptions } from "./auth.ts";
import { connect } from "./connect.ts";
import { formatBytes, formatRate } from "./format.ts";
import { jsonLine, outputMode } from "./output.ts";
import { DISCARD_ROUTE } from "./serve.ts";

export interface BenchCliOptions extends ClientAuthFlags {
  to: string;
  count: number;
  size: number;
  json?: boolean;
}

/** `pointsub bench --to URL`: sequential /echo/1.0.0 latency, then one stream's throughput. */
export async function benchCommand(opts: BenchCliOptions): Promise<void> {
  const conn = await connect(opts.to, await clientConnectOptions(opts.to, opts));
  try {
    const payload = new Uint8Array(64);
    const lat: number[] = [];
    for (let i = 0; i < Math.min(opts.count, 1_000_000); i++) {
      const t0 = performance.now();
      await conn.request("/echo/1.0.0", payload);
      lat.push((performance.now() - t0) * 1000);
    }
    lat.sort((a, b) => a - b);
    const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? 0;
    const block = new Uint8Array(1 << 20).fill(7);
    const size = opts.size;
    async function* source() {
      for (let off = 0; off < size; off += block.length) yield block.subarray(0, Math.min(block.length, size - off));
    }
    const t0 = performance.now();
    await conn.sendStream(DISCARD_ROUTE, source(), { total: size });
    const secs = (performance.now() - t0) / 1000;
    const r = {
      requests: lat.length,
      p50us: Number(q(0.5).toFixed(1)),
      p99us: Number(q(0.99).toFixed(1)),
      streamBytes: size,
      streamMBps: Number((size / secs / 1e6).toFixed(1)),
    };
    if (outputMode(opts.json) === "json") jsonLine({ event: "bench", ...r });
    else {
      process.stdout.write(
        `requests: ${r.requests} x 64 B to /echo/1.0.0, p50 ${r.p50us} us, p99 ${r.p99us} us\nstream: ${formatBytes(size)} in ${secs.toFixed(2)} s, ${formatRate(size / secs)}\n`,
      );
    }
  } finally {
    await conn.close();
  }
}
