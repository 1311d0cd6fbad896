/**
 * What a pointsub server allocates per accepted connection, garbage included
 * (issue 17's conns target): serves the bench's routes (bench/lib/pointsub-routes.ts),
 * lets the bench's own client (bench/impls/pointsub.ts, another process)
 * open N connections, and samples this process's allocations meanwhile with
 * V8's sampling heap profiler, objects collected by either GC counted —
 * then prints bytes per connection by allocating function, and how young
 * generation grew.
 *
 *   node scripts/conn-alloc.ts [--conns 5000] [--top 40]
 *
 * Why it matters: the conns workload reads the server's peak RSS, and V8
 * grows its young generation (to 32 MB here, against 8 MB for the reference)
 * when many bytes survive scavenges — every byte a connection keeps survives
 * at least one. Per connection retained (`scripts/attack/heap-per-conn.ts`)
 * ~3.6 KB gave ~8 KB of RSS at 5,000 connections; 400 B less retained gave
 * ~1.4 KB less RSS.
 */
import { spawn } from "node:child_process";
import { Session } from "node:inspector/promises";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import v8 from "node:v8";
import { benchRoutes } from "../bench/lib/pointsub-routes.ts";
import { createServer } from "../src/index.ts";

const { values } = parseArgs({
  options: { conns: { type: "string", default: "5000" }, top: { type: "string", default: "40" } },
});
const N = Number(values.conns);
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const GiB = 1024 ** 3;
// As the bench's pointsub server.
const srv = createServer({ maxMessageSize: GiB, maxAssemblyBytes: GiB });
benchRoutes(srv);
const [url] = await srv.listen("tcp://127.0.0.1:0");

/** Starts the bench's client opening `n` connections; resolves once they are all open (it holds them until its stdin ends). */
async function open(n: number) {
  const params = { count: n, size: 64, inFlight: 100, largeSize: 0, pingEveryMs: 0 };
  const child = spawn(
    process.execPath,
    [join(root, "bench/impls/pointsub.ts"), "client", url, "conns", JSON.stringify(params)],
    {
      stdio: ["pipe", "pipe", "inherit"],
    },
  );
  const exited = new Promise((r) => child.once("exit", r));
  const killer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  for await (const line of createInterface({ input: child.stdout })) if (line.includes('"rate"')) break;
  return {
    close: async () => {
      child.stdin.end();
      await exited;
      clearTimeout(killer);
    },
  };
}

// The code compiled for connections is no per-connection cost: 500 first, dropped.
await (await open(500)).close();
await new Promise((r) => setTimeout(r, 500));
const young0 = v8.getHeapSpaceStatistics().find((s) => s.space_name === "new_space")?.space_size ?? 0;
const session = new Session();
session.connect();
await session.post("HeapProfiler.startSampling", {
  samplingInterval: 256,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true,
});
const clients = await open(N);
const { profile } = await session.post("HeapProfiler.stopSampling");
const young1 = v8.getHeapSpaceStatistics().find((s) => s.space_name === "new_space")?.space_size ?? 0;
await clients.close();

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}
const by = new Map<string, number>();
let total = 0;
const walk = (n: ProfileNode): void => {
  const f = n.callFrame;
  const where = f.url.replace(/^.*\/(src|bench|node_modules)\//, "$1/");
  const key = `${f.functionName || "(anonymous)"} ${where}:${f.lineNumber + 1}`;
  if (n.selfSize > 0) {
    by.set(key, (by.get(key) ?? 0) + n.selfSize);
    total += n.selfSize;
  }
  for (const c of n.children) walk(c);
};
walk(profile.head as ProfileNode);
const MB = 1024 * 1024;
console.log(`${N} connections: ${Math.round(total / N)} B allocated per connection (sampled, garbage included)`);
console.log(`young generation: ${(young0 / MB).toFixed(1)} MB before, ${(young1 / MB).toFixed(1)} MB after`);
for (const [k, v] of [...by].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top))) {
  console.log(`${String(Math.round(v / N)).padStart(7)} B  ${k}`);
}
session.disconnect();
await srv.close();
