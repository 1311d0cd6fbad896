/**
 * Where the time of a small-message workload goes (issue 17): runs one
 * implementation's server and client (the same processes bench/run.ts
 * starts) under `node --cpu-prof`, then prints each side's CPU per message
 * and its functions by self time — startup (module loading and compiling)
 * left out, so what remains is the per-message work.
 *
 *   node bench/profile.ts --impl pointsub --workload flood
 *   node bench/profile.ts --impl reference --slab --workload rpc-pipe --count 600000 --top 40
 *   node bench/profile.ts --impl pointsub --workload flood --out /tmp/prof   # keeps the .cpuprofile files
 *
 * `--impl` names a file of bench/impls (`pointsub`, `reference`, …); `--slab`
 * is passed on (reference-slab). The figures come from a profiled run (the
 * profiler costs some 10-20 %) and from whatever else loads the machine:
 * compare implementations or builds by their shares and by runs taken one
 * after the other, not by one run's absolute times.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { ClientResult, Workload, WorkloadParams } from "./lib/role.ts";

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    impl: { type: "string", default: "pointsub" },
    workload: { type: "string", default: "flood" },
    count: { type: "string" },
    top: { type: "string", default: "30" },
    out: { type: "string" },
    slab: { type: "boolean", default: false },
  },
});

const DEFAULTS: Partial<Record<Workload, WorkloadParams>> = {
  flood: { count: 5_000_000, size: 64, inFlight: 1, largeSize: 0, pingEveryMs: 0 },
  "rpc-pipe": { count: 1_000_000, size: 64, inFlight: 128, largeSize: 0, pingEveryMs: 0 },
  "rpc-seq": { count: 50_000, size: 64, inFlight: 1, largeSize: 0, pingEveryMs: 0 },
  // One 256 MiB request (its "per message" figures are the whole transfer's).
  large: { count: 1, size: 64, inFlight: 1, largeSize: 256 * 1024 * 1024, pingEveryMs: 0 },
  // Connections opened 100 at a time and held (the client lets go at once: its standard input is empty).
  conns: { count: 5_000, size: 0, inFlight: 100, largeSize: 0, pingEveryMs: 0 },
  "conns-req": { count: 5_000, size: 64, inFlight: 100, largeSize: 0, pingEveryMs: 0 },
};
const workload = values.workload as Workload;
const base = DEFAULTS[workload];
if (base === undefined) throw new Error(`profile.ts runs ${Object.keys(DEFAULTS).join(", ")}`);
const params: WorkloadParams = { ...base, maxSeconds: 60 };
if (values.count !== undefined) params.count = Number(values.count);
const file = join(here, "impls", `${values.impl}.ts`);
const extra = values.slab ? ["--slab"] : [];
const out = values.out ?? mkdtempSync(join(tmpdir(), "pointsub-profile-"));
const prof = (name: string) => ["--cpu-prof", `--cpu-prof-dir=${out}`, `--cpu-prof-name=${name}.cpuprofile`];

const server = spawn(process.execPath, [...prof("server"), file, "server", ...extra], {
  stdio: ["pipe", "pipe", "inherit"],
});
const serverExit = new Promise((r) => server.once("exit", r));
let client: ChildProcess | undefined;
// Bounded like bench/run.ts: both processes are killed after 10 minutes.
const kill = setTimeout(() => {
  server.kill("SIGKILL");
  client?.kill("SIGKILL");
}, 600_000);
const sl = createInterface({ input: server.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
const first = await sl.next();
if (first.done) throw new Error("the server printed no URL");
const { url } = JSON.parse(first.value as string) as { url: string };
const c = spawn(
  process.execPath,
  [...prof("client"), file, "client", url, workload, JSON.stringify(params), ...extra],
  {
    stdio: ["ignore", "pipe", "inherit"],
  },
);
client = c;
const clientExit = new Promise((r) => c.once("exit", r));
const cl = createInterface({ input: c.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
const line = await cl.next();
if (line.done) throw new Error("the client produced no result");
const result = JSON.parse(line.value as string) as ClientResult;
await clientExit;
server.stdin?.write("report\n");
const rep = await sl.next();
const serverCpuUs = rep.done ? undefined : (JSON.parse(rep.value as string) as { cpuUs?: number }).cpuUs;
await serverExit;
clearTimeout(kill);

const perMsg = (us: number | undefined, n: number | undefined) =>
  us === undefined || n === undefined || n === 0 ? "?" : `${(us / n).toFixed(3)} µs`;
console.log(
  `${values.impl}${values.slab ? " --slab" : ""} ${workload}: ${Math.round(result.rate ?? 0).toLocaleString("en-US")}/s (profiled)` +
    `, client CPU ${perMsg(result.cpuUsPerMsg, 1)} per message (measured part)` +
    `, server CPU ${perMsg(serverCpuUs, result.messages)} per message (whole run)`,
);

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
/** Frames of startup (loading and compiling modules, TypeScript stripping): left out. */
const STARTUP =
  /node:internal\/(modules|bootstrap|deps\/amaro|main|process\/pre_execution)|^wasm|^Module$|ModuleWrap|compileSourceTextModule/;

function summarize(path: string, top: number): void {
  const p = JSON.parse(readFileSync(path, "utf8")) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const name = (n: ProfileNode) => {
    const f = n.callFrame;
    const where = f.url.replace(/^.*?\/(src|bench)\//, "$1/").replace(/^file:\/\//, "");
    return `${f.functionName || "(anonymous)"}${where === "" ? "" : ` ${where}:${f.lineNumber + 1}`}`;
  };
  /** Whether a sample's stack is startup work (any frame of it). */
  const startup = new Map<number, boolean>();
  const isStartup = (id: number): boolean => {
    let s = startup.get(id);
    if (s !== undefined) return s;
    const n = byId.get(id) as ProfileNode;
    const f = n.callFrame;
    const up = parent.get(id);
    s = STARTUP.test(f.url) || STARTUP.test(f.functionName) || (up !== undefined && isStartup(up));
    startup.set(id, s);
    return s;
  };
  const self = new Map<string, number>();
  let total = 0;
  let idle = 0;
  let skipped = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i];
    const dt = p.timeDeltas[i] ?? 0;
    const n = byId.get(id) as ProfileNode;
    if (n.callFrame.functionName === "(idle)") {
      idle += dt;
      continue;
    }
    if (isStartup(id)) {
      skipped += dt;
      continue;
    }
    total += dt;
    const k = name(n);
    self.set(k, (self.get(k) ?? 0) + dt);
  }
  const ms = (us: number) => `${(us / 1000).toFixed(0)} ms`;
  console.log(`\n${path}: ${ms(total)} busy (${ms(idle)} idle, ${ms(skipped)} startup left out)`);
  for (const [k, t] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${((100 * t) / total).toFixed(1).padStart(5)} % ${ms(t).padStart(8)}  ${k}`);
  }
}

const top = Number(values.top);
summarize(join(out, "client.cpuprofile"), top);
summarize(join(out, "server.cpuprofile"), top);
if (values.out === undefined) rmSync(out, { recursive: true, force: true });
