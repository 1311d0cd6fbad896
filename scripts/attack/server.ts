/**
 * The pointsub server under attack, run in a child process of
 * scripts/attack/run.ts so that its memory and event-loop delay are its
 * own. Routes: `/echo/1.0.0` (answers the request bytes), the stream route
 * `/discard/1.0.0` (reads and drops everything, answers the byte count),
 * and the file sink on `/pointsub/file/1.0.0` (into a temp directory).
 *
 * Usage: node scripts/attack/server.ts '<json ServerChildConfig>'
 * It reports over the IPC channel (or as JSON lines on stdout without one)
 * every `reportMs`: RSS, heap, external + array buffers, the largest
 * event-loop delay since the previous report, sessions and close codes, and
 * `server.memory` (the shared memory budget: used, limit, peak, refused).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks";
import { createServer, FILE_ROUTE, fileSink, type ServerOptions } from "../../src/index.ts";
import { BusyTurns } from "./busy-turns.ts";
import type { ServerChildConfig, ServerMessage, ServerStats } from "./common.ts";
import { DISCARD_ROUTE, ECHO_ROUTE } from "./common.ts";

const config: ServerChildConfig = JSON.parse(process.argv[2] ?? "{}") as ServerChildConfig;
const reportMs = config.reportMs ?? 100;

function report(m: ServerMessage): void {
  if (process.send !== undefined) process.send(m);
  else process.stdout.write(`${JSON.stringify(m)}\n`);
}

process.on("uncaughtException", (err) => {
  const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`uncaughtException: ${text}\n`);
  report({ type: "fatal", error: text.slice(0, 4000) });
  setTimeout(() => process.exit(70), 50);
});
process.on("unhandledRejection", (err) => {
  const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`unhandledRejection: ${text}\n`);
  report({ type: "fatal", error: `unhandledRejection: ${text.slice(0, 4000)}` });
  setTimeout(() => process.exit(71), 50);
});

const ownSinkDir = config.sinkDir === undefined;
const sinkDir = config.sinkDir ?? mkdtempSync(join(tmpdir(), "pointsub-attack-sink-"));
const server = createServer({ keepAliveMs: 30_000, ...(config.server ?? {}) } as ServerOptions);
server.handle(ECHO_ROUTE, (req) => req.data);
server.handleStream(DISCARD_ROUTE, async (stream) => {
  let n = 0;
  for await (const c of stream) n += c.length;
  return String(n);
});
const sink = fileSink(sinkDir);
server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });

const closeCodes: Record<string, number> = {};
const rejectCodes: Record<string, number> = {};
let sessionsOpened = 0;
server.on("session", () => {
  sessionsOpened++;
});
server.on("sessionClose", (_s, err) => {
  const k = err?.code ?? "clean";
  closeCodes[k] = (closeCodes[k] ?? 0) + 1;
});
server.on("reject", (err) => {
  rejectCodes[err.code] = (rejectCodes[err.code] ?? 0) + 1;
});
// Messages are dropped: the server only has to survive them.
server.on("message", () => {});

const eld = monitorEventLoopDelay({ resolution: 10 });
eld.enable();

/**
 * With POINTSUB_ATTACK_TRACE=<file>: long gaps (`gap <start µs> <ms> cpu <ms of it the main thread ran>`)
 * and GC pauses (`gc <start µs> <ms> kind <k>`), in µs of the monotonic clock (as a --cpu-prof profile's
 * times: scripts/attack/long-turns.ts reads both), written at exit.
 */
const traceFile = process.env.POINTSUB_ATTACK_TRACE;
const trace: string[] | undefined = traceFile === undefined ? undefined : [];
const round = (x: number) => Math.round(x * 10) / 10;
/** With POINTSUB_ATTACK_TRACE_ALLOC=1 too: Buffer allocations of 64 KiB and more, by size and call site. */
const allocs = new Map<string, { n: number; bytes: number }>();
if (trace !== undefined && process.env.POINTSUB_ATTACK_TRACE_ALLOC === "1") {
  for (const name of ["allocUnsafe", "allocUnsafeSlow", "alloc"] as const) {
    const orig = Buffer[name] as (n: number, ...rest: unknown[]) => Buffer;
    (Buffer as unknown as Record<string, unknown>)[name] = (n: number, ...rest: unknown[]) => {
      if (n >= 64 * 1024) {
        const stack = (new Error().stack ?? "")
          .split("\n")
          .slice(2, 7)
          .map((l) =>
            l
              .trim()
              .replace(/^at /, "")
              .replace(/\(?file:\/\/\/[^)]*\/(src|scripts)\//, "$1/"),
          );
        const k = `${name} ${n >= 1 << 20 ? `${Math.round(n / (1 << 20))}MiB` : `${Math.round(n / 1024)}KiB`} ${stack.join(" < ")}`;
        const e = allocs.get(k) ?? { n: 0, bytes: 0 };
        e.n++;
        e.bytes += n;
        allocs.set(k, e);
      }
      return orig.call(Buffer, n, ...rest);
    };
  }
}

// The code's share of the delay: a 5 ms timer's lateness, capped by the main
// thread's CPU time since it last fired (on a loaded machine most of a long
// delay can be the scheduler running other processes).
const busyTurns = new BusyTurns(5, (late, busy, processMs) => {
  // Times in µs of the monotonic clock (as in a --cpu-prof profile): the gap's start, its length, its
  // main thread's CPU and all threads' (pool, GC helpers). Gaps of 30 ms and more are kept whatever their CPU.
  if (trace !== undefined && (busy >= 15 || late >= 30))
    trace.push(
      `gap ${Number(process.hrtime.bigint() / 1000n) - Math.round(late * 1000)} ${round(late)} cpu ${round(busy)} proc ${round(processMs)}`,
    );
});
/** performance.now() (ms) to the monotonic clock in µs of the gap lines (and of a --cpu-prof profile). */
const hrBaseUs = Number(process.hrtime.bigint() / 1000n) - performance.now() * 1000;
let gcMaxMs = 0;
let gcTotalMs = 0;
let gcCount = 0;
let gcMajorMs = 0;
let gcMajorCount = 0;
const gcObserver = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcTotalMs += e.duration;
    gcCount++;
    // kind 4: a full mark-compact (major); 1: scavenge; 8: incremental marking; 16: weak callbacks
    if ((e as { detail?: { kind?: number } }).detail?.kind === 4) {
      gcMajorMs += e.duration;
      gcMajorCount++;
    }
    if (e.duration > gcMaxMs) gcMaxMs = e.duration;
    if (trace !== undefined && (e.duration >= 5 || (e as { detail?: { kind?: number } }).detail?.kind === 4))
      trace.push(
        `gc ${Math.round(hrBaseUs + e.startTime * 1000)} ${round(e.duration)} kind ${(e as { detail?: { kind?: number } }).detail?.kind}`,
      );
  }
});
gcObserver.observe({ entryTypes: ["gc"] });

/**
 * With POINTSUB_ATTACK_ALLOC_PROFILE=<file>: V8's sampling heap profiler, keeping the samples of
 * objects the GC already collected (what a run allocates, garbage included: what drives its GCs),
 * written at exit as a `.heapprofile` (scripts/attack/alloc-sites.ts sums it by function).
 */
const allocProfileFile = process.env.POINTSUB_ATTACK_ALLOC_PROFILE;
const inspector = allocProfileFile === undefined ? undefined : new Session();
if (inspector !== undefined) {
  inspector.connect();
  await inspector.post("HeapProfiler.startSampling", {
    samplingInterval: 32 * 1024,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
}

const [url] = await server.listen(config.listen ?? "tcp://127.0.0.1:0");
report({ type: "ready", url, pid: process.pid, sinkDir });

/** `server.memory` (the shared memory budget), when this build has it. */
function memoryBudget(): ServerStats["memory"] {
  try {
    const m = (server as unknown as { memory?: ServerStats["memory"] }).memory;
    return m === undefined ? undefined : { used: m.used, limit: m.limit, peak: m.peak, refused: m.refused };
  } catch {
    return undefined;
  }
}

const cpuMs = (c: NodeJS.CpuUsage) => (c.user + c.system) / 1000;
let last = performance.now();
let lastCpu = process.cpuUsage();
let ticks = 0;
let wire = { framesIn: 0, bytesIn: 0 };
const timer = setInterval(() => {
  // Server-wide wire totals (all sessions, past and present), once a second: it walks every session.
  if (ticks++ % 10 === 0) {
    try {
      const w = (server.stats() as unknown as { wire?: { framesIn?: number; bytesIn?: number } }).wire;
      wire = { framesIn: w?.framesIn ?? 0, bytesIn: w?.bytesIn ?? 0 };
    } catch {
      // stats() is optional for this harness
    }
  }
  const m = process.memoryUsage();
  const now = performance.now();
  const cpu = process.cpuUsage(lastCpu);
  lastCpu = process.cpuUsage();
  report({
    type: "stats",
    t: Date.now(),
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    eldMaxMs: eld.max / 1e6,
    eldMeanMs: Number.isNaN(eld.mean) ? 0 : eld.mean / 1e6,
    busyMaxMs: busyTurns.maxMs,
    gcMaxMs,
    cpuTotalMs: cpuMs(process.cpuUsage()),
    mainCpuTotalMs: cpuMs(process.threadCpuUsage()),
    gcTotalMs,
    gcCount,
    gcMajorMs,
    gcMajorCount,
    intervalMs: now - last,
    cpuPct: ((cpu.user + cpu.system) / 1000 / Math.max(1, now - last)) * 100,
    sessions: server.sessions.size,
    sessionsOpened,
    closeCodes,
    rejectCodes,
    framesIn: wire.framesIn,
    bytesIn: wire.bytesIn,
    memory: memoryBudget(),
  });
  last = now;
  eld.reset();
  busyTurns.reset();
  gcMaxMs = 0;
}, reportMs);

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  clearInterval(timer);
  busyTurns.stop();
  gcObserver.disconnect();
  if (trace !== undefined)
    for (const [k, e] of [...allocs].sort((a, b) => b[1].bytes - a[1].bytes))
      trace.push(`alloc ${e.n} ${round(e.bytes / 2 ** 20)}MiB ${k}`);
  if (traceFile !== undefined && trace !== undefined) writeFileSync(traceFile, `${trace.join("\n")}\n`);
  if (inspector !== undefined && allocProfileFile !== undefined) {
    const { profile } = await inspector.post("HeapProfiler.stopSampling");
    writeFileSync(allocProfileFile, JSON.stringify(profile));
  }
  const t = setTimeout(() => process.exit(0), 2000);
  t.unref();
  await server.close().catch(() => {});
  if (ownSinkDir) rmSync(sinkDir, { recursive: true, force: true });
  process.exit(0);
}
process.on("SIGTERM", () => void stop());
process.on("message", (m: unknown) => {
  if (typeof m === "object" && m !== null && (m as { type?: unknown }).type === "stop") void stop();
});
process.on("disconnect", () => void stop());
