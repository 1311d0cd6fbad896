/**
 * Broadcast benchmark (issue "Server operations"): one server sends 64-byte
 * messages to 1,000 client connections on 127.0.0.1.
 *
 *   npm run bench:broadcast [-- --impl pointsub,pointsub-unawaited,ws,raw --clients 1000 --rounds 200 --seconds 2 --reps 3]
 *   npm run bench:broadcast -- --no-write      # print the section, leave docs/BENCHMARKS.md alone (--out FILE: elsewhere)
 *   npm run bench:broadcast -- --cpu-prof DIR  # one run per implementation, both processes profiled
 *   npm run bench -- --workload broadcast      # the same, as part of a bench run
 *
 * It is not one of bench/run.ts's per-implementation workloads: those are
 * driven by one client connection, this one by the server. So it has its own
 * driver, like bench/files.ts, and puts its section in docs/BENCHMARKS.md.
 *
 * Processes: the driver (this file without a role) starts, per run, a server
 * process and one process holding all the client connections, and relays
 * their IPC messages (control only: nothing measured travels through it).
 * Two processes on two cores: the server's sends and the clients' receiving
 * do not share a core with each other.
 *
 * Clock: every payload carries the server's `process.hrtime.bigint()` taken
 * just before the broadcast call; the clients read the same clock on receipt.
 * On Linux that is CLOCK_MONOTONIC, one clock for every process of the
 * machine, so a delivery's latency is receipt minus send time with no
 * round-trip correction.
 *
 * (a) Latency: warm-up rounds, then `rounds` rounds of one broadcast each; a
 *     round starts only after all clients received the previous one (the
 *     clients' process says so through the driver). Per delivery: receipt −
 *     send time; per round: the last client's receipt − send time ("all").
 * (b) Throughput: the server broadcasts back to back for `seconds` (at most
 *     `maxRounds`), pacing on what each API offers for backpressure, then one
 *     last marked round; deliveries/s = deliveries ÷ (last client's receipt
 *     of the marked round − first send).
 *
 * Implementations:
 *   pointsub  `await server.broadcast(payload)` (whatever it resolves to)
 *   pointsub-unawaited
 *             throughput phase only differs: `server.broadcast(payload)` not
 *             awaited, a turn yielded every 16 rounds after awaiting drain()
 *             of the sessions that are not writable (a connection's
 *             documented high-rate pattern); its latency phase is
 *             pointsub's
 *   ws        `for (const c of wss.clients) c.send(buf)`, then, when a
 *             client's bufferedAmount is over 16 KiB, waits (setImmediate
 *             polling) until those are under 4 KiB
 *   raw       node:net, one u32 BE length-prefixed frame built per round and
 *             written to every socket; when a write returned false (16 KiB
 *             buffered), waits like ws until those sockets are under 4 KiB
 *             (the strongest reference)
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import net from "node:net";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { WebSocket, WebSocketServer } from "ws";
import { connect, createServer } from "../src/index.ts";
import { Parser } from "./lib/length-prefix.ts";
import { latencySummary, peakRss } from "./lib/stats.ts";

const here = dirname(fileURLToPath(import.meta.url));
const file = fileURLToPath(import.meta.url);

export const BROADCAST_IMPLS = ["pointsub", "pointsub-unawaited", "ws", "raw"] as const;
type Impl = (typeof BROADCAST_IMPLS)[number];

export interface BroadcastParams {
  clients: number;
  size: number;
  warmRounds: number;
  rounds: number;
  seconds: number;
  maxRounds: number;
}

/** Payload header: u32 round, u32 phase, u64 send time (ns, CLOCK_MONOTONIC); the rest is filler. */
const PHASE_WARM = 0;
const PHASE_LATENCY = 1;
const PHASE_TPUT = 2;
const PHASE_END = 3;

function payload(size: number, round: number, phase: number): Buffer {
  const b = Buffer.alloc(size, 7);
  b.writeUInt32LE(round, 0);
  b.writeUInt32LE(phase, 4);
  b.writeBigUInt64LE(process.hrtime.bigint(), 8);
  return b;
}

/** Control messages between the two roles (relayed by the driver). */
type Ctl =
  | { t: "url"; url: string }
  | { t: "ready" }
  | { t: "done"; round: number }
  | { t: "sent"; rounds: number; t0: string; tEnd: string }
  | { t: "server-result"; result: ServerResult }
  | { t: "client-result"; result: ClientsResult }
  | { t: "exit" };

interface ServerResult {
  /** Broadcast call duration per latency round (until the API's completion), µs. */
  callUs: { p50: number; p99: number; p999: number; max: number };
  /** Throughput rounds sent (the marked last one included). */
  rounds: number;
  /** Deliveries per second as the server's loop saw them (sends completed per the API). */
  sendRate: number;
  /** Server CPU time (user + system) per delivery, µs: latency rounds, throughput phase. */
  cpuUsLatency: number;
  cpuUsTput: number;
  peakRss: number;
}

interface ClientsResult {
  /** Per delivery, send → receipt, µs. */
  latencyUs: { p50: number; p99: number; p999: number; max: number };
  /** Per round, send → the last client's receipt, µs. */
  allUs: { p50: number; p99: number; p999: number; max: number };
  /** Deliveries per second, first send → last client's receipt of the marked round. */
  rate: number;
  deliveries: number;
  seconds: number;
  peakRss: number;
}

// ---------------------------------------------------------------- roles

const send = (m: Ctl) => process.send?.(m);

/** Waits for a control message matching `pred`, at most `ms`. */
function nextCtl<T extends Ctl>(pred: (m: Ctl) => m is T, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      process.off("message", on);
      reject(new Error(`timed out waiting for ${what}`));
    }, ms);
    const on = (m: Ctl) => {
      if (!pred(m)) return;
      clearTimeout(t);
      process.off("message", on);
      resolve(m);
    };
    process.on("message", on);
  });
}

/** What a server implementation offers the driver loop. */
interface BroadcastServer {
  url: string;
  connected(): number;
  /** One broadcast; resolves when the API says it is done. */
  broadcast(p: Buffer): Promise<unknown> | undefined;
  /** Throughput loop only: resolves when it may send more (backpressure). */
  ready(): Promise<void> | undefined;
  close(): Promise<void> | void;
}

/** pointsub-unawaited: broadcasts per event-loop turn in the throughput phase. */
const UNAWAITED_BATCH = 16;

async function startServer(impl: Impl, size: number): Promise<BroadcastServer> {
  if (impl === "pointsub") {
    const srv = createServer();
    const [url] = await srv.listen("tcp://127.0.0.1:0");
    return {
      url,
      connected: () => srv.sessions.size,
      broadcast: (p) => srv.broadcast(p),
      ready: () => undefined,
      close: () => srv.close(),
    };
  }
  if (impl === "pointsub-unawaited") {
    // The connection's documented high-rate pattern applied to broadcast: do not await each
    // broadcast; yield a turn every UNAWAITED_BATCH rounds and await drain() of the sessions
    // that are not writable. Rounds of one turn leave in one write per session.
    const srv = createServer();
    const [url] = await srv.listen("tcp://127.0.0.1:0");
    let n = 0;
    return {
      url,
      connected: () => srv.sessions.size,
      broadcast: (p) => {
        void srv.broadcast(p);
        return undefined;
      },
      ready: () => {
        if (++n % UNAWAITED_BATCH !== 0) return undefined;
        const waits: Promise<void>[] = [];
        for (const s of srv.sessions) if (!s.writable) waits.push(s.drain());
        return Promise.all(waits).then(() => new Promise<void>((r) => setImmediate(r)));
      },
      close: () => srv.close(),
    };
  }
  if (impl === "ws") {
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false });
    await new Promise<void>((r) => wss.once("listening", () => r()));
    const { port } = wss.address() as net.AddressInfo;
    let over: WebSocket[] = [];
    return {
      url: `ws://127.0.0.1:${port}`,
      connected: () => wss.clients.size,
      broadcast: (p) => {
        for (const c of wss.clients) c.send(p);
        return undefined;
      },
      ready: () => {
        over = [];
        for (const c of wss.clients) if (c.bufferedAmount > 16 * 1024) over.push(c);
        if (over.length === 0) return undefined;
        return (async () => {
          while (over.some((c) => c.bufferedAmount > 4 * 1024)) await new Promise((r) => setImmediate(r));
        })();
      },
      close: () => {
        for (const c of wss.clients) c.terminate();
        wss.close();
      },
    };
  }
  const sockets = new Set<net.Socket>();
  let blocked: net.Socket[] = [];
  const srv = net.createServer((s) => {
    s.setNoDelay(true);
    sockets.add(s);
    s.on("close", () => sockets.delete(s)).on("error", () => {});
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address() as net.AddressInfo;
  const frame = Buffer.alloc(4 + 1 + size);
  frame.writeUInt32BE(1 + size, 0);
  return {
    url: `tcp://127.0.0.1:${port}`,
    connected: () => sockets.size,
    broadcast: (p) => {
      // One frame per round, written to every socket (a copy per round: the previous one may still be queued).
      const f = Buffer.from(frame);
      p.copy(f, 5);
      for (const s of sockets) if (!s.write(f)) blocked.push(s);
      return undefined;
    },
    ready: () => {
      // The same pacing as ws: 'drain' would wait for an empty buffer and let the socket run dry.
      if (blocked.length === 0) return undefined;
      const waiting = blocked;
      blocked = [];
      return (async () => {
        while (waiting.some((s) => s.writableLength > 4 * 1024)) await new Promise((r) => setImmediate(r));
      })();
    },
    close: () => {
      for (const s of sockets) s.destroy();
      srv.close();
    },
  };
}

async function serverRole(impl: Impl, params: BroadcastParams): Promise<void> {
  process.on("disconnect", () => process.exit(0));
  const srv = await startServer(impl, params.size);
  const readyMsg = nextCtl((m): m is { t: "ready" } => m.t === "ready", 120_000, "the clients");
  send({ t: "url", url: srv.url });
  await readyMsg;
  const until = Date.now() + 30_000;
  while (srv.connected() < params.clients) {
    if (Date.now() > until) throw new Error(`only ${srv.connected()} of ${params.clients} connected`);
    await new Promise((r) => setTimeout(r, 10));
  }
  // (a) latency: one broadcast per round, the next once all clients received it.
  const calls = new Float64Array(params.rounds);
  const cpuMeasured = () => {
    const u = process.cpuUsage();
    return u.user + u.system;
  };
  let cpuLatency = 0;
  const total = params.warmRounds + params.rounds;
  for (let r = 0; r < total; r++) {
    const warm = r < params.warmRounds;
    const done = nextCtl(
      (m): m is { t: "done"; round: number } => m.t === "done" && m.round === r,
      10_000,
      `round ${r}`,
    );
    const p = payload(params.size, r, warm ? PHASE_WARM : PHASE_LATENCY);
    const cpu0 = cpuMeasured();
    const t = process.hrtime.bigint();
    await srv.broadcast(p);
    if (!warm) calls[r - params.warmRounds] = Number(process.hrtime.bigint() - t) / 1000;
    await done;
    // Everything the server spent on the round (the writes a pointsub flush does later included).
    if (!warm) cpuLatency += cpuMeasured() - cpu0;
  }
  // (b) throughput: back to back, paced by backpressure, bounded in time and rounds.
  const cpuT0 = cpuMeasured();
  const t0 = process.hrtime.bigint();
  const stopAt = t0 + BigInt(Math.round(params.seconds * 1e9));
  let rounds = 0;
  for (;;) {
    const last = rounds + 1 >= params.maxRounds || process.hrtime.bigint() >= stopAt;
    // Await only what an API returns: awaiting nothing would still yield a microtask turn (and
    // let pointsub's writers flush each round, which pointsub-unawaited is there to avoid).
    const sent = srv.broadcast(payload(params.size, rounds, last ? PHASE_END : PHASE_TPUT));
    if (sent !== undefined) await sent;
    rounds++;
    const ready = srv.ready();
    if (ready !== undefined) await ready;
    if (last) break;
  }
  const tEnd = process.hrtime.bigint();
  const cpuTput = cpuMeasured() - cpuT0;
  send({ t: "sent", rounds, t0: String(t0), tEnd: String(tEnd) });
  send({
    t: "server-result",
    result: {
      callUs: latencySummary(calls),
      rounds,
      sendRate: (rounds * params.clients) / (Number(tEnd - t0) / 1e9),
      cpuUsLatency: cpuLatency / (params.rounds * params.clients),
      cpuUsTput: cpuTput / (rounds * params.clients),
      peakRss: peakRss(),
    },
  });
  await nextCtl((m): m is { t: "exit" } => m.t === "exit", 120_000, "exit");
  await srv.close();
  process.exit(0);
}

/** Opens one client connection of `impl`; `onData` gets each message's bytes. */
async function openClient(impl: Impl, url: string, onData: (b: Uint8Array) => void): Promise<() => void> {
  if (impl === "pointsub" || impl === "pointsub-unawaited") {
    const c = await connect(url);
    c.on("message", (m) => onData(m.data));
    return () => c.destroy();
  }
  if (impl === "ws") {
    const w = new WebSocket(url, { perMessageDeflate: false });
    await new Promise<void>((r, j) => w.once("open", () => r()).once("error", j));
    w.on("message", (d: Buffer) => onData(d));
    return () => w.terminate();
  }
  const { hostname, port } = new URL(url);
  const s = net.connect(Number(port), hostname);
  s.setNoDelay(true);
  await new Promise<void>((r, j) => s.once("connect", () => r()).once("error", j));
  const parser = new Parser((_kind, p) => onData(p));
  s.on("data", (chunk: Buffer) => parser.push(chunk));
  s.on("error", () => {});
  return () => s.destroy();
}

async function clientsRole(impl: Impl, url: string, params: BroadcastParams): Promise<void> {
  process.on("disconnect", () => process.exit(0));
  const n = params.clients;
  const lat = new Float64Array(params.rounds * n);
  const all = new Float64Array(params.rounds);
  const perRound = new Uint32Array(params.warmRounds + params.rounds);
  let tputDeliveries = 0;
  let endSeen = 0;
  let tLastEnd = 0n;
  let endResolve: () => void = () => {};
  const ended = new Promise<void>((r) => {
    endResolve = r;
  });
  const onData = (b: Uint8Array) => {
    const now = process.hrtime.bigint();
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const round = v.getUint32(0, true);
    const phase = v.getUint32(4, true);
    if (phase === PHASE_TPUT || phase === PHASE_END) {
      tputDeliveries++;
      if (phase === PHASE_END && ++endSeen === n) {
        tLastEnd = now;
        endResolve();
      }
      return;
    }
    const sent = v.getBigUint64(8, true);
    const k = perRound[round]++;
    if (phase === PHASE_LATENCY) {
      const i = round - params.warmRounds;
      lat[i * n + k] = Number(now - sent) / 1000;
      if (k + 1 === n) all[i] = Number(now - sent) / 1000;
    }
    if (k + 1 === n) send({ t: "done", round });
  };
  const closers: (() => void)[] = [];
  // At most 100 connection attempts in flight (below the listen backlog).
  for (let i = 0; i < n; i += 100) {
    const batch = Math.min(100, n - i);
    closers.push(...(await Promise.all(Array.from({ length: batch }, () => openClient(impl, url, onData)))));
  }
  const sentMsg = nextCtl(
    (m): m is Extract<Ctl, { t: "sent" }> => m.t === "sent",
    params.seconds * 1000 + 120_000,
    "the end of the throughput phase",
  );
  send({ t: "ready" });
  const sent = await sentMsg;
  const timeout = new Promise<never>((_, j) =>
    setTimeout(() => j(new Error(`${endSeen} of ${n} clients received the last round`)), 60_000).unref(),
  );
  await Promise.race([ended, timeout]);
  const deliveries = sent.rounds * n;
  if (tputDeliveries !== deliveries) throw new Error(`received ${tputDeliveries} of ${deliveries} deliveries`);
  const seconds = Number(tLastEnd - BigInt(sent.t0)) / 1e9;
  send({
    t: "client-result",
    result: {
      latencyUs: latencySummary(lat),
      allUs: latencySummary(all),
      rate: deliveries / seconds,
      deliveries,
      seconds,
      peakRss: peakRss(),
    },
  });
  await nextCtl((m): m is { t: "exit" } => m.t === "exit", 120_000, "exit");
  for (const c of closers) c();
  process.exit(0);
}

// ---------------------------------------------------------------- driver

export interface BroadcastRun {
  server: ServerResult;
  clients: ClientsResult;
}

function fromChild<T extends Ctl>(child: ChildProcess, t: T["t"], ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`timed out waiting for ${t}`)), ms);
    const onMsg = (m: Ctl) => {
      if (m.t === t) done(undefined, m as T);
    };
    const onExit = (code: number | null) => done(new Error(`process exited (${code}) before ${t}`));
    const done = (err: Error | undefined, m?: T) => {
      clearTimeout(timer);
      child.off("message", onMsg).off("exit", onExit);
      if (err === undefined) resolve(m as T);
      else reject(err);
    };
    child.on("message", onMsg).once("exit", onExit);
  });
}

/** One run of `impl`: a server process, a clients process, the driver relaying between them. */
export async function runBroadcastOnce(impl: Impl, params: BroadcastParams, profDir?: string): Promise<BroadcastRun> {
  const opts = { stdio: ["ignore", "inherit", "inherit", "ipc"] as ("ignore" | "inherit" | "ipc")[] };
  const prof = (role: string) =>
    profDir === undefined
      ? []
      : ["--cpu-prof", "--cpu-prof-dir", profDir, "--cpu-prof-name", `${impl}.${role}.cpuprofile`];
  const server = spawn(process.execPath, [...prof("server"), file, "server", impl, JSON.stringify(params)], opts);
  let clients: ChildProcess | undefined;
  const exited = (c: ChildProcess) =>
    c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((r) => c.once("exit", r));
  try {
    const { url } = await fromChild<Extract<Ctl, { t: "url" }>>(server, "url", 30_000);
    const c = spawn(process.execPath, [...prof("clients"), file, "clients", impl, url, JSON.stringify(params)], opts);
    clients = c;
    c.on("message", (m: Ctl) => {
      if (server.connected) server.send(m);
    });
    server.on("message", (m: Ctl) => {
      if (c.connected) c.send(m);
    });
    const budget = 180_000 + params.seconds * 1000;
    const [s, cl] = await Promise.all([
      fromChild<Extract<Ctl, { t: "server-result" }>>(server, "server-result", budget),
      fromChild<Extract<Ctl, { t: "client-result" }>>(c, "client-result", budget),
    ]);
    for (const p of [server, c]) if (p.connected) p.send({ t: "exit" } satisfies Ctl);
    await Promise.race([Promise.all([exited(server), exited(c)]), new Promise((r) => setTimeout(r, 10_000))]);
    return { server: s.result, clients: cl.result };
  } finally {
    // Only the two processes started above, and only if still running.
    for (const p of [server, clients]) if (p !== undefined && p.exitCode === null && p.signalCode === null) p.kill();
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
};
const fmt = (x: number, digits = 0) => x.toLocaleString("en-US", { maximumFractionDigits: digits });
const cell = (xs: number[], digits = 0) =>
  xs.length === 0
    ? "—"
    : `${fmt(median(xs), digits)} (${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)})`;

/** Runs every implementation `reps` times (interleaved) and returns the markdown section. */
export async function runBroadcastBench(
  impls: readonly Impl[],
  params: BroadcastParams,
  reps: number,
  log: (s: string) => void = console.error,
): Promise<string> {
  const load0 = loadavg();
  const runs = new Map<Impl, BroadcastRun[]>(impls.map((i) => [i, []]));
  const errors: string[] = [];
  for (let r = 0; r < reps; r++) {
    for (const impl of impls) {
      try {
        const run = await runBroadcastOnce(impl, params);
        runs.get(impl)?.push(run);
        log(`broadcast ${impl}: ${JSON.stringify(run)}`);
      } catch (err) {
        errors.push(`${impl}: ${(err as Error).message}`);
        log(`broadcast ${impl}: ${(err as Error).message}`);
      }
    }
  }
  const load1 = loadavg();
  const ms = (us: number[]) => us.map((u) => u / 1000);
  const lines = [
    `## Broadcast: ${params.size} B to ${fmt(params.clients)} connections`,
    "",
    `Generated by \`npm run bench:broadcast\` (bench/broadcast.ts; \`npm run bench\` runs it too) on ${new Date().toISOString().slice(0, 10)}: Node ${process.version},`,
    `${cpus().length} × ${cpus()[0]?.model ?? "unknown"}, load average ${load0.map((l) => l.toFixed(2)).join(" ")} before and`,
    `${load1.map((l) => l.toFixed(2)).join(" ")} after. Median of ${reps} runs with (min–max), implementations interleaved.`,
    "One server process, one process holding all the client connections (127.0.0.1), the driver relaying",
    "control messages between them (nothing measured passes through it).",
    "",
    `Latency: ${params.rounds} rounds after ${params.warmRounds} unmeasured, one broadcast per round, the next once`,
    "every client received it. A delivery's latency is the send time (taken just before the broadcast call, carried",
    "in the payload) to that client's receipt, both read from CLOCK_MONOTONIC (`process.hrtime.bigint()`), one clock",
    'for both processes; "all delivered" is the same for the round\'s last client. "call" is how long the',
    'broadcast call took to complete (pointsub: its promise; ws and raw: the loop), "server CPU" the server',
    "process's user + system time per delivery over the measured rounds.",
    "",
    "| implementation | delivery p50 ms | delivery p99 ms | delivery max ms | all delivered p50 ms | all delivered p99 ms | call p50 ms | server CPU µs per delivery |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  const tput = [
    "| implementation | deliveries/s | rounds | server CPU µs per delivery | server peak RSS MB | clients' peak RSS MB |",
    "| --- | --- | --- | --- | --- | --- |",
  ];
  const mb = (xs: number[]) => xs.map((x) => x / 1e6);
  for (const impl of impls) {
    const rs = runs.get(impl) ?? [];
    if (rs.length === 0) {
      lines.push(`| ${impl} | failed | | | | | | |`);
      tput.push(`| ${impl} | failed | | | | |`);
      continue;
    }
    const c = rs.map((x) => x.clients);
    const s = rs.map((x) => x.server);
    lines.push(
      `| ${impl} | ${cell(ms(c.map((x) => x.latencyUs.p50)), 1)} | ${cell(ms(c.map((x) => x.latencyUs.p99)), 1)} | ` +
        `${cell(ms(c.map((x) => x.latencyUs.max)), 1)} | ${cell(ms(c.map((x) => x.allUs.p50)), 1)} | ` +
        `${cell(ms(c.map((x) => x.allUs.p99)), 1)} | ${cell(ms(s.map((x) => x.callUs.p50)), 1)} | ` +
        `${cell(
          s.map((x) => x.cpuUsLatency),
          1,
        )} |`,
    );
    tput.push(
      `| ${impl} | ${cell(c.map((x) => x.rate))} | ${cell(s.map((x) => x.rounds))} | ${cell(
        s.map((x) => x.cpuUsTput),
        1,
      )} | ` + `${cell(mb(s.map((x) => x.peakRss)))} | ${cell(mb(c.map((x) => x.peakRss)))} |`,
    );
  }
  lines.push(
    "",
    `Throughput: broadcasts back to back for ${params.seconds} s (at most ${fmt(params.maxRounds)} rounds), paced by each`,
    "API's backpressure, then one marked round; deliveries ÷ (first send → the last client's receipt of the marked",
    "round). Every client is checked to have received every round.",
    "",
    ...tput,
  );
  lines.push("", "Not run (no broadcast implementation in this harness yet): socket.io, grpc, zeromq, nats, libp2p.");
  const rate = (i: Impl) => median((runs.get(i) ?? []).map((x) => x.clients.rate));
  const p99 = (i: Impl) => median((runs.get(i) ?? []).map((x) => x.clients.latencyUs.p99)) / 1000;
  lines.push("");
  if (impls.includes("pointsub")) {
    const targets: string[] = [];
    const l = p99("pointsub");
    const all = median((runs.get("pointsub") ?? []).map((x) => x.clients.allUs.p99)) / 1000;
    if (Number.isFinite(l)) {
      targets.push(
        `p99 under 50 ms: **${fmt(all, 1)} ms** until delivered to all (per delivery ${fmt(l, 1)} ms), ` +
          `${all < 50 ? "met" : "**missed**"}`,
      );
    }
    if (impls.includes("ws")) {
      const x = rate("pointsub") / rate("ws");
      if (Number.isFinite(x)) targets.push(`≥ 3× ws deliveries/s: **${fmt(x, 2)}×**, ${x >= 3 ? "met" : "**missed**"}`);
      // Steadier on a shared machine than wall-clock rates: server CPU spent per delivery.
      const cpu = (i: Impl) => median((runs.get(i) ?? []).map((r) => r.server.cpuUsTput));
      const y = cpu("ws") / cpu("pointsub");
      if (Number.isFinite(y)) targets.push(`(deliveries per server CPU-second vs ws: ${fmt(y, 2)}×)`);
    }
    if (impls.includes("raw")) {
      const x = rate("pointsub") / rate("raw");
      if (Number.isFinite(x)) targets.push(`(vs raw node:net: ${fmt(x, 2)}×)`);
    }
    if (impls.includes("pointsub-unawaited") && impls.includes("ws")) {
      const x = rate("pointsub-unawaited") / rate("ws");
      if (Number.isFinite(x)) targets.push(`(pointsub-unawaited vs ws: ${fmt(x, 2)}×)`);
    }
    if (targets.length > 0) lines.push(`Targets (pointsub): ${targets.join("; ")}.`, "");
  }
  if (errors.length > 0) lines.push(`Failed runs: ${errors.join("; ")}.`, "");
  return `${lines.join("\n")}\n`;
}

export const BROADCAST_DEFAULTS: BroadcastParams = {
  clients: 1000,
  size: 64,
  warmRounds: 20,
  rounds: 200,
  seconds: 2,
  maxRounds: 20_000,
};

/** Replaces (or appends) the section starting with `heading` in `doc`: up to the next `## ` heading. */
export function putSection(doc: string, heading: string, section: string): string {
  const at = doc.indexOf(heading);
  if (at < 0) return `${doc.trimEnd()}\n\n${section}`;
  const next = doc.indexOf("\n## ", at + heading.length);
  return `${doc.slice(0, at)}${section.trimEnd()}\n${next < 0 ? "" : `\n${doc.slice(next + 1)}`}`;
}

const role = process.argv[2];
if (role === "server") await serverRole(process.argv[3] as Impl, JSON.parse(process.argv[4]) as BroadcastParams);
else if (role === "clients") {
  await clientsRole(process.argv[3] as Impl, process.argv[4], JSON.parse(process.argv[5]) as BroadcastParams);
} else if (process.argv[1] === file) {
  const { values } = parseArgs({
    options: {
      impl: { type: "string" },
      clients: { type: "string" },
      rounds: { type: "string" },
      seconds: { type: "string" },
      reps: { type: "string" },
      out: { type: "string" },
      "no-write": { type: "boolean", default: false },
      "cpu-prof": { type: "string" },
    },
  });
  const impls = (values.impl ?? BROADCAST_IMPLS.join(",")).split(",") as Impl[];
  for (const i of impls) if (!BROADCAST_IMPLS.includes(i)) throw new Error(`unknown implementation ${i}`);
  const params: BroadcastParams = {
    ...BROADCAST_DEFAULTS,
    ...(values.clients === undefined ? {} : { clients: Number(values.clients) }),
    ...(values.rounds === undefined ? {} : { rounds: Number(values.rounds) }),
    ...(values.seconds === undefined ? {} : { seconds: Number(values.seconds) }),
  };
  if (values["cpu-prof"] !== undefined) {
    // One run per implementation, both processes under --cpu-prof: <dir>/<impl>.{server,clients}.cpuprofile.
    for (const impl of impls) {
      const run = await runBroadcastOnce(impl, params, values["cpu-prof"]);
      console.log(JSON.stringify({ impl, ...run }));
    }
  } else {
    const section = await runBroadcastBench(impls, params, Number(values.reps ?? 3));
    console.log(section);
    if (values["no-write"] !== true) {
      const out = values.out ?? join(here, "..", "docs", "BENCHMARKS.md");
      const doc = await readFile(out, "utf8").catch(() => "# Benchmarks\n");
      await writeFile(out, putSection(doc, "## Broadcast", section));
      console.error(`updated ${out}`);
    }
  }
}
