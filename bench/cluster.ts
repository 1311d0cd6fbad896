/**
 * Cluster broadcast benchmark (issue 16): a 64-byte broadcast from one node
 * to 3 × 1,000 sessions on 3 nodes joined through one redis-server, next to
 * socket.io with @socket.io/redis-adapter doing the same on the same
 * redis-server.
 *
 *   npm run bench:cluster [-- --impl pointsub,socketio --per-node 1000 --rounds 35 --messages 100 --reps 5]
 *
 * Per run (implementations alternate: A, B, A, B, …): a fresh redis-server on
 * a free loopback port (--save '' --appendonly no), three server processes
 * (pointsub: `createServer({ cluster: redisCluster })`; socket.io: a Server
 * with `createAdapter(pub, sub)` on node-redis clients, websocket transport),
 * one process holding every client connection (`per-node` to each server),
 * and this driver relaying control messages over IPC (nothing measured
 * travels through it). Node 0 broadcasts.
 *
 * Clock: each payload carries node 0's `process.hrtime.bigint()` (Linux
 * CLOCK_MONOTONIC: one clock for every process of the machine), so a
 * delivery's latency is receipt − send time.
 * (a) Latency: `rounds` broadcasts, each once every client received the
 *     previous one; per-delivery p50 / p99 of all but the first 5 rounds.
 * (b) Throughput: `messages` broadcasts back to back (a turn yielded every
 *     16); deliveries/s = deliveries ÷ (last receipt − first send).
 *     Deliveries missing after 60 s count as lost (reported).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { latencySummary } from "./lib/stats.ts";

const file = fileURLToPath(import.meta.url);
const SIZE = 64;
/** Latency rounds not counted (first bus messages, first writes, JIT). */
const WARM_ROUNDS = 5;
type Impl = "pointsub" | "socketio";
type Msg = Record<string, unknown> & { type: string };

function payload(seq: number, phase: number): Uint8Array {
  const b = new Uint8Array(SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, seq);
  v.setUint32(4, phase);
  v.setBigUint64(8, process.hrtime.bigint());
  return b;
}

const send = (m: Msg) => (process.send as (m: Msg) => void)(m);
const yieldTurn = () => new Promise<void>((r) => setImmediate(r));

// ---------------------------------------------------------------- server role
async function serverRole(impl: Impl, node: number, redisUrl: string): Promise<void> {
  let broadcast: (p: Uint8Array) => unknown;
  let url: string;
  if (impl === "pointsub") {
    const { createServer } = await import("../src/index.ts");
    const { redisCluster } = await import("../src/cluster/index.ts");
    const cluster = redisCluster({ url: redisUrl, name: "bench", nodeId: `n${node}` });
    const server = createServer({ cluster });
    [url] = await server.listen("tcp://127.0.0.1:0");
    while (cluster.nodes().length < 3) await new Promise((r) => setTimeout(r, 50));
    broadcast = (p) => server.broadcast(p);
  } else {
    // The adapter leaves some node-redis promises unhandled (a TimeoutError under load): count them, do not die.
    let unhandled = 0;
    process.on("unhandledRejection", () => {
      if (unhandled++ === 0) console.error(`socket.io node ${node}: unhandled rejections in the redis adapter`);
    });
    const { Server } = await import("socket.io");
    const { createAdapter } = await import("@socket.io/redis-adapter");
    const { createClient } = await import("redis");
    const pub = createClient({ url: redisUrl });
    const sub = pub.duplicate();
    pub.on("error", () => {});
    sub.on("error", () => {});
    await Promise.all([pub.connect(), sub.connect()]);
    const http = createHttpServer();
    const io = new Server(http, { transports: ["websocket"], adapter: createAdapter(pub, sub) });
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(http.address() as { port: number }).port}`;
    broadcast = (p) => io.emit("m", Buffer.from(p.buffer, p.byteOffset, p.byteLength));
  }
  process.on("message", async (m: Msg) => {
    if (m.type === "round") {
      await broadcast(payload(Number(m.seq), 1));
    } else if (m.type === "blast") {
      const n = Number(m.n);
      const first = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        await broadcast(payload(i, 2));
        if ((i & 15) === 15) await yieldTurn();
      }
      send({ type: "blasted", first: first.toString() });
    }
  });
  send({ type: "ready", url });
}

// ---------------------------------------------------------------- clients role
async function clientsRole(impl: Impl, urls: string[], perNode: number, rounds: number, messages: number) {
  const total = urls.length * perNode;
  const roundCount = new Uint32Array(rounds);
  const latNs: number[] = [];
  let blastGot = 0;
  let lastNs = 0n;
  const onPayload = (d: Uint8Array) => {
    const now = process.hrtime.bigint();
    const v = new DataView(d.buffer, d.byteOffset, d.byteLength);
    const seq = v.getUint32(0);
    const phase = v.getUint32(4);
    if (phase === 1) {
      if (seq >= WARM_ROUNDS) latNs.push(Number(now - v.getBigUint64(8)));
      if (++roundCount[seq] === total) send({ type: "roundDone", seq });
    } else if (phase === 2) {
      blastGot++;
      lastNs = now;
      if (blastGot === total * messages) send({ type: "blastDone", last: lastNs.toString(), got: blastGot });
    }
  };
  if (impl === "pointsub") {
    const { connect } = await import("../src/index.ts");
    for (const url of urls) {
      for (let i = 0; i < perNode; i += 100) {
        await Promise.all(
          Array.from({ length: Math.min(100, perNode - i) }, async () => {
            const c = await connect(url);
            c.on("message", (m) => onPayload(m.data));
          }),
        );
      }
    }
  } else {
    const { io } = await import("socket.io-client");
    for (const url of urls) {
      for (let i = 0; i < perNode; i += 100) {
        await Promise.all(
          Array.from(
            { length: Math.min(100, perNode - i) },
            () =>
              new Promise<void>((resolve, reject) => {
                const s = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
                s.on("m", (b: Buffer) => onPayload(b));
                s.once("connect", () => resolve());
                s.once("connect_error", reject);
              }),
          ),
        );
      }
    }
  }
  process.on("message", (m: Msg) => {
    if (m.type === "report") {
      const lat = latencySummary(Float64Array.from(latNs, (x) => x / 1000));
      send({ type: "report", p50: lat.p50, p99: lat.p99, got: blastGot, last: lastNs.toString() });
    }
  });
  send({ type: "connected" });
}

// ---------------------------------------------------------------- driver
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createNetServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const c of running) c.kill("SIGKILL");
});

function child(args: string[]): ChildProcess {
  const c = spawn(process.execPath, [file, ...args], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  running.add(c);
  c.once("exit", () => running.delete(c));
  return c;
}

function next(c: ChildProcess, type: string, ms = 120_000): Promise<Msg> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${type} within ${ms} ms`)), ms);
    const exited = (code: number | null) => {
      clearTimeout(t);
      reject(new Error(`a bench process exited (${code}) before ${type}`));
    };
    const on = (m: Msg) => {
      if (m.type !== type) return;
      clearTimeout(t);
      c.off("message", on);
      c.off("exit", exited);
      resolve(m);
    };
    c.on("message", on);
    c.once("exit", exited);
  });
}

interface Result {
  impl: Impl;
  p50: number;
  p99: number;
  perSec: number;
  lost: number;
}

async function run(impl: Impl, perNode: number, rounds: number, messages: number): Promise<Result> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "pointsub-bench-redis-"));
  const redis = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
    { stdio: "ignore" },
  );
  const procs: ChildProcess[] = [redis];
  try {
    await new Promise((r) => setTimeout(r, 300));
    const redisUrl = `redis://127.0.0.1:${port}`;
    const servers = [0, 1, 2].map((n) => child(["server", impl, String(n), redisUrl]));
    procs.push(...servers);
    const urls = (await Promise.all(servers.map((s) => next(s, "ready")))).map((m) => String(m.url));
    const clients = child(["clients", impl, JSON.stringify(urls), String(perNode), String(rounds), String(messages)]);
    procs.push(clients);
    await next(clients, "connected");
    await new Promise((r) => setTimeout(r, 500)); // the servers register the last sessions
    for (let i = 0; i < rounds; i++) {
      const done = next(clients, "roundDone", 10_000);
      servers[0].send({ type: "round", seq: i });
      await done;
    }
    const blastDone = next(clients, "blastDone", 60_000).catch(() => undefined);
    servers[0].send({ type: "blast", n: messages });
    const blasted = await next(servers[0], "blasted");
    await blastDone;
    const report = next(clients, "report");
    clients.send({ type: "report" });
    const r = await report;
    const got = Number(r.got);
    const seconds = Number(BigInt(String(r.last)) - BigInt(String(blasted.first))) / 1e9;
    return { impl, p50: Number(r.p50), p99: Number(r.p99), perSec: got / seconds, lost: 3 * perNode * messages - got };
  } finally {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

async function driver(): Promise<void> {
  const { values } = parseArgs({
    options: {
      impl: { type: "string", default: "pointsub,socketio" },
      "per-node": { type: "string", default: "1000" },
      rounds: { type: "string", default: "35" },
      messages: { type: "string", default: "100" },
      reps: { type: "string", default: "5" },
    },
  });
  const impls = String(values.impl).split(",") as Impl[];
  const perNode = Number(values["per-node"]);
  const results: Result[] = [];
  for (let rep = 0; rep < Number(values.reps); rep++) {
    for (const impl of impls) {
      let r: Result;
      try {
        r = await run(impl, perNode, Number(values.rounds), Number(values.messages));
      } catch (err) {
        console.log(`${impl.padEnd(9)} rep ${rep + 1}: failed: ${err instanceof Error ? err.message : String(err)}`);
        continue;
      }
      results.push(r);
      console.log(
        `${impl.padEnd(9)} rep ${rep + 1}: p50 ${r.p50.toFixed(0)} µs, p99 ${r.p99.toFixed(0)} µs, ${Math.round(r.perSec)} deliveries/s, lost ${r.lost}`,
      );
    }
  }
  console.log(`\nmedians (3 nodes × ${perNode} sessions, 64 B from node 0, one redis-server):`);
  for (const impl of impls) {
    const rs = results.filter((r) => r.impl === impl);
    console.log(
      `${impl.padEnd(9)} p50 ${median(rs.map((r) => r.p50)).toFixed(0)} µs, p99 ${median(rs.map((r) => r.p99)).toFixed(0)} µs, ${Math.round(median(rs.map((r) => r.perSec)))} deliveries/s`,
    );
  }
  if (impls.length === 2) {
    const per = (i: Impl) => median(results.filter((r) => r.impl === i).map((r) => r.perSec));
    console.log(`throughput ratio ${impls[0]}/${impls[1]}: ${(per(impls[0]) / per(impls[1])).toFixed(2)}x`);
  }
}

const [role, ...rest] = process.argv.slice(2);
if (role === "server") await serverRole(rest[0] as Impl, Number(rest[1]), rest[2]);
else if (role === "clients")
  await clientsRole(
    rest[0] as Impl,
    JSON.parse(rest[1]) as string[],
    Number(rest[2]),
    Number(rest[3]),
    Number(rest[4]),
  );
else await driver();
