/**
 * The resilient client over real loopback sockets: reconnection after a
 * server restart (routes re-applied), attempts honoured, calls pending at a
 * drop failing at once, the offline policy, and a stalled link detected by
 * keepalive.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fullJitterDelay } from "../../src/client/backoff.ts";
import {
  connectResilient,
  createServer,
  idempotency,
  isPointSubError,
  type PointSubError,
  type ResilientState,
  type Server,
} from "../../src/index.ts";
import { startProxy } from "../helpers/proxy.ts";
import { sleep, until } from "../helpers/wait.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

function echoServer(): Server {
  const s = createServer();
  s.handle("/echo/1", (req) => req.data);
  return s;
}

describe("resilient client", () => {
  it("reconnects after the server restarts on the same address and works as before", async () => {
    let server = echoServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 20, maxDelayMs: 100 } });
    const states: ResilientState[] = [];
    client.on("state", (to) => states.push(to));
    client.handle("/client/1", () => "from the client");
    try {
      assert.equal(text(await client.request("/echo/1", "one")), "one");
      await server.close();
      await until(() => client.state === "reconnecting");
      server = echoServer();
      await server.listen(url);
      await client.whenConnected();
      assert.equal(text(await client.request("/echo/1", "two")), "two");
      // The client's own routes are served on the new connection too.
      const session = [...server.sessions][0];
      assert.equal(text(await session.request("/client/1")), "from the client");
      assert.deepEqual(states, ["reconnecting", "connected"]);
    } finally {
      await client.close();
      await server.close();
    }
    assert.equal(client.state, "closed");
  });

  it("gives up after maxAttempts with ERR_CONNECT, and says so to everything waiting", async () => {
    const server = echoServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 5, maxDelayMs: 20, maxAttempts: 3 } });
    let failed = 0;
    client.on("attemptFailed", () => failed++);
    const closed = new Promise<unknown>((r) => client.once("close", r));
    await server.close();
    const queued = client.send("held while reconnecting");
    const err = await closed;
    assert.ok(isPointSubError(err) && err.code === "ERR_CONNECT", String(err));
    assert.equal(failed, 3);
    assert.equal(client.state, "closed");
    await assert.rejects(queued, { code: "ERR_CONNECT" });
    await assert.rejects(client.request("/echo/1", "x"), { code: "ERR_CONNECT" });
  });

  it("gives up after maxAttempts connections in a row that the server closed right after the handshake", async () => {
    const server = echoServer();
    let sessions = 0;
    server.on("session", (s) => {
      sessions++;
      // Each session after the first is closed at once (the first is the client's initial connection).
      if (sessions > 1) s.destroy();
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 5, maxDelayMs: 20, maxAttempts: 3 } });
    const closed = new Promise<unknown>((r) => client.once("close", r));
    try {
      // The first connection drops: every reconnection then completes its handshake and is closed at once.
      await until(() => server.sessions.size === 1);
      [...server.sessions][0].destroy();
      const err = await Promise.race([closed, sleep(5000).then(() => "still reconnecting")]);
      assert.ok(isPointSubError(err) && err.code === "ERR_CONNECT", `${String(err)} after ${sessions} sessions`);
      assert.match(err.message, /3 connections in a row closed within/);
      // The first lived under a second too: it is the first of the three.
      assert.equal(sessions, 3, "three connections, each closed within a second of opening");
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("does not give up on a server whose idle timeout (over a second) closes each connection sooner than maxDelayMs", async () => {
    // An honest server closing idle connections after 1.2 s; the client's maxDelayMs (3 s) is longer. Each
    // such connection lived over a second: none counts towards maxAttempts (all of them did: it gave up).
    const server = createServer({ idleTimeoutMs: 1200 });
    server.handle("/echo/1", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    let sessions = 0;
    server.on("session", () => sessions++);
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 5, maxDelayMs: 3000, maxAttempts: 2 } });
    let closedWith: unknown = "open";
    client.once("close", (e) => {
      closedWith = e;
    });
    try {
      // Three idle closes (and reconnections) in a row.
      await until(() => sessions >= 3 || closedWith !== "open", 15_000);
      assert.equal(closedWith, "open", `closed after ${sessions} connections: ${String(closedWith)}`);
      assert.equal(text(await client.request("/echo/1", "still here", { timeoutMs: 10_000 })), "still here");
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("waits between attempts a full-jitter delay below a ceiling doubling from initialDelayMs to maxDelayMs", async () => {
    const server = echoServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 8, maxDelayMs: 30, maxAttempts: 6 } });
    const delays: [number, number][] = [];
    client.on("backoff", (attempt, ms) => delays.push([attempt, ms]));
    const closed = new Promise<unknown>((r) => client.once("close", r));
    // A connection that lived a second or more starts a new run (one that drops sooner continues
    // its backoff: test/client/hostile-server.test.ts).
    await sleep(1100);
    await server.close();
    await closed;
    // Attempt 1 after the drop is immediate; attempts 2..6 wait, ceilings 8, 16, 30, 30, 30.
    assert.deepEqual(
      delays.map(([a]) => a),
      [2, 3, 4, 5, 6],
    );
    const ceilings = [8, 16, 30, 30, 30];
    delays.forEach(([, ms], i) => {
      assert.ok(Number.isInteger(ms) && ms >= 0 && ms < ceilings[i], `delay ${ms} ms, ceiling ${ceilings[i]}`);
    });
  });

  it("the backoff delays are spread over [0, ceiling) (full jitter), not the ceiling itself", () => {
    // 2,000 draws for retry 3 of (100, 5000): ceiling 800 ms.
    const draws = Array.from({ length: 2000 }, () => fullJitterDelay(3, 100, 5000));
    assert.ok(Math.max(...draws) < 800);
    const mean = draws.reduce((a, b) => a + b, 0) / draws.length;
    // Uniform on [0, 800): mean 400, standard error ~5; 40 is eight of them.
    assert.ok(Math.abs(mean - 400) < 40, `mean ${mean}`);
    assert.ok(draws.filter((d) => d < 200).length > 300, "a quarter of the delays fall in the first quarter");
    // The ceiling stops at maxDelayMs.
    assert.ok(Array.from({ length: 200 }, () => fullJitterDelay(20, 100, 5000)).every((d) => d < 5000));
  });

  it("the first connect retries too, and rejects when its attempts run out", async () => {
    const server = echoServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    await server.close();
    await assert.rejects(connectResilient(url, { reconnect: { initialDelayMs: 1, maxDelayMs: 5, maxAttempts: 2 } }), {
      code: "ERR_CONNECT",
    });
  });

  it("a request pending when the connection drops fails at once (no idempotency on the server)", async () => {
    const server = createServer();
    server.handle("/slow/1", () => new Promise((r) => setTimeout(() => r("late"), 5000)));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    try {
      const pending = client.request("/slow/1", "x", { timeoutMs: 20_000 });
      await sleep(50);
      const t0 = Date.now();
      for (const s of server.sessions) s.destroy();
      await assert.rejects(pending, { code: "ERR_CONNECTION_CLOSED" });
      assert.ok(Date.now() - t0 < 4000, "rejected at the drop, not at the handler's end or the timeout");
      await client.whenConnected();
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("offline: calls made while reconnecting are queued and delivered once connected", async () => {
    const got: string[] = [];
    const mk = () => {
      const s = echoServer();
      s.on("message", (m) => got.push(m.text()));
      return s;
    };
    let server = mk();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 20, maxDelayMs: 50 } });
    try {
      await server.close();
      await until(() => client.state === "reconnecting");
      const sent = client.send("while away");
      const answer = client.request("/echo/1", "asked while away");
      server = mk();
      await server.listen(url);
      await sent;
      assert.equal(text(await answer), "asked while away");
      await until(() => got.length === 1);
      assert.deepEqual(got, ["while away"]);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("offline: the queue is bounded by bytes and age, and 'fail' rejects at once (ERR_OFFLINE)", async () => {
    const server = echoServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const queued = await connectResilient(url, {
      reconnect: { initialDelayMs: 50, maxDelayMs: 100 },
      offline: { maxBytes: 1000, maxAgeMs: 100 },
    });
    const failing = await connectResilient(url, {
      reconnect: { initialDelayMs: 50, maxDelayMs: 100 },
      offline: { policy: "fail" },
    });
    try {
      await server.close();
      await until(() => queued.state === "reconnecting" && failing.state === "reconnecting");
      await assert.rejects(failing.send("x"), { code: "ERR_OFFLINE" });
      await assert.rejects(queued.send(new Uint8Array(2000)), { code: "ERR_OFFLINE" }); // over maxBytes
      await assert.rejects(queued.send("small but waits too long"), { code: "ERR_OFFLINE" }); // over maxAgeMs
    } finally {
      await queued.close();
      await failing.close();
    }
  });

  it("a keyed request whose new connection reaches a server that does not deduplicate is not sent again there", async () => {
    // Before: the repeat went out on whatever the reconnection reached (a restart without the
    // middleware, a balancer in front of mixed servers): the handler ran on both.
    const runs: string[] = [];
    const serve = async (name: string, dedup: boolean, port = 0) => {
      const s = createServer(dedup ? { idempotency: true } : {});
      s.handle("/charge/1", async () => {
        runs.push(name);
        await sleep(300);
        return `charged on ${name}`;
      });
      return { s, url: (await s.listen(`tcp://127.0.0.1:${port}`))[0] };
    };
    const a = await serve("A", true);
    const client = await connectResilient(a.url, { reconnect: { initialDelayMs: 50, maxDelayMs: 100 } });
    let b: Server | undefined;
    try {
      const p = client.request("/charge/1", "42", { idempotencyKey: "order-3", timeoutMs: 10_000 });
      await until(() => runs.length === 1);
      await a.s.close({ timeoutMs: 20 });
      b = (await serve("B", false, Number(new URL(a.url).port))).s;
      await assert.rejects(p, (e: PointSubError) => {
        assert.match(e.message, /not retried: the server does not deduplicate keyed requests/);
        return true;
      });
      assert.deepEqual(runs, ["A"]);
    } finally {
      await client.close();
      await b?.close();
    }
  });

  it("an attempt left running that is then lost, its repeat not sent (no deduplication there): the loss is the error, not a timeout", async () => {
    // Before: ERR_TIMEOUT "no answer within attemptTimeoutMs (not retried…)", 0.7 s into a 5 s deadline.
    const runs: string[] = [];
    const serve = async (name: string, dedup: boolean, port = 0) => {
      const s = createServer(dedup ? { idempotency: true } : {});
      s.handle("/op/1", async () => {
        runs.push(name);
        await sleep(2000);
        return name;
      });
      return { s, url: (await s.listen(`tcp://127.0.0.1:${port}`))[0] };
    };
    const a = await serve("A", true);
    const client = await connectResilient(a.url, { reconnect: { initialDelayMs: 10, maxDelayMs: 20 } });
    let b: Server | undefined;
    try {
      const p = client.request("/op/1", "x", { retry: true, attemptTimeoutMs: 300, timeoutMs: 5000 });
      p.catch(() => {});
      await until(() => runs.length === 1);
      const closing = a.s.close({ timeoutMs: 600 });
      b = (await serve("B", false, Number(new URL(a.url).port))).s;
      await assert.rejects(p, (e: PointSubError) => {
        assert.match(e.code, /^ERR_(CONNECTION_CLOSED|GOING_AWAY)$/);
        assert.match(e.message, /not retried: the server does not deduplicate/);
        return true;
      });
      await closing;
      assert.deepEqual(runs, ["A"]);
    } finally {
      await client.close();
      await b?.close();
    }
  });

  it("offline policy 'fail' refuses new calls, not the repeat of a keyed request that was in flight at the drop", async () => {
    // Before: the repeat met the policy and failed with ERR_OFFLINE ("not connected") 10 ms after the
    // cut, although the request had left and its handler ran: the caller was told it never went.
    const server = createServer({ idempotency: true });
    let runs = 0;
    server.handle("/charge/1", async (req) => {
      runs++;
      await sleep(300);
      return `charged ${req.text()}`;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const proxy = await startProxy(url);
    const client = await connectResilient(proxy.url, {
      reconnect: { initialDelayMs: 20, maxDelayMs: 50 },
      offline: { policy: "fail" },
    });
    try {
      const p = client.request("/charge/1", "42", { idempotencyKey: "order-1", timeoutMs: 10_000 });
      await until(() => runs === 1);
      // Offline until released: the client's reconnection waits for its handshake both ways (a client is
      // connected once the server's HELLO came, so holding only its own bytes let it reconnect within
      // ~3 ms, and a poll for the state missed the outage: 1 run in 3-7 timed out).
      proxy.hold("up");
      proxy.hold("down");
      proxy.cutAll();
      await until(() => client.state !== "connected");
      await assert.rejects(client.send("new while offline"), { code: "ERR_OFFLINE" });
      // A plain request made while offline is refused at once too (a second-round review found it held).
      const t0 = Date.now();
      await assert.rejects(client.request("/charge/1", "plain", { timeoutMs: 5000 }), { code: "ERR_OFFLINE" });
      assert.ok(Date.now() - t0 < 2500, `${Date.now() - t0} ms (held, it would wait its 5 s)`);
      proxy.release("up");
      proxy.release("down");
      assert.equal(text(await p), "charged 42");
      assert.equal(runs, 1);
    } finally {
      await client.close();
      await proxy.close();
      await server.close();
    }
  });

  it("a stalled link (nothing passes either way) is declared dead by keepalive and the client reconnects", async () => {
    const server = echoServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const proxy = await startProxy(url);
    const client = await connectResilient(proxy.url, {
      keepAliveMs: 100,
      reconnect: { initialDelayMs: 20, maxDelayMs: 100 },
    });
    try {
      assert.equal(text(await client.request("/echo/1", "before")), "before");
      proxy.hold("up");
      proxy.hold("down");
      await until(() => client.state === "reconnecting");
      proxy.release("up");
      proxy.release("down");
      await client.whenConnected();
      assert.equal(text(await client.request("/echo/1", "after")), "after");
    } finally {
      await client.close();
      await proxy.close();
      await server.close();
    }
  });

  it("invalid options throw a clear ERR_INVALID_ARGUMENT", async () => {
    await assert.rejects(connectResilient("tcp://127.0.0.1:1", { reconnect: { maxDelayMs: -1 } }), /maxDelayMs/);
    await assert.rejects(connectResilient("tcp://127.0.0.1:1", { retries: Number.NaN }), /retries/);
    await assert.rejects(
      connectResilient("tcp://127.0.0.1:1", { offline: { policy: "drop" as "queue" } }),
      /offline.policy/,
    );
  });
});

describe("round-trip time", () => {
  it("conn.rtt is undefined before a ping and a smoothed figure after pings", async () => {
    const server = echoServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url);
    try {
      const conn = client.connection;
      assert.ok(conn !== undefined);
      assert.equal(conn.rtt, undefined);
      const samples: number[] = [];
      for (let i = 0; i < 5; i++) samples.push(await conn.ping());
      const rtt = conn.rtt;
      assert.ok(rtt !== undefined && rtt > 0);
      assert.ok(rtt >= Math.min(...samples) && rtt <= Math.max(...samples), `${rtt} within the samples`);
    } finally {
      await client.close();
      await server.close();
    }
  });
});

describe("resilient client and a deduplicating server", () => {
  it("a keyed request lost after its handler ran is retried on the new connection and answered from the store: the handler ran once", async () => {
    const server = createServer({ idempotency: true });
    let runs = 0;
    server.handle("/charge/1", (req) => {
      runs++;
      return `charged ${req.text()} (run ${runs})`;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const proxy = await startProxy(url);
    const client = await connectResilient(proxy.url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    try {
      // The request reaches the server; its answer is lost on the way back; then the link drops.
      proxy.blackhole("down");
      const answer = client.request("/charge/1", "42 EUR", { idempotencyKey: "order-7", timeoutMs: 20_000 });
      await until(() => runs === 1 && proxy.dropped.down > 0);
      proxy.unblackhole("down");
      proxy.cutAll();
      assert.equal(text(await answer), "charged 42 EUR (run 1)");
      assert.equal(runs, 1, "the handler ran exactly once");
    } finally {
      await client.close();
      await proxy.close();
      await server.close();
    }
  });
});

describe("retrying a timed-out attempt (attemptTimeoutMs)", () => {
  it("to a server without an idempotency middleware nothing is sent twice: an attempt that runs out and a drop fail, saying why; the handler ran once", async () => {
    // Before: every pointsub server announced keys (bit 8) and the client took that for
    // deduplication: a 1.2 s handler with attemptTimeoutMs 150 ran 4 times at once.
    const server = createServer();
    let runs = 0;
    server.handle("/slow/1", async (req) => {
      runs++;
      await sleep(1200);
      return `done ${req.text()}`;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const proxy = await startProxy(url);
    const client = await connectResilient(proxy.url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 }, retries: 5 });
    try {
      assert.equal((client.connection?.peerSettings.features ?? 0) & 0x10, 0);
      await assert.rejects(
        client.request("/slow/1", "job", { retry: true, attemptTimeoutMs: 150, timeoutMs: 10_000 }),
        (e: PointSubError) => {
          assert.equal(e.code, "ERR_TIMEOUT");
          assert.match(e.message, /not retried: the server does not deduplicate keyed requests/);
          return true;
        },
      );
      await sleep(1300);
      assert.equal(runs, 1, "the handler ran once");
      const p = client.request("/slow/1", "cut", { idempotencyKey: "order-9", timeoutMs: 10_000 });
      await until(() => runs === 2);
      proxy.cutAll();
      await assert.rejects(p, (e: PointSubError) => {
        assert.match(e.code, /^ERR_(CONNECTION_CLOSED|KEEPALIVE|GOING_AWAY)$/);
        assert.match(e.message, /not retried/);
        return true;
      });
      await sleep(1300);
      assert.equal(runs, 2, "the handler ran once more, not twice");
      // An idempotency middleware added later: the sessions that open after announce it (bit 0x10),
      // and the same call is then repeated under its key, its handler running once.
      server.use(idempotency());
      proxy.cutAll();
      await until(() => client.state === "connected" && ((client.connection?.peerSettings.features ?? 0) & 0x10) !== 0);
      const answer = await client.request("/slow/1", "again", {
        retry: true,
        attemptTimeoutMs: 150,
        timeoutMs: 10_000,
      });
      assert.equal(text(answer), "done again");
      assert.equal(runs, 3);
    } finally {
      await client.close();
      await proxy.close();
      await server.close();
    }
  });

  it("a handler that honours ctx.signal still runs once per key: across a drop mid-handler, and across attempts that run out (attemptTimeoutMs)", async () => {
    // Before: the drop aborted the handler's signal, the middleware freed the key and the retry ran it
    // again; each attempt that ran out sent a CANCEL, which did the same (6 runs, and ERR_TIMEOUT).
    const server = createServer({ idempotency: true });
    let runs = 0;
    server.handle("/charge/1", async (req, ctx) => {
      const run = ++runs;
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(resolve, 400);
        ctx.signal.addEventListener("abort", () => {
          clearTimeout(t);
          reject(ctx.signal.reason);
        });
      });
      return `charged ${req.text()} (run ${run})`;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const proxy = await startProxy(url);
    const client = await connectResilient(proxy.url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 }, retries: 5 });
    try {
      const p = client.request("/charge/1", "42", { idempotencyKey: "order-7", timeoutMs: 10_000 });
      await until(() => runs === 1);
      await sleep(50);
      proxy.cutAll();
      assert.equal(text(await p), "charged 42 (run 1)");
      assert.equal(runs, 1);
      const q = await client.request("/charge/1", "43", { idempotencyKey: "order-8", attemptTimeoutMs: 150 });
      assert.equal(text(q), "charged 43 (run 2)");
      assert.equal(runs, 2);
    } finally {
      await client.close();
      await proxy.close();
      await server.close();
    }
  });

  it("a keyed request whose attempt times out is sent again under the same key; the handler still runs once", async () => {
    const server = createServer({ idempotency: true });
    let runs = 0;
    server.handle("/slow/1", async (req) => {
      runs++;
      await sleep(600);
      return `done ${req.text()} (run ${runs})`;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { retries: 5 });
    try {
      const t0 = Date.now();
      const answer = await client.request("/slow/1", "job", { retry: true, attemptTimeoutMs: 150, timeoutMs: 10_000 });
      // Attempts at 0, 150, 300, … ms: a later one is answered once the first run finished.
      assert.equal(text(answer), "done job (run 1)");
      assert.equal(runs, 1, "the handler ran exactly once");
      assert.ok(Date.now() - t0 >= 600);
      // Without retry marking, the attempt timeout does not apply: one attempt, the whole deadline.
      const plain = await client.request("/slow/1", "plain", { attemptTimeoutMs: 150, timeoutMs: 10_000 });
      assert.equal(text(plain), "done plain (run 2)");
      // Retries used up: the last attempt waits for the overall deadline (the first is still running:
      // its answer comes), and past that deadline the caller gets ERR_TIMEOUT.
      const few = await connectResilient(url, { retries: 1 });
      const late = await few.request("/slow/1", "y", { retry: true, attemptTimeoutMs: 100, timeoutMs: 10_000 });
      assert.equal(text(late), "done y (run 3)");
      await assert.rejects(few.request("/slow/1", "x", { retry: true, attemptTimeoutMs: 100, timeoutMs: 400 }), {
        code: "ERR_TIMEOUT",
      });
      await few.close();
      await assert.rejects(client.request("/slow/1", "x", { retry: true, attemptTimeoutMs: 0 }), {
        code: "ERR_INVALID_ARGUMENT",
      });
    } finally {
      await client.close();
      await server.close();
    }
  });
});
