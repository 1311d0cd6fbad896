/**
 * The resilient client's edges (client review, session 29): a server's
 * GOAWAY moves new calls to the next connection at once; a call's own
 * deadline and signal end it while it is held offline or waits out a rate
 * limit; the signal of connectResilient ends its backoff; close() ends a
 * connection attempt under way; empty calls held offline are bounded; a
 * zero initial delay does not make a tight reconnect loop.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import {
  connect,
  connectLpResilient,
  connectResilient,
  createLpServer,
  createServer,
  type Handler,
  idempotency,
  type Middleware,
  type PointSubError,
} from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const outcome = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => "ok",
    (e: PointSubError) => e.code,
  );

describe("resilient client edges", () => {
  it("calls a `connected` state listener makes go before the calls held offline, which keep their order", async () => {
    // As socket.io's connect handlers: a client re-subscribes or says hello before what it held (README).
    const s1 = createServer();
    const [url] = await s1.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    const s2 = createServer();
    const got: string[] = [];
    s2.on("message", (m) => got.push(m.text()));
    try {
      await s1.close({ timeoutMs: 100 });
      await until(() => client.state === "reconnecting");
      const held = [client.send("held 1"), client.send("held 2")];
      client.on("state", (to) => {
        if (to === "connected") void client.send("hello");
      });
      await s2.listen(url);
      await Promise.all(held);
      await until(() => got.length === 3);
      assert.deepEqual(got, ["hello", "held 1", "held 2"]);
    } finally {
      await client.close();
      await s2.close();
    }
  });

  it("after a GOAWAY new calls go to the next connection (the old one drains its calls in flight)", async () => {
    const s1 = createServer();
    s1.handle("/slow/1", async () => {
      await sleep(3000);
      return "slow done";
    });
    const [url] = await s1.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    const s2 = createServer();
    s2.handle("/echo/1", (r) => r.data);
    const states: string[] = [];
    client.on("state", (to) => states.push(to));
    try {
      const slow = client.request("/slow/1", "x", { timeoutMs: 10_000 });
      let slowDone = false;
      void slow.then(
        () => (slowDone = true),
        () => (slowDone = true),
      );
      await sleep(100);
      const closing = s1.close({ timeoutMs: 5000 }); // graceful: GOAWAY, then it drains
      await s2.listen(url); // the same port: a restart
      await until(() => states.includes("reconnecting"));
      // Before: "connected" to the closing connection until it drained; each of these failed at once.
      assert.equal(await outcome(client.send("hello")), "ok");
      assert.equal(text(await client.request("/echo/1", "a", { timeoutMs: 5000 })), "a");
      assert.equal(text(await client.request("/echo/1", "b", { idempotencyKey: "k-1", timeoutMs: 5000 })), "b");
      assert.ok(!slowDone, "answered by the new connection while the old one still drains its slow call");
      assert.equal(text(await slow), "slow done");
      await closing;
    } finally {
      await client.close();
      await s2.close();
    }
  });

  it("a second close() resolves with the first, once the connection is closed (it resolved at once)", async () => {
    const server = createServer();
    let started = 0;
    server.handle("/slow/1", async () => {
      started++;
      await sleep(400);
      return "slow done";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url);
    try {
      const slow = client.request("/slow/1", "x", { timeoutMs: 10_000 });
      await until(() => started === 1);
      const conn = client.connection;
      let answered = false;
      const first = client.close();
      const second = client.close().then(() => [answered, conn?.state]);
      slow.then(() => {
        answered = true;
      });
      // The first close lets the call in flight finish; the second must not resolve before it.
      assert.deepEqual(await second, [true, "closed"]);
      await first;
      assert.equal(text(await slow), "slow done");
      assert.equal(client.state, "closed");
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("calls held while offline go out in the order they were made, requests and sends alike", async () => {
    // Before: every held send went out first, the held requests after them (a request's attempt
    // went on a few microtasks after the queue was run): [msg 2, msg 4, req 1, req 3].
    const seen: string[] = [];
    const serve = () => {
      const s = createServer();
      s.handle("/note/1", (req) => {
        seen.push(`req ${req.text()}`);
        return "ok";
      });
      s.on("message", (m) => seen.push(`msg ${m.text()}`));
      return s;
    };
    const s1 = serve();
    const [url] = await s1.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    const s2 = serve();
    try {
      await s1.close();
      await until(() => client.state === "reconnecting");
      const calls = [
        client.request("/note/1", "1"),
        client.send("2"),
        client.request("/note/1", "3", { idempotencyKey: "k-order" }),
        client.send("4"),
        client.request("/note/1", "5"),
      ];
      await s2.listen(url);
      assert.deepEqual(await Promise.all(calls.map(outcome)), ["ok", "ok", "ok", "ok", "ok"]);
      await until(() => seen.length === 5);
      assert.deepEqual(seen, ["req 1", "msg 2", "req 3", "msg 4", "req 5"]);
    } finally {
      await client.close();
      await s2.close();
    }
  });

  it("listeners that throw (state, backoff, attemptFailed, close) surface uncaught; the client still reconnects and closes", async () => {
    // Before: a throwing backoff or attemptFailed listener ended the reconnection loop (an unhandled
    // rejection): the client stayed "reconnecting" for good and the held request timed out.
    const caught: string[] = [];
    const saved = process.listeners("uncaughtException");
    process.removeAllListeners("uncaughtException");
    process.on("uncaughtException", (e) => caught.push(e.message));
    const serve = () => createServer().handle("/echo/1", (r) => r.data);
    const s1 = serve();
    const [url] = await s1.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    const s2 = serve();
    try {
      let failed = 0;
      client.on("attemptFailed", () => {
        failed++;
        throw new Error("bug in attemptFailed");
      });
      for (const event of ["state", "backoff", "close"] as const) {
        client.on(event, () => {
          throw new Error(`bug in ${event}`);
        });
      }
      await s1.close();
      await until(() => failed >= 2);
      const held = client.request("/echo/1", "held", { timeoutMs: 5000 });
      await s2.listen(url);
      assert.equal(text(await held), "held");
      assert.equal(client.state, "connected");
      await client.close();
      assert.equal(client.state, "closed");
      for (const event of ["state", "backoff", "attemptFailed", "close"]) {
        await until(() => caught.includes(`bug in ${event}`));
      }
    } finally {
      process.removeAllListeners("uncaughtException");
      for (const l of saved) process.on("uncaughtException", l);
      await client.close();
      await s2.close();
    }
  });

  it("a held request ends at its own timeoutMs or signal; one already aborted at once", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    await server.close();
    try {
      await until(() => client.state === "reconnecting");
      let t0 = Date.now();
      await assert.rejects(client.request("/x", "a", { timeoutMs: 200 }), { code: "ERR_TIMEOUT" });
      assert.ok(Date.now() - t0 < 5000, `${Date.now() - t0} ms (offline.maxAgeMs is 10 s)`);
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 100);
      t0 = Date.now();
      await assert.rejects(client.request("/x", "b", { signal: ac.signal }), { code: "ERR_CANCELLED" });
      assert.ok(Date.now() - t0 < 5000, `${Date.now() - t0} ms (offline.maxAgeMs is 10 s)`);
      await assert.rejects(client.request("/x", "c", { signal: AbortSignal.abort() }), { code: "ERR_CANCELLED" });
    } finally {
      await client.close();
    }
  });

  it("a request waiting out a rate limit's retry-after ends when its signal aborts", async () => {
    const server = createServer({ rateLimit: { session: { requests: { perSecond: 0.1, burst: 1 } } } });
    server.handle("/echo/1", (r) => r.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { retries: 3, reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    try {
      await client.request("/echo/1", "first");
      const ac = new AbortController();
      const p = client.request("/echo/1", "second", { signal: ac.signal, timeoutMs: 30_000 });
      await sleep(200); // refused (a token every 10 s): waiting
      const t0 = Date.now();
      ac.abort();
      await assert.rejects(p, { code: "ERR_CANCELLED" });
      assert.ok(Date.now() - t0 < 5000, `${Date.now() - t0} ms (the next token is ~10 s away)`);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("a ws:// URL with a #fragment is ERR_UNSUPPORTED_URL at once, not a connect failure retried for ever", async () => {
    const server = createServer();
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    try {
      // maxAttempts 200 with 1-10 ms delays: before, ERR_CONNECT "gave up after 200 attempts" (by default:
      // Infinity, attempts up to 5 s apart for ever).
      const client = connectResilient(`${url}#frag`, {
        reconnect: { initialDelayMs: 1, maxDelayMs: 10, maxAttempts: 200 },
      });
      const err = await client.then(
        () => undefined,
        (e: PointSubError) => e,
      );
      assert.equal(err?.code, "ERR_UNSUPPORTED_URL", err?.message);
      await assert.rejects(connect(`${url}#frag`), { code: "ERR_UNSUPPORTED_URL" });
      assert.equal(server.sessionsInfo().length, 0);
    } finally {
      await server.close();
    }
  });

  it("TLS material OpenSSL cannot read, or ws.headers that are no HTTP header, are ERR_INVALID_ARGUMENT: not retried", async () => {
    const server = createServer();
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const port = new URL(url).port;
    const garbage = { cert: "not a certificate", key: "not a key" };
    const cases: [string, Parameters<typeof connectResilient>[1]][] = [
      [`tls://127.0.0.1:${port}`, { tls: garbage }],
      [`wss://127.0.0.1:${port}/pointsub`, { tls: garbage }],
      [url, { ws: { headers: { "no token": "x" } } }],
    ];
    try {
      for (const [address, options] of cases) {
        // Before: ERR_CONNECT (retryable), "gave up after 200 attempts" (by default: tried for ever).
        const client = connectResilient(address, {
          ...options,
          reconnect: { initialDelayMs: 1, maxDelayMs: 10, maxAttempts: 200 },
        });
        const err = await client.then(
          () => undefined,
          (e: PointSubError) => e,
        );
        assert.equal(err?.code, "ERR_INVALID_ARGUMENT", `${address}: ${err?.message}`);
        await assert.rejects(connect(address, options), { code: "ERR_INVALID_ARGUMENT" });
      }
    } finally {
      await server.close();
    }
  });

  it("connectResilient's signal ends its backoff at once", async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r())); // nothing listens there now
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    const t0 = Date.now();
    await assert.rejects(
      connectResilient(`tcp://127.0.0.1:${port}`, {
        signal: ac.signal,
        reconnect: { initialDelayMs: 10_000, maxDelayMs: 20_000 },
      }),
      { code: "ERR_CANCELLED" },
    );
    assert.ok(Date.now() - t0 < 5000, `${Date.now() - t0} ms (the first backoff is 10 s)`);
    await assert.rejects(connectResilient(`tcp://127.0.0.1:${port}`, { signal: AbortSignal.abort() }), {
      code: "ERR_CANCELLED",
    });
  });

  it("close() ends a connection attempt under way (no event after close)", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 20 } });
    await server.close();
    const sockets: net.Socket[] = [];
    let ended = 0;
    const hole = net.createServer((s) => {
      s.on("error", () => {});
      s.resume(); // reads (and drops) the preface and HELLO, so its end is seen
      s.on("end", () => ended++);
      sockets.push(s);
    });
    await new Promise<void>((r) => hole.listen(port, "127.0.0.1", r));
    const events: string[] = [];
    client.on("attemptFailed", () => events.push("attemptFailed"));
    client.on("close", () => events.push("close"));
    try {
      await until(() => sockets.length > 0); // an attempt waits for a handshake that never comes
      await client.close();
      // Before: the attempt's socket stayed open until connectTimeoutMs (10 s), holding the process.
      await until(() => ended === sockets.length, 2000);
      await sleep(50);
      assert.deepEqual(events.slice(events.indexOf("close")), ["close"]);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => hole.close(() => r()));
    }
  });

  it("close() from a `backoff` listener leaves no timer behind (the delay was waited out, holding the process)", async () => {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const before = timers();
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // Ceilings of a minute: a delay left running is seen by the check below long before it ends.
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 } });
    let closing: Promise<void> | undefined;
    client.on("backoff", () => {
      closing ??= client.close();
    });
    await server.close(); // the first attempt after the drop is immediate and refused; then a backoff
    await until(() => closing !== undefined);
    await closing;
    assert.equal(client.state, "closed");
    await until(() => timers() <= before, 2000).catch(() => {});
    assert.equal(timers(), before, String(process.getActiveResourcesInfo()));
  });

  it("empty calls held offline count against offline.maxBytes too; initialDelayMs 0 still backs off", async () => {
    let accepted = 0;
    const flapper = net.createServer((s) => {
      accepted++;
      s.destroy();
    });
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);
    const client = await connectResilient(url, {
      offline: { maxBytes: 1024 },
      reconnect: { initialDelayMs: 0, maxDelayMs: 5000 },
    });
    await server.close();
    await new Promise<void>((r) => flapper.listen(port, "127.0.0.1", r));
    try {
      await until(() => client.state === "reconnecting");
      const calls = Array.from({ length: 100 }, () => outcome(client.request("/x", new Uint8Array(0))));
      await sleep(20);
      const n0 = accepted;
      await sleep(1000);
      // Before: 565 connections a second (the backoff's ceiling stayed 0).
      assert.ok(accepted - n0 < 60, `${accepted - n0} connections in a second`);
      await client.close();
      const results = await Promise.all(calls);
      const full = results.filter((r) => r === "ERR_OFFLINE").length;
      assert.ok(full >= 80, `${full} of 100 refused as over offline.maxBytes (1024 B, 3,072 B each)`);
    } finally {
      await new Promise<void>((r) => flapper.close(() => r()));
    }
  });

  it("an answer still coming on a keyed attempt wins over its repeat's error (the store's waitMs ran out first)", async () => {
    const server = createServer();
    server.use(idempotency({ waitMs: 300 }));
    let runs = 0;
    server.handle("/job/1", async () => {
      runs++;
      await sleep(900);
      return "job done";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url);
    try {
      const r = await client.request("/job/1", "x", { idempotencyKey: "k", timeoutMs: 3000, attemptTimeoutMs: 100 });
      assert.equal(text(r), "job done");
      assert.equal(runs, 1);
      await assert.rejects(client.request("/job/1", "x", { timeoutMs: -1 }), { code: "ERR_INVALID_ARGUMENT" });
      await assert.rejects(client.request("/job/1", "x", { timeoutMs: Number.NaN, retry: true }), {
        code: "ERR_INVALID_ARGUMENT",
      });
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("a keyed request answered on a draining connection (GOAWAY) does not send its held repeat once reconnected", async () => {
    // Before: the repeat (attemptTimeoutMs ran out while the server drained) waited for the next connection and
    // went out there after the caller had its answer; the restarted server's new store ran the handler again.
    let runs = 0;
    const gate = Promise.withResolvers<void>();
    const charge: Handler = async () => {
      runs++;
      await gate.promise;
      return "charged";
    };
    const a = createServer({ idempotency: true });
    a.handle("/charge/1", charge);
    const [url] = await a.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    const b = createServer({ idempotency: true });
    b.handle("/charge/1", charge);
    b.handle("/echo/1", (r) => r.data);
    try {
      const answer = client.request("/charge/1", "x", {
        idempotencyKey: "order-1",
        attemptTimeoutMs: 50,
        timeoutMs: 60_000,
      });
      await until(() => runs === 1);
      const closing = a.close({ timeoutMs: 60_000 }); // GOAWAY: the call in flight finishes on it
      await until(() => client.state === "reconnecting");
      // The repeat waits for the next connection (its attempt's 50 ms ran out).
      const held = client as unknown as { held: unknown[] };
      await until(() => held.held.length === 1);
      gate.resolve();
      assert.equal(text(await answer), "charged");
      await closing;
      await b.listen(url); // the same port: a restart, with a store of its own
      await client.whenConnected();
      // Held calls go out first on a new connection: this answer comes after the repeat's handler would have begun.
      assert.equal(text(await client.request("/echo/1", "after", { timeoutMs: 10_000 })), "after");
      assert.equal(runs, 1);
    } finally {
      gate.resolve();
      await client.close();
      await a.close();
      await b.close();
    }
  });

  it("close() from a `state` listener: the listeners after it hear the events in order", async () => {
    // Before: they heard reconnecting->closed and close first, then connected->reconnecting (emitted within it).
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    const heard: string[] = [];
    client.on("state", (to) => {
      if (to === "reconnecting") void client.close();
    });
    client.on("state", (to, from) => heard.push(`${from}->${to}`));
    client.on("close", () => heard.push("close"));
    try {
      await until(() => server.sessions.size === 1);
      for (const s of server.sessions) s.destroy();
      await until(() => heard.includes("close"));
      assert.deepEqual(heard, ["connected->reconnecting", "reconnecting->closed", "close"]);
      assert.equal(client.state, "closed");
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("held calls that time out leave the queue (it does not grow with them)", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, {
      // Room for the 500 of a round (3,072 B each), not for the 10,000 of all rounds.
      offline: { maxBytes: 2 * 1024 * 1024, maxAgeMs: 60_000 },
      reconnect: { initialDelayMs: 10, maxDelayMs: 50 },
    });
    await server.close();
    try {
      await until(() => client.state === "reconnecting");
      for (let round = 0; round < 20; round++) {
        const calls = Array.from({ length: 500 }, () => outcome(client.request("/x", "a", { timeoutMs: 1 })));
        for (const r of await Promise.all(calls)) assert.equal(r, "ERR_TIMEOUT");
      }
      // Before: 10,000 entries settled but kept until maxAgeMs (60 s), whatever offline.maxBytes said.
      const held = (client as unknown as { held: unknown[] }).held;
      assert.ok(held.length < 1000, `${held.length} entries held`);
    } finally {
      await client.close();
    }
  });
  it("a handle() refused for its arguments is not kept: the client still reconnects, and one made offline throws at once", async () => {
    // Before: the refused registration was kept and applied again to each new connection, inside the
    // reconnection: an unhandled rejection, and the client stayed "reconnecting" with that connection unused.
    const serve = () => createServer().handle("/echo/1", (r) => r.data);
    const s1 = serve();
    const [url] = await s1.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    const s2 = serve();
    const states: string[] = [];
    client.on("state", (to) => states.push(to));
    try {
      assert.throws(() => client.handle("", (r) => r.data), { code: "ERR_INVALID_ARGUMENT" });
      assert.throws(() => client.use(undefined as unknown as Middleware), { code: "ERR_INVALID_ARGUMENT" });
      await s1.close();
      await until(() => client.state === "reconnecting");
      // Offline: checked now, not when the next connection comes (before: accepted, then thrown there).
      assert.throws(() => client.handleStream("", async () => "x"), { code: "ERR_INVALID_ARGUMENT" });
      assert.throws(() => client.handle("/x/1", "not a function" as unknown as Handler), {
        code: "ERR_INVALID_ARGUMENT",
      });
      await s2.listen(url);
      await until(() => client.state === "connected", 5000);
      assert.equal(text(await client.request("/echo/1", "after", { timeoutMs: 5000 })), "after");
      assert.deepEqual(states, ["reconnecting", "connected"]);
    } finally {
      await client.close();
      await s2.close();
    }
  });
  it("delays beyond a timer's longest (offline.maxAgeMs, backoff of days) are waited out, not fired at once", async () => {
    // Before: setTimeout fired such a delay after 1 ms (TimeoutOverflowWarning): the offline queue's age
    // timer fired every millisecond while a call was held, and a backoff delay of days was no wait at all.
    const overflows: string[] = [];
    const onWarning = (w: Error): void => {
      if (w.name === "TimeoutOverflowWarning") overflows.push(w.message);
    };
    process.on("warning", onWarning);
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, {
      offline: { maxAgeMs: 2 ** 32 },
      reconnect: { initialDelayMs: 2 ** 40, maxDelayMs: 2 ** 40 },
    });
    let backoffs = 0;
    let failed = 0;
    client.on("backoff", () => backoffs++);
    client.on("attemptFailed", () => failed++);
    try {
      await server.close();
      // Closed within a second of opening: even the first attempt waits its backoff.
      await until(() => backoffs >= 1);
      const held = outcome(client.send("held for days"));
      await sleep(100); // what a timer fired too soon would have done by now
      assert.deepEqual(overflows, []);
      assert.equal(failed, 0);
      assert.equal(client.state, "reconnecting");
      await client.close();
      assert.equal(await held, "ERR_CONNECTION_CLOSED");
    } finally {
      process.off("warning", onWarning);
      await client.close();
    }
  });

  it("a payload that is neither bytes nor text is refused at once with ERR_INVALID_ARGUMENT while offline, not held (pointsub and lp)", async () => {
    // Before, it was held: ERR_OFFLINE after offline.maxAgeMs (or at once with the "fail" policy), and
    // ERR_INVALID_ARGUMENT only if a connection came.
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const lpServer = createLpServer();
    const [lpUrl] = await lpServer.listen("lp+tcp://127.0.0.1:0");
    const opts = { offline: { maxAgeMs: 600_000 }, reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 } };
    const client = await connectResilient(url, opts);
    const lp = await connectLpResilient(lpUrl, opts);
    await server.close();
    await lpServer.close();
    try {
      await until(() => client.state === "reconnecting" && lp.state === "reconnecting");
      for (const bad of [123, null, { a: 1 }, [1, 2]] as unknown as string[]) {
        assert.equal(await outcome(client.send(bad)), "ERR_INVALID_ARGUMENT");
        assert.equal(await outcome(client.request("/x", bad)), "ERR_INVALID_ARGUMENT");
        assert.equal(await outcome(lp.send(bad)), "ERR_INVALID_ARGUMENT");
      }
      // Bytes and text are still held for the next connection.
      let held = "pending";
      void outcome(client.send("later")).then((o) => {
        held = o;
      });
      await sleep(20);
      assert.equal(held, "pending");
    } finally {
      await client.close();
      await lp.close();
    }
  });

  it("retry: true works where crypto.randomUUID is missing (a browser page served over plain http, not a secure context)", async () => {
    // crypto.randomUUID exists only in secure contexts; getRandomValues everywhere. The generated key
    // was made with randomUUID: such a page's retry: true request threw a TypeError, nothing sent.
    const server = createServer({ idempotency: true });
    const keys: string[] = [];
    server.use(async (ctx, next) => {
      if (ctx.idempotencyKey !== undefined) keys.push(text(ctx.idempotencyKey));
      return next();
    });
    server.handle("/job/1", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { maxAttempts: 1 } });
    const proto = Object.getPrototypeOf(globalThis.crypto) as { randomUUID?: unknown };
    const randomUUID = Object.getOwnPropertyDescriptor(proto, "randomUUID");
    assert.ok(randomUUID !== undefined, "Node's Crypto has randomUUID on its prototype");
    delete proto.randomUUID;
    try {
      assert.equal(text(await client.request("/job/1", "x", { retry: true, timeoutMs: 5000 })), "x");
      assert.equal(text(await client.request("/job/1", "y", { retry: true, timeoutMs: 5000 })), "y");
    } finally {
      Object.defineProperty(proto, "randomUUID", randomUUID);
      await client.close();
      await server.close();
    }
    assert.equal(keys.length, 2);
    for (const k of keys) assert.match(k, /^[0-9a-f]{32}$/);
    assert.notEqual(keys[0], keys[1]);
  });
});
