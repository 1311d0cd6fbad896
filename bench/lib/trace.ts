/**
 * Where a hol ping's time goes (issue 17), when `POINTSUB_BENCH_TRACE` names
 * a directory: the client records, per ping, when its timer was due, when
 * the request was written, what the implementation says was queued ahead of
 * it then ({@link BenchClient.traceAhead}) and when the answer came; the
 * server records when each ping arrived. Times are `performance.timeOrigin +
 * performance.now()` (ms), comparable across the two processes. Each ping
 * carries its number and the client's pid in its first 8 bytes; the files
 * are `client-<pid>.jsonl` and `server-<pid>.jsonl` (the client's pid).
 * Every process that loads this module while tracing also records its
 * garbage collections (`gc-<pid>.jsonl`: start, duration, V8's kind), so a
 * slow ping's overlap with a GC pause of the client, the server or the
 * runner (where hol-slow's shaping proxy lives) shows.
 * `node bench/hol-trace.ts <dir>` summarises them. Off (no cost) otherwise.
 */
import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { PerformanceObserver } from "node:perf_hooks";

export const TRACE_DIR: string | undefined = process.env.POINTSUB_BENCH_TRACE || undefined;

if (TRACE_DIR !== undefined) watchGc(TRACE_DIR);

/** Records this process's GC pauses into `gc-<pid>.jsonl` at exit. */
function watchGc(dir: string): void {
  const rows: string[] = [];
  const take = (entries: readonly PerformanceEntry[]) => {
    for (const e of entries) {
      const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ?? 0;
      rows.push(JSON.stringify({ start: performance.timeOrigin + e.startTime, ms: e.duration, kind }));
    }
  };
  const observer = new PerformanceObserver((list) => take(list.getEntries()));
  observer.observe({ entryTypes: ["gc"] });
  process.once("exit", () => {
    take(observer.takeRecords());
    observer.disconnect();
    if (rows.length === 0) return;
    mkdirSync(dir, { recursive: true });
    appendFileSync(join(dir, `gc-${process.pid}.jsonl`), `${rows.join("\n")}\n`);
  });
}

/** Absolute time in ms, comparable between processes of this machine. */
export function absNow(): number {
  return performance.timeOrigin + performance.now();
}

/** Writes ping `n` of client `pid` into the first 8 bytes of `msg`. */
export function tagPing(msg: Uint8Array, n: number, pid: number): void {
  const v = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
  v.setUint32(0, n);
  v.setUint32(4, pid);
}

/** Server side: a ping arrived (no-op unless tracing). */
export function traceArrival(msg: Uint8Array): void {
  if (TRACE_DIR === undefined || msg.length < 8) return;
  const v = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
  const pid = v.getUint32(4);
  if (pid === 0) return;
  serverRows.push(`${JSON.stringify({ n: v.getUint32(0), pid, arr: absNow() })}`);
  if (serverRows.length === 1) process.once("exit", flushServer);
}

const serverRows: string[] = [];
function flushServer(): void {
  if (TRACE_DIR === undefined || serverRows.length === 0) return;
  mkdirSync(TRACE_DIR, { recursive: true });
  const byPid = new Map<number, string[]>();
  for (const r of serverRows) {
    const pid = (JSON.parse(r) as { pid: number }).pid;
    byPid.set(pid, [...(byPid.get(pid) ?? []), r]);
  }
  for (const [pid, rows] of byPid) appendFileSync(join(TRACE_DIR, `server-${pid}.jsonl`), `${rows.join("\n")}\n`);
}

/** Client side: the rows of this run's pings, written at the end. */
export function writeClientTrace(rows: object[]): void {
  if (TRACE_DIR === undefined) return;
  mkdirSync(TRACE_DIR, { recursive: true });
  appendFileSync(join(TRACE_DIR, `client-${process.pid}.jsonl`), `${rows.map((r) => JSON.stringify(r)).join("\n")}\n`);
}

/**
 * hol tracing (bench/lib/trace.ts): what the connection's writer holds ahead
 * of a request just written — bytes encoded and not yet handed to the
 * transport, bytes handed over and not acknowledged by the peer (pacing
 * only), the pacer's window and rate. Reads engine internals: bench only.
 */
export function traceAhead(conn: unknown): Record<string, number> {
  const w = (conn as { writer?: Record<string, unknown> }).writer;
  if (w === undefined) return {};
  const position = w.position as number;
  const out: Record<string, number> = { unflushed: position - (w.bytesOut as number) };
  // tcp/unix/tls: what Node's socket holds (handed over, not yet taken by the kernel).
  const socket = (conn as { transport?: { socket?: { writableLength?: unknown } } }).transport?.socket;
  if (typeof socket?.writableLength === "number") out.nodeq = socket.writableLength;
  const p = w.pacer as { acked: number; rate: number; minRtt: number; extra: number; window(): number } | undefined;
  if (p !== undefined) {
    watchProbes(p);
    out.inflight = position - p.acked;
    out.window = p.window();
    out.rate = p.rate;
    out.minRtt = p.minRtt;
    out.extra = p.extra;
  }
  return out;
}

/**
 * Every acknowledgement the pacer takes (bench only, reads its internals):
 * time, the probe's round trip, bytes in flight before it, and the pacer's
 * state after it — `probes-<pid>.jsonl` beside the ping rows.
 */
const probeRows: string[] = [];
const watched = new WeakSet<object>();
function watchProbes(p: object): void {
  if (watched.has(p)) return;
  watched.add(p);
  const q = p as {
    onAck(v: number): boolean;
    probes: number[];
    acked: number;
    rate: number;
    minRtt: number;
    extra: number;
    drainSince: number;
    window(): number;
    frameLimit(): number;
    writer: { position: number };
  };
  const onAck = q.onAck.bind(q);
  q.onAck = (v: number) => {
    const seq = -v;
    let sentAt = Number.NaN;
    let pos = Number.NaN;
    for (let i = 0; i < q.probes.length; i += 3)
      if (q.probes[i] === seq) {
        sentAt = q.probes[i + 2];
        pos = q.probes[i + 1];
      }
    const now = performance.now();
    const before = { inflight: q.writer.position - q.acked, drain: q.drainSince !== 0 ? 1 : 0 };
    const r = onAck(v);
    probeRows.push(
      JSON.stringify({
        t: absNow(),
        seq,
        rtt: now - sentAt,
        pos,
        ...before,
        rate: q.rate,
        minRtt: q.minRtt,
        extra: q.extra,
        window: q.window(),
        frame: q.frameLimit(),
      }),
    );
    return r;
  };
  if (probeRows.length === 0)
    process.once("exit", () => {
      if (TRACE_DIR === undefined || probeRows.length === 0) return;
      mkdirSync(TRACE_DIR, { recursive: true });
      appendFileSync(join(TRACE_DIR, `probes-${process.pid}.jsonl`), `${probeRows.join("\n")}\n`);
    });
}
