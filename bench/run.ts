/**
 * Benchmark orchestrator: for each workload and implementation, starts the
 * server and the client in separate processes on loopback, repeats, and
 * writes the medians (with min/max) to bench/results/*.jsonl and
 * docs/BENCHMARKS.md.
 *
 *   npm run bench                       # full run
 *   npm run bench -- --quick            # under two minutes
 *   npm run bench -- --impl pointsub,reference --workload flood,hol --reps 5
 *   npm run bench -- --workload files                # 1 GiB file to file only (bench/files.ts)
 *   npm run bench -- --workload broadcast            # 64 B to 1,000 connections only (bench/broadcast.ts)
 *   npm run bench -- --broadcast-clients 100 --broadcast-rounds 50 --broadcast-seconds 1   # a smaller broadcast
 *   npm run bench -- --workload hol-slow --impl pointsub,ws --large-size 67108864   # through shaped links (issue 17)
 *   npm run bench -- --workload hol-slow --link-rates 10000000 --link-rtt 10        # one link rate only
 *   npm run bench -- --max-seconds 0              # flood / rpc runs go to their full count (default: stop after 10 s, 3 s with --quick)
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { BROADCAST_DEFAULTS, BROADCAST_IMPLS, putSection, runBroadcastBench } from "./broadcast.ts";
import { runFileBench } from "./files.ts";
import { updateReadme } from "./headline.ts";
import type { ClientResult, Workload, WorkloadParams } from "./lib/role.ts";
import { startShaper } from "./lib/shaper.ts";
import { type Row, renderCharts, renderReport } from "./report.ts";

const here = dirname(fileURLToPath(import.meta.url));
const MiB = 1024 * 1024;

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    reps: { type: "string" },
    impl: { type: "string" },
    workload: { type: "string" },
    count: { type: "string" },
    "max-seconds": { type: "string" },
    "large-size": { type: "string" },
    "files-size": { type: "string" },
    "broadcast-clients": { type: "string" },
    "broadcast-rounds": { type: "string" },
    "broadcast-seconds": { type: "string" },
    "link-rates": { type: "string" },
    "link-rtt": { type: "string" },
    out: { type: "string" },
  },
});

const quick = values.quick === true;
interface Impl {
  file: string;
  args: string[];
  /** Workloads it cannot run, with the reason shown in the report. */
  skip?: Partial<Record<Workload, string>>;
  /** An executable it needs on PATH (a server the harness starts). */
  needs?: string;
}
const IMPLS: Record<string, Impl> = {
  reference: { file: "impls/reference.ts", args: [] },
  "reference-slab": { file: "impls/reference.ts", args: ["--slab"] },
  pointsub: { file: "impls/pointsub.ts", args: [] },
  "pointsub-unix": {
    file: "impls/pointsub.ts",
    args: ["--unix"],
    skip: { "hol-slow": "a unix socket: the shaping proxy is TCP" },
  },
  // pointsub over WebSocket (the ws package under it): next to ws on the same workloads (issue 14).
  "pointsub-ws": { file: "impls/pointsub.ts", args: ["--ws"] },
  // The server with pointsub/metrics subscribed to its diagnostics channels.
  "pointsub-metrics": { file: "impls/pointsub.ts", args: ["--metrics"] },
  // Requests through Client's pool (issue 11: no measurable cost over a direct connection).
  "pointsub-pool": {
    file: "impls/pointsub.ts",
    args: ["--pool"],
    skip: {
      flood: "one-way messages take a direct connection: same path as pointsub",
      large: "same path as pointsub (one request)",
      hol: "same path as pointsub",
      "hol-slow": "same path as pointsub",
      conns: "same path as pointsub",
      "conns-req": "same path as pointsub",
    },
  },
  // A middleware, rate limits never reached and metrics on every call (issue 12: ≤ 10 % of rpc-pipe).
  "pointsub-ops": {
    file: "impls/pointsub.ts",
    args: ["--ops"],
    skip: {
      large: "same path as pointsub (one request)",
      hol: "same path as pointsub",
      "hol-slow": "same path as pointsub",
      conns: "same path as pointsub",
      "conns-req": "same path as pointsub",
    },
  },
  // Plain length-prefix peers (lp+tcp://): one-way messages only (issue 15: flood ≥ 0.9x reference).
  "pointsub-lp": {
    file: "impls/pointsub-lp.ts",
    args: [],
    skip: {
      "rpc-seq": "the length-prefix format has no requests",
      "rpc-pipe": "the length-prefix format has no requests",
      large: "the length-prefix format has no requests (large is a request)",
      hol: "the length-prefix format has no requests or multiplexing",
      "hol-slow": "the length-prefix format has no requests or multiplexing",
    },
  },
  ws: { file: "impls/ws.ts", args: [] },
  "socket.io": { file: "impls/socketio.ts", args: [] },
  grpc: {
    file: "impls/grpc.ts",
    args: [],
    skip: { "conns-req": "not measured: the bench's extra gRPC connections have no request client" },
  },
  zeromq: {
    file: "impls/zeromq.ts",
    args: [],
    skip: {
      conns: "every zeromq socket takes several file descriptors; thousands exceed the process limit",
      "conns-req": "every zeromq socket takes several file descriptors; thousands exceed the process limit",
    },
  },
  libp2p: {
    file: "impls/libp2p.ts",
    args: [],
    skip: { "conns-req": "not measured: the bench's extra libp2p connections have no request client" },
  },
  // pointsub over a libp2p stream of the same stack (issue 15: ≥ 2x libp2p on rpc-pipe).
  "pointsub-libp2p": {
    file: "impls/pointsub-libp2p.ts",
    args: [],
    skip: {
      "conns-req": "not measured: the bench's extra libp2p connections have no request client",
      "hol-slow": "dialed by peer id: the shaping proxy cannot stand in for its address",
    },
  },
  "pointsub-libp2p-quic": {
    file: "impls/pointsub-libp2p.ts",
    args: ["--quic"],
    skip: {
      "conns-req": "not measured: the bench's extra libp2p connections have no request client",
      "hol-slow": "QUIC is UDP: the shaping proxy is TCP",
    },
  },
  nats: {
    file: "impls/nats.ts",
    args: [],
    skip: {
      large: "nats-server caps max_payload at 64 MiB",
      hol: "nats-server caps max_payload at 64 MiB",
      "hol-slow": "nats-server caps max_payload at 64 MiB",
      conns: "connections end at nats-server, a separate process whose memory the harness does not sample",
      "conns-req": "connections end at nats-server, a separate process whose memory the harness does not sample",
    },
    needs: "nats-server",
  },
};
/**
 * flood: 5,000,000 messages (1,000,000 before session 21). Over 1,000,000 (0.1–0.3 s)
 * reference-slab's rate was bimodal — 8.5–12.6M msgs/s in most runs, 2.8–4.5M in a third
 * of them, on a quiet machine alike: in the slow runs its client (a new 64 KiB slab per
 * 32 KiB written, freed only by V8's GC) touched ~45 MB of fresh memory (+9–12k minor
 * page faults, fewer scavenges, +100 ms user and +120 ms system CPU), a one-off cost as
 * long as the fast runs themselves. Over 5,000,000 that cost is a few per cent: 12 of 12
 * runs at 8.5–18M (the high ones when the two processes had a core each). On a loaded
 * machine the two processes share the cores and a flood's rate is about 1 / (client CPU +
 * server CPU per message): the CPU columns (client: the measured part; server: the whole
 * run) move far less with the load than rates do — compare builds by them.
 */
const WORKLOADS: Record<Workload, WorkloadParams> = {
  flood: { count: quick ? 200_000 : 5_000_000, size: 64, inFlight: 1, largeSize: 0, pingEveryMs: 0 },
  "rpc-seq": { count: quick ? 5_000 : 20_000, size: 64, inFlight: 1, largeSize: 0, pingEveryMs: 0 },
  "rpc-pipe": { count: quick ? 50_000 : 200_000, size: 64, inFlight: 128, largeSize: 0, pingEveryMs: 0 },
  large: { count: 1, size: 64, inFlight: 1, largeSize: (quick ? 64 : 256) * MiB, pingEveryMs: 0 },
  hol: { count: 1, size: 64, inFlight: 1, largeSize: (quick ? 64 : 256) * MiB, pingEveryMs: 10 },
  // hol through shaped links (bench/lib/shaper.ts): one row per rate of --link-rates.
  "hol-slow": { count: 1, size: 64, inFlight: 1, largeSize: (quick ? 16 : 256) * MiB, pingEveryMs: 10 },
  conns: { count: quick ? 2_000 : 5_000, size: 0, inFlight: 100, largeSize: 0, pingEveryMs: 0 },
  "conns-req": { count: quick ? 2_000 : 5_000, size: 64, inFlight: 100, largeSize: 0, pingEveryMs: 0 },
};
const reps = Number(values.reps ?? (quick ? 1 : 3));
const impls = (
  values.impl ??
  "reference,reference-slab,pointsub,pointsub-unix,pointsub-lp,pointsub-ws,ws,socket.io,grpc,zeromq,nats,libp2p,pointsub-libp2p"
).split(",");
const requested = (values.workload ?? [...Object.keys(WORKLOADS), "broadcast", "files"].join(",")).split(",");
/** `files` (bench/files.ts: 1 GiB file to file) is not per-implementation; it runs after the rest. */
const runFiles = requested.includes("files");
/**
 * `broadcast` (bench/broadcast.ts) is driven by the server, not by one client connection, so it has its own
 * driver and implementations (pointsub, pointsub-unawaited, ws, raw node:net); it runs after the rest.
 */
const runBroadcast = requested.includes("broadcast");
const workloads = requested.filter((w) => w !== "files" && w !== "broadcast") as Workload[];
/** hol-slow: the link rates (bytes/s, each way) and the round-trip time (ms) of the shaping proxy. */
const linkRates = (values["link-rates"] ?? "100000000,10000000").split(",").map(Number);
const linkRttMs = Number(values["link-rtt"] ?? 10);
/** Each workload with its parameters; hol-slow once per link rate. */
const cases: { workload: Workload; params: WorkloadParams }[] = workloads.flatMap(
  (workload): { workload: Workload; params: WorkloadParams }[] => {
    if (WORKLOADS[workload] === undefined) throw new Error(`unknown workload ${workload}`);
    const params = { ...WORKLOADS[workload] };
    if (values.count !== undefined && params.count > 1) params.count = Number(values.count);
    if (values["large-size"] !== undefined && params.largeSize > 0) params.largeSize = Number(values["large-size"]);
    // The measured part of flood / rpc-seq / rpc-pipe stops after this long (0: at `count` only).
    if (workload === "flood" || workload === "rpc-seq" || workload === "rpc-pipe") {
      params.maxSeconds = Number(values["max-seconds"] ?? (quick ? 3 : 10));
    }
    if (workload !== "hol-slow") return [{ workload, params }];
    return linkRates.map((linkRate) => ({ workload, params: { ...params, linkRate, linkRttMs } }));
  },
);

/**
 * The URL the client dials through a shaping proxy in front of the server's
 * `url` (its loopback TCP port replaced by the proxy's).
 */
function proxiedUrl(url: string, port: number): string {
  const tcp = /(127\.0\.0\.1:|\/ip4\/127\.0\.0\.1\/tcp\/)(\d+)/;
  if (!tcp.test(url)) throw new Error(`cannot put a shaping proxy in front of ${url}`);
  return url.replace(tcp, `$1${port}`);
}

function serverPort(url: string): number {
  const m = /(?:127\.0\.0\.1:|\/ip4\/127\.0\.0\.1\/tcp\/)(\d+)/.exec(url);
  if (m === null) throw new Error(`cannot put a shaping proxy in front of ${url}`);
  return Number(m[1]);
}

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? "").split(":").some((d) => existsSync(join(d, cmd)));
}

/** Installs a missing server from Debian's packages when running as root (a fresh machine needs nothing by hand). */
function ensureInstalled(cmd: string): boolean {
  if (onPath(cmd)) return true;
  if (process.getuid?.() !== 0 || !onPath("apt-get")) return false;
  console.error(`installing ${cmd} with apt-get…`);
  const r = spawnSync("apt-get", ["install", "-y", "--no-install-recommends", cmd], {
    stdio: ["ignore", "ignore", "inherit"],
    timeout: 300_000,
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  return r.status === 0 && onPath(cmd);
}

function lines(child: ReturnType<typeof spawn>): AsyncIterator<string> {
  return createInterface({ input: child.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
}

async function runOnce(impl: string, workload: Workload, params: WorkloadParams): Promise<Row["runs"][number]> {
  const def = IMPLS[impl];
  const file = join(here, def.file);
  const server = spawn(process.execPath, [file, "server", ...def.args], { stdio: ["pipe", "pipe", "inherit"] });
  const sl = lines(server);
  // A server that never prints its URL is killed after 60 s (its line then never comes: done).
  const startTimer = setTimeout(() => server.kill("SIGKILL"), 60_000);
  const first = await sl.next().finally(() => clearTimeout(startTimer));
  if (first.done) throw new Error(`${impl} ${workload}: server printed no URL`);
  const { url: serverUrl, rss: serverStartRss } = JSON.parse(first.value as string) as { url: string; rss: number };
  // hol-slow: a shaping proxy (in this process) between the two, half the round-trip time each way.
  const rate = params.linkRate ?? 0;
  const half = { rate, delayMs: (params.linkRttMs ?? 0) / 2 };
  const shaper = rate > 0 ? await startShaper(serverPort(serverUrl), half, half) : undefined;
  const url = shaper === undefined ? serverUrl : proxiedUrl(serverUrl, shaper.port);
  // conns: the client holds its connections until its stdin ends, after the server reported (below).
  const holds = workload === "conns" || workload === "conns-req";
  const client = spawn(process.execPath, [file, "client", url, workload, JSON.stringify(params), ...def.args], {
    stdio: [holds ? "pipe" : "ignore", "pipe", "inherit"],
  });
  // Listen for the exit at once: a client may finish before we would look.
  const clientExited = new Promise((r) => client.once("exit", r).once("error", r));
  const serverExited = new Promise((r) => server.once("exit", r).once("error", r));
  // Every run is bounded: SIGKILL for both processes after 300 s, and for either one
  // that has not exited 10 s after its part was done (a client spinning after its
  // result, a server whose close hangs).
  const killBoth = () => {
    client.kill("SIGKILL");
    server.kill("SIGKILL");
  };
  const timeout = setTimeout(killBoth, 300_000);
  const killLater = (child: ReturnType<typeof spawn>, exited: Promise<unknown>) => {
    const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
    return exited.finally(() => clearTimeout(t));
  };
  running.add(killBoth);
  try {
    const cl = lines(client);
    const res = await cl.next();
    if (res.done) throw new Error(`${impl} ${workload}: client produced no result`);
    const result = JSON.parse(res.value) as ClientResult;
    const clientDone = killLater(client, clientExited);
    server.stdin?.write("report\n");
    const rep = await sl.next();
    const srv = rep.done
      ? undefined
      : (JSON.parse(rep.value) as { peakRss: number; cpuUs?: number; youngGen?: number });
    const serverPeakRss = srv?.peakRss ?? Number.NaN;
    // The server's CPU per message or request over the whole run (warm-up included; connection setup is noise).
    const serverCpuUsPerMsg =
      srv?.cpuUs !== undefined && result.messages !== undefined && result.messages > 0
        ? srv.cpuUs / result.messages
        : undefined;
    client.stdin?.end();
    await Promise.all([clientDone, killLater(server, serverExited)]);
    return {
      ...result,
      serverPeakRss,
      serverStartRss,
      ...(serverCpuUsPerMsg === undefined ? {} : { serverCpuUsPerMsg }),
      ...(srv?.youngGen === undefined ? {} : { serverYoungGen: srv.youngGen }),
    };
  } finally {
    await shaper?.close();
    clearTimeout(timeout);
    running.delete(killBoth);
    if (client.exitCode === null && client.signalCode === null) client.kill("SIGKILL");
    if (server.exitCode === null && server.signalCode === null) server.kill("SIGKILL");
  }
}

/** Kills of the runs in progress: the orchestrator ending (or interrupted) ends its children too. */
const running = new Set<() => void>();
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    for (const k of running) k();
    process.exit(130);
  });
}
process.once("exit", () => {
  for (const k of running) k();
});

const rows: Row[] = [];
const started = new Date();
for (const { workload, params } of cases) {
  const runnable: { impl: string; runs: Row["runs"] }[] = [];
  const byImpl = new Map<string, Row>();
  for (const impl of impls) {
    const def = IMPLS[impl];
    if (def === undefined) throw new Error(`unknown implementation ${impl}`);
    const why =
      def.skip?.[workload] ??
      (def.needs !== undefined && !ensureInstalled(def.needs) ? `${def.needs} not installed` : undefined);
    const row: Row = { impl, workload, params, runs: [], ...(why === undefined ? {} : { note: why }) };
    byImpl.set(impl, row);
    if (why === undefined) runnable.push({ impl, runs: row.runs });
  }
  // Repetitions interleave the implementations (A B C, A B C, ...), so a
  // machine that slows down for a while weighs on all of them alike.
  for (let r = 0; r < reps; r++) {
    for (const { impl, runs } of runnable) {
      try {
        runs.push(await runOnce(impl, workload, params));
      } catch (err) {
        console.error(`${impl} ${workload}: ${(err as Error).message}`);
      }
    }
  }
  for (const impl of impls) {
    const row = byImpl.get(impl) as Row;
    rows.push(row);
    if (row.note === undefined)
      console.log(JSON.stringify({ impl, workload, linkRate: params.linkRate, runs: row.runs.map((x) => ({ ...x })) }));
  }
}

const machine = {
  date: started.toISOString(),
  node: process.version,
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model ?? "unknown",
  load: loadavg()
    .map((l) => l.toFixed(2))
    .join(" "),
  quick,
  reps,
};
const resultsDir = values.out === undefined ? join(here, "results") : join(dirname(values.out), "results");
mkdirSync(resultsDir, { recursive: true });
const stamp = started.toISOString().replace(/[:.]/g, "-");
writeFileSync(
  join(resultsDir, `${stamp}.jsonl`),
  `${[JSON.stringify({ machine }), ...rows.map((r) => JSON.stringify(r))].join("\n")}\n`,
);
const out = values.out ?? join(here, "..", "docs", "BENCHMARKS.md");
const chartDir = join(dirname(out), "bench");
mkdirSync(chartDir, { recursive: true });
if (workloads.length > 0) {
  for (const [w, svg] of Object.entries(renderCharts(rows))) writeFileSync(join(chartDir, `${w}.svg`), svg);
}
// Only sections that are not per-implementation (broadcast, files): put them into the existing report.
const sectionsOnly = workloads.length === 0 && existsSync(out);
let report = sectionsOnly ? readFileSync(out, "utf8") : renderReport(machine, rows);
// --impl narrows broadcast's own implementations too: reference selects raw node:net, pointsub both pointsub variants.
const broadcastImpls = BROADCAST_IMPLS.filter(
  (b) =>
    values.impl === undefined ||
    impls.includes(b) ||
    (b === "raw" && impls.includes("reference")) ||
    (b === "pointsub-unawaited" && impls.includes("pointsub")),
);
if (runBroadcast && broadcastImpls.length > 0) {
  const params = {
    ...BROADCAST_DEFAULTS,
    ...(quick ? { rounds: 100, seconds: 1 } : {}),
    ...(values["broadcast-clients"] === undefined ? {} : { clients: Number(values["broadcast-clients"]) }),
    ...(values["broadcast-rounds"] === undefined ? {} : { rounds: Number(values["broadcast-rounds"]) }),
    ...(values["broadcast-seconds"] === undefined ? {} : { seconds: Number(values["broadcast-seconds"]) }),
  };
  const section = await runBroadcastBench(broadcastImpls, params, reps);
  report = putSection(report, "## Broadcast", section);
}
if (runFiles) {
  const size = Number(values["files-size"] ?? (quick ? 256 : 1024) * MiB);
  const section = await runFileBench(size, values.reps !== undefined || quick ? reps : Math.max(reps, 5));
  report = sectionsOnly ? putSection(report, "## File to file over tcp", section) : `${report.trimEnd()}\n\n${section}`;
}
writeFileSync(out, report);
console.log(`wrote ${out}`);
// The README's headline figures come from this report (bench/headline.ts).
if (values.out === undefined) updateReadme();
