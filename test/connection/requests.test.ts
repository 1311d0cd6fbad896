import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Connection } from "../../src/connection/connection.ts";
import { type Connection as Conn, connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { tcpTransport } from "../../src/node/net-adapter.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("request/response", () => {
  let server: Server;
  let url: string;
  let conn: Conn;
  /** The /slow handler's calls: whether its signal aborted, why, and what ended its wait first ("" while waiting). */
  const seenSignals: { route: string; aborted: boolean; reason: unknown; ended: "" | "timer" | "abort" }[] = [];
  let concurrent = 0;
  let maxConcurrent = 0;

  before(async () => {
    server = createServer({ maxConcurrentRequests: 8 });
    server.handle("/echo/1.0.0", (req) => req.data);
    server.handle("/throw/1.0.0", () => {
      throw new Error("boom: bad input");
    });
    server.handle("/reject/1.0.0", async () => {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "field x is required");
    });
    server.handle("/slow/1.0.0", async (req, ctx) => {
      const entry = {
        route: req.route,
        aborted: false,
        reason: undefined as unknown,
        ended: "" as "" | "timer" | "abort",
      };
      seenSignals.push(entry);
      await new Promise<void>((resolve) => {
        const t = setTimeout(
          () => {
            entry.ended ||= "timer";
            resolve();
          },
          Number(text(req.data)),
        );
        ctx.signal.addEventListener("abort", () => {
          entry.aborted = true;
          entry.reason = ctx.signal.reason;
          entry.ended ||= "abort";
          clearTimeout(t);
          resolve();
        });
      });
      return "late";
    });
    server.handle("/count/1.0.0", async () => {
      concurrent++;
      maxConcurrent = Math.max(maxConcurrent, concurrent);
      await sleep(2);
      concurrent--;
      return "ok";
    });
    server.handle("/empty/1.0.0", () => undefined);
    server.on("session", (s) => {
      s.handle("/session-only/1.0.0", () => "per-session route");
    });
    [url] = await server.listen("tcp://127.0.0.1:0");
    conn = await connect(url);
  });

  after(async () => {
    await conn.close();
    await server.close();
  });

  it("timeoutMs: negative or NaN is ERR_INVALID_ARGUMENT; past 2^31 - 1 ms the deadline timer does not spin (client review)", async () => {
    for (const bad of [-1, Number.NaN]) {
      await assert.rejects(conn.request("/echo/1.0.0", "x", { timeoutMs: bad }), { code: "ERR_INVALID_ARGUMENT" });
    }
    // Before: a delay over 2^31 - 1 ms fires after 1 ms (TimeoutOverflowWarning) and the sweep re-armed it
    // every millisecond for as long as the request was pending.
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    try {
      assert.equal(text(await conn.request("/slow/1.0.0", "200", { timeoutMs: 2 ** 32 })), "late");
    } finally {
      process.off("warning", onWarning);
    }
    assert.deepEqual(
      warnings.filter((w) => w === "TimeoutOverflowWarning"),
      [],
    );
  });

  it("answers with the handler's bytes, text or empty result", async () => {
    assert.equal(text(await conn.request("/echo/1.0.0", "abc")), "abc");
    assert.equal((await conn.request("/empty/1.0.0")).length, 0);
    assert.equal(text(await conn.request("/session-only/1.0.0")), "per-session route");
  });

  it("a throwing handler reaches the caller as ERR_HANDLER with its message", async () => {
    await assert.rejects(conn.request("/throw/1.0.0", "x"), (e: unknown) => {
      assert.ok(e instanceof PointSubError);
      assert.equal(e.code, "ERR_HANDLER");
      assert.equal(e.errno, 4003);
      assert.match(e.message, /boom: bad input/);
      return true;
    });
  });

  it("a handler that returns neither bytes, text nor undefined: ERR_HANDLER naming what it returned (not the caller's ERR_INVALID_ARGUMENT)", async () => {
    const bad: [string, unknown][] = [
      ["/bad-number/1.0.0", 42],
      ["/bad-null/1.0.0", null],
      ["/bad-u16/1.0.0", new Uint16Array([1, 2])],
      ["/bad-object/1.0.0", { ok: true }],
    ];
    for (const [route, value] of bad) server.handle(route, async () => value as string);
    for (const [route, value] of bad) {
      const what = value === null ? "null" : typeof value === "number" ? "42" : (value as object).constructor.name;
      await assert.rejects(conn.request(route), (e: unknown) => {
        assert.ok(e instanceof PointSubError);
        assert.equal(e.code, "ERR_HANDLER", route);
        assert.ok(e.message.includes(`handler for ${route} returned ${what}`), e.message);
        return true;
      });
    }
    // A stream handler's answer goes the same way.
    server.handleStream("/bad-stream/1.0.0", async (stream) => {
      for await (const _ of stream);
      return 7 as unknown as string;
    });
    await assert.rejects(conn.sendStream("/bad-stream/1.0.0", [new Uint8Array(10)]).done, {
      code: "ERR_HANDLER",
      message: /returned 7/,
    });
    assert.equal(text(await conn.request("/echo/1.0.0", "still fine")), "still fine");
  });

  it("a handler's PointSubError keeps its code", async () => {
    await assert.rejects(conn.request("/reject/1.0.0"), {
      code: "ERR_INVALID_ARGUMENT",
      message: /field x is required/,
    });
  });

  it("an unknown route gives ERR_NO_ROUTE and the connection stays usable", async () => {
    await assert.rejects(conn.request("/missing/9.9.9", "x"), { code: "ERR_NO_ROUTE", message: /\/missing\/9\.9\.9/ });
    assert.equal(text(await conn.request("/echo/1.0.0", "still fine")), "still fine");
  });

  it("a slow handler vs a short timeout: ERR_TIMEOUT, the handler's signal aborts, the late response is dropped", async () => {
    seenSignals.length = 0;
    await assert.rejects(conn.request("/slow/1.0.0", "2000", { timeoutMs: 50 }), {
      code: "ERR_TIMEOUT",
      phase: "request",
    });
    // The caller gave up without waiting for the handler: it was still waiting then…
    assert.deepEqual(
      seenSignals.map((e) => e.ended),
      seenSignals.map(() => ""),
    );
    while (seenSignals.length === 0 || !seenSignals[0].aborted) await sleep(5);
    // …and its wait was ended by the abort the caller's timeout sent, not by its own 2 s timer.
    assert.equal(seenSignals[0].ended, "abort");
    assert.ok(seenSignals[0].reason instanceof PointSubError);
    assert.equal((seenSignals[0].reason as PointSubError).code, "ERR_TIMEOUT");
    // The connection goes on; the cancelled call's id is not confused with new ones.
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => conn.request("/echo/1.0.0", `n${i}`)));
    replies.forEach((r, i) => {
      assert.equal(text(r), `n${i}`);
    });
  });

  it("a response that arrives after the timeout is dropped, not delivered to another call", async () => {
    // The handler answers at 80 ms, the caller gave up at 40 ms: the response is
    // already on its way when the CANCEL arrives.
    const slow = conn.request("/slow/1.0.0", "80", { timeoutMs: 40 });
    await assert.rejects(slow, { code: "ERR_TIMEOUT" });
    const next = await conn.request("/echo/1.0.0", "mine");
    assert.equal(text(next), "mine");
    await sleep(100);
    assert.equal(text(await conn.request("/echo/1.0.0", "again")), "again");
  });

  it("requests made in one synchronous run read the clock once for their deadlines, counted from the run's end", async () => {
    // Deadlines are on the monotonic clock (a wall-clock step fired them early).
    const realPerfNow = performance.now;
    const realNow = () => realPerfNow.call(performance);
    let reads = 0;
    let calls: Promise<Uint8Array>[] = [];
    let busyUntil = 0;
    performance.now = () => {
      reads++;
      return realNow();
    };
    try {
      calls = Array.from({ length: 200 }, (_, i) => conn.request("/echo/1.0.0", `r${i}`, { timeoutMs: 30_000 }));
      // The run goes on for 400 ms after a request with a 300 ms timeout: its timeout counts from the run's
      // end (a 20 ms handler then has 280 ms to answer, on a loaded machine too).
      calls.push(conn.request("/slow/1.0.0", "20", { timeoutMs: 300 }));
      busyUntil = realNow() + 400;
      while (realNow() < busyUntil) {
        // a synchronous run that outlasts the last request's timeout
      }
      assert.ok(reads <= 3, `${reads} clock reads for 201 requests`);
    } finally {
      performance.now = realPerfNow;
    }
    const replies = await Promise.all(calls);
    assert.equal(text(replies[199]), "r199");
    assert.equal(text(replies[200]), "late");
    // Deadlines still fire: a short timeout made alone.
    await assert.rejects(conn.request("/slow/1.0.0", "2000", { timeoutMs: 30 }), { code: "ERR_TIMEOUT" });
  });

  it("an AbortSignal cancels the call with ERR_CANCELLED and aborts the handler", async () => {
    seenSignals.length = 0;
    const ac = new AbortController();
    const p = conn.request("/slow/1.0.0", "2000", { signal: ac.signal });
    while (seenSignals.length === 0) await sleep(2);
    ac.abort(new Error("user gave up"));
    await assert.rejects(p, { code: "ERR_CANCELLED" });
    while (!seenSignals[0].aborted) await sleep(2);
    assert.equal((seenSignals[0].reason as PointSubError).code, "ERR_CANCELLED");
    await assert.rejects(conn.request("/echo/1.0.0", "x", { signal: AbortSignal.abort() }), { code: "ERR_CANCELLED" });
  });

  it("keeps at most the peer's maxConcurrentRequests in flight and queues the rest", async () => {
    maxConcurrent = 0;
    const all = await Promise.all(Array.from({ length: 100 }, () => conn.request("/count/1.0.0")));
    assert.equal(all.length, 100);
    assert.ok(maxConcurrent <= 8, `saw ${maxConcurrent} concurrent handlers`);
    assert.ok(maxConcurrent >= 2);
  });

  it("the server can push to a session and call the client's routes", async () => {
    const c2 = await connect(url);
    c2.handle("/client/1.0.0", (req) => `client saw ${text(req.data)}`);
    const got = new Promise<string>((resolve) => c2.once("message", (m) => resolve(m.text())));
    let session = [...server.sessions].find((s) => s.remoteUrl === c2.localUrl);
    while (session === undefined) {
      await sleep(2);
      session = [...server.sessions].find((s) => s.remoteUrl === c2.localUrl);
    }
    await session.send("pushed");
    assert.equal(await got, "pushed");
    assert.equal(text(await session.request("/client/1.0.0", "hi")), "client saw hi");
    await c2.close();
  });

  it("rejects bad arguments with ERR_INVALID_ARGUMENT", async () => {
    await assert.rejects(conn.request("", "x"), { code: "ERR_INVALID_ARGUMENT" });
    await assert.rejects(conn.send(42 as unknown as string), { code: "ERR_INVALID_ARGUMENT" });
  });

  it("stream ids wrap around 2^32 without colliding with calls in flight", async () => {
    const transport = await tcpTransport.connect(new URL(url), {});
    const c = new Connection(transport, {}, { initiator: true, firstStreamId: 0xffffffff - 20 });
    await c.ready;
    // One call stays in flight across the wrap.
    const held = c.request("/slow/1.0.0", "300");
    const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => c.request("/echo/1.0.0", `w${i}`)));
    replies.forEach((r, i) => {
      assert.equal(text(r), `w${i}`);
    });
    assert.equal(text(await held), "late");
    await c.close();
  });
});
