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
 * `node bench/hol-trace.ts <dir>` summarises them. For `large`, pointsub
 * writes `large-client-<pid>.json` and `large-server-<pid>.json`: what the
 * sender waited for and what each side spent ({@link traceLarge}). Off (no
 * cost) otherwise.
 */
import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { performance as nodePerformance, PerformanceObserver } from "node:perf_hooks";

export const TRACE_DIR: string | undefined = process.env.POINTSUB_BENCH_TRACE || undefined;

if (TRACE_DIR !== undefined) {
  watchGc(TRACE_DIR);
  watchLoop(TRACE_DIR);
}

/**
 * Records this process's event-loop stalls into `loop-<pid>.jsonl` at exit:
 * a 2 ms interval that fired more than 6 ms late, with when it ended, how long
 * the loop was away and the CPU (user + system) the process used meanwhile —
 * CPU close to the gap: the process was busy; far below it: it was not
 * running (descheduled on a loaded machine) or waited in a system call.
 */
function watchLoop(dir: string): void {
  const rows: string[] = [];
  let last = performance.now();
  let cpu = process.cpuUsage();
  const t = setInterval(() => {
    const now = performance.now();
    const c = process.cpuUsage();
    const gap = now - last;
    if (gap > 8) {
      const used = (c.user - cpu.user + c.system - cpu.system) / 1000;
      rows.push(JSON.stringify({ t: performance.timeOrigin + now, gap, cpu: used }));
    }
    last = now;
    cpu = c;
  }, 2);
  t.unref();
  process.once("exit", () => {
    clearInterval(t);
    if (rows.length === 0) return;
    mkdirSync(dir, { recursive: true });
    appendFileSync(join(dir, `loop-${process.pid}.jsonl`), `${rows.join("\n")}\n`);
  });
}

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
    pace?: number;
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
        pace: q.pace ?? 0,
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

/**
 * `large` tracing (issue 17: what each side waits for during one big
 * message), when `POINTSUB_BENCH_TRACE` names a directory. Returns a
 * function to call when the transfer ended; it writes `large-client-<pid>.json`:
 * wall ms; the ms the connection's writer spent in each state, judged after
 * every pump, flush and drain (`send`: frames could go; `pacer`: the
 * pacer's window is full; `msgcredit` / `conncredit`: the peer's message or
 * connection credit is short; `transport`: Node's socket asked to wait;
 * `none`: nothing queued) and how often it entered each; the pacer's
 * acknowledgements, its rate resets (a sample under 0.8× the rate before)
 * and its largest round trip; the process's CPU (user, system), event-loop
 * active ms, page faults, voluntary context switches and GC ms. Reads engine
 * internals: bench only. Undefined (and `mark` not called) when not tracing;
 * `mark` tells the server its side starts now.
 */
export function traceLarge(conn: unknown, mark?: () => void): (() => void) | undefined {
  if (TRACE_DIR === undefined) return undefined;
  // Tells the server's side of the trace that the transfer starts (traceSinkSession).
  mark?.();
  const w = (conn as { writer?: Record<string, unknown> }).writer as
    | {
        writable: boolean;
        bulkState?: { list: { credit: number }[] };
        connCredit: number;
        position: number;
        pacer?: { room(p: number): number; rate: number; onAck(v: number): boolean; probes: number[] };
        [k: string]: unknown;
      }
    | undefined;
  if (w === undefined) return undefined;
  const MIN_CHUNK = 16 * 1024;
  const stateOf = (): string => {
    if (!w.writable) return "transport";
    const list = w.bulkState?.list ?? [];
    if (list.length === 0) return "none";
    if (w.pacer !== undefined && w.pacer.room(w.position) <= 0) return "pacer";
    if (w.connCredit < MIN_CHUNK) return "conncredit";
    if (list[0].credit < MIN_CHUNK) return "msgcredit";
    return "send";
  };
  const ms: Record<string, number> = {};
  const entered: Record<string, number> = {};
  let state = stateOf();
  let since = performance.now();
  const note = () => {
    const s = stateOf();
    if (s === state) return;
    const now = performance.now();
    ms[state] = (ms[state] ?? 0) + now - since;
    entered[s] = (entered[s] ?? 0) + 1;
    state = s;
    since = now;
  };
  for (const k of ["pump", "flush", "onDrain"]) {
    const f = w[k] as (...a: unknown[]) => unknown;
    w[k] = (...a: unknown[]) => {
      const r = f.apply(w, a);
      note();
      return r;
    };
  }
  const pacer = { acks: 0, resets: 0, maxRtt: 0 };
  let wrapped = false;
  const wrapPacer = () => {
    const p = w.pacer;
    if (p === undefined || wrapped) return;
    wrapped = true;
    const onAck = p.onAck.bind(p);
    p.onAck = (v: number) => {
      const before = p.rate;
      const i = p.probes.indexOf(-v);
      if (i >= 0) pacer.maxRtt = Math.max(pacer.maxRtt, performance.now() - p.probes[i + 2]);
      const r = onAck(v);
      pacer.acks++;
      if (p.rate < 0.8 * before) pacer.resets++;
      return r;
    };
  };
  // The pacer is made with the first chunked message: wrapped at the first pump after it.
  const pump = w.pump as (...a: unknown[]) => unknown;
  w.pump = (...a: unknown[]) => {
    wrapPacer();
    return pump.apply(w, a);
  };
  const end = processMeter();
  const t0 = performance.now();
  return () => {
    note();
    const now = performance.now();
    ms[state] = (ms[state] ?? 0) + now - since;
    const round = (o: Record<string, number>) =>
      Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Math.round(v)]));
    const row = { wall: Math.round(now - t0), writerMs: round(ms), entered, pacer, ...end() };
    mkdirSync(TRACE_DIR, { recursive: true });
    appendFileSync(join(TRACE_DIR, `large-client-${process.pid}.json`), `${JSON.stringify(row)}\n`);
  };
}

/** Starts measuring this process: returns what it used since (CPU, event loop, page faults, context switches, GC). */
export function processMeter(): () => Record<string, number> {
  const cpu0 = process.cpuUsage();
  const ru0 = process.resourceUsage();
  const elu0 = nodePerformance.eventLoopUtilization();
  let gcMs = 0;
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcMs += e.duration;
  });
  observer.observe({ entryTypes: ["gc"] });
  return () => {
    const cpu = process.cpuUsage(cpu0);
    const ru = process.resourceUsage();
    const elu = nodePerformance.eventLoopUtilization(elu0);
    observer.disconnect();
    return {
      userMs: Math.round(cpu.user / 1000),
      systemMs: Math.round(cpu.system / 1000),
      loopActiveMs: Math.round(elu.active),
      loopIdleMs: Math.round(elu.idle),
      pageFaults: ru.minorPageFault - ru0.minorPageFault,
      wakeups: ru.voluntaryContextSwitches - ru0.voluntaryContextSwitches,
      gcMs: Math.round(gcMs),
    };
  };
}

/**
 * Server side of `large` tracing: the same process figures from `start()`
 * (the client's empty one-way message sent just before its big request,
 * see `traceLarge` in impls/pointsub.ts) to `end()` (the sink request
 * answered), into `large-server-<pid>.json`.
 */
export function traceSinkSession(): { start(): void; end(): void } | undefined {
  if (TRACE_DIR === undefined) return undefined;
  let end = processMeter();
  let t0 = performance.now();
  return {
    start() {
      end = processMeter();
      t0 = performance.now();
    },
    end() {
      const row = { wall: Math.round(performance.now() - t0), ...end() };
      mkdirSync(TRACE_DIR, { recursive: true });
      appendFileSync(join(TRACE_DIR, `large-server-${process.pid}.json`), `${JSON.stringify(row)}\n`);
    },
  };
}
