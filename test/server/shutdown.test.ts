import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createConnection } from "node:net";
import { describe, it } from "node:test";
import { Connection } from "../../src/connection/connection.ts";
import { connect, createServer, isPointSubError, type PointSubError, type Server } from "../../src/index.ts";
import { concat, handshake, req } from "../helpers/attacker.ts";
import { KiB, pattern } from "../helpers/data.ts";
import { sleep, until } from "../helpers/wait.ts";

/**
 * A server whose /hold/1.0.0 handler waits until its call is aborted (`routes` adds others), a client,
 * and one such call in flight, its handler started.
 */
async function heldCall(routes?: (server: Server) => void) {
  const server = createServer();
  let started = 0;
  server.handle("/hold/1.0.0", async (_req, ctx) => {
    started++;
    await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
    return "late";
  });
  routes?.(server);
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const client = await connect(url);
  const call = client.request("/hold/1.0.0", "", { timeoutMs: 60_000 });
  call.catch(() => {});
  await until(() => started === 1);
  return { server, client, call };
}

/** A stream source that yields `n` chunks of `size` bytes, `gapMs` apart. */
async function* slowSource(n: number, size: number, gapMs: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < n; i++) {
    yield pattern(size, i);
    await sleep(gapMs);
  }
}

describe("graceful shutdown", () => {
  it("close({ timeoutMs }): 100 requests and a transfer in flight all finish; new work gets a typed, retryable error", async () => {
    const server = createServer();
    let started = 0;
    server.handle("/work/1.0.0", async (req) => {
      started++;
      await sleep(300);
      return req.data;
    });
    let received = 0;
    server.handleStream("/upload/1.0.0", async (stream) => {
      for await (const c of stream) received += c.length;
      return `got ${received}`;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    const goaway = new Promise<string>((r) => client.once("goaway", r));
    const calls = Array.from({ length: 100 }, (_, i) => client.request("/work/1.0.0", `call ${i}`));
    const transfer = client.sendStream("/upload/1.0.0", slowSource(20, 64 * KiB, 20));
    await until(() => started === 100 && received > 0);
    const closing = server.close({ timeoutMs: 10_000 });
    assert.equal(await goaway, "server closing");
    // After the GOAWAY the client starts nothing new here: a typed error it may retry elsewhere.
    await assert.rejects(client.request("/work/1.0.0", "late"), (e: unknown) => {
      assert.ok(isPointSubError(e));
      assert.equal(e.code, "ERR_GOING_AWAY");
      assert.equal(e.retryable, true);
      return true;
    });
    // New clients are not accepted.
    await assert.rejects(connect(url, { connectTimeoutMs: 2000 }), (e: unknown) => isPointSubError(e));
    const answers = await Promise.all(calls);
    for (const [i, a] of answers.entries()) assert.equal(new TextDecoder().decode(a), `call ${i}`);
    assert.equal(new TextDecoder().decode(await transfer), `got ${20 * 64 * KiB}`);
    await closing;
    await client.closed;
    assert.equal(server.sessions.size, 0);
  });

  it("after timeoutMs what is still running is closed: every caller gets a typed error, none hangs", async () => {
    const server = createServer();
    let started = 0;
    server.handle("/stuck/1.0.0", async () => {
      started++;
      await sleep(1500);
      return "too late";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url, { requestTimeoutMs: 60_000 });
    const calls = Array.from({ length: 100 }, () => client.request("/stuck/1.0.0"));
    const transfer = client.sendStream("/nowhere/1.0.0", slowSource(1000, 16 * KiB, 10));
    const settled = Promise.allSettled([...calls, transfer]);
    await until(() => started === 100);
    const t0 = Date.now();
    await server.close({ timeoutMs: 200 });
    const took = Date.now() - t0;
    const results = await settled;
    for (const r of results) {
      assert.equal(r.status, "rejected");
      assert.ok(isPointSubError(r.reason), String(r.reason));
      assert.ok(["ERR_CONNECTION_CLOSED", "ERR_GOING_AWAY", "ERR_NO_ROUTE"].includes(r.reason.code), r.reason.code);
    }
    assert.ok(took < 4000, `close took ${took} ms with timeoutMs 200`);
    await client.closed;
  });

  it("a close that runs out of time with work in flight is not a clean one: its close event carries ERR_CONNECTION_CLOSED", async () => {
    // Before: the calls failed with ERR_CONNECTION_CLOSED but the close event said the close was clean.
    const server = createServer();
    let started = 0;
    server.handle("/stuck/1.0.0", async (_req, ctx) => {
      started++;
      await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
      return "late";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url, { requestTimeoutMs: 60_000 });
    try {
      const closes: (PointSubError | undefined)[] = [];
      client.on("close", (err) => closes.push(err));
      const call = client.request("/stuck/1.0.0");
      call.catch(() => {});
      await until(() => started === 1);
      await client.close({ timeoutMs: 200 });
      await assert.rejects(call, { code: "ERR_CONNECTION_CLOSED", message: /with work in flight/ });
      assert.equal(closes.length, 1);
      assert.equal(closes[0]?.code, "ERR_CONNECTION_CLOSED");
      // Nothing in flight: a clean close, as before.
      const idle = await connect(url);
      const idleCloses: (PointSubError | undefined)[] = [];
      idle.on("close", (err) => idleCloses.push(err));
      await idle.close({ timeoutMs: 200 });
      assert.deepEqual(idleCloses, [undefined]);
    } finally {
      await server.close({ timeoutMs: 100 });
    }
  });

  it("close() called twice (SIGINT then SIGTERM) while a client has sent nothing yet: both settle by the timeout", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const silent = createConnection({ host: "127.0.0.1", port: Number(new URL(url).port) });
    silent.on("error", () => {});
    try {
      await once(silent, "connect");
      await sleep(100); // accepted: the server waits for the opening the client never sends
      const t0 = Date.now();
      const first = server.close({ timeoutMs: 400 }).then(() => Date.now() - t0);
      await sleep(50);
      const second = server.close({ timeoutMs: 400 }).then(() => Date.now() - t0);
      const never = sleep(3000).then(() => -1);
      const [a, b] = await Promise.all([Promise.race([first, never]), Promise.race([second, never])]);
      assert.ok(a >= 0 && a < 2000, `the first close settled after ${a} ms (-1: not within 3 s)`);
      assert.ok(b >= 0 && b < 2000, `the second close settled after ${b} ms (-1: not within 3 s)`);
    } finally {
      silent.destroy();
    }
  });

  it("a second close() with a shorter timeout ends the sessions the first is draining by its own deadline", async () => {
    const { server, client, call } = await heldCall();
    try {
      const t0 = Date.now();
      const first = server.close({ timeoutMs: 30_000 }).then(() => Date.now() - t0);
      await sleep(50);
      const second = server.close({ timeoutMs: 200 }).then(() => Date.now() - t0);
      const never = sleep(5000).then(() => -1);
      const [a, b] = await Promise.all([Promise.race([first, never]), Promise.race([second, never])]);
      assert.ok(b >= 200 && b < 2000, `the second close settled after ${b} ms (-1: not within 5 s)`);
      assert.ok(a >= 0 && a < 2000, `the first close settled after ${a} ms (-1: not within 5 s)`);
      await assert.rejects(call, { code: "ERR_CONNECTION_CLOSED" });
    } finally {
      await client.close();
    }
  });

  it("close({ timeoutMs }) ends by its deadline a session closeSession is already draining with a longer timeout", async () => {
    // Before, the session's own close (30 s) was awaited whole: close({ timeoutMs: 200 }) took 30 s.
    const { server, client, call } = await heldCall();
    try {
      const [session] = server.sessions;
      const t0 = Date.now();
      const byId = server.closeSession(session.id, "moving", { timeoutMs: 30_000 }).then(() => Date.now() - t0);
      await sleep(50);
      const closing = server.close({ timeoutMs: 200 }).then(() => Date.now() - t0);
      const never = sleep(5000).then(() => -1);
      const [a, b] = await Promise.all([Promise.race([closing, never]), Promise.race([byId, never])]);
      assert.ok(a >= 200 && a < 2000, `close({ timeoutMs: 200 }) settled after ${a} ms (-1: not within 5 s)`);
      assert.ok(b >= 0 && b < 2000, `closeSession settled after ${b} ms (-1: not within 5 s)`);
      await assert.rejects(call, { code: "ERR_CONNECTION_CLOSED" });
      assert.equal(server.sessions.size, 0);
    } finally {
      client.destroy();
    }
  });

  it("a session whose opening arrives during close() gets what is left of the close's timeout, not a timeout of its own from then (close({ timeoutMs: 1000 }) took 1.7 s)", async () => {
    const server = createServer();
    let started = 0;
    server.handle("/hold/1.0.0", async (_req, ctx) => {
      started++;
      await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
      return "late";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // The timeout each connection's close is given (the late session's is the only one here).
    const given: (number | undefined)[] = [];
    const close = Connection.prototype.close;
    Connection.prototype.close = function (this: Connection, options?: Parameters<Connection["close"]>[0]) {
      given.push(options?.timeoutMs);
      return close.call(this, options);
    };
    const late = createConnection({ host: "127.0.0.1", port: Number(new URL(url).port) });
    late.on("error", () => {});
    try {
      await once(late, "connect");
      await until(() => (server as unknown as { openings: { size: number } }).openings.size === 1);
      const timeoutMs = 60_000;
      const closing = server.close({ timeoutMs });
      const t0 = Date.now(); // after the close took its deadline
      await sleep(50);
      const sent = Date.now();
      late.write(concat(handshake(), req(1, "/hold/1.0.0", new Uint8Array(0))));
      await until(() => started === 1);
      assert.equal(given.length, 1);
      const left = timeoutMs - (sent - t0);
      assert.ok((given[0] ?? Number.POSITIVE_INFINITY) <= left, `its close got ${given[0]} ms, ${left} ms were left`);
      // A second close that gives no time ends it now.
      await server.close({ timeoutMs: 0 });
      await closing;
    } finally {
      Connection.prototype.close = close;
      late.destroy();
    }
  });

  it("a close timeoutMs that is not a number >= 0 is ERR_INVALID_ARGUMENT and closes nothing (NaN closed for ever)", async () => {
    const { server, client, call } = await heldCall((srv) => srv.handle("/echo/1.0.0", (req) => req.data));
    try {
      const [session] = server.sessions;
      for (const timeoutMs of [Number.NaN, -1]) {
        await assert.rejects(server.close({ timeoutMs }), { code: "ERR_INVALID_ARGUMENT" });
        await assert.rejects(server.closeSession(session.id, "x", { timeoutMs }), { code: "ERR_INVALID_ARGUMENT" });
        await assert.rejects(client.close({ timeoutMs }), { code: "ERR_INVALID_ARGUMENT" });
      }
      assert.equal(session.state, "open");
      assert.equal(client.state, "open");
      assert.equal(new TextDecoder().decode(await client.request("/echo/1.0.0", "still open")), "still open");
      // Still serving: a valid close then ends it by its deadline.
      const t0 = Date.now();
      const closed = await Promise.race([
        server.close({ timeoutMs: 100 }).then(() => Date.now() - t0),
        sleep(5000).then(() => -1),
      ]);
      assert.ok(closed >= 0 && closed < 2000, `close settled after ${closed} ms (-1: not within 5 s)`);
      await assert.rejects(call, { code: "ERR_CONNECTION_CLOSED" });
    } finally {
      client.destroy();
    }
  });

  it("a connection's close reason that is not a string is sent as its text (before: a raw TypeError, the connection left closing with no GOAWAY sent)", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    try {
      await until(() => server.sessions.size === 1);
      const heard = new Promise<string>((resolve) => server.on("sessionClose", (_s, _err, why) => resolve(why)));
      // A JavaScript caller passing the error it closes for.
      await client.close({ reason: new Error("boom") as unknown as string });
      assert.equal(client.state, "closed");
      assert.equal(await heard, "peer: Error: boom");
    } finally {
      client.destroy();
      await server.close();
    }
  });

  it("closing 2,000 busy sessions at once waits on one shared timer, not a timer per session", async () => {
    const server = createServer();
    let started = 0;
    server.handle("/hold/1.0.0", async () => {
      started++;
      await sleep(400);
      return "ok";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const clients = [];
    for (let i = 0; i < 2000; i += 100) {
      clients.push(...(await Promise.all(Array.from({ length: 100 }, () => connect(url)))));
    }
    try {
      const calls = clients.map((c) => c.request("/hold/1.0.0"));
      await until(() => started === 2000, 30_000);
      const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
      const before = timers(); // the handlers' sleeps, the clients' request deadlines
      const closing = server.close({ timeoutMs: 20_000 });
      // Every session is now draining (its request runs for 400 ms): the close adds a few timers, not 2,000.
      await sleep(50);
      const added = timers() - before;
      assert.ok(added < 100, `${added} more timers while 2,000 sessions drain`);
      const answers = await Promise.all(calls);
      assert.ok(answers.every((a) => new TextDecoder().decode(a) === "ok"));
      await closing;
      assert.equal(server.sessions.size, 0);
    } finally {
      for (const c of clients) c.destroy();
    }
  });
  it("a listen racing close(), or after it, leaves nothing bound: it rejects with ERR_GOING_AWAY and its listeners are closed", async () => {
    // Before, close() took the listeners bound so far: one still binding was added after it and
    // stayed bound for good, refusing every client with "server closing" (so did a later listen).
    const server = createServer();
    const listening = server.listen("tcp://127.0.0.1:0", "ws://127.0.0.1:0/late");
    await server.close();
    await assert.rejects(listening, (e: unknown) => isPointSubError(e, "ERR_GOING_AWAY"));
    assert.deepEqual(server.urls, []);
    await assert.rejects(server.listen("tcp://127.0.0.1:0"), (e: unknown) => isPointSubError(e, "ERR_GOING_AWAY"));
    assert.deepEqual(server.urls, []);
    // Nothing of the server keeps the event loop: no listener is left.
    await until(() => !process.getActiveResourcesInfo().includes("TCPServerWrap"), 2000).catch(() => {});
    assert.equal(
      process.getActiveResourcesInfo().filter((r) => r === "TCPServerWrap").length,
      0,
      String(process.getActiveResourcesInfo()),
    );
  });

  it("a server closed after a peer that never spoke keeps no timer alive: the process can exit at once", async () => {
    // Before, the sweep of connections waiting for their opening ran on (ref'd) until its next turn, up
    // to a second: a script ending with server.close() lingered that long. In a process of its own: this
    // one's other timers come and go.
    const index = new URL("../../src/index.ts", import.meta.url).href;
    const script = `
      import { createConnection } from "node:net";
      import { once } from "node:events";
      import { createServer } from ${JSON.stringify(index)};
      const server = createServer({ handshakeTimeoutMs: 30000 });
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const raw = createConnection(Number(new URL(url).port), "127.0.0.1");
      await once(raw, "connect");
      await new Promise((r) => setTimeout(r, 50));
      raw.destroy();
      await server.close();
      process.stdout.write(JSON.stringify(process.getActiveResourcesInfo().filter((r) => r === "Timeout")));
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    const [code] = await once(child, "close");
    assert.equal(code, 0);
    assert.deepEqual(JSON.parse(out), []);
  });
});
