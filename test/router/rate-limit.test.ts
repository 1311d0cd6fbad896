/**
 * The rateLimit() middleware (src/router/rate-limit.ts) over real loopback
 * sockets: a per-session limit hit and recovered after retryAfterMs, a
 * global limit shared by sessions, a bytes limit, a keyed limit, the
 * resilient client and the multi-node Client on refusals (each handler run
 * once), floods of one-way messages from a client and from a raw peer
 * slowed by backpressure (bounded, in order, every send settles), held
 * messages on close, the retry-after hint on any error, and invalid
 * options.
 *
 * No assertion is about speed: limits are chosen so that refills during a
 * test cannot change the outcome, and waits are bounded.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type CallContext,
  Client,
  type Connection,
  connect,
  connectResilient,
  createServer,
  isPointSubError,
  PointSubError,
  type RateLimitOptions,
  rateLimit,
  type Server,
} from "../../src/index.ts";
import { batch, connectPeer, F, frame, inner, T } from "../helpers/attacker.ts";
import { sleep, until } from "../helpers/wait.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

async function serve(
  options: RateLimitOptions,
): Promise<{ server: Server; url: string; limiter: ReturnType<typeof rateLimit> }> {
  const server = createServer();
  const limiter = rateLimit(options);
  server.use(limiter);
  server.handle("/echo/1", (req) => req.data);
  const [url] = await server.listen("tcp://127.0.0.1:0");
  return { server, url, limiter };
}

/** Runs `fn`; returns the ERR_RATE_LIMITED error it rejects with (fails on success or any other error). */
async function refused(fn: () => Promise<unknown>): Promise<PointSubError> {
  try {
    await fn();
  } catch (err) {
    assert.ok(isPointSubError(err, "ERR_RATE_LIMITED"), `expected ERR_RATE_LIMITED, got ${String(err)}`);
    return err;
  }
  assert.fail("expected ERR_RATE_LIMITED");
}

/** Settles every promise; the rejections that are ERR_RATE_LIMITED, and the count of answers. */
async function tally(ps: Promise<unknown>[]): Promise<{ ok: number; limited: PointSubError[] }> {
  const results = await Promise.allSettled(ps);
  const limited: PointSubError[] = [];
  let ok = 0;
  for (const r of results) {
    if (r.status === "fulfilled") ok++;
    else if (isPointSubError(r.reason, "ERR_RATE_LIMITED")) limited.push(r.reason);
    else throw r.reason;
  }
  return { ok, limited };
}

describe("router: rateLimit", () => {
  it("refuses requests over a per-session limit with ERR_RATE_LIMITED and retryAfterMs, and recovers after it", async () => {
    // 10 per second, burst 3: of 12 requests written at once (read and checked in one task) 3 pass.
    const { server, url, limiter } = await serve({ session: { requests: { perSecond: 10, burst: 3 } } });
    const conn = await connect(url);
    try {
      const { ok, limited } = await tally(Array.from({ length: 12 }, (_, i) => conn.request("/echo/1", `r${i}`)));
      assert.ok(ok >= 3, `${ok} answered`);
      assert.ok(limited.length >= 1, "some were refused");
      assert.equal(ok + limited.length, 12);
      for (const e of limited) {
        assert.equal(e.retryable, true);
        assert.equal(e.errno, 2007);
        // Crossed the wire: at most the time for one token (100 ms), at least 1.
        assert.ok(e.retryAfterMs !== undefined && e.retryAfterMs > 0 && e.retryAfterMs <= 100, `${e.retryAfterMs}`);
      }
      assert.equal(limiter.stats().refused, limited.length);
      // Hit: the last refusal said when tokens are back; nothing took any since ...
      const hint = limited[limited.length - 1].retryAfterMs ?? 0;
      await sleep(hint);
      // ... and recovered: after waiting that long, requests succeed again.
      assert.equal(text(await conn.request("/echo/1", "back")), "back");
      // The session is unharmed.
      assert.equal(conn.state, "open");
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("createServer({ idempotency, rateLimit }): duplicates of a keyed request count against the limit too (not answered from the store past it)", async () => {
    const server = createServer({
      idempotency: true,
      rateLimit: { session: { requests: { perSecond: 1, burst: 1 } } },
    });
    let runs = 0;
    server.handle("/big", () => {
      runs++;
      return new Uint8Array(64 * 1024);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      assert.equal((await conn.request("/big", "x", { idempotencyKey: "k1" })).length, 64 * 1024);
      const { ok, limited } = await tally(
        Array.from({ length: 20 }, () => conn.request("/big", "x", { idempotencyKey: "k1" })),
      );
      assert.equal(ok + limited.length, 20);
      assert.ok(limited.length >= 19, `${limited.length} of 20 duplicates refused`);
      assert.equal(runs, 1);
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("ERR_RATE_LIMITED from a handler (a limit it met downstream) is its failure, ERR_HANDLER: no client runs it again", async () => {
    // Before: passed on as ERR_RATE_LIMITED, which says "refused before the handler ran": the resilient
    // client ran the handler three times, and requestClosest once on every node.
    const server = createServer();
    let runs = 0;
    server.handle("/proxy/1", () => {
      runs++;
      throw new PointSubError("ERR_RATE_LIMITED", "the upstream API said 429", { retryAfterMs: 10 });
    });
    server.handleStream("/up/1", async (stream) => {
      runs++;
      for await (const _ of stream);
      throw new PointSubError("ERR_RATE_LIMITED", "the upstream store said 429");
    });
    server.use(async (_ctx, next) => next()); // through middleware too
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { retries: 3 });
    const nodes = new Client();
    nodes.addNode("/proxy/1", url);
    try {
      for (const call of [() => client.request("/proxy/1", "x"), () => nodes.requestClosest("/proxy/1", "x")]) {
        runs = 0;
        await assert.rejects(call(), (e: PointSubError) => {
          assert.equal(e.code, "ERR_HANDLER");
          assert.match(e.message, /handler for \/proxy\/1 failed: ERR_RATE_LIMITED: the upstream API said 429/);
          return true;
        });
        assert.equal(runs, 1);
      }
      runs = 0;
      const conn = await connect(url);
      await assert.rejects(conn.sendStream("/up/1", [new Uint8Array(10)]).done, { code: "ERR_HANDLER" });
      assert.equal(runs, 1);
      await conn.close();
    } finally {
      await client.close();
      await nodes.close();
      await server.close();
    }
  });

  it("a global limit is shared by every session", async () => {
    // 4 at once for everyone, then one per 10 s: nothing refills during the test.
    const { server, url } = await serve({ global: { requests: { perSecond: 0.1, burst: 4 } } });
    const a = await connect(url);
    const b = await connect(url);
    try {
      await a.request("/echo/1", "a1");
      await b.request("/echo/1", "b1");
      await a.request("/echo/1", "a2");
      await b.request("/echo/1", "b2");
      const ea = await refused(() => a.request("/echo/1", "a3"));
      const eb = await refused(() => b.request("/echo/1", "b3"));
      // About 10 s until the next token.
      for (const e of [ea, eb]) assert.ok((e.retryAfterMs ?? 0) > 5000, `${e.retryAfterMs}`);
    } finally {
      await a.close();
      await b.close();
      await server.close();
    }
  });

  it("a bytes limit counts request and message data; an oversized request passes on a full bucket and leaves a debt", async () => {
    // 1000 bytes at once, then 10 bytes per second.
    const { server, url } = await serve({ session: { bytes: { perSecond: 10, burst: 1000 } } });
    const conn = await connect(url);
    const conn2 = await connect(url);
    try {
      // A message's bytes count too: it arrives (and is counted) before the request after it.
      await conn.send("x".repeat(600));
      const e = await refused(() => conn.request("/echo/1", "x".repeat(600)));
      // 200 bytes short at 10 bytes per second: about 20 s.
      assert.ok((e.retryAfterMs ?? 0) > 10_000, `${e.retryAfterMs}`);
      // Small requests still fit in what is left; empty ones take no bytes.
      await conn.request("/echo/1", "x".repeat(300));
      await conn.request("/echo/1");
      // Per session: another connection has its own full bucket, and a request over the burst passes once.
      assert.equal((await conn2.request("/echo/1", "y".repeat(5000))).length, 5000);
      await refused(() => conn2.request("/echo/1", "y"));
    } finally {
      await conn.close();
      await conn2.close();
      await server.close();
    }
  });

  it("a request refused by the global limit takes nothing from its session's buckets", async () => {
    // Driven directly with the engine's arrival times (ctx.receivedAt), so time is exact.
    const mw = rateLimit({
      session: { requests: { perSecond: 1, burst: 2 } },
      global: { requests: { perSecond: 10, burst: 1 } },
    });
    const session = {};
    const call = (at: number) =>
      mw(
        { kind: "request", route: "/r/1", session, data: new Uint8Array(8), receivedAt: at } as never,
        async () => "ok",
      );
    const t = 1_000_000;
    assert.equal(await call(t), "ok"); // session 1 left, global 0
    assert.throws(() => call(t), { code: "ERR_RATE_LIMITED", retryAfterMs: 100 }); // the global bucket refuses
    // 100 ms on: the global bucket has 1 again; the session still has the token the refused call did not take.
    assert.equal(await call(t + 100), "ok");
    assert.throws(() => call(t + 100), { code: "ERR_RATE_LIMITED" });
    assert.equal(mw.stats().refused, 2);
  });

  it("with key, sessions of one key share its limits", async () => {
    const { server, url, limiter } = await serve({
      session: { requests: { perSecond: 0.1, burst: 2 } },
      key: () => "everyone",
    });
    const a = await connect(url);
    const b = await connect(url);
    try {
      await a.request("/echo/1", "1");
      await b.request("/echo/1", "2");
      await refused(() => a.request("/echo/1", "3"));
      await refused(() => b.request("/echo/1", "4"));
      assert.equal(limiter.stats().keys, 1);
    } finally {
      await a.close();
      await b.close();
      await server.close();
    }
  });

  it("the resilient client retries refused requests after retryAfterMs: every call succeeds, each handler runs once", async () => {
    const server = createServer();
    const limiter = rateLimit({ session: { requests: { perSecond: 20, burst: 1 } } });
    server.use(limiter);
    const runs = new Map<string, number>();
    server.handle("/count/1", (req) => {
      const k = text(req.data);
      runs.set(k, (runs.get(k) ?? 0) + 1);
      return `done ${k}`;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // Unkeyed requests: a refusal means the handler did not run, so they are retried too.
    const client = await connectResilient(url, { retries: 20, reconnect: { initialDelayMs: 5, maxDelayMs: 20 } });
    const strict = await connectResilient(url, { retries: 0 });
    try {
      const calls = Array.from({ length: 6 }, (_, i) => client.request("/count/1", `c${i}`));
      const answers = await Promise.all(calls);
      assert.deepEqual(
        answers.map(text),
        Array.from({ length: 6 }, (_, i) => `done c${i}`),
      );
      for (let i = 0; i < 6; i++) assert.equal(runs.get(`c${i}`), 1, `c${i} ran once`);
      assert.ok(limiter.stats().refused >= 1, "the limit was hit on the way");
      // Sequential calls on an empty bucket: each is refused at first, then answered.
      for (let i = 0; i < 3; i++) assert.equal(text(await client.request("/count/1", `s${i}`)), `done s${i}`);
      for (let i = 0; i < 3; i++) assert.equal(runs.get(`s${i}`), 1);
      // With retries off the caller gets the typed error and its hint.
      const results = await Promise.allSettled([1, 2, 3].map((i) => strict.request("/count/1", `x${i}`)));
      const limited = results.filter((r) => r.status === "rejected");
      assert.ok(limited.length >= 1);
      for (const r of limited) {
        const e = (r as PromiseRejectedResult).reason;
        assert.ok(isPointSubError(e, "ERR_RATE_LIMITED"));
        assert.ok((e.retryAfterMs ?? 0) > 0);
      }
      // A deadline shorter than the wait gives the refusal back instead of waiting past it.
      const slow = rateLimit({ session: { requests: { perSecond: 0.1, burst: 1 } } });
      const server2 = createServer();
      server2.use(slow);
      server2.handle("/count/1", () => "ok");
      const [url2] = await server2.listen("tcp://127.0.0.1:0");
      const c2 = await connectResilient(url2, { retries: 5 });
      try {
        await c2.request("/count/1");
        const e = await refused(() => c2.request("/count/1", "", { timeoutMs: 500 }));
        assert.ok((e.retryAfterMs ?? 0) > 500);
      } finally {
        await c2.close();
        await server2.close();
      }
    } finally {
      await client.close();
      await strict.close();
      await server.close();
    }
  });

  it("the multi-node Client returns a refusal typed, with its hint, instead of failing the node", async () => {
    const { server, url } = await serve({ global: { requests: { perSecond: 0.1, burst: 1 } } });
    const client = new Client({ rttProbeMs: 0 });
    client.addNode("/echo/1", url);
    try {
      await client.requestClosest("/echo/1", "one");
      const e = await refused(() => client.requestClosest("/echo/1", "two"));
      assert.ok((e.retryAfterMs ?? 0) > 0);
      assert.equal(client.nodes("/echo/1")[0].breaker, "closed");
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("a flood of one-way messages far over the limit is slowed by backpressure: bounded, in order, every send settles", async () => {
    const N = 20_000;
    const { server, url, limiter } = await serve({ session: { messages: { perSecond: 10_000, burst: 100 } } });
    const got: number[] = [];
    let maxWaiting = 0;
    server.on("message", (msg) => {
      got.push(Number(msg.text()));
      maxWaiting = Math.max(maxWaiting, limiter.stats().waiting);
    });
    const conn: Connection = await connect(url);
    const rss0 = process.memoryUsage().rss;
    let maxRss = rss0;
    const sampler = setInterval(() => {
      maxWaiting = Math.max(maxWaiting, limiter.stats().waiting);
      maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }, 5);
    try {
      // As fast as the client can: no awaiting between sends.
      const sends: Promise<void>[] = [];
      for (let i = 0; i < N; i++) sends.push(conn.send(String(i).padStart(96, "0")));
      await Promise.all(sends);
      await until(() => got.length === N, 60_000);
      assert.deepEqual(got.slice(0, 5).concat(got.slice(-1)), [0, 1, 2, 3, 4, N - 1]);
      for (let i = 0; i < N; i++) if (got[i] !== i) assert.fail(`message ${i} arrived as ${got[i]}`);
      const s = limiter.stats();
      assert.ok(s.delayed > N / 2, `${s.delayed} delayed`);
      assert.equal(s.waiting, 0);
      // Held at most the bound (64) plus what one socket read (<= 64 KiB, ~100-byte messages) delivered: never the flood.
      assert.ok(maxWaiting <= 64 + 1024, `${maxWaiting} waited at once`);
      assert.ok(maxRss - rss0 < 256 * 1024 * 1024, `RSS grew by ${maxRss - rss0}`);
      assert.equal(server.memory.used, 0);
      // The connection serves on.
      assert.equal(text(await conn.request("/echo/1", "still here")), "still here");
    } finally {
      clearInterval(sampler);
      await conn.close();
      await server.close();
    }
  });

  it("a raw peer flooding BATCHes of tiny messages is read no faster than the limit lets them on: bounded, in order", async () => {
    const N = 100_000;
    const { server, url, limiter } = await serve({ session: { messages: { perSecond: 100_000, burst: 1000 } } });
    let next = 0;
    let outOfOrder = -1;
    let maxWaiting = 0;
    server.on("message", (msg) => {
      const d = msg.data;
      const n = ((d[0] << 24) | (d[1] << 16) | (d[2] << 8) | d[3]) >>> 0;
      if (n !== next && outOfOrder < 0) outOfOrder = next;
      next++;
      if ((n & 1023) === 0) maxWaiting = Math.max(maxWaiting, limiter.stats().waiting);
    });
    const peer = await connectPeer({ port: Number(new URL(url).port), read: "parse" });
    const rss0 = process.memoryUsage().rss;
    let maxRss = rss0;
    const sampler = setInterval(() => {
      maxWaiting = Math.max(maxWaiting, limiter.stats().waiting);
      maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }, 5);
    try {
      // 2,000 messages of 4 bytes per BATCH (about 18 KB), written as fast as the socket takes them.
      for (let i = 0; i < N; i += 2000) {
        const inners: Uint8Array[] = [];
        for (let j = i; j < i + 2000; j++) {
          inners.push(
            inner(
              T.MSG,
              F.START | F.END,
              2 * j + 1,
              Uint8Array.of(j >>> 24, (j >>> 16) & 255, (j >>> 8) & 255, j & 255),
            ),
          );
        }
        assert.ok(await peer.send(batch(inners)), "the server closed the connection");
      }
      await until(() => next === N, 60_000);
      assert.equal(outOfOrder, -1, `message ${outOfOrder} out of order`);
      // At most the bound (64) plus one socket read (<= 64 KiB, 8 or 9 bytes a message: 8,256) at once, not the flood.
      assert.ok(maxWaiting <= 10_000, `${maxWaiting} waited at once`);
      assert.ok(maxRss - rss0 < 256 * 1024 * 1024, `RSS grew by ${maxRss - rss0}`);
      assert.equal(peer.goaway, undefined);
      assert.equal(server.sessions.size, 1);
    } finally {
      clearInterval(sampler);
      peer.destroy();
      await server.close();
    }
  });

  it("a peer packing 170,000 messages into one 1 MiB BATCH while they are held is closed with ERR_OVERLOADED, memory bounded", async () => {
    const { server, url } = await serve({ session: { messages: { perSecond: 10, burst: 1 } } });
    let delivered = 0;
    server.on("message", () => {
      delivered++;
    });
    const closes: (string | undefined)[] = [];
    server.on("sessionClose", (_s, err) => closes.push(err?.code));
    const peer = await connectPeer({ port: Number(new URL(url).port), read: "parse" });
    const rss0 = process.memoryUsage().rss;
    try {
      // Empty messages of 3 bytes each (id 1 reused: single frames never open an id), one BATCH of ~1 MiB.
      const one = inner(T.MSG, F.START | F.END, 1, new Uint8Array(0));
      const n = Math.floor((1024 * 1024 - 16) / one.length);
      const payload = new Uint8Array(n * one.length);
      for (let i = 0; i < n; i++) payload.set(one, i * one.length);
      await peer.send(frame(T.BATCH, 0, 0, payload));
      await until(() => closes.length === 1, 30_000);
      assert.equal(closes[0], "ERR_OVERLOADED");
      await until(() => peer.goaway !== undefined);
      assert.equal(peer.goaway?.errno, 2003);
      // Nothing like n messages held: the bound (32,768) stopped it.
      assert.ok(process.memoryUsage().rss - rss0 < 128 * 1024 * 1024, "RSS bounded");
      // The messages held before the close are still delivered, in order (the session closed, not lost).
      await until(() => delivered >= 32_768 - 1, 30_000);
      assert.ok(delivered < n);
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("a graceful close waits for the messages still waiting: all are delivered", async () => {
    const N = 1000;
    const { server, url } = await serve({ session: { messages: { perSecond: 4000, burst: 10 } } });
    const got: number[] = [];
    server.on("message", (msg) => {
      got.push(Number(msg.text()));
    });
    const conn = await connect(url);
    try {
      await Promise.all(Array.from({ length: N }, (_, i) => conn.send(String(i))));
      await conn.close();
      await until(() => got.length === N);
      assert.deepEqual(
        got,
        Array.from({ length: N }, (_, i) => i),
      );
    } finally {
      conn.destroy();
      await server.close();
    }
  });

  /**
   * 40 messages waiting for a global limit, then a graceful close; none may be dropped. `server.close()`:
   * the client ends its side once both GOAWAYs crossed, its session closes with them still waiting (35 of 40
   * were dropped at once). The client's own `close()`: dropped likewise, before they waited for the global
   * limit's tokens after the peer's graceful close.
   */
  async function gracefulCloseKeepsAll(perSecond: number, close: (server: Server, conn: Connection) => Promise<void>) {
    const { server, url, limiter } = await serve({ global: { messages: { perSecond, burst: 5 } } });
    const got: number[] = [];
    server.on("message", (msg) => {
      got.push(Number(msg.text()));
    });
    const conn = await connect(url);
    try {
      await Promise.all(Array.from({ length: 40 }, (_, i) => conn.send(String(i))));
      await until(() => got.length + limiter.stats().waiting === 40);
      assert.ok(limiter.stats().waiting >= 30, `${limiter.stats().waiting} messages waiting`);
      await close(server, conn);
      await until(() => got.length === 40 || limiter.stats().dropped > 0);
      assert.equal(limiter.stats().dropped, 0);
      assert.deepEqual(
        got,
        Array.from({ length: 40 }, (_, i) => i),
      );
    } finally {
      conn.destroy();
      await server.close();
    }
  }

  it("server.close() with messages waiting for a global limit drops none: all are delivered, in order", () =>
    gracefulCloseKeepsAll(1, (server) => server.close({ timeoutMs: 10_000 })));

  it("a client's own graceful close with messages waiting for a global limit loses none: they wait for its tokens, in order", () =>
    gracefulCloseKeepsAll(20, async (server, conn) => {
      await conn.close();
      await until(() => server.sessions.size === 0);
    }));

  it("idleTimeoutMs does not close a session while its messages wait for a global limit: none is dropped", async () => {
    // The idle check did not count held messages: the idle close (which drops what the global limit has no
    // tokens for) came while they waited, and 3 of 4 were lost.
    const server = createServer({ idleTimeoutMs: 300 });
    const limiter = rateLimit({ global: { messages: { perSecond: 2, burst: 1 } } });
    server.use(limiter);
    const got: number[] = [];
    server.on("message", (msg) => {
      got.push(Number(msg.text()));
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      await Promise.all([0, 1, 2, 3].map((i) => conn.send(String(i))));
      await until(() => got.length === 4 || limiter.stats().dropped > 0, 5000);
      assert.equal(limiter.stats().dropped, 0);
      assert.deepEqual(got, [0, 1, 2, 3]);
      // Idle afterwards: closed then.
      await until(() => server.sessions.size === 0, 5000);
    } finally {
      conn.destroy();
      await server.close();
    }
  });

  it("messages still waiting when their session is destroyed go on at once (charged to the buckets), in order", async () => {
    // One message per 10 s: without the close, the rest would wait minutes.
    const { server, url, limiter } = await serve({ session: { messages: { perSecond: 0.1, burst: 1 } } });
    const got: string[] = [];
    server.on("message", (msg) => {
      got.push(msg.text());
    });
    const conn = await connect(url);
    try {
      await Promise.all([1, 2, 3, 4, 5].map((i) => conn.send(`m${i}`)));
      await until(() => got.length === 1 && limiter.stats().waiting === 4);
      conn.destroy();
      await until(() => server.sessions.size === 0);
      await until(() => got.length === 5);
      assert.deepEqual(got, ["m1", "m2", "m3", "m4", "m5"]);
      assert.equal(limiter.stats().waiting, 0);
    } finally {
      await server.close();
    }
  });

  it("with key, messages of a destroyed session go on at once in every line they wait in, not only its first", async () => {
    // Keyed by topic (the message's first byte): one session's messages wait in two lines. Only the line its
    // first waiting message was in was woken by its close; the other's waited for tokens (10 s each).
    const { server, url, limiter } = await serve({
      session: { messages: { perSecond: 0.1, burst: 1 } },
      key: (ctx) => text(ctx.data).slice(0, 1),
    });
    const got: string[] = [];
    server.on("message", (msg) => {
      got.push(msg.text());
    });
    const conn = await connect(url);
    try {
      await Promise.all(["a1", "b1", "a2", "b2", "a3", "b3"].map((m) => conn.send(m)));
      await until(() => got.length === 2 && limiter.stats().waiting === 4);
      conn.destroy();
      await until(() => server.sessions.size === 0);
      await until(() => got.length === 6, 5000);
      assert.deepEqual(
        got.filter((m) => m.startsWith("a")),
        ["a1", "a2", "a3"],
      );
      assert.deepEqual(
        got.filter((m) => m.startsWith("b")),
        ["b1", "b2", "b3"],
      );
      assert.equal(limiter.stats().waiting, 0);
    } finally {
      await server.close();
    }
  });

  it("a wait beyond a timer's longest (one message per 116 days) is waited, not retried every millisecond", async () => {
    // A delay over 2^31 - 1 ms fires after 1 ms (Node warns TimeoutOverflowWarning): the line was pumped
    // every millisecond, each time finding the message still early and arming the same overflowing timer.
    const { server, url, limiter } = await serve({ session: { messages: { perSecond: 1e-7, burst: 1 } } });
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    const got: string[] = [];
    server.on("message", (msg) => {
      got.push(msg.text());
    });
    const conn = await connect(url);
    try {
      await Promise.all([conn.send("m1"), conn.send("m2")]);
      await until(() => got.length === 1 && limiter.stats().waiting === 1);
      // Warnings are emitted on the next tick of the setTimeout that overflows.
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      assert.ok(!warnings.includes("TimeoutOverflowWarning"), warnings.join());
      assert.deepEqual(got, ["m1"]);
      conn.destroy();
      await until(() => got.length === 2);
    } finally {
      process.off("warning", onWarning);
      await server.close();
    }
  });

  it("with key, state stays within maxKeys: refilled keys go first, then the oldest", async () => {
    const limiter = rateLimit({
      session: { requests: { perSecond: 0.001, burst: 1 } },
      key: (ctx) => text(ctx.data),
      maxKeys: 2,
    });
    const session = { state: "open" };
    const ctx = (k: string) =>
      ({ kind: "request", route: "/r", session, data: new TextEncoder().encode(k) }) as unknown as CallContext;
    const next = () => Promise.resolve(undefined);
    const call = async (k: string) => limiter(ctx(k), next);
    await call("a");
    await call("b");
    await refused(() => call("a"));
    await call("c"); // full: "a" (the oldest, no waiters) is forgotten
    assert.equal(limiter.stats().keys, 2);
    await refused(() => call("b"));
    await call("a"); // a fresh burst
    assert.equal(limiter.stats().keys, 2);
  });

  it("any error a handler throws with a retryAfterMs carries it across; errors without one arrive without", async () => {
    const server = createServer();
    server.handle("/busy/1", () => {
      throw new PointSubError("ERR_OVERLOADED", "busy", { retryAfterMs: 1234.5 });
    });
    server.handle("/plain/1", () => {
      throw new PointSubError("ERR_OVERLOADED", "busy");
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      await assert.rejects(conn.request("/busy/1"), { code: "ERR_OVERLOADED", retryAfterMs: 1235 });
      await assert.rejects(conn.request("/plain/1"), (err: unknown) => {
        assert.ok(isPointSubError(err, "ERR_OVERLOADED"));
        assert.equal("retryAfterMs" in err, false);
        return true;
      });
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("invalid options throw ERR_INVALID_ARGUMENT naming the field", () => {
    const cases: [unknown, RegExp][] = [
      [{ session: { requests: { perSecond: 0 } } }, /session\.requests\.perSecond must be > 0/],
      [{ session: { requests: { perSecond: -1 } } }, /session\.requests\.perSecond/],
      [{ global: { bytes: { perSecond: Number.POSITIVE_INFINITY } } }, /global\.bytes\.perSecond must be finite/],
      [{ global: { messages: { perSecond: 5, burst: 0.5 } } }, /global\.messages\.burst must be >= 1/],
      [{ global: { messages: { perSecond: "5" } } }, /global\.messages\.perSecond must be a number/],
      [{ session: { request: { perSecond: 5 } } }, /session\.request /],
      [{ sesion: { requests: { perSecond: 5 } } }, /sesion /],
      // A missing or unknown field was reported as its object's message: "perSecond must be an object…".
      [{ session: { requests: { burst: 5 } } }, /session\.requests\.perSecond is required \(got undefined\)$/],
      [{ session: { requests: { perSecond: 5, brust: 2 } } }, /session\.requests\.brust is not an option$/],
      [{ session: { requests: { perSecond: 5 } }, maxkeys: 5 }, /maxkeys is not an option/],
      // A field given that is no object is not "required": it says what it must be (it said "is required (got x)").
      [{ session: { requests: "x" } }, /session\.requests must be an object \{ perSecond, burst\? \}.*\(got x\)$/],
      [{ session: 5 }, /session must be an object with requests, messages and\/or bytes \(got 5\)$/],
      [{ session: { requests: { perSecond: 5 } }, key: "principal" }, /key must be a function/],
      [{ session: { requests: { perSecond: 5 } }, maxKeys: 0 }, /maxKeys must be >= 1/],
      [{}, /at least one limit/],
      [{ session: {} }, /at least one limit/],
    ];
    for (const [options, message] of cases) {
      assert.throws(
        () => rateLimit(options as RateLimitOptions),
        (err: unknown) => {
          assert.ok(isPointSubError(err, "ERR_INVALID_ARGUMENT"), String(err));
          assert.match(err.message, message);
          return true;
        },
      );
    }
  });
});
