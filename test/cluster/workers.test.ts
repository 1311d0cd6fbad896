/**
 * All cores of one machine (`serveWorkers`, no Redis or NATS): a primary
 * process (test/cluster/workers-process.ts) with 2 workers sharing one
 * port (each its own SO_REUSEPORT socket; `pointsub serve --workers 2`
 * below uses node:cluster's round-robin). Sessions land on both; a broadcast from one worker reaches every
 * session once; sendTo crosses workers; the session list spans them; a
 * keyed request repeated on the other worker is answered from the shared
 * store; a worker SIGKILLed is replaced and forgotten by the registry at
 * once (its will); SIGTERM to the primary closes every worker gracefully.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer as createNetServer } from "node:net";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { IpcRelay, runWorkers, type WorkerPool } from "../../src/cluster/index.ts";
import { type Connection, connect, type PointSubError } from "../../src/index.ts";
import { parseExposition, sampleKey } from "../helpers/prometheus-text.ts";
import { CLI_MAIN, type ServeProcess, startServeProcess } from "../helpers/serve-process.ts";
import { sleep, until } from "../helpers/wait.ts";

const SCRIPT = join(import.meta.dirname, "workers-process.ts");
const utf8 = new TextDecoder();

interface Client {
  conn: Connection;
  id: string;
  got: string[];
}

async function call(conn: Connection, route: string, body = "", key?: string): Promise<string> {
  return utf8.decode(await conn.request(route, body, key === undefined ? {} : { idempotencyKey: key }));
}

const node = (c: Client) => c.id.slice(0, c.id.indexOf("."));
const count = (c: Client, text: string) => c.got.filter((g) => g === text).length;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// The deadlines below are waits for processes to start, not timing assertions: beside two busy loops
// and other work (load 31) a primary and its two workers took 41 s to be ready (a bare `node` start
// 10-15 s), past the 15 s this waited and the 30 s each describe had.
describe("serveWorkers: 2 workers on one port (SO_REUSEPORT), a cluster through the primary", {
  timeout: 120_000,
}, () => {
  let primary: ChildProcess;
  const events: Record<string, unknown>[] = [];
  const pids = new Set<number>();
  let url = "";
  let clients: Client[] = [];

  async function client(): Promise<Client> {
    const conn = await connect(url);
    const c: Client = { conn, id: "", got: [] };
    conn.on("message", (m) => c.got.push(m.text()));
    c.id = await call(conn, "/whoami");
    return c;
  }

  before(async () => {
    // Each worker binds the port itself (reusePort); `pointsub serve --workers` below uses round-robin.
    const port = await new Promise<number>((resolve) => {
      const s = createNetServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    primary = spawn(process.execPath, [SCRIPT, JSON.stringify({ workers: 2, reusePortOn: port })], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, NODE_COMPILE_CACHE: join(tmpdir(), "pointsub-test-compile-cache") },
    });
    const onExit = () => {
      primary.kill("SIGKILL");
      for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
    };
    process.once("exit", onExit);
    primary.once("exit", () => process.off("exit", onExit));
    const lines = createInterface({ input: primary.stdout as NodeJS.ReadableStream });
    lines.on("line", (line) => {
      const ev = JSON.parse(line) as Record<string, unknown>;
      events.push(ev);
      for (const w of [ev.worker, ev.replacement, ...((ev.workers as unknown[]) ?? [])]) {
        const pid = (w as { pid?: number } | undefined)?.pid;
        if (typeof pid === "number") pids.add(pid);
      }
    });
    await until(() => events.some((e) => e.event === "ready"), 90_000);
    url = String(events.find((e) => e.event === "ready")?.url);
    clients = await Promise.all(Array.from({ length: 40 }, client));
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.conn.close({ timeoutMs: 100 }).catch(() => {})));
    if (primary.exitCode === null && primary.signalCode === null) {
      const exited = new Promise((r) => primary.once("exit", r));
      primary.kill("SIGKILL");
      await exited;
    }
    for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
  });

  it("spreads the sessions over both workers; broadcast, sendTo and the session list cross them", async () => {
    // The kernel spreads connections over the workers' sockets by a hash of the address pair:
    // a few more connections until each worker has 4.
    const on = (n: string) => clients.filter((c) => node(c) === n);
    while ((on("w1").length < 4 || on("w2").length < 4) && clients.length < 200) clients.push(await client());
    const on1 = on("w1");
    const on2 = on("w2");
    assert.ok(on1.length >= 4 && on2.length >= 4, `w1: ${on1.length}, w2: ${on2.length}`);
    assert.equal(on1.length + on2.length, clients.length);
    // Both workers know each other before a broadcast goes out.
    for (const c of [on1[0], on2[0]] as Client[]) {
      for (let k = 0; (JSON.parse(await call(c.conn, "/ctl/nodes")) as string[]).length !== 2; k++) {
        assert.ok(k < 100, "the workers do not see each other");
        await sleep(20);
      }
    }
    const local = await call((on1[0] as Client).conn, "/ctl/broadcast", "to all");
    assert.equal(Number(local), on1.length, "the result counts the worker's own sessions");
    await until(() => clients.every((c) => count(c, "to all") >= 1), 5000);
    await sleep(50);
    assert.ok(
      clients.every((c) => count(c, "to all") === 1),
      "once each",
    );
    const target = on2[3] as Client;
    const sent = await call((on1[0] as Client).conn, "/ctl/send-to", JSON.stringify({ id: target.id, text: "direct" }));
    assert.equal(sent, "sent");
    await until(() => count(target, "direct") === 1, 5000);
    assert.ok(clients.every((c) => c === target || count(c, "direct") === 0));
    const list = JSON.parse(await call((on2[0] as Client).conn, "/ctl/sessions")) as { id: string; node: string }[];
    assert.deepEqual(list.map((s) => s.id).sort(), clients.map((c) => c.id).sort());
    assert.ok(list.every((s) => s.id.startsWith(`${s.node}.`)));
  });

  it("shares the idempotency store: a keyed request repeated on the other worker ran once", async () => {
    const a = clients.find((c) => node(c) === "w1") as Client;
    const b = clients.find((c) => node(c) === "w2") as Client;
    const first = await call(a.conn, "/count", "order-1", "order-1");
    assert.match(first, /^w1:\d+$/);
    assert.equal(await call(b.conn, "/count", "order-1", "order-1"), first);
    assert.equal(events.filter((e) => e.event === "ran" && e.key === "order-1").length, 1);
  });

  it("a worker killed is replaced, and the registry forgets it at once", async () => {
    const victim = clients.find((c) => node(c) === "w2") as Client;
    const pid = Number(await call(victim.conn, "/pid"));
    const survivor = clients.find((c) => node(c) === "w1") as Client;
    process.kill(pid, "SIGKILL");
    await until(() => events.some((e) => e.event === "exit"), 5000);
    const exit = events.find((e) => e.event === "exit") as { signal: string; replacement?: { nodeId: string } };
    assert.equal(exit.signal, "SIGKILL");
    assert.equal(exit.replacement?.nodeId, "w3");
    // Its will (a bye published by the primary) removes it, well before deadAfterMs (3 s).
    const killedAt = Date.now();
    for (;;) {
      const nodes = JSON.parse(await call(survivor.conn, "/ctl/nodes")) as string[];
      if (!nodes.includes("w2") && nodes.includes("w3")) break;
      assert.ok(Date.now() - killedAt < 5000, `nodes: ${nodes}`);
      await sleep(20);
    }
    const list = JSON.parse(await call(survivor.conn, "/ctl/sessions")) as { node: string }[];
    assert.ok(
      list.every((s) => s.node !== "w2"),
      "w2's sessions are gone",
    );
    // New connections reach the replacement (the kernel spreads them over the listening workers by a hash
    // of their addresses, and w3 may register before it listens: connect until one lands there, bounded);
    // a broadcast reaches both workers' sessions.
    const fresh = await Promise.all(Array.from({ length: 6 }, client));
    for (let i = 0; i < 60 && !fresh.some((c) => node(c) === "w3"); i++) {
      await sleep(20);
      fresh.push(await client());
    }
    clients = [...clients.filter((c) => node(c) !== "w2"), ...fresh];
    assert.ok(
      fresh.some((c) => node(c) === "w3"),
      `none of ${fresh.length} new connections reached w3`,
    );
    await call(survivor.conn, "/ctl/broadcast", "after the restart");
    await until(() => clients.every((c) => count(c, "after the restart") === 1), 5000);
  });

  it("SIGTERM to the primary closes every worker gracefully", async () => {
    const exited = new Promise<number | null>((r) => primary.once("exit", (code) => r(code)));
    primary.kill("SIGTERM");
    assert.equal(await exited, 0);
    assert.ok(events.some((e) => e.event === "closed"));
    for (const pid of pids) await until(() => !alive(pid), 3000);
  });
});

/** `pointsub serve` with workers, their pids from its "workers" line; `kill` ends all of them (also at process exit). */
async function startServeWorkers(
  args: string[],
  opts: { workers?: "default" } = {},
): Promise<{ serve: ServeProcess; workerPids: number[]; kill: () => void }> {
  const serve = await startServeProcess(args, {
    env: { ...process.env, NODE_COMPILE_CACHE: join(tmpdir(), "pointsub-test-compile-cache") },
    workers: opts.workers,
  });
  const announced = serve.events.find((e) => e.event === "workers")?.workers as { pid: number }[] | undefined;
  const workerPids = (announced ?? []).map((w) => w.pid);
  const kill = () => {
    serve.child.kill("SIGKILL");
    for (const pid of workerPids) if (alive(pid)) process.kill(pid, "SIGKILL");
    process.off("exit", kill);
  };
  process.once("exit", kill);
  return { serve, workerPids, kill };
}

describe("pointsub serve --workers 2", { timeout: 120_000 }, () => {
  it("prints one listening line once both workers listen, serves from both, closes both on SIGTERM", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-workers-"));
    const { serve, workerPids, kill } = await startServeWorkers(["--dir", dir, "--workers", "2"]);
    try {
      assert.equal(workerPids.length, 2);
      assert.equal(serve.events.filter((e) => e.event === "listening").length, 1);
      const conns = await Promise.all(Array.from({ length: 8 }, () => connect(serve.url)));
      for (const c of conns) assert.equal(await call(c, "/echo/1.0.0", "hi"), "hi");
      await Promise.all(conns.map((c) => c.close()));
      const code = new Promise((r) => serve.child.once("exit", (c) => r(c)));
      serve.child.kill("SIGTERM");
      assert.equal(await code, 0);
      const exits = serve.events.filter((e) => e.event === "workerExit");
      assert.deepEqual(
        exits.map((e) => e.code),
        [0, 0],
      );
      for (const pid of workerPids) await until(() => !alive(pid), 3000);
    } finally {
      kill();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("pointsub serve without --workers", { timeout: 120_000 }, () => {
  it("one worker per core (at most the connection limit), the limit divided among them: never more sessions than --max-connections", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-workers-"));
    const { serve, workerPids, kill } = await startServeWorkers(["--dir", dir, "--max-connections", "2"], {
      workers: "default",
    });
    const conns: Connection[] = [];
    try {
      // One worker per core, but no more than the smallest connection limit (each gets at least 1).
      const expected = Math.min(availableParallelism(), 2);
      // (A one-core machine runs one process: no workers line.)
      assert.equal(workerPids.length, expected === 1 ? 0 : expected);
      for (let i = 0; i < 2; i++) conns.push(await connect(serve.url));
      for (const c of conns) assert.equal(await call(c, "/echo/1.0.0", "hi"), "hi");
      // The third is refused by whichever worker it reaches: the limit holds for the whole server.
      await assert.rejects(connect(serve.url, { connectTimeoutMs: 3000 }), { code: "ERR_OVERLOADED" });
    } finally {
      await Promise.all(conns.map((c) => c.close()));
      kill();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("--workers above a connection limit is refused (each worker needs at least 1 of it)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-workers-"));
    try {
      await assert.rejects(
        startServeProcess(["--dir", dir, "--workers", "3", "--max-connections", "2"]),
        /exited with 2/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("--workers over 4 per core is a usage error; a unix:// listener is served by one process (more is a usage error)", async () => {
    // Before: --workers 1000 started a thousand processes; with unix:// every worker after the first
    // found the socket in use and was restarted for ever (the README's first serve example, on 2 cores).
    const dir = await mkdtemp(join(tmpdir(), "pointsub-workers-"));
    const sock = join(dir, "s.sock");
    const serve = (args: string[]) =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [CLI_MAIN, "serve", "--dir", join(dir, "in"), ...args], {
          stdio: ["ignore", "ignore", "pipe"],
        });
        let stderr = "";
        child.stderr.on("data", (d) => (stderr += d));
        child.on("close", (code) => resolve({ code, stderr }));
      });
    try {
      const tooMany = await serve(["--listen", "tcp://127.0.0.1:0", "--workers", "100000"]);
      assert.equal(tooMany.code, 2, tooMany.stderr);
      assert.match(tooMany.stderr, /--workers 100000: at most \d+/);
      assert.equal(tooMany.stderr.trim().split("\n").length, 1);
      const unixMany = await serve(["--listen", `unix://${sock}`, "--workers", "2"]);
      assert.equal(unixMany.code, 2, unixMany.stderr);
      assert.match(unixMany.stderr, /unix:\/\/ listener/);
      const one = await startServeProcess(["--dir", join(dir, "in")], { listen: `unix://${sock}`, workers: "default" });
      try {
        assert.equal(
          one.events.find((e) => e.event === "workers"),
          undefined,
          "no workers: this process serves",
        );
        const conn = await connect(one.url);
        assert.equal(conn.state, "open");
        await conn.close();
      } finally {
        await one.stop();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("pointsub serve --workers 2 --metrics", { timeout: 120_000 }, () => {
  it("the primary serves both workers' metrics aggregated: requests on each worker counted once in the sum", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-workers-"));
    const { serve, kill } = await startServeWorkers(["--dir", dir, "--workers", "2", "--metrics", "127.0.0.1:0"]);
    try {
      const metricsUrl = serve.events.find((e) => e.event === "metrics")?.url as string;
      assert.match(metricsUrl, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      // Round-robin: the 8 connections land on both workers; 3 requests on each.
      const conns = await Promise.all(Array.from({ length: 8 }, () => connect(serve.url)));
      for (const c of conns) {
        for (let i = 0; i < 3; i++) assert.equal(await call(c, "/echo/1.0.0", "hello"), "hello");
      }
      await Promise.all(conns.map((c) => c.close()));
      const res = await fetch(metricsUrl);
      const text = await res.text();
      assert.equal(res.status, 200, text);
      const e = parseExposition(text);
      assert.equal(e.samples.get(sampleKey("pointsub_requests_total", { route: "/echo/1.0.0", status: "ok" })), 24);
      assert.equal(e.samples.get(sampleKey("pointsub_connections_opened_total", { role: "server" })), 8);
      // A 200 means every connected worker answered (prom-client waits for each; 500 after 5 s without one).
      assert.ok(e.types.has("process_cpu_user_seconds_total"));
      await serve.stop();
      assert.equal(serve.child.exitCode, 0);
      await assert.rejects(fetch(metricsUrl), "the metrics endpoint closed with the workers");
    } finally {
      kill();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("runWorkers: restarts are bounded", { timeout: 20_000 }, () => {
  it("a worker that keeps dying is replaced maxRestarts times, then given up; the pool closes", async () => {
    const pool = runWorkers({
      workers: 1,
      maxRestarts: 2,
      signals: false,
      exec: join(import.meta.dirname, "ready-then-crash-worker.ts"),
    });
    const exits: { code: number | null; replaced: boolean }[] = [];
    let gaveUp = 0;
    pool.on("exit", (_w, code, _s, replacement) => exits.push({ code, replaced: replacement !== undefined }));
    pool.on("gaveUp", () => gaveUp++);
    assert.equal((await pool.ready).length, 1);
    await pool.closed;
    assert.deepEqual(exits, [
      { code: 3, replaced: true },
      { code: 3, replaced: true },
      { code: 3, replaced: false },
    ]);
    assert.equal(gaveUp, 1);
    assert.deepEqual(pool.workers(), []);
  });
});

describe("runWorkers: the restart window is measured on the monotonic clock", { timeout: 20_000 }, () => {
  it("a wall clock stepped back between two deaths does not make the pool give up", async () => {
    // The window compared Date.now() times: stepped back an hour after a restart, the next death
    // found that restart still "within" the window for an hour and gave the worker up.
    const realNow = Date.now;
    const pool = runWorkers({
      workers: 1,
      maxRestarts: 1,
      restartWindowMs: 50, // a worker's restart and death take longer than this
      signals: false,
      exec: join(import.meta.dirname, "ready-then-crash-worker.ts"),
    });
    const replaced: boolean[] = [];
    let gaveUp = 0;
    const twice = Promise.withResolvers<void>();
    pool.on("exit", (_w, _code, _s, replacement) => {
      replaced.push(replacement !== undefined);
      Date.now = () => realNow() - 3_600_000;
      if (replaced.length === 2 || replacement === undefined) twice.resolve();
    });
    pool.on("gaveUp", () => gaveUp++);
    try {
      await pool.ready;
      await twice.promise;
      assert.deepEqual(replaced, [true, true]);
      assert.equal(gaveUp, 0);
    } finally {
      Date.now = realNow;
      await pool.close();
    }
  });
});

describe("runWorkers: a first worker that exits before it is ready", { timeout: 20_000 }, () => {
  it("is not restarted: ready rejects naming its exit, the pool closes (a port in use failed maxRestarts workers in a row)", async () => {
    const t0 = Date.now();
    const pool = runWorkers({
      workers: 1,
      maxRestarts: 5,
      signals: false,
      exec: join(import.meta.dirname, "crashing-worker.ts"),
    });
    const exits: { code: number | null; replaced: boolean }[] = [];
    let gaveUp = 0;
    pool.on("exit", (_w, code, _s, replacement) => exits.push({ code, replaced: replacement !== undefined }));
    pool.on("gaveUp", () => gaveUp++);
    await assert.rejects(pool.ready, (e: PointSubError) => {
      assert.equal(e.code, "ERR_CONNECTION_CLOSED");
      assert.match(e.message, /exited \(code 3\) before it was ready/);
      return true;
    });
    await pool.closed;
    assert.deepEqual(exits, [{ code: 3, replaced: false }]);
    assert.equal(gaveUp, 0);
    assert.deepEqual(pool.workers(), []);
    assert.ok(Date.now() - t0 < 15_000);
  });
});

describe("runWorkers: startTimeoutMs", { timeout: 20_000 }, () => {
  it("a first worker that never gets ready: killed, ready rejects with ERR_TIMEOUT, the pool closes", async () => {
    const t0 = Date.now();
    const pool = runWorkers({
      workers: 1,
      startTimeoutMs: 800,
      signals: false,
      exec: join(import.meta.dirname, "stalling-worker.ts"),
    });
    const pid = pool.workers()[0]?.pid as number;
    const timedOut: number[] = [];
    const exits: (string | null)[] = [];
    pool.on("startTimeout", (w) => timedOut.push(w.pid));
    pool.on("exit", (_w, _c, signal, replacement) => exits.push(`${signal}${replacement === undefined ? "" : "+"}`));
    await assert.rejects(
      pool.ready,
      (e: PointSubError) => e.code === "ERR_TIMEOUT" && /startTimeoutMs/.test(e.message),
    );
    assert.ok(Date.now() - t0 >= 800);
    await pool.closed;
    assert.deepEqual(timedOut, [pid]);
    assert.deepEqual(exits, ["SIGKILL"]); // not replaced: the pool never started
    assert.equal(alive(pid), false);
  });

  it("a replacement that never gets ready is killed and counts as a restart: bounded by maxRestarts", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-stall-"));
    try {
      const pool = runWorkers({
        workers: 1,
        maxRestarts: 2,
        // The first must start within it, on a loaded machine too (a Node process took > 1.5 s at load 17).
        startTimeoutMs: 3000,
        signals: false,
        exec: join(import.meta.dirname, "stalling-worker.ts"),
        env: { POINTSUB_TEST_READY_ONCE: join(dir, "ready-once") },
      });
      let timedOut = 0;
      let gaveUp = 0;
      const exits: string[] = [];
      pool.on("startTimeout", () => timedOut++);
      pool.on("gaveUp", () => gaveUp++);
      pool.on("exit", (_w, code, signal, replacement) =>
        exits.push(`${signal ?? code}${replacement === undefined ? "" : " replaced"}`),
      );
      assert.equal((await pool.ready).length, 1); // the first one got ready, then exits with 3
      await pool.closed;
      assert.deepEqual(exits, ["3 replaced", "SIGKILL replaced", "SIGKILL"]);
      assert.equal(timedOut, 2);
      assert.equal(gaveUp, 1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("runWorkers: timeouts past a timer's range", { timeout: 20_000 }, () => {
  it("startTimeoutMs and shutdownTimeoutMs of 3e9 ms wait, not 1 ms: the worker starts, and closes gracefully", async () => {
    // Node fires a timer of more than 2^31 - 1 ms at once: the worker was killed as not ready 1 ms after its
    // fork (ready rejected ERR_TIMEOUT), and close killed every worker at once instead of letting it close.
    const dir = await mkdtemp(join(tmpdir(), "pointsub-long-"));
    try {
      const pool = runWorkers({
        workers: 1,
        startTimeoutMs: 3e9,
        shutdownTimeoutMs: 3e9,
        signals: false,
        exec: join(import.meta.dirname, "scripted-worker.ts"),
        env: { POINTSUB_ORDINALS: dir },
      });
      const exits: string[] = [];
      pool.on("exit", (_w, code, signal) => exits.push(`${signal ?? code}`));
      assert.equal((await pool.ready).length, 1);
      await pool.close();
      assert.deepEqual(exits, ["0"], "exited by itself on the shutdown message, not killed");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("IpcRelay (the primary's side), in process", () => {
  const TAG = "@pointsub";
  const peer = () => {
    const got: Record<string, unknown>[] = [];
    return { got, send: (m: unknown) => got.push(m as Record<string, unknown>) };
  };

  it("relays to subscribers, publishes a dead worker's will, ignores what is not its own", () => {
    const relay = new IpcRelay({ advanced: true });
    const a = peer();
    const b = peer();
    relay.receive(a, { [TAG]: "sub", s: "x" });
    relay.receive(b, { [TAG]: "sub", s: "x" });
    relay.receive(b, { [TAG]: "will", s: "x", d: new Uint8Array([9]) });
    assert.equal(relay.receive(a, { hello: "app" }), false, "an application message is left alone");
    assert.equal(relay.receive(a, { [TAG]: "pub", s: "x", d: 42 }), true, "bad bytes: dropped");
    relay.receive(a, { [TAG]: "pub", s: "x", d: new Uint8Array([1]) });
    assert.equal(a.got.length, 1);
    assert.equal(b.got.length, 1);
    relay.detach(b);
    assert.deepEqual(a.got[1], { [TAG]: "msg", s: "x", d: new Uint8Array([9]) });
    relay.receive(a, { [TAG]: "pub", s: "x", d: "AQ==" }); // base64 from a JSON channel
    assert.equal(b.got.length, 1, "b is gone");
    relay.close();
  });

  it("a worker that does not read its channel gets at most maxQueuedBytes of published messages queued; the rest are dropped and counted", () => {
    // A stopped worker (SIGSTOP) grew the primary by ~6 MB/s of queued broadcasts, without end.
    const relay = new IpcRelay({ advanced: true, maxQueuedBytes: 1024 * 1024 });
    const stalled = { got: 0, send: (_m: unknown) => stalled.got++ }; // never written: no callback
    const healthy = {
      got: 0,
      send: (_m: unknown, _h?: undefined, _o?: undefined, written?: (err: Error | null) => void) => {
        healthy.got++;
        written?.(null);
      },
    };
    relay.receive(stalled, { [TAG]: "sub", s: "x" });
    relay.receive(healthy, { [TAG]: "sub", s: "x" });
    const d = new Uint8Array(64 * 1024);
    for (let i = 0; i < 100; i++) relay.receive(healthy, { [TAG]: "pub", s: "x", d });
    assert.equal(healthy.got, 100);
    assert.ok(stalled.got >= 15 && stalled.got <= 16, `the stalled worker was handed ${stalled.got}`);
    assert.equal(relay.dropped, 100 - stalled.got);
    relay.close();
  });

  it("its bounds are checked: NaN, 0 or a fraction is ERR_INVALID_ARGUMENT (runWorkers' maxSharedKeys / maxSharedBytes too)", async () => {
    // NaN was taken: every create was refused "the workers' shared store is full" (the idempotency store
    // failed every keyed request ERR_OVERLOADED), and maxQueuedBytes NaN bounded nothing.
    for (const bad of [Number.NaN, 0, -1, 1.5]) {
      for (const name of ["maxKeys", "maxBytes", "maxQueuedBytes"]) {
        assert.throws(() => new IpcRelay({ advanced: true, [name]: bad }), { code: "ERR_INVALID_ARGUMENT" }, name);
      }
      // A pool made anyway (before) is closed: its worker never gets ready, and is killed after 1 s.
      const made: WorkerPool[] = [];
      const exec = join(import.meta.dirname, "stalling-worker.ts");
      try {
        assert.throws(
          () => made.push(runWorkers({ workers: 1, signals: false, shutdownTimeoutMs: 0, exec, maxSharedKeys: bad })),
          { code: "ERR_INVALID_ARGUMENT" },
        );
      } finally {
        await Promise.all(made.map((p) => p.close()));
      }
    }
    new IpcRelay({ advanced: true, maxKeys: Number.POSITIVE_INFINITY, maxBytes: 10 }).close();
  });

  it("bounds the shared store by keys and bytes; compare-and-set by revision; time to live", (t) => {
    // The relay's clock (performance.now) is the test's: on the real clock, a loaded machine that
    // descheduled the process for 30 ms between two lines expired "b" before "c" was to find
    // the store full (a fresh-clone suite run beside other work, load ~20).
    let now = 1_000_000;
    t.mock.method(performance, "now", () => now);
    const relay = new IpcRelay({ advanced: true, maxKeys: 2, maxBytes: 100 });
    const p = peer();
    const kv = (m: Record<string, unknown>) => {
      relay.receive(p, { [TAG]: "kv", ...m });
      return p.got.at(-1) as Record<string, unknown>;
    };
    assert.equal(kv({ id: 1, op: "create", key: "a", value: "1", ttl: 60_000 }).ok, true);
    assert.equal(kv({ id: 2, op: "create", key: "a", value: "2", ttl: 60_000 }).ok, false, "exists");
    assert.equal(kv({ id: 3, op: "create", key: "b", value: "x".repeat(200), ttl: 60_000 }).error !== undefined, true);
    assert.equal(kv({ id: 4, op: "create", key: "b", value: "2", ttl: 30 }).ok, true);
    assert.match(String(kv({ id: 5, op: "create", key: "c", value: "3", ttl: 60_000 }).error), /full/);
    const rev = String(kv({ id: 6, op: "get", key: "a" }).rev);
    assert.equal(kv({ id: 7, op: "update", key: "a", value: "9", rev: "nope", ttl: 60_000 }).ok, false);
    assert.equal(kv({ id: 8, op: "update", key: "a", value: "9", rev, ttl: 60_000 }).ok, true);
    assert.equal(kv({ id: 9, op: "get", key: "a" }).value, "9");
    now += 40;
    assert.equal(kv({ id: 10, op: "get", key: "b" }).value, undefined, "expired");
    assert.equal(kv({ id: 11, op: "create", key: "c", value: "3", ttl: 60_000 }).ok, true, "room again");
    assert.equal(relay.keys, 2);
    relay.close();
  });

  it("times to live are durations: a wall clock that jumps neither expires a key early nor keeps it late", (t) => {
    // Before: expiry times were Date.now() ones: the clock set an hour ahead (NTP, a VM resumed) expired
    // every key the workers shared (idempotency claims) at once; set back, kept them an hour too long.
    let now = 5_000;
    t.mock.method(performance, "now", () => now);
    t.mock.timers.enable({ apis: ["Date"], now: 10_000_000 });
    const relay = new IpcRelay({ advanced: true });
    const p = peer();
    const kv = (m: Record<string, unknown>) => {
      relay.receive(p, { [TAG]: "kv", ...m });
      return p.got.at(-1) as Record<string, unknown>;
    };
    try {
      assert.equal(kv({ id: 1, op: "create", key: "long", value: "1", ttl: 60_000 }).ok, true);
      assert.equal(kv({ id: 2, op: "create", key: "short", value: "2", ttl: 1_000 }).ok, true);
      t.mock.timers.setTime(10_000_000 + 3_600_000);
      assert.equal(kv({ id: 3, op: "get", key: "long" }).value, "1", "an hour ahead on the wall clock, 0 ms later");
      t.mock.timers.setTime(10_000_000 - 3_600_000);
      now += 1_001;
      assert.equal(kv({ id: 4, op: "get", key: "short" }).value, undefined, "1,001 ms later, the wall clock set back");
      assert.equal(kv({ id: 5, op: "get", key: "long" }).value, "1");
    } finally {
      relay.close();
    }
  });
});
