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
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks";
import { getHeapStatistics } from "node:v8";
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
  for await (const c of stream) {
    n += c.length;
    discarded += c.length;
  }
  return String(n);
});
let discarded = 0;
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
 * With POINTSUB_ATTACK_TRACE=<file>: long gaps (`gap <start µs> <ms> cpu <ms of it the main thread ran>
 * proc <ms all threads ran>`) and GC pauses (`gc <start µs> <ms> kind <k>`), in µs of the monotonic clock
 * (as a --cpu-prof profile's times, and `perf record -k mono`'s: scripts/attack/long-turns.ts reads both),
 * written at exit with each thread's CPU time (`thread <name> <tid> user <ms> sys <ms>`: the main thread,
 * libuv's pool, V8's workers — with --pin they all share one CPU), the bytes the discard route read, the
 * scavenges and full GCs seen, and with the variables below the allocations (`alloc` lines) and the
 * external memory between full GCs (`full` lines), and (POINTSUB_ATTACK_TRACE_FRAMES=1) the frames
 * decoded in each gap.
 */
const traceFile = process.env.POINTSUB_ATTACK_TRACE;
const trace: string[] | undefined = traceFile === undefined ? undefined : [];
const round = (x: number) => Math.round(x * 10) / 10;
/**
 * With POINTSUB_ATTACK_TRACE_ALLOC=1 too: ArrayBuffers of POINTSUB_ATTACK_TRACE_ALLOC_MIN bytes and
 * more (default 64 KiB) made through Buffer.alloc*, `new Uint8Array(n)` or `Uint8Array#slice`, by size
 * and call site, and how many of them lived through two scavenges or more: those were (most likely)
 * promoted, so only a full GC frees them, and V8 counts their bytes towards starting the next one.
 */
const allocs = new Map<string, { n: number; bytes: number; old: number; oldBytes: number }>();
/** Scavenges and full GCs so far (the GC observer below counts them). */
const gcCounts = { scavenges: 0, full: 0 };
const lifetimes = new FinalizationRegistry<{ e: { old: number; oldBytes: number }; n: number; scavengesAt: number }>(
  (h) => {
    if (gcCounts.scavenges - h.scavengesAt >= 2) {
      h.e.old++;
      h.e.oldBytes += h.n;
    }
  },
);
if (trace !== undefined && process.env.POINTSUB_ATTACK_TRACE_ALLOC === "1") {
  const min = Number(process.env.POINTSUB_ATTACK_TRACE_ALLOC_MIN ?? 64 * 1024);
  const note = (how: string, a: Uint8Array) => {
    const n = a.byteLength;
    // Only arrays with a buffer of their own (not Buffer's shared 8 KiB pool).
    if (n < min || a.byteOffset !== 0 || a.buffer.byteLength !== n) return;
    const stack = (new Error().stack ?? "")
      .split("\n")
      .slice(3, 7)
      .map((l) =>
        l
          .trim()
          .replace(/^at /, "")
          .replace(/\(?file:\/\/\/[^)]*\/(src|scripts)\//, "$1/"),
      );
    const size = n >= 1 << 20 ? `${Math.round(n / (1 << 20))}MiB` : `${Math.round(n / 1024)}KiB`;
    const k = `${how} ${size} ${stack.join(" < ")}`;
    const e = allocs.get(k) ?? { n: 0, bytes: 0, old: 0, oldBytes: 0 };
    e.n++;
    e.bytes += n;
    allocs.set(k, e);
    lifetimes.register(a.buffer, { e, n, scavengesAt: gcCounts.scavenges });
  };
  for (const name of ["allocUnsafe", "allocUnsafeSlow", "alloc"] as const) {
    const orig = Buffer[name] as (n: number, ...rest: unknown[]) => Buffer;
    (Buffer as unknown as Record<string, unknown>)[name] = (n: number, ...rest: unknown[]) => {
      const b = orig.call(Buffer, n, ...rest) as Buffer;
      note(name, b);
      return b;
    };
  }
  const U8 = Uint8Array;
  globalThis.Uint8Array = new Proxy(U8, {
    construct(target, args, newTarget) {
      const a = Reflect.construct(target, args, newTarget) as Uint8Array;
      if (typeof args[0] === "number") note("new Uint8Array", a);
      return a;
    },
  });
  const slice = U8.prototype.slice;
  U8.prototype.slice = function (this: Uint8Array, ...args: [number?, number?]) {
    const a = slice.apply(this, args);
    note("slice", a);
    return a;
  };
}

/**
 * With POINTSUB_ATTACK_TRACE_FRAMES=1 too: the frames the server's sessions handed on (by type) and the
 * chunks they decoded (socket reads, or held rests) in each gap, appended to its `gap` line as
 * `frames <n> chunks <n> [TYPE:n ...]` — what a long turn was made of. (It wraps two methods: a little
 * slower, for looking only.)
 */
const traceFrames = trace !== undefined && process.env.POINTSUB_ATTACK_TRACE_FRAMES === "1";
const framesByType = new Float64Array(16);
let chunksSeen = 0;
if (traceFrames) {
  type Method = (this: unknown, ...args: unknown[]) => unknown;
  const { FrameRouter } = await import("../../src/connection/frames.ts");
  const { Connection } = await import("../../src/connection/connection.ts");
  const router = FrameRouter.prototype as unknown as Record<string, Method>;
  const onFrame = router.onFrame;
  router.onFrame = function (this: unknown, ...args: unknown[]) {
    framesByType[args[0] as number]++;
    return onFrame.apply(this, args);
  };
  const conn = Connection.prototype as unknown as Record<string, Method>;
  const processInput = conn.processInput;
  conn.processInput = function (this: unknown, ...args: unknown[]) {
    chunksSeen++;
    return processInput.apply(this, args);
  };
}
const TYPE_NAMES = ["HELLO", "MSG", "REQ", "RES", "CANCEL", "CREDIT", "PING", "GOAWAY", "BATCH", "STREAM", "AUTH"];
/** The frames and chunks since the previous tick, as text for a gap line (and reset). */
function framesSinceTick(): string {
  let n = 0;
  const kinds: string[] = [];
  for (let t = 0; t < 16; t++) {
    if (framesByType[t] === 0) continue;
    n += framesByType[t];
    kinds.push(`${TYPE_NAMES[t] ?? t}:${framesByType[t]}`);
    framesByType[t] = 0;
  }
  const text = ` frames ${n} chunks ${chunksSeen}${kinds.length === 0 ? "" : ` ${kinds.join(" ")}`}`;
  chunksSeen = 0;
  return text;
}

// The code's share of the delay: a 5 ms timer's lateness, capped by the main
// thread's CPU time since it last fired (on a loaded machine most of a long
// delay can be the scheduler running other processes).
/** With POINTSUB_ATTACK_TRACE_EXTERNAL=1 too: V8's external memory (array buffers, zlib states) at each 5 ms tick, for the `full` lines. */
const traceExternal = trace !== undefined && process.env.POINTSUB_ATTACK_TRACE_EXTERNAL === "1";
const ext = { min: Number.POSITIVE_INFINITY, max: 0, now: 0, ab: 0, abMin: Number.POSITIVE_INFINITY };
const busyTurns = new BusyTurns(5, (late, busy, processMs) => {
  if (traceExternal) {
    ext.now = getHeapStatistics().external_memory;
    if (ext.now < ext.min) ext.min = ext.now;
    if (ext.now > ext.max) ext.max = ext.now;
    ext.ab = process.memoryUsage().arrayBuffers;
    if (ext.ab < ext.abMin) ext.abMin = ext.ab;
  }
  // Times in µs of the monotonic clock (as in a --cpu-prof profile): the gap's start, its length, its
  // main thread's CPU and all threads' (pool, GC helpers). Gaps of 30 ms and more are kept whatever their CPU.
  const frames = traceFrames ? framesSinceTick() : "";
  if (trace !== undefined && (busy >= 15 || late >= 30))
    trace.push(
      `gap ${Number(process.hrtime.bigint() / 1000n) - Math.round(late * 1000)} ${round(late)} cpu ${round(busy)} proc ${round(processMs)}${frames}`,
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
    const kind = (e as { detail?: { kind?: number } }).detail?.kind;
    if (kind === 1) gcCounts.scavenges++;
    else if (kind === 4) {
      gcCounts.full++;
      if (traceExternal && trace !== undefined) {
        // External memory (MB) between the previous full GC and this one, seen at 5 ms ticks, and now (after it).
        const mb = (x: number) => round(x / 2 ** 20);
        trace.push(
          `full ${Math.round(hrBaseUs + e.startTime * 1000)} ext min ${mb(ext.min)} max ${mb(ext.max)} last ${mb(ext.now)} after ${mb(getHeapStatistics().external_memory)} arrayBuffers min ${mb(ext.abMin)} last ${mb(ext.ab)} after ${mb(process.memoryUsage().arrayBuffers)}`,
        );
        ext.abMin = Number.POSITIVE_INFINITY;
        ext.min = Number.POSITIVE_INFINITY;
        ext.max = 0;
      }
    }
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

/**
 * Trace lines `thread <name> <tid> user <ms> sys <ms>`: CPU time of each of this process's threads so far
 * (Linux /proc; none elsewhere): the main thread, libuv's pool (zlib, fs), V8's GC helpers.
 */
function threadTimes(): string[] {
  const out: string[] = [];
  try {
    for (const tid of readdirSync("/proc/self/task")) {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")).replace(/\s+/g, "_");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // Fields 14 and 15 (utime, stime) in clock ticks of 10 ms; f[0] is field 3.
      out.push(`thread ${name} ${tid} user ${Number(f[11]) * 10} sys ${Number(f[12]) * 10}`);
    }
  } catch {
    // not Linux
  }
  return out;
}

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  clearInterval(timer);
  busyTurns.stop();
  gcObserver.disconnect();
  if (trace !== undefined)
    for (const [k, e] of [...allocs].sort((a, b) => b[1].bytes - a[1].bytes))
      trace.push(`alloc ${e.n} ${round(e.bytes / 2 ** 20)}MiB old ${e.old} ${round(e.oldBytes / 2 ** 20)}MiB ${k}`);
  if (trace !== undefined) trace.push(`discarded ${discarded}`);
  if (trace !== undefined) trace.push(`gcs scavenges ${gcCounts.scavenges} full ${gcCounts.full}`);
  if (trace !== undefined) for (const t of threadTimes()) trace.push(t);
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
