import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Connection, connect, createServer, type PointSubError } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

describe("server connection limits", () => {
  it("the adaptive limit shrinks 10 % per interval under event-loop delay (not below min) and grows back when the limit is used and the loop is quick", async () => {
    let delay = 0;
    const server = createServer({
      adaptiveConnections: { min: 4, max: 10, intervalMs: 20, targetDelayMs: 50, sampleDelay: () => delay },
    });
    const moves: [number, number][] = [];
    server.on("connectionLimit", (limit, previous) => moves.push([limit, previous]));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    assert.equal(server.connectionLimit, 10);
    // Overloaded: 10 → 9 → 8 → 7 → 6 → 5 → 4, and not below.
    delay = 200;
    await until(() => server.connectionLimit === 4);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(server.connectionLimit, 4);
    assert.deepEqual(
      moves.map(([l]) => l),
      [9, 8, 7, 6, 5, 4],
    );
    // Over the shrunk limit, clients are refused with the typed reason.
    const held: Connection[] = [];
    try {
      for (let i = 0; i < 4; i++) held.push(await connect(url));
      await assert.rejects(connect(url, { connectTimeoutMs: 2000 }), {
        code: "ERR_OVERLOADED",
        message: /connection limit reached/,
      });
      // A quiet loop alone does not grow it while little of it is used (close one first: at 4 of 4
      // with a quiet loop it would grow at once)...
      await held.pop()?.close();
      await until(() => server.sessions.size === 3);
      delay = 0;
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(server.connectionLimit, 4);
      // ...but with the limit used (>= 80 %) it grows 10 % per interval, up to max.
      held.push(await connect(url));
      await until(() => server.connectionLimit > 4);
      while (server.connectionLimit < 10) {
        while (held.length < server.connectionLimit) held.push(await connect(url));
        const before = server.connectionLimit;
        // Connections being opened count as used: on a slow machine the limit may reach max while they open.
        if (before === 10) break;
        await until(() => server.connectionLimit !== before);
      }
      await until(() => server.connectionLimit === 10);
      assert.ok(moves.at(-1)?.[0] === 10);
    } finally {
      for (const c of held) c.destroy();
      await server.close({ timeoutMs: 500 });
    }
  });

  it("the default adaptive sampler measures a real event-loop block", async () => {
    const server = createServer({ adaptiveConnections: { min: 100, max: 1000, intervalMs: 100, targetDelayMs: 150 } });
    await server.listen("tcp://127.0.0.1:0");
    await new Promise((r) => setTimeout(r, 120));
    // Block the event loop for 400 ms: the sampler sees it late, the limit shrinks.
    const end = Date.now() + 400;
    while (Date.now() < end) {
      // busy on purpose
    }
    await until(() => server.connectionLimit < 1000);
    assert.ok(server.connectionLimit <= 900 && server.connectionLimit >= 100);
    await server.close();
  });

  it("maxConnectionsPerAddress refuses one address over its share with a typed reason", async () => {
    const server = createServer({ maxConnectionsPerAddress: 2 });
    const rejects: PointSubError[] = [];
    server.on("reject", (e) => rejects.push(e));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const a = await connect(url);
    const b = await connect(url);
    await assert.rejects(connect(url, { connectTimeoutMs: 2000 }), {
      code: "ERR_OVERLOADED",
      message: /limit for this address/,
    });
    assert.equal(rejects.length, 1);
    // Another address (IPv6 loopback, when the server listens there too) is not affected.
    const [url6] = await server.listen("tcp://[::1]:0").catch(() => [undefined]);
    if (url6 !== undefined) {
      const c = await connect(url6);
      await c.close();
    }
    // A closed connection frees its slot.
    await a.close();
    await until(() => server.sessions.size === 1);
    const d = await connect(url);
    await d.close();
    await b.close();
    await server.close();
  });

  it("maxConnections and maxConnectionsPerAddress: Infinity are their default, no limit (they were ERR_INVALID_ARGUMENT)", async () => {
    const server = createServer({ maxConnections: Infinity, maxConnectionsPerAddress: Infinity });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const clients: Connection[] = [];
    try {
      assert.equal(server.connectionLimit, Infinity);
      for (let i = 0; i < 3; i++) clients.push(await connect(url));
      await until(() => server.sessions.size === 3);
      // Anything else that is no whole number >= 1 is still refused.
      for (const bad of [Number.NaN, -Infinity, 2.5, 0]) {
        assert.throws(() => createServer({ maxConnections: bad }), { code: "ERR_INVALID_ARGUMENT" });
        assert.throws(() => createServer({ maxConnectionsPerAddress: bad }), { code: "ERR_INVALID_ARGUMENT" });
      }
    } finally {
      for (const c of clients) await c.close();
      await server.close();
    }
  });

  it("ws:// over its limits answers 503 and the client's connect rejects with ERR_OVERLOADED (it was a hang-up: ERR_CONNECT); the server's reject says ERR_OVERLOADED too (it said ERR_CONNECT)", async () => {
    const server = createServer({ maxConnections: 1 });
    const rejects: PointSubError[] = [];
    server.on("reject", (e) => rejects.push(e));
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const a = await connect(url);
    try {
      await assert.rejects(connect(url, { connectTimeoutMs: 5000 }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_OVERLOADED");
        assert.equal(e.retryable, true);
        assert.match(e.message, /HTTP 503/);
        return true;
      });
      await until(() => rejects.length === 1);
      assert.equal(rejects[0].code, "ERR_OVERLOADED");
      assert.match(
        rejects[0].message,
        /^refused ws:\/\/127\.0\.0\.1:\d+ before its TLS or WebSocket handshake: connection limit reached/,
      );
      // The slot frees with the session: the next one is admitted.
      await a.close();
      await until(() => server.sessions.size === 0);
      const b = await connect(url);
      await b.close();
    } finally {
      await server.close();
    }
  });

  it("a ws:// connection refused after its WebSocket handshake while 1,024 refusals linger still gets its GOAWAY (ERR_OVERLOADED, not a hang-up)", async () => {
    // Past MAX_LINGERING_REFUSALS a refused transport was destroyed right after end(): a ws://
    // transport corks its writes until the end of the turn, so the GOAWAY was dropped with the socket.
    const server = createServer({ maxConnections: 10 });
    const s = server as unknown as {
      lingering: number;
      admission: { limit: number };
      acceptNow: (t: unknown) => void;
    };
    const acceptNow = s.acceptNow.bind(server);
    // The limit shrank (adaptiveConnections) while this connection was in its WebSocket handshake,
    // and a flood's refusals hold every lingering slot.
    s.acceptNow = (t) => {
      s.admission.limit = 0;
      s.lingering = 1024;
      acceptNow(t);
    };
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    try {
      await assert.rejects(connect(url, { connectTimeoutMs: 5000 }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_OVERLOADED", e.message);
        return true;
      });
    } finally {
      await server.close({ timeoutMs: 500 });
    }
  });

  it("createServer({ rateLimit }) installs the rate limiter for every session", async () => {
    // One request per 100 s: the second is refused however slow the machine is.
    const server = createServer({ rateLimit: { session: { requests: { perSecond: 0.01, burst: 1 } } } });
    server.handle("/echo/1.0.0", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const c = await connect(url);
    await c.request("/echo/1.0.0", "first");
    await assert.rejects(c.request("/echo/1.0.0", "second"), (e: PointSubError) => {
      assert.equal(e.code, "ERR_RATE_LIMITED");
      assert.ok((e.retryAfterMs ?? 0) > 0);
      return true;
    });
    await c.close();
    await server.close();
  });

  it("rejects invalid limit options naming the field", () => {
    assert.throws(() => createServer({ maxConnectionsPerAddress: 0 }), {
      code: "ERR_INVALID_ARGUMENT",
      message: /maxConnectionsPerAddress/,
    });
    assert.throws(() => createServer({ adaptiveConnections: { min: 10, max: 5 } }), {
      code: "ERR_INVALID_ARGUMENT",
      message: /adaptiveConnections\.max/,
    });
    assert.throws(() => createServer({ adaptiveConnections: { intervalMs: Number.NaN } }), {
      code: "ERR_INVALID_ARGUMENT",
      message: /adaptiveConnections\.intervalMs/,
    });
    assert.throws(() => createServer({ idleTimeoutMs: -1 }), {
      code: "ERR_INVALID_ARGUMENT",
      message: /idleTimeoutMs/,
    });
  });

  it("adaptiveConnections.intervalMs over a timer's range is refused naming the field (3e9 reconsidered the limit every 1 ms: 1,000 down to min in 40 ms)", async () => {
    for (const intervalMs of [2 ** 31, 3e9]) {
      assert.throws(() => createServer({ adaptiveConnections: { intervalMs, sampleDelay: () => 500 } }), {
        code: "ERR_INVALID_ARGUMENT",
        message: /adaptiveConnections\.intervalMs must be at most 2147483647/,
      });
    }
    // The longest a timer takes is taken: the limit stays where it is for that long.
    const moves: number[] = [];
    const server = createServer({
      adaptiveConnections: { min: 10, max: 1000, intervalMs: 2 ** 31 - 1, sampleDelay: () => 500 },
    });
    server.on("connectionLimit", (limit) => moves.push(limit));
    await server.listen("tcp://127.0.0.1:0");
    await server.close();
    assert.deepEqual(moves, []);
    assert.equal(server.connectionLimit, 1000);
  });

  it("adaptiveConnections min, max and initial that are not whole numbers are refused naming the field, as maxConnections is", () => {
    // Before: initial 7.5 became the reported connectionLimit 7.5.
    for (const [field, a] of [
      ["initial", { min: 5, max: 10, initial: 7.5 }],
      ["min", { min: 5.5, max: 10 }],
      ["max", { min: 5, max: 10.25 }],
    ] as const) {
      assert.throws(() => createServer({ adaptiveConnections: a }), {
        code: "ERR_INVALID_ARGUMENT",
        message: new RegExp(`adaptiveConnections\\.${field} must be an integer`),
      });
    }
    assert.equal(createServer({ adaptiveConnections: { min: 5, max: 10, initial: 7 } }).connectionLimit, 7);
  });

  it("adaptiveConnections and idempotency other than a boolean or an object are refused, not taken as on", async () => {
    // Before: 0, "no" or "off" (a config's value) turned the adaptive limit (10,000 at start) or
    // deduplication on with their defaults; null threw an untyped TypeError; a sampleDelay that was not
    // a function threw on the limit's timer, an uncaught exception.
    for (const [field, value] of [
      ["adaptiveConnections", 0],
      ["adaptiveConnections", "no"],
      ["adaptiveConnections", null],
      ["idempotency", 0],
      ["idempotency", "off"],
      ["idempotency", null],
    ] as const) {
      assert.throws(
        () => createServer({ [field]: value } as never),
        { code: "ERR_INVALID_ARGUMENT", message: new RegExp(field) },
        `${field}: ${String(value)}`,
      );
    }
    assert.throws(() => createServer({ adaptiveConnections: { sampleDelay: 5 as never } }), {
      code: "ERR_INVALID_ARGUMENT",
      message: /adaptiveConnections\.sampleDelay/,
    });
    // The booleans and objects work as before.
    assert.equal(createServer({ adaptiveConnections: false }).connectionLimit, Number.POSITIVE_INFINITY);
    assert.equal(createServer({ adaptiveConnections: { min: 1, max: 7 } }).connectionLimit, 7);
    createServer({ idempotency: false });
    createServer({ idempotency: {} });
  });
});
