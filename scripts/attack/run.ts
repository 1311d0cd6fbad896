/**
 * Attack runner: what pointsub promises under hostile peers, measured over
 * real loopback sockets.
 *
 *   npm run test:attack                       # full run (~1M fuzzed frames, every attack), < ~10 min
 *   npm run test:attack -- --quick            # ~20k fuzzed frames, short attacks, < 2 min
 *   npm run test:attack -- --only fuzz,bomb-zstd --frames 200000
 *   npm run test:attack -- --server-options '{"maxConnections":500}' --out /tmp/a.json
 *   npm run test:attack -- --list                         # the scenarios
 *
 * Other knobs: --mutate-rate (byte-level mutation rate of the most hostile fuzz
 * connections, default 0.25; the others scale it down), --seed, --bomb-format
 * auto|plain|length-prefixed, --rss-bound-mib, --rss-kill-mib, --max-eld-ms,
 * --max-p99-ms, --max-honest-errors, --max-cpu-after-pct, --skip a,b,
 * "--server-node-args=--cpu-prof --cpu-prof-dir=/tmp/prof", --big-rate-mb (the
 * big-abandon scenarios' rate cap, MiB/s, default 16; 0: none), --pin (the server
 * on CPU 0, attackers and the honest client on the other CPUs — as on
 * separate machines: a 2-core box otherwise measures the attacker's CPU
 * use as the server's event-loop delay; needs taskset).
 *
 * Every scenario gets a fresh server in a child process (scripts/attack/server.ts,
 * which reports its RSS, heap and event-loop delay every 100 ms), a fresh
 * attack worker thread (scripts/attack/attacks.ts) and, on this process's
 * main thread, an honest client sending small echo requests one at a time
 * throughout. The run fails (exit 1) when any scenario breaks a threshold:
 * server event-loop delay, honest p99 latency and errors, server alive and
 * serving afterwards, sessions released, RSS growth, wire-level correctness.
 */
import { type ChildProcess, fork, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import { type Connection, connect, isPointSubError } from "../../src/index.ts";
import { type CompressedFormat, detectCompressedFormat } from "../../test/helpers/attacker.ts";
import {
  type AttackParams,
  type AttackResult,
  DISCARD_ROUTE,
  ECHO_ROUTE,
  type ServerChildConfig,
  type ServerMessage,
  type ServerStats,
  type WorkerMessage,
} from "./common.ts";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const MIB = 1024 * 1024;

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    frames: { type: "string" },
    "fuzz-seconds": { type: "string" },
    "mutate-rate": { type: "string", default: "0.25" },
    out: { type: "string", default: "/tmp/pointsub-attack.json" },
    only: { type: "string" },
    skip: { type: "string" },
    seed: { type: "string", default: "1" },
    "server-options": { type: "string", default: "{}" },
    // The budget (1 GiB) plus the documented constant (docs/SECURITY.md, "Promise"): 128 MiB.
    "rss-bound-mib": { type: "string", default: String(1024 + 128) },
    "rss-kill-mib": { type: "string", default: String(6 * 1024) },
    "max-eld-ms": { type: "string", default: "50" },
    "max-p99-ms": { type: "string", default: "100" },
    "max-honest-errors": { type: "string", default: "0" },
    "max-cpu-after-pct": { type: "string", default: "50" },
    "bomb-format": { type: "string", default: "auto" },
    "server-node-args": { type: "string", default: "" },
    list: { type: "boolean", default: false },
    pin: { type: "boolean", default: false },
    "big-rate-mb": { type: "string" },
  },
});

/** --pin: this process (attack workers, honest client) off CPU 0, which each server gets to itself. */
if (args.pin === true) {
  const others = spawnSync("nproc", { encoding: "utf8" }).stdout.trim();
  const n = Number(others);
  if (!(n >= 2)) throw new Error("--pin needs at least 2 CPUs");
  const r = spawnSync("taskset", ["-a", "-p", "-c", `1-${n - 1}`, String(process.pid)], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`--pin: taskset failed: ${r.stderr}`);
}

const quick = args.quick === true;
const seed = Number(args.seed);
const thresholds = {
  maxEldMs: Number(args["max-eld-ms"]),
  maxP99Ms: Number(args["max-p99-ms"]),
  maxHonestErrors: Number(args["max-honest-errors"]),
  maxCpuAfterPct: Number(args["max-cpu-after-pct"]),
  rssGrowthBytes: Number(args["rss-bound-mib"]) * MIB,
};
const rssKillBytes = Number(args["rss-kill-mib"]) * MIB;
const serverOptions = JSON.parse(args["server-options"] ?? "{}") as Record<string, unknown>;

const protocolMd = readFileSync(join(root, "docs", "PROTOCOL.md"), "utf8");
const bombFormat: CompressedFormat =
  args["bomb-format"] === "plain" || args["bomb-format"] === "length-prefixed"
    ? args["bomb-format"]
    : detectCompressedFormat(protocolMd);

// ---------------------------------------------------------------- scenarios

interface Scenario {
  name: string;
  what: string;
  /** Pause between the honest client's requests (default 2 ms). */
  honestGapMs?: number;
  attack: Omit<AttackParams, "port" | "seed" | "scenario"> & { scenario?: string };
}

const s = (full: number, q: number) => (quick ? q : full);
const fuzzFrames = args.frames !== undefined ? Number(args.frames) : s(1_000_000, 20_000);

/** big-abandon: the declared length (the server's maxMessageSize) and the attacker's rate. */
const maxMessageSize = typeof serverOptions.maxMessageSize === "number" ? serverOptions.maxMessageSize : 256 * MIB;
const bigRate = Number(args["big-rate-mb"] ?? "16") * MIB;

const SCENARIOS: Scenario[] = [
  {
    name: "control",
    what: "no attack: two well-behaved clients pipelining small echo requests (what load alone costs here)",
    attack: { durationMs: s(5000, 2000) },
  },
  {
    name: "fuzz",
    what: `frame-aware mutation fuzzer, ${fuzzFrames} frames over 8 connections at a time`,
    honestGapMs: quick ? 2 : 10,
    attack: {
      frames: fuzzFrames,
      conns: 8,
      mutateRate: Number(args["mutate-rate"]),
      durationMs: Number(args["fuzz-seconds"] ?? s(330, 60)) * 1000,
      compressedFormat: bombFormat,
    },
  },
  {
    name: "dup-req-id",
    what: "two REQ (or START) frames with the same id, first answer queued",
    attack: { durationMs: s(8000, 3000), conns: 4 },
  },
  {
    name: "id-collision",
    what: "ids 1/0x80000001 and base+2^k, cancels and streams among them; answers checked per id",
    attack: { durationMs: s(8000, 3000), conns: 2 },
  },
  {
    name: "ping-flood-noread",
    what: "PING flood from a client whose socket is paused",
    attack: { durationMs: s(10_000, 4000), conns: 1 },
  },
  {
    name: "batch-flood",
    what: "BATCH frames of maxFrameSize packed with empty one-way messages (~350,000 per frame), 2 clients",
    attack: { durationMs: s(8000, 3000), conns: 2 },
  },
  {
    name: "missing-route-noread",
    what: "requests to a missing route; one client paused, one granting no credit",
    attack: { durationMs: s(10_000, 4000) },
  },
  {
    name: "echo-16mib-noread",
    what: "16 MiB echo requests; one client paused, one granting no credit",
    attack: { durationMs: s(10_000, 4000), maxBytes: s(4096, 1536) * MIB },
  },
  ...(["deflate-raw", "gzip", "zstd", "brotli"] as const).map(
    (codec): Scenario => ({
      name: `bomb-${codec}`,
      what: `STREAM to ${DISCARD_ROUTE}, ${codec} COMPRESSED frames declaring maxFrameSize, as dense as maxCompressionRatio allows (${bombFormat}), within the credit granted, 2x8 streams`,
      attack: { scenario: "bomb", codec, compressedFormat: bombFormat, durationMs: s(6000, 2500), conns: 2 },
    }),
  ),
  {
    name: "bomb-refused",
    what: "COMPRESSED frames declaring beyond maxCompressionRatio, over maxFrameSize, 0 or a 5-byte varint, every codec, 32 per connection: GOAWAY ERR_COMPRESSION / ERR_PROTOCOL expected",
    attack: { scenario: "bomb-refused", compressedFormat: bombFormat, durationMs: s(6000, 2500), conns: 4 },
  },
  {
    name: "bomb-lie",
    what: "COMPRESSED frames within the limits whose block inflates to 16x maxFrameSize (declared <= 64 KiB), to ~1 KiB (declared maxFrameSize) or not at all, after 0..2 honest frames: each stream must fail with ERR_PROTOCOL, connection kept",
    attack: { scenario: "bomb-lie", compressedFormat: bombFormat, durationMs: s(8000, 3000), conns: 2 },
  },
  {
    name: "bomb-file-sink",
    what: `zstd within-ratio bombs into the file sink (${bombFormat}), at most ${s(4, 1)} GiB inflated`,
    attack: {
      scenario: "bomb",
      codec: "zstd",
      route: "/pointsub/file/1.0.0",
      compressedFormat: bombFormat,
      durationMs: s(6000, 2500),
      conns: 1,
      maxBytes: s(4096, 1024) * MIB,
    },
  },
  {
    name: "unfinished-chunks",
    what: "80,000 unfinished 4 KiB chunked messages (START only) on each of 4 connections",
    attack: { durationMs: s(12_000, 8000), conns: 4, count: 80_000, size: 4096 },
  },
  ...(
    [
      ["big-abandon-cancel", "cancel", 1, 32 * 1024, "a 1-byte START and a 32 KiB chunk, then CANCEL"],
      ["big-abandon-start", "cancel", 32 * 1024, 0, "a 32 KiB START, then CANCEL"],
      ["big-abandon-reconnect", "reconnect", 1, 32 * 1024, "a 1-byte START and a 32 KiB chunk, then a new connection"],
      ["big-abandon-control", "complete", 1, 32 * 1024, "(control) the same bytes as whole 32 KiB messages"],
    ] as const
  ).map(
    ([name, abandon, firstBytes, chunkBytes, how]): Scenario => ({
      name,
      what: `chunked MSGs declaring maxMessageSize: ${how}, at most ${bigRate / MIB} MiB/s over 2 connections (GC amplification: the receiver allocates the whole declared length)`,
      attack: {
        scenario: "big-abandon",
        abandon,
        durationMs: s(10_000, 4000),
        conns: 2,
        size: maxMessageSize,
        firstBytes,
        chunkBytes,
        bytesPerSecond: bigRate,
      },
    }),
  ),
  {
    name: "slowloris",
    what: `${s(4000, 1000)} connections sending the preface only or nothing, reopened when closed`,
    attack: { durationMs: s(12_000, 4000), conns: s(4000, 1000) },
  },
];

// ---------------------------------------------------------- server child

interface ServerHandle {
  child: ChildProcess;
  url: string;
  port: number;
  sinkDir: string;
  stats: ServerStats[];
  exited: { code: number | null; signal: string | null } | undefined;
  fatal: string | undefined;
  killedByRunner: string | undefined;
  stderrTail: string;
  exitedP: Promise<void>;
}

async function startServer(): Promise<ServerHandle> {
  const sinkDir = mkdtempSync(join(tmpdir(), "pointsub-attack-sink-"));
  const config: ServerChildConfig = { server: serverOptions, sinkDir, reportMs: 100 };
  const child = fork(join(here, "server.ts"), [JSON.stringify(config)], {
    stdio: ["ignore", process.env.POINTSUB_ATTACK_SERVER_STDOUT === "1" ? "inherit" : "ignore", "pipe", "ipc"],
    execArgv: (args["server-node-args"] ?? "").split(" ").filter((a) => a !== ""),
  });
  if (args.pin === true && child.pid !== undefined) {
    const r = spawnSync("taskset", ["-a", "-p", "-c", "0", String(child.pid)], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`--pin: taskset failed: ${r.stderr}`);
  }
  let ready!: (m: { url: string }) => void;
  let failed!: (e: Error) => void;
  const readyP = new Promise<{ url: string }>((res, rej) => {
    ready = res;
    failed = rej;
  });
  const h: ServerHandle = {
    child,
    url: "",
    port: 0,
    sinkDir,
    stats: [],
    exited: undefined,
    fatal: undefined,
    killedByRunner: undefined,
    stderrTail: "",
    exitedP: new Promise<void>((r) => child.once("exit", () => r())),
  };
  child.stderr?.on("data", (c: Buffer) => {
    h.stderrTail = (h.stderrTail + c.toString("utf8")).slice(-4000);
  });
  child.on("message", (raw: unknown) => {
    const m = raw as ServerMessage;
    if (m.type === "ready") ready(m);
    else if (m.type === "fatal") h.fatal = m.error;
    else if (m.type === "stats") {
      h.stats.push(m);
      if (m.rss > rssKillBytes && h.killedByRunner === undefined) {
        h.killedByRunner = `RSS ${mib(m.rss)} MiB over the safety cap of ${mib(rssKillBytes)} MiB`;
        child.kill("SIGKILL");
      }
    }
  });
  child.once("exit", (code, signal) => {
    h.exited = { code, signal };
    failed(new Error(`server exited during startup (${code ?? signal}): ${h.stderrTail}`));
  });
  // Not started in time (a loaded machine): killed, or the child would keep this runner alive.
  const timer = setTimeout(() => {
    child.kill("SIGKILL");
    failed(new Error("server did not start within 60 s"));
  }, 60_000);
  const m = await readyP.finally(() => clearTimeout(timer));
  h.url = m.url;
  h.port = Number(new URL(m.url).port);
  return h;
}

async function stopServer(h: ServerHandle): Promise<void> {
  if (h.exited === undefined) {
    if (h.child.connected) h.child.send({ type: "stop" });
    const t = setTimeout(() => h.child.kill("SIGKILL"), 3000);
    await h.exitedP;
    clearTimeout(t);
  }
  rmSync(h.sinkDir, { recursive: true, force: true });
}

/** Resolves with the next stats report (or undefined after `ms`). */
function nextStats(h: ServerHandle, ms = 1000): Promise<ServerStats | undefined> {
  const n = h.stats.length;
  return new Promise((resolve) => {
    const until = Date.now() + ms;
    const poll = () => {
      if (h.stats.length > n) resolve(h.stats[h.stats.length - 1]);
      else if (Date.now() > until || h.exited !== undefined) resolve(undefined);
      else setTimeout(poll, 10);
    };
    poll();
  });
}

// --------------------------------------------------------- honest client

interface Honest {
  latencies: number[];
  errors: number;
  errorCodes: Record<string, number>;
  reconnects: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function honestLoop(
  url: string,
  first: Connection,
  stop: { stop: boolean },
  gapMs: number,
  max = 5000,
): Promise<Honest> {
  const out: Honest = { latencies: [], errors: 0, errorCodes: {}, reconnects: 0 };
  const fail = (code: string) => {
    out.errors++;
    out.errorCodes[code] = (out.errorCodes[code] ?? 0) + 1;
  };
  return (async () => {
    let conn: Connection | undefined = first;
    let n = 0;
    while (!stop.stop && n < max) {
      if (conn === undefined || conn.state !== "open") {
        try {
          out.reconnects++;
          conn = await connect(url, { connectTimeoutMs: 5000, requestTimeoutMs: 5000 });
        } catch (err) {
          fail(isPointSubError(err) ? `connect:${err.code}` : "connect");
          n++;
          await sleep(100);
          continue;
        }
      }
      const text = `honest ${n} ${"x".repeat(40)}`;
      const t0 = performance.now();
      try {
        const answer = await conn.request(ECHO_ROUTE, text, { timeoutMs: 5000 });
        out.latencies.push(performance.now() - t0);
        if (new TextDecoder().decode(answer) !== text) fail("wrong-answer");
      } catch (err) {
        out.latencies.push(performance.now() - t0);
        fail(isPointSubError(err) ? err.code : String(err));
      }
      n++;
      await sleep(gapMs);
    }
    if (conn !== first) await conn?.close().catch(() => {});
    return out;
  })();
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * Once a second, a brand-new client connects, sends one echo and leaves:
 * the honest loop's connection predates the attack, this one shows whether
 * newcomers are still let in (connection limits, pending handshakes...).
 */
function probeLoop(
  url: string,
  stop: { stop: boolean },
): Promise<{ n: number; errors: number; ms: number[]; codes: Record<string, number> }> {
  const out = { n: 0, errors: 0, ms: [] as number[], codes: {} as Record<string, number> };
  return (async () => {
    while (!stop.stop && out.n < 600) {
      const r = await servesNormally(url);
      out.n++;
      out.ms.push(r.ms);
      if (!r.ok) {
        out.errors++;
        const k = r.error ?? "error";
        out.codes[k] = (out.codes[k] ?? 0) + 1;
      }
      for (let i = 0; i < 10 && !stop.stop; i++) await sleep(100);
    }
    return out;
  })();
}

/** A fresh client's echo: does the server still serve? */
async function servesNormally(url: string): Promise<{ ok: boolean; ms: number; error?: string }> {
  const t0 = performance.now();
  let conn: Connection | undefined;
  try {
    conn = await connect(url, { connectTimeoutMs: 5000, requestTimeoutMs: 5000 });
    const a = await conn.request(ECHO_ROUTE, "after the attack");
    const ok = new TextDecoder().decode(a) === "after the attack";
    return { ok, ms: performance.now() - t0, error: ok ? undefined : "wrong answer" };
  } catch (err) {
    return { ok: false, ms: performance.now() - t0, error: isPointSubError(err) ? err.code : String(err) };
  } finally {
    await Promise.race([conn?.close().catch(() => {}), sleep(2000)]);
  }
}

// ----------------------------------------------------------------- worker

function runWorker(
  params: AttackParams,
  onProgress: (m: WorkerMessage) => void,
): { result: Promise<AttackResult>; stop: () => void } {
  const worker = new Worker(new URL("./attacks.ts", import.meta.url), { workerData: params });
  let settled = false;
  const result = new Promise<AttackResult>((resolve) => {
    const empty = (error: string): AttackResult => ({
      framesSent: 0,
      bytesSent: 0,
      connections: 0,
      connectFailures: 0,
      goaways: {},
      violations: [],
      notes: {},
      error,
    });
    let last: WorkerMessage | undefined;
    worker.on("message", (m: WorkerMessage) => {
      if (m.type === "result") {
        settled = true;
        resolve(m.result);
        void worker.terminate();
      } else {
        last = m;
        onProgress(m);
      }
    });
    worker.on("error", (err) => {
      if (!settled) resolve(empty(`worker error: ${err.stack ?? err.message}`));
      settled = true;
    });
    worker.on("exit", () => {
      if (settled) return;
      settled = true;
      const r = empty("worker exited without a result");
      if (last?.type === "progress") {
        r.framesSent = last.framesSent;
        r.bytesSent = last.bytesSent;
        r.connections = last.connections;
      }
      resolve(r);
    });
  });
  return {
    result,
    stop: () => {
      worker.postMessage({ type: "stop" });
      setTimeout(() => void worker.terminate(), 5000).unref();
    },
  };
}

// ----------------------------------------------------------- one scenario

interface Check {
  name: string;
  ok: boolean;
  value: number | string | boolean;
  limit: number | string | boolean;
}

interface ScenarioReport {
  name: string;
  what: string;
  /** Hash of src/ when the scenario's server started (see srcHash). */
  srcHash: string;
  /** 1-minute load average of the machine when the scenario started and ended (other work skews timings). */
  loadavg: [number, number];
  durationMs: number;
  framesSent: number;
  bytesSent: number;
  connections: number;
  connectFailures: number;
  serverFramesIn: number;
  serverBytesIn: number;
  server: {
    baselineRssMiB: number;
    peakRssMiB: number;
    rssGrowthMiB: number;
    rssAfterMiB: number;
    peakHeapUsedMiB: number;
    peakExternalMiB: number;
    peakArrayBuffersMiB: number;
    maxEventLoopDelayMs: number;
    /** The part of the largest delay the server's main thread spent running (its thread CPU time). */
    maxBusyDelayMs: number;
    /** Longest garbage-collection pause. */
    maxGcPauseMs: number;
    /**
     * Over the attack window: CPU time of the server process (all threads)
     * and of its main thread, GC pauses (sum, count), and how many 100 ms
     * reports saw an event-loop delay of 30 ms or more / over the limit.
     * The totals compare builds on a loaded machine (same seed and frames).
     */
    window: {
      cpuMs: number;
      mainCpuMs: number;
      gcMs: number;
      gcCount: number;
      gcMajorMs: number;
      gcMajorCount: number;
      reports: number;
      eldOver30: number;
      eldOverLimit: number;
    };
    maxReportGapMs: number;
    /** Mean CPU of the server (% of a core) over the second after everything closed. */
    cpuAfterPct: number;
    peakCpuPct: number;
    sessionsAfter: number;
    closeCodes: Record<string, number>;
    rejectCodes: Record<string, number>;
    /** server.memory over the scenario: budget limit, highest charge, refusals (ERR_OVERLOADED) during it, charge left after. */
    budget?: { limitMiB: number; peakUsedMiB: number; refused: number; usedAfterMiB: number };
  };
  honest: {
    requests: number;
    p50Ms: number;
    p99Ms: number;
    maxMs: number;
    errors: number;
    errorCodes: Record<string, number>;
    reconnects: number;
  };
  /** Fresh clients that connected, sent one echo and left, once a second during the attack. */
  newcomers: { attempts: number; failures: number; p99Ms: number; maxMs: number; errorCodes: Record<string, number> };
  runnerMaxEventLoopDelayMs: number;
  crashed: boolean;
  crash?: { code: number | null; signal: string | null; fatal?: string; stderrTail: string; killedByRunner?: string };
  servesAfter: boolean;
  servesAfterError?: string;
  goaways: Record<string, number>;
  violations: string[];
  notes: Record<string, unknown>;
  attackError?: string;
  checks: Check[];
  passed: boolean;
}

const mib = (n: number) => Math.round((n / MIB) * 10) / 10;

async function runScenario(sc: Scenario, index: number): Promise<ScenarioReport> {
  const started = Date.now();
  const hash = srcHash();
  const load0 = loadavg()[0];
  const h = await startServer();
  // Honest client connected and warmed up before the baseline.
  const honestConn = await connect(h.url, { connectTimeoutMs: 5000, requestTimeoutMs: 5000 });
  for (let i = 0; i < 200; i++) await honestConn.request(ECHO_ROUTE, "warm-up");
  await nextStats(h);
  const base = (await nextStats(h)) ?? h.stats[h.stats.length - 1];
  const windowStart = h.stats.length;
  const runnerEld = monitorEventLoopDelay({ resolution: 10 });
  runnerEld.enable();

  const stop = { stop: false };
  const honestP = honestLoop(h.url, honestConn, stop, sc.honestGapMs ?? 2);
  const probeP = probeLoop(h.url, stop);
  let lastPrint = 0;
  const params: AttackParams = {
    scenario: sc.attack.scenario ?? sc.name,
    port: h.port,
    seed: seed + index * 1000,
    ...sc.attack,
  } as AttackParams;
  const w = runWorker(params, (m) => {
    if (m.type !== "progress" || Date.now() - lastPrint < 5000) return;
    lastPrint = Date.now();
    const st = h.stats[h.stats.length - 1];
    process.stdout.write(
      `    ${sc.name}: ${m.framesSent.toLocaleString("en")} frames, ${mib(m.bytesSent)} MiB, ${m.connections} conns; server RSS ${st === undefined ? "?" : mib(st.rss)} MiB\n`,
    );
  });
  // The worker bounds itself; this is the backstop.
  const cap = setTimeout(() => w.stop(), sc.attack.durationMs + 20_000);
  const crashWatch = h.exitedP.then(() => w.stop());
  const result = await w.result;
  clearTimeout(cap);
  void crashWatch;
  stop.stop = true;
  const honest = await honestP;
  const probes = await probeP;
  // Let the server work off what it buffered, then ask a fresh client.
  await sleep(1000);
  const after =
    h.exited === undefined ? await servesNormally(h.url) : { ok: false, ms: 0, error: "server not running" };
  await Promise.race([honestConn.close().catch(() => {}), sleep(3000)]);
  let sessionsAfter = -1;
  for (let i = 0; i < 30 && h.exited === undefined; i++) {
    const st = await nextStats(h);
    if (st === undefined) break;
    sessionsAfter = st.sessions;
    if (st.sessions === 0) break;
  }
  // Is the server idle again once every attacker is gone? (Work queued by an attack may outlive it.)
  const idleFrom = h.stats.length;
  for (let i = 0; i < 10 && h.exited === undefined; i++) await nextStats(h);
  const idle = h.stats.slice(idleFrom);
  const cpuAfter = idle.length === 0 ? Number.NaN : idle.reduce((a, x) => a + x.cpuPct, 0) / idle.length;
  runnerEld.disable();
  const window = h.stats.slice(windowStart);
  const last = h.stats[h.stats.length - 1] ?? base;
  const crashed = h.exited !== undefined;
  await stopServer(h);

  const peak = (f: (x: ServerStats) => number) => Math.max(f(base), ...window.map(f));
  const maxGap = Math.max(0, ...window.map((x) => x.intervalMs));
  const eld = Math.max(
    peak((x) => x.eldMaxMs),
    maxGap - 100,
  );
  const peakRss = peak((x) => x.rss);
  const delta = (f: (x: ServerStats) => number | undefined) => round((f(last) ?? 0) - (f(base) ?? 0));
  const windowTotals = {
    cpuMs: delta((x) => x.cpuTotalMs),
    mainCpuMs: delta((x) => x.mainCpuTotalMs),
    gcMs: delta((x) => x.gcTotalMs),
    gcCount: delta((x) => x.gcCount),
    gcMajorMs: delta((x) => x.gcMajorMs),
    gcMajorCount: delta((x) => x.gcMajorCount),
    reports: window.length,
    eldOver30: window.filter((x) => x.eldMaxMs >= 30).length,
    eldOverLimit: window.filter((x) => x.eldMaxMs > thresholds.maxEldMs).length,
  };
  const budget =
    last.memory === undefined
      ? undefined
      : {
          limitMiB: mib(last.memory.limit),
          peakUsedMiB: mib(Math.max(0, ...window.map((x) => x.memory?.used ?? 0))),
          refused: last.memory.refused - (base.memory?.refused ?? 0),
          usedAfterMiB: mib(last.memory.used),
        };
  const growth = peakRss - base.rss;
  const lat = honest.latencies;
  const p99 = percentile(lat, 99);
  const checks: Check[] = [
    { name: "server alive", ok: !crashed, value: !crashed, limit: true },
    { name: "serves after", ok: after.ok, value: after.ok, limit: true },
    { name: "event-loop delay ms", ok: eld <= thresholds.maxEldMs, value: round(eld), limit: thresholds.maxEldMs },
    {
      name: "honest p99 ms",
      ok: lat.length > 0 && p99 <= thresholds.maxP99Ms,
      value: round(p99),
      limit: thresholds.maxP99Ms,
    },
    {
      name: "honest errors",
      ok: honest.errors <= thresholds.maxHonestErrors,
      value: honest.errors,
      limit: thresholds.maxHonestErrors,
    },
    {
      name: "RSS growth MiB",
      ok: growth <= thresholds.rssGrowthBytes,
      value: mib(growth),
      limit: mib(thresholds.rssGrowthBytes),
    },
    {
      name: "newcomers served",
      ok: probes.errors <= thresholds.maxHonestErrors,
      value: `${probes.n - probes.errors}/${probes.n}`,
      limit: `<= ${thresholds.maxHonestErrors} failed`,
    },
    { name: "sessions released", ok: crashed || sessionsAfter === 0, value: sessionsAfter, limit: 0 },
    {
      name: "idle after (CPU %)",
      ok: crashed || !(cpuAfter > thresholds.maxCpuAfterPct),
      value: round(cpuAfter),
      limit: thresholds.maxCpuAfterPct,
    },
    { name: "wire correctness", ok: result.violations.length === 0, value: result.violations.length, limit: 0 },
  ];
  if (budget !== undefined && last.memory !== undefined) {
    checks.push({
      name: "budget held (peak used <= limit)",
      ok: Math.max(0, ...window.map((x) => x.memory?.used ?? 0)) <= last.memory.limit,
      value: budget.peakUsedMiB,
      limit: budget.limitMiB,
    });
  }
  if (result.error !== undefined)
    checks.push({ name: "attack ran", ok: false, value: result.error.split("\n")[0], limit: "" });
  return {
    name: sc.name,
    what: sc.what,
    srcHash: hash,
    loadavg: [round(load0), round(loadavg()[0])],
    durationMs: Date.now() - started,
    framesSent: result.framesSent,
    bytesSent: result.bytesSent,
    connections: result.connections,
    connectFailures: result.connectFailures,
    serverFramesIn: last.framesIn,
    serverBytesIn: last.bytesIn,
    server: {
      baselineRssMiB: mib(base.rss),
      peakRssMiB: mib(peakRss),
      rssGrowthMiB: mib(growth),
      rssAfterMiB: mib(last.rss),
      peakHeapUsedMiB: mib(peak((x) => x.heapUsed)),
      peakExternalMiB: mib(peak((x) => x.external)),
      peakArrayBuffersMiB: mib(peak((x) => x.arrayBuffers)),
      maxEventLoopDelayMs: round(eld),
      maxBusyDelayMs: round(peak((x) => x.busyMaxMs ?? 0)),
      maxGcPauseMs: round(peak((x) => x.gcMaxMs ?? 0)),
      window: windowTotals,
      maxReportGapMs: round(maxGap),
      cpuAfterPct: round(cpuAfter),
      peakCpuPct: round(peak((x) => x.cpuPct)),
      sessionsAfter,
      closeCodes: last.closeCodes,
      rejectCodes: last.rejectCodes,
      budget,
    },
    honest: {
      requests: lat.length,
      p50Ms: round(percentile(lat, 50)),
      p99Ms: round(p99),
      maxMs: round(lat.length === 0 ? Number.NaN : Math.max(...lat)),
      errors: honest.errors,
      errorCodes: honest.errorCodes,
      reconnects: honest.reconnects,
    },
    newcomers: {
      attempts: probes.n,
      failures: probes.errors,
      p99Ms: round(percentile(probes.ms, 99)),
      maxMs: round(probes.ms.length === 0 ? Number.NaN : Math.max(...probes.ms)),
      errorCodes: probes.codes,
    },
    runnerMaxEventLoopDelayMs: round(runnerEld.max / 1e6),
    crashed,
    crash: crashed
      ? {
          code: h.exited?.code ?? null,
          signal: h.exited?.signal ?? null,
          fatal: h.fatal,
          stderrTail: h.stderrTail,
          killedByRunner: h.killedByRunner,
        }
      : undefined,
    servesAfter: after.ok,
    servesAfterError: after.error,
    goaways: result.goaways,
    violations: result.violations,
    notes: result.notes,
    attackError: result.error,
    checks,
    passed: checks.every((c) => c.ok),
  };
}

function round(n: number): number {
  return Number.isFinite(n) ? Math.round(n * 10) / 10 : n;
}

// ------------------------------------------------------------------- main

/** A hash of every file under src/: scenarios that see different values ran against different code. */
function srcHash(): string {
  const h = createHash("sha256");
  const files = (readdirSync(join(root, "src"), { recursive: true }) as string[])
    .filter((f) => f.endsWith(".ts"))
    .sort();
  for (const f of files) {
    h.update(f);
    try {
      h.update(readFileSync(join(root, "src", f)));
    } catch {
      h.update("(unreadable)");
    }
  }
  return h.digest("hex").slice(0, 12);
}

function gitInfo(): { head: string; dirty: string[] } {
  const head = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" }).stdout.trim();
  const dirty = spawnSync("git", ["status", "--porcelain", "--", "src"], { cwd: root, encoding: "utf8" })
    .stdout.split("\n")
    .filter((l) => l.trim() !== "");
  return { head, dirty };
}

function pad(x: string, n: number, right = false): string {
  return right ? x.padStart(n) : x.padEnd(n);
}

function printTable(reports: ScenarioReport[]): void {
  const head = [
    pad("scenario", 22),
    pad("frames", 10, true),
    pad("MiB out", 8, true),
    pad("ELD ms", 7, true),
    pad("RSS pk", 7, true),
    pad("growth", 7, true),
    pad("hon n", 6, true),
    pad("p50", 6, true),
    pad("p99", 7, true),
    pad("max", 7, true),
    pad("err", 5, true),
    pad("bud pk", 7, true),
    pad("refusd", 7, true),
    pad("new ok", 7, true),
    pad("crash", 6, true),
    pad("serves", 7, true),
    "  result",
  ].join(" ");
  console.log(`\n${head}\n${"-".repeat(head.length + 20)}`);
  for (const r of reports) {
    const failed = r.checks.filter((c) => !c.ok).map((c) => c.name);
    console.log(
      [
        pad(r.name, 22),
        pad(r.framesSent.toLocaleString("en"), 10, true),
        pad(String(mib(r.bytesSent)), 8, true),
        pad(String(r.server.maxEventLoopDelayMs), 7, true),
        pad(String(r.server.peakRssMiB), 7, true),
        pad(String(r.server.rssGrowthMiB), 7, true),
        pad(String(r.honest.requests), 6, true),
        pad(String(r.honest.p50Ms), 6, true),
        pad(String(r.honest.p99Ms), 7, true),
        pad(String(r.honest.maxMs), 7, true),
        pad(String(r.honest.errors), 5, true),
        pad(r.server.budget === undefined ? "-" : String(r.server.budget.peakUsedMiB), 7, true),
        pad(r.server.budget === undefined ? "-" : String(r.server.budget.refused), 7, true),
        pad(`${r.newcomers.attempts - r.newcomers.failures}/${r.newcomers.attempts}`, 7, true),
        pad(r.crashed ? "YES" : "no", 6, true),
        pad(r.servesAfter ? "yes" : "NO", 7, true),
        `  ${failed.length === 0 ? "pass" : `FAIL: ${failed.join(", ")}`}`,
      ].join(" "),
    );
  }
}

async function main(): Promise<void> {
  const only = args.only?.split(",").map((x) => x.trim());
  const skip = new Set(args.skip?.split(",").map((x) => x.trim()));
  const chosen = SCENARIOS.filter(
    (sc) =>
      (only === undefined || only.some((o) => sc.name === o || sc.name.startsWith(`${o}-`))) && !skip.has(sc.name),
  );
  if (args.list === true) {
    for (const sc of SCENARIOS) console.log(`${pad(sc.name, 22)} ${sc.what}`);
    return;
  }
  const git = gitInfo();
  console.log(
    `pointsub attack run (${quick ? "quick" : "full"}), ${git.head}${git.dirty.length > 0 ? ` + ${git.dirty.length} uncommitted file(s) in src/` : ""}, node ${process.version}`,
  );
  console.log(
    `thresholds: ELD <= ${thresholds.maxEldMs} ms, honest p99 <= ${thresholds.maxP99Ms} ms, honest errors <= ${thresholds.maxHonestErrors}, RSS growth <= ${mib(thresholds.rssGrowthBytes)} MiB, server CPU in the second after <= ${thresholds.maxCpuAfterPct}%; safety kill at RSS ${mib(rssKillBytes)} MiB`,
  );
  console.log(
    `COMPRESSED frame layout: ${bombFormat} (docs/PROTOCOL.md §3.10${args["bomb-format"] === "auto" ? ", detected" : ", forced"}); server options ${JSON.stringify(serverOptions)}`,
  );
  const t0 = Date.now();
  console.log(`src/ hash ${srcHash()}`);
  const reports: ScenarioReport[] = [];
  for (const [i, sc] of chosen.entries()) {
    console.log(`\n[${i + 1}/${chosen.length}] ${sc.name}: ${sc.what}`);
    let r: ScenarioReport;
    try {
      r = await runScenario(sc, i);
    } catch (err) {
      console.log(`  scenario could not run: ${err instanceof Error ? err.message : String(err)}`);
      continue;
    }
    reports.push(r);
    const failed = r.checks.filter((c) => !c.ok);
    console.log(
      `  ${r.framesSent.toLocaleString("en")} frames / ${mib(r.bytesSent)} MiB in ${r.connections} connections (server read ${r.serverFramesIn.toLocaleString("en")} frames); ` +
        `server ELD max ${r.server.maxEventLoopDelayMs} ms (own CPU in it ${r.server.maxBusyDelayMs} ms, longest GC ${r.server.maxGcPauseMs} ms; ELD >= 30 ms in ${r.server.window.eldOver30}/${r.server.window.reports} reports, over the limit in ${r.server.window.eldOverLimit}), ` +
        `server CPU ${Math.round(r.server.window.cpuMs)} ms (main thread ${Math.round(r.server.window.mainCpuMs)}), GC ${Math.round(r.server.window.gcMs)} ms in ${r.server.window.gcCount} pauses (full ${Math.round(r.server.window.gcMajorMs)} ms in ${r.server.window.gcMajorCount}), load ${r.loadavg.join(" -> ")}; RSS ${r.server.baselineRssMiB} -> peak ${r.server.peakRssMiB} MiB (+${r.server.rssGrowthMiB}), after ${r.server.rssAfterMiB} MiB; ` +
        `honest n=${r.honest.requests} p50 ${r.honest.p50Ms} p99 ${r.honest.p99Ms} max ${r.honest.maxMs} ms, ${r.honest.errors} errors; ` +
        `newcomers ${r.newcomers.attempts - r.newcomers.failures}/${r.newcomers.attempts} served; ` +
        `crashed ${r.crashed}, serves after ${r.servesAfter}, server CPU after ${r.server.cpuAfterPct}%` +
        (r.server.budget === undefined
          ? ""
          : `; budget peak ${r.server.budget.peakUsedMiB} of ${r.server.budget.limitMiB} MiB, ${r.server.budget.refused} refused, ${r.server.budget.usedAfterMiB} MiB held after`),
    );
    const serverErrors = r.notes.serverErrors;
    if (serverErrors !== undefined)
      console.log(`  server errors seen by the attacker: ${JSON.stringify(serverErrors)}`);
    if (r.notes.outcomes !== undefined) console.log(`  outcomes: ${JSON.stringify(r.notes.outcomes)}`);
    if (Object.keys(r.goaways).length > 0) console.log(`  server GOAWAYs: ${JSON.stringify(r.goaways)}`);
    if (r.crash !== undefined) console.log(`  CRASH: ${JSON.stringify(r.crash)}`);
    for (const v of r.violations.slice(0, 5)) console.log(`  violation: ${v}`);
    for (const c of failed) console.log(`  FAIL ${c.name}: ${c.value} (limit ${c.limit})`);
  }
  printTable(reports);
  const control = reports.find((r) => r.name === "control");
  if (control !== undefined && !control.passed) {
    console.log(
      `\nNOTE: the control scenario (no attack) failed too (load average ${control.loadavg.join(" -> ")}): timings on this machine are skewed; treat ELD and latency failures near the limits with care.`,
    );
  }
  const hashes = new Set(reports.map((r) => r.srcHash));
  if (hashes.size > 1) {
    console.log(
      `\nWARNING: src/ changed during the run (${[...hashes].join(", ")}): scenarios ran against different code; see srcHash in the report.`,
    );
  }
  const failed = reports.filter((r) => !r.passed);
  const out = {
    startedAt: new Date(t0).toISOString(),
    durationMs: Date.now() - t0,
    mode: quick ? "quick" : "full",
    git,
    srcHashes: [...hashes],
    node: process.version,
    thresholds,
    rssKillBytes,
    serverOptions,
    compressedFormat: bombFormat,
    scenarios: reports,
    failed: failed.map((r) => ({ name: r.name, checks: r.checks.filter((c) => !c.ok) })),
    notRun: chosen.filter((sc) => !reports.some((r) => r.name === sc.name)).map((sc) => sc.name),
  };
  writeFileSync(args.out ?? "/tmp/pointsub-attack.json", `${JSON.stringify(out, null, 2)}\n`);
  console.log(
    `\n${reports.length - failed.length}/${chosen.length} scenarios passed in ${Math.round((Date.now() - t0) / 1000)} s; report: ${args.out}`,
  );
  process.exitCode = failed.length > 0 || out.notRun.length > 0 ? 1 : 0;
}

await main();
