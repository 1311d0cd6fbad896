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
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { createServer, FILE_ROUTE, fileSink, type ServerOptions } from "../../src/index.ts";
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
}, reportMs);

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  clearInterval(timer);
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
