/**
 * Reproduction: quick checks (FILE_CHECK_ROUTE) that ask about the same
 * large file at its size each read the whole file for its CRC32C until one
 * of them has cached it (no read shared between requests or between the
 * entries of one request, 8 at a time per request); each read is a 1 MiB
 * read stream, uncharged to the memory budget.
 *
 *   node scripts/attack/check-crc.ts [--file-mib 256] [--requests 64] [--entries 8] [--rounds 3]
 *
 * In-process server with a fileSink on a temp directory (one file of
 * --file-mib), a client sending --requests concurrent checks of --entries
 * entries (the same file) per round, a new file (fresh mtime: the cache
 * misses) each round. Prints the server's peak RSS/arrayBuffers and its
 * event-loop delay, bytes read (entries x size), and the time per round.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { connect, createServer, fileSink } from "../../src/index.ts";
import { FILE_CHECK_ROUTE } from "../../src/node/file-sink.ts";

const MIB = 1024 * 1024;
const { values: a } = parseArgs({
  options: {
    "file-mib": { type: "string", default: "256" },
    requests: { type: "string", default: "64" },
    entries: { type: "string", default: "8" },
    rounds: { type: "string", default: "3" },
  },
});
const size = Number(a["file-mib"]) * MIB;
const dir = mkdtempSync(join(tmpdir(), "pointsub-check-crc-"));
const server = createServer();
const sink = fileSink(dir);
server.handle(FILE_CHECK_ROUTE, sink.check);
const [url] = await server.listen("tcp://127.0.0.1:0");
const client = await connect(url);
const eld = monitorEventLoopDelay({ resolution: 10 });
const body = new TextEncoder().encode(
  JSON.stringify({ files: Array.from({ length: Number(a.entries) }, () => ({ name: "big.bin", size })) }),
);
try {
  for (let r = 0; r < Number(a.rounds); r++) {
    writeFileSync(join(dir, "big.bin"), Buffer.alloc(size, r + 1));
    let peakRss = 0;
    let peakAb = 0;
    const sample = setInterval(() => {
      const m = process.memoryUsage();
      peakRss = Math.max(peakRss, m.rss);
      peakAb = Math.max(peakAb, m.arrayBuffers);
    }, 20);
    const before = process.memoryUsage();
    const cpu0 = process.cpuUsage();
    eld.reset();
    eld.enable();
    const t0 = performance.now();
    const answers = await Promise.all(
      Array.from({ length: Number(a.requests) }, () => client.request(FILE_CHECK_ROUTE, body, { timeoutMs: 600_000 })),
    );
    const ms = performance.now() - t0;
    eld.disable();
    clearInterval(sample);
    const cpu = process.cpuUsage(cpu0);
    const first = JSON.parse(new TextDecoder().decode(answers[0] as Uint8Array)).files[0];
    console.log(
      `round ${r}: ${a.requests} checks x ${a.entries} entries of a ${a["file-mib"]} MiB file in ${ms.toFixed(0)} ms (CPU ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms); RSS ${(before.rss / MIB).toFixed(0)} -> peak ${(peakRss / MIB).toFixed(0)} MiB, arrayBuffers peak ${(peakAb / MIB).toFixed(0)} MiB; ELD max ${(eld.max / 1e6).toFixed(1)} ms p99 ${(eld.percentile(99) / 1e6).toFixed(1)} ms; answer ${JSON.stringify(first)}`,
    );
  }
} finally {
  await client.close();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}
