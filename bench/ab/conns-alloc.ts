/**
 * What a pointsub bench server allocates per accepted connection, garbage
 * included, by function: V8's sampling heap profiler (objects collected by
 * scavenges and full GCs kept in the profile) over the conns or conns-req
 * workload of bench/run.ts, whose client runs in a child process. Garbage
 * per accept sets how often the young generation is scavenged
 * (`conns-gc.ts` shows what that does to the RSS per connection).
 *
 *   node bench/ab/conns-alloc.ts [checkout] [--workload conns|conns-req] [--count 3000] [--top 40] [--stacks]
 *
 * Prints the total sampled bytes per connection and the functions that
 * allocated most (with `--stacks`, also by the last three pointsub frames
 * of each site). A first 500 connections are opened and dropped before the
 * profile (compiling the code is not a per-connection cost). The client is
 * killed after 120 s at most.
 */
import { spawn } from "node:child_process";
import { Session } from "node:inspector/promises";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    workload: { type: "string", default: "conns" },
    count: { type: "string", default: "3000" },
    top: { type: "string", default: "40" },
    stacks: { type: "boolean", default: false },
  },
});
const dir = resolve(positionals[0] ?? ".");
const workload = values.workload;
const N = Number(values.count);
const top = Number(values.top);

interface Srv {
  listen(url: string): Promise<string[]>;
  close(): Promise<void>;
}
interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

const { createServer } = (await import(pathToFileURL(resolve(dir, "src/index.ts")).href)) as {
  createServer(o: object): Srv;
};
const { benchRoutes } = (await import(pathToFileURL(resolve(dir, "bench/lib/pointsub-routes.ts")).href)) as {
  benchRoutes(s: Srv): void;
};
const GiB = 2 ** 30;
// The bench server's limits (impls/pointsub.ts), with room for every connection from one address.
const srv = createServer({ maxConnectionsPerAddress: 1_000_000, maxMessageSize: GiB, maxAssemblyBytes: GiB });
benchRoutes(srv);
const [url] = await srv.listen("tcp://127.0.0.1:0");

/** Runs the bench client for `n` connections; resolves once it reported (it then holds them until killed). */
async function runClient(n: number) {
  const params = { count: n, size: workload === "conns-req" ? 64 : 0, inFlight: 100, largeSize: 0, pingEveryMs: 0 };
  const child = spawn(
    process.execPath,
    [resolve(dir, "bench/impls/pointsub.ts"), "client", url, workload, JSON.stringify(params)],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  const bound = setTimeout(() => child.kill("SIGKILL"), 120_000);
  const line = await createInterface({ input: child.stdout })[Symbol.asyncIterator]().next();
  if (line.done) throw new Error("the client produced no result");
  return () => {
    clearTimeout(bound);
    child.kill("SIGKILL");
  };
}

(await runClient(500))();
await new Promise((r) => setTimeout(r, 1500));
const session = new Session();
session.connect();
await session.post("HeapProfiler.enable");
await session.post("HeapProfiler.startSampling", {
  samplingInterval: 32,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true,
});
const stop = await runClient(N);
const { profile } = (await session.post("HeapProfiler.stopSampling")) as { profile: { head: ProfileNode } };
stop();

const byFunction = new Map<string, number>();
const bySite = new Map<string, number>();
let total = 0;
const short = (u: string) => u.replace("file://", "").replace(/^.*\/(src|bench|node_modules)\//, "$1/");
function walk(n: ProfileNode, path: string[]): void {
  const f = n.callFrame;
  const name = `${f.functionName || "(anonymous)"} ${short(f.url)}:${f.lineNumber + 1}`;
  const p = [...path, name];
  if (n.selfSize > 0) {
    total += n.selfSize;
    byFunction.set(name, (byFunction.get(name) ?? 0) + n.selfSize);
    const ours = p.filter((x) => x.includes("src/")).slice(-3);
    const site = `${name}  <=  ${(ours.length > 0 ? ours : p.slice(-3)).join(" < ")}`;
    bySite.set(site, (bySite.get(site) ?? 0) + n.selfSize);
  }
  for (const c of n.children) walk(c, p);
}
walk(profile.head, []);
const rows = (m: Map<string, number>) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, v]) => `${(v / N).toFixed(0).padStart(7)}  ${k}`)
    .join("\n");
console.log(`${dir} ${workload}, ${N} connections: ${(total / N).toFixed(0)} B allocated per connection (sampled)`);
console.log(rows(byFunction));
if (values.stacks) console.log(`\nby site:\n${rows(bySite)}`);
await srv.close();
process.exit(0);
