/**
 * Giving up on a stream, between two pointsub peers over loopback (review
 * of session 28's answer deadline and unanswered-CANCEL rule):
 * - an abort while the source waits for data ends the stream with CANCEL
 *   at once (it went out only when the source yielded: the receiver's
 *   handler ran on, and the connection was cut for the "unanswered" CANCEL);
 * - an abort after the source ended but before its queued frames went out
 *   drops them and cancels (the receiver got the whole stream anyway);
 * - a stream aborted while waiting for a slot passes its wake-up on (the
 *   next waiter waited until the connection closed);
 * - a stream waiting for a request slot starts when a request ends (it
 *   waited until the connection closed);
 * - a receiver that reads slowly after END is not timed out while it reads
 *   (each credit moves the answer's deadline);
 * - a server that stops reading (documented backpressure) is not cut for a
 *   CANCEL it has not read yet.
 */
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { connect, createServer, PointSubError } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;

/** A stream handler that reads everything and answers the number of bytes. */
async function countBytes(stream: AsyncIterable<Uint8Array>): Promise<string> {
  let n = 0;
  for await (const c of stream) n += c.length;
  return String(n);
}

/**
 * Aborts `ac` 100 ms from now; `done` must reject with ERR_CANCELLED and the
 * receiver's handler hear of it (`heardAt()` set) within `withinMs`.
 */
async function abortAndHear(ac: AbortController, done: Promise<unknown>, heardAt: () => number, withinMs: number) {
  await sleep(100);
  const abortAt = Date.now();
  ac.abort();
  await assert.rejects(done, { code: "ERR_CANCELLED" });
  for (let i = 0; i < 100 && heardAt() === 0; i++) await sleep(10);
  const heard = heardAt();
  assert.ok(heard !== 0 && heard - abortAt < withinMs, `the handler heard of it ${heard - abortAt} ms later`);
}

describe("giving up on a stream", () => {
  it("a signal aborted with a retryable error keeps its code whether it aborted before the stream started or while it ran", async () => {
    // Before: aborted already, the stream rejected with ERR_CANCELLED; aborted a moment later, with the
    // signal's own code (ERR_SLOW_PEER here, which a resumable transfer retries and ERR_CANCELLED ends).
    const server = createServer();
    server.handleStream("/feed", countBytes);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const stop = Promise.withResolvers<void>();
    try {
      async function* live() {
        yield new Uint8Array(10);
        await stop.promise;
      }
      const reason = () => new PointSubError("ERR_SLOW_PEER", "the peer reads too slowly");
      const before = AbortSignal.abort(reason());
      await assert.rejects(conn.sendStream("/feed", live(), { signal: before }).done, { code: "ERR_SLOW_PEER" });
      const ac = new AbortController();
      const t = conn.sendStream("/feed", live(), { signal: ac.signal });
      await sleep(50);
      ac.abort(reason());
      await assert.rejects(t.done, { code: "ERR_SLOW_PEER" });
      // Any other reason is ERR_CANCELLED, both ways.
      await assert.rejects(conn.sendStream("/feed", live(), { signal: AbortSignal.abort() }).done, {
        code: "ERR_CANCELLED",
      });
      // A retryable error given a code of the application's own (as the README allows for a handler's): no code
      // pointsub can carry, so ERR_CANCELLED, both ways. Before, rebuilding it threw ("invalid code ERR_MINE"):
      // aborted already, the stream failed with that; aborted while it ran, thrown from the signal's listener
      // (an uncaught exception), the stream never settled.
      const mine = () => Object.assign(reason(), { code: "ERR_MINE" });
      await assert.rejects(conn.sendStream("/feed", live(), { signal: AbortSignal.abort(mine()) }).done, {
        code: "ERR_CANCELLED",
      });
      const ac2 = new AbortController();
      const t2 = conn.sendStream("/feed", live(), { signal: ac2.signal });
      await sleep(50);
      ac2.abort(mine());
      await assert.rejects(t2.done, (e: PointSubError) => {
        assert.equal(e.code, "ERR_CANCELLED");
        assert.equal((e.cause as { code: string }).code, "ERR_MINE");
        return true;
      });
    } finally {
      stop.resolve();
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a signal aborted with a value whose fields throw when read (a revoked Proxy, a throwing retryable getter): ERR_CANCELLED both ways, nothing uncaught", async () => {
    // Before: aborted while it ran, reading it threw from the signal's listener (an uncaught exception, which
    // ends a Node process) and the stream never settled.
    const server = createServer();
    server.handleStream("/feed", countBytes);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const stop = Promise.withResolvers<void>();
    const uncaught: unknown[] = [];
    const { promise: thrown, reject: threw } = Promise.withResolvers<never>();
    const onUncaught = (e: unknown) => {
      uncaught.push(e);
      threw(e);
    };
    process.on("uncaughtException", onUncaught);
    try {
      async function* live() {
        yield new Uint8Array(10);
        await stop.promise;
      }
      const reasons: (() => unknown)[] = [
        () => {
          const r = Proxy.revocable({}, {});
          r.revoke();
          return r.proxy;
        },
        () =>
          Object.defineProperty(new PointSubError("ERR_SLOW_PEER", "x"), "retryable", {
            get() {
              throw new Error("no retryable");
            },
          }),
      ];
      for (const reason of reasons) {
        await assert.rejects(conn.sendStream("/feed", live(), { signal: AbortSignal.abort(reason()) }).done, {
          code: "ERR_CANCELLED",
        });
        const ac = new AbortController();
        const t = conn.sendStream("/feed", live(), { signal: ac.signal });
        await sleep(50);
        ac.abort(reason());
        await assert.rejects(Promise.race([t.done, thrown]), { code: "ERR_CANCELLED" });
      }
      assert.deepEqual(uncaught, []);
    } finally {
      process.off("uncaughtException", onUncaught);
      stop.resolve();
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("the receiver's own cancel (its progress timeout, its reader's cancel) aborts the handler's ctx.signal", async () => {
    // Before: only the sender's CANCEL aborted it; a handler awaiting other work with the signal (a
    // database write, a fetch) ran on after its stream was given up, its answer dropped.
    const server = createServer({ progressTimeoutMs: 300 });
    const heard: string[] = [];
    const hear = (ctx: { signal: AbortSignal }) =>
      new Promise<void>((resolve) => {
        if (ctx.signal.aborted) {
          heard.push((ctx.signal.reason as PointSubError).code);
          return resolve();
        }
        const t = setTimeout(() => {
          heard.push("not aborted");
          resolve();
        }, 4000);
        ctx.signal.addEventListener("abort", () => {
          clearTimeout(t);
          heard.push((ctx.signal.reason as PointSubError).code);
          resolve();
        });
      });
    server.handleStream("/stalls", async (stream, ctx) => {
      const first = await stream.next(); // then the sender says nothing: this side gives up
      assert.equal(first.done, false);
      await hear(ctx);
      return "late";
    });
    server.handleStream("/refused", async (stream, ctx) => {
      await stream.next();
      stream.cancel("not wanted");
      await hear(ctx);
      return "late";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { keepAliveMs: 0 });
    const stop = Promise.withResolvers<void>();
    try {
      async function* live() {
        yield new Uint8Array(10);
        await stop.promise;
      }
      await assert.rejects(conn.sendStream("/stalls", live()).done, { code: "ERR_TIMEOUT" });
      await assert.rejects(conn.sendStream("/refused", live()).done, { code: "ERR_CANCELLED" });
      for (let i = 0; i < 100 && heard.length < 2; i++) await sleep(50);
      assert.deepEqual(heard, ["ERR_TIMEOUT", "ERR_CANCELLED"]);
    } finally {
      stop.resolve();
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("an abort while the source waits sends CANCEL at once: the handler hears it, the connection stays open", async () => {
    const server = createServer();
    let abortedAt = 0;
    server.handleStream("/feed", async (stream, ctx) => {
      ctx.signal.addEventListener("abort", () => (abortedAt = Date.now()));
      let n = 0;
      for await (const c of stream) n += c.length;
      return String(n);
    });
    server.handle("/ping", () => "pong");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { progressTimeoutMs: 300, keepAliveMs: 0 });
    const stop = Promise.withResolvers<void>();
    try {
      async function* live() {
        yield new Uint8Array(10);
        await stop.promise; // a live feed with nothing to say for now
      }
      const ac = new AbortController();
      const t = conn.sendStream("/feed", live(), { signal: ac.signal });
      await abortAndHear(ac, t.done, () => abortedAt, 400);
      // Past progressTimeoutMs (and its tick): the CANCEL was answered, nothing is cut.
      await sleep(800);
      assert.equal(new TextDecoder().decode(await conn.request("/ping", "x")), "pong");
      assert.equal(conn.state, "open");
    } finally {
      stop.resolve();
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a receiver answering early while the source waits: CANCEL goes out at once and the stream's slot is free (it waited for the source's next chunk)", async () => {
    const server = createServer({ maxConcurrentStreams: 1 });
    let closedAt = 0;
    server.handleStream("/first", async (stream, ctx) => {
      ctx.signal.addEventListener("abort", () => (closedAt = Date.now()));
      for await (const _ of stream) return "enough"; // one chunk is all it needs
      return "nothing";
    });
    server.handleStream("/count", countBytes);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { keepAliveMs: 0 });
    const stop = Promise.withResolvers<void>();
    try {
      async function* live() {
        yield new Uint8Array(10);
        await stop.promise; // a live feed with nothing to say for now
      }
      const first = conn.sendStream("/first", live());
      assert.equal(new TextDecoder().decode(await first.done), "enough");
      // The only stream slot is free again: the next stream runs while the first source still waits.
      const next = conn.sendStream("/count", [new Uint8Array(7)]).done;
      const got = await Promise.race([next, sleep(3000).then(() => "still waiting")]);
      assert.equal(typeof got === "string" ? got : new TextDecoder().decode(got), "7");
      assert.equal(conn.state, "open");
      assert.equal(closedAt, 0, "the receiver's handler had answered: nothing aborts it");
    } finally {
      stop.resolve();
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("an abort after the source ended, its frames still queued for credit: they are dropped and the stream cancelled", async () => {
    const server = createServer({ streamWindow: 256 * 1024 });
    let got = -1;
    let abortedAt = 0;
    server.handleStream("/s", async (stream, ctx) => {
      ctx.signal.addEventListener("abort", () => (abortedAt = Date.now()));
      let n = 0;
      for await (const c of stream) {
        n += c.length;
        await sleep(100); // a slow reader: credit trickles back
      }
      got = n;
      return String(n);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { progressTimeoutMs: 400, keepAliveMs: 0 });
    try {
      const ac = new AbortController();
      // 320 KiB through a 256 KiB window: the source is wholly queued (END too) while part waits for credit.
      const total = 5 * 64 * 1024;
      const chunks = Array.from({ length: 5 }, () => new Uint8Array(64 * 1024));
      const t = conn.sendStream("/s", chunks, { total, signal: ac.signal });
      // At once (the CANCEL is not queued behind the stream's frames, which wait for credit).
      await abortAndHear(ac, t.done, () => abortedAt, 300);
      await sleep(1200);
      assert.ok(got < total, `the receiver read ${got} of ${total} bytes: the queued rest went out anyway`);
      assert.equal(conn.state, "open");
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a stream aborted while it waits for the only slot passes the slot on: the next one runs", async () => {
    const server = createServer({ maxConcurrentStreams: 1 });
    server.handleStream("/slow", async (stream) => {
      for await (const _ of stream);
      await sleep(200);
      return "done";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const a = conn.sendStream("/slow", [new Uint8Array(10)]).done;
      const acB = new AbortController();
      const b = conn.sendStream("/slow", [new Uint8Array(10)], { signal: acB.signal }).done;
      const c = conn.sendStream("/slow", [new Uint8Array(10)]).done;
      await sleep(20);
      acB.abort();
      await assert.rejects(b, { code: "ERR_CANCELLED" });
      assert.equal(new TextDecoder().decode(await a), "done");
      const r = await Promise.race([c, sleep(3000).then(() => "still waiting")]);
      assert.equal(typeof r === "string" ? r : new TextDecoder().decode(r), "done");
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("streams given up while they wait for a slot leave the queue at once (they held their sources until a slot freed: for ever behind a live feed)", async () => {
    const server = createServer({ maxConcurrentStreams: 1 });
    server.handleStream("/count", countBytes);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { keepAliveMs: 0 });
    const waiting = () => (conn as unknown as { outStreams_: { waiters: unknown[] } }).outStreams_.waiters.length;
    const stop = Promise.withResolvers<void>();
    try {
      async function* live() {
        yield new Uint8Array(10);
        await stop.promise;
      }
      const feed = conn.sendStream("/count", live());
      const acs = Array.from({ length: 20 }, () => new AbortController());
      const given = acs.map((ac) => conn.sendStream("/count", [new Uint8Array(MiB)], { signal: ac.signal }));
      given.push(conn.sendStream("/count", [new Uint8Array(MiB)]));
      const next = conn.sendStream("/count", [new Uint8Array(10)]);
      assert.equal(waiting(), 22);
      for (const ac of acs) ac.abort();
      given[20].cancel();
      for (const t of given) await assert.rejects(t.done, { code: "ERR_CANCELLED" });
      assert.equal(waiting(), 1, "given-up streams still queued for a slot");
      // The one still waiting gets the slot when it frees, as before.
      stop.resolve();
      assert.equal(new TextDecoder().decode(await feed), "10");
      assert.equal(new TextDecoder().decode(await next), "10");
      assert.equal(waiting(), 0);
    } finally {
      stop.resolve();
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a stream waiting for one of the peer's request slots starts when a request ends", async () => {
    const server = createServer({ maxConcurrentRequests: 1 });
    server.handle("/slow", async () => {
      await sleep(200);
      return "ok";
    });
    server.handleStream("/count", countBytes);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const r = conn.request("/slow", "x");
      const s = conn.sendStream("/count", [new Uint8Array(7)]).done;
      assert.equal(new TextDecoder().decode(await r), "ok");
      const got = await Promise.race([s, sleep(3000).then(() => "still waiting")]);
      assert.equal(typeof got === "string" ? got : new TextDecoder().decode(got), "7");
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a receiver still reading after END is not timed out: each credit moves the answer's deadline", async () => {
    const server = createServer();
    let aborted = false;
    server.handleStream("/slow", async (stream, ctx) => {
      ctx.signal.addEventListener("abort", () => (aborted = true));
      let n = 0;
      for await (const c of stream) {
        n += c.length;
        await sleep((c.length / (2 * MiB)) * 1000); // 2 MiB/s: ~2 s for all, END went out at once
      }
      return String(n);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // An answer is due 400 ms (+ 0.4 s for 4 MiB at requestBytesPerSecond) after END, or after the last credit.
    const conn = await connect(url, { requestTimeoutMs: 400, progressTimeoutMs: 2000, keepAliveMs: 0 });
    try {
      const chunks = Array.from({ length: 64 }, () => new Uint8Array(64 * 1024));
      const r = await conn.sendStream("/slow", chunks, { total: 4 * MiB });
      assert.equal(new TextDecoder().decode(r), String(4 * MiB));
      assert.equal(aborted, false);
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a connection's first stream gets the progressTimeoutMs minimum too (before housekeeping's first check)", async () => {
    const server = createServer();
    server.handleStream("/think", async (stream) => {
      const n = await countBytes(stream);
      await sleep(800); // past requestTimeoutMs + bytes, well short of progressTimeoutMs
      return n;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // Housekeeping first checks streams a quarter of progressTimeoutMs (1 s) after the connection opened: the
    // stream ends and is answered before that. 1 MiB is under a quarter of the window: none of it is credited.
    const conn = await connect(url, { requestTimeoutMs: 300, progressTimeoutMs: 4000, keepAliveMs: 0 });
    try {
      const r = await conn.sendStream("/think", [new Uint8Array(MiB)]);
      assert.equal(new TextDecoder().decode(r), String(MiB));
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("answerTimeoutMs: a stream's own deadline (shorter or longer than the connection's; 0: none); a bad value is refused", async () => {
    const server = createServer();
    // Answered 1.5 s after the END: a deadline of 100 or 200 ms gives up well before (under CPU load too).
    let answered = 0;
    server.handleStream("/late", async (stream) => {
      for await (const _ of stream);
      await sleep(1500);
      answered++;
      return "late";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // The connection's deadline alone would fail /late; and it has no housekeeping at all (the caller's timer is used).
    const conn = await connect(url, {
      requestTimeoutMs: 200,
      keepAliveMs: 0,
      progressTimeoutMs: 0,
      slowPeerTimeoutMs: 0,
    });
    try {
      await assert.rejects(conn.sendStream("/late", [new Uint8Array(1)]).done, {
        code: "ERR_TIMEOUT",
        phase: "request",
      });
      assert.equal(answered, 0, "given up before the handler answered");
      assert.equal(
        new TextDecoder().decode(await conn.sendStream("/late", [new Uint8Array(1)], { answerTimeoutMs: 0 })),
        "late",
      );
      assert.equal(
        new TextDecoder().decode(await conn.sendStream("/late", [new Uint8Array(1)], { answerTimeoutMs: 5000 })),
        "late",
      );
      const before = answered;
      await assert.rejects(conn.sendStream("/late", [new Uint8Array(1)], { answerTimeoutMs: 100 }).done, {
        code: "ERR_TIMEOUT",
      });
      assert.equal(answered, before, "given up before the handler answered");
      for (const bad of [-1, 1.5, Number.NaN]) {
        const err = await conn.sendStream("/late", [new Uint8Array(1)], { answerTimeoutMs: bad }).done.then(
          () => undefined,
          (e: unknown) => e,
        );
        assert.ok(err instanceof PointSubError && err.code === "ERR_INVALID_ARGUMENT", String(err));
      }
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a server that stops reading (backpressure) is not cut for a CANCEL it has not read yet", async () => {
    const server = createServer();
    let tokens = 0;
    let held = 0;
    const refill = setInterval(() => (tokens += 40), 100); // 400 messages a second
    server.use(async (ctx, next) => {
      if (ctx.kind === "message") {
        held++;
        while (tokens <= 0) await sleep(10);
        tokens--;
      }
      return next();
    });
    server.handle("/r", () => "ok");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { progressTimeoutMs: 300, keepAliveMs: 0 });
    try {
      // ~1 s of held messages: the server reads nothing more meanwhile, this side's CANCEL included.
      for (let i = 0; i < 400; i++) conn.send(new Uint8Array(100)).catch(() => {});
      // The server read the messages (and stopped reading) before the request goes: on a loaded machine
      // they could arrive in one read with it, and the request was read and answered.
      await until(() => held > 0);
      await sleep(30);
      await assert.rejects(conn.request("/r", "x", { timeoutMs: 100 }), { code: "ERR_TIMEOUT" });
      await sleep(1500);
      assert.equal(new TextDecoder().decode(await conn.request("/r", "x")), "ok");
      assert.equal(conn.state, "open", conn.closeReason);
    } finally {
      clearInterval(refill);
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a stream given up while its START is still queued sends nothing and frees its slot (a CANCEL for an id the peer never saw got the connection cut)", async () => {
    const server = createServer();
    server.handleStream("/count", countBytes);
    server.handle("/ping", () => "pong");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { progressTimeoutMs: 300, keepAliveMs: 0 });
    const internals = conn as unknown as {
      writer: { bulkState?: { list: { items?: unknown; started: boolean }[] } };
      frames: { inbound: { caller: { pending: { size: number } } } };
    };
    try {
      async function* zeros(n: number) {
        const b = new Uint8Array(MiB);
        for (let i = 0; i < n; i++) yield b;
      }
      const big = conn.sendStream("/count", zeros(200), { total: 200 * MiB });
      let queuedAborts = 0;
      for (let i = 0; i < 300 && queuedAborts < 3; i++) {
        await sleep(2);
        const ac = new AbortController();
        const t = conn.sendStream("/count", [new Uint8Array(100)], { signal: ac.signal, total: 100 });
        const list = internals.writer.bulkState?.list ?? [];
        const m = list[list.length - 1];
        if (m !== undefined && m.items !== undefined && !m.started) {
          ac.abort();
          queuedAborts++;
          await assert.rejects(t.done, { code: "ERR_CANCELLED" });
        } else await t.done;
      }
      assert.ok(queuedAborts > 0, "no stream was aborted with its START queued");
      assert.equal(new TextDecoder().decode(await big), String(200 * MiB));
      // Past progressTimeoutMs and its probe: nothing left in flight, nothing cut.
      await sleep(900);
      assert.equal(internals.frames.inbound.caller.pending.size, 0);
      assert.equal(new TextDecoder().decode(await conn.request("/ping", "x")), "pong");
      assert.equal(conn.state, "open", conn.closeReason);
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a request given up while still queued wakes a stream waiting for its request slot", async () => {
    const server = createServer({ maxConcurrentRequests: 2 });
    server.handleStream("/count", countBytes);
    server.handle("/r", () => "ok");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const internals = conn as unknown as { writer: { bulkState?: { list: { type: number; started: boolean }[] } } };
    const stop = Promise.withResolvers<void>();
    try {
      async function* live() {
        const b = new Uint8Array(MiB);
        for (let i = 0; i < 64; i++) yield b;
        await stop.promise;
      }
      const s1 = conn.sendStream("/count", live());
      let queued = false;
      let ac = new AbortController();
      let r: Promise<unknown> = Promise.resolve();
      for (let i = 0; i < 500 && !queued; i++) {
        await sleep(1);
        ac = new AbortController();
        r = conn.request("/r", new Uint8Array(2 * MiB), { signal: ac.signal }).catch((e: PointSubError) => e.code);
        queued = (internals.writer.bulkState?.list ?? []).some((m) => m.type === 2 && !m.started);
        if (!queued) await r;
      }
      assert.ok(queued, "no request stayed queued");
      // Its two request slots: the live stream's and the queued request's.
      const s2 = conn.sendStream("/count", [new Uint8Array(10)]).done;
      ac.abort();
      assert.equal(await r, "ERR_CANCELLED");
      const got = await Promise.race([s2, sleep(3000).then(() => "still waiting")]);
      assert.equal(typeof got === "string" ? got : new TextDecoder().decode(got), "10");
      stop.resolve();
      await s1;
    } finally {
      stop.resolve();
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a source waiting for data is closed as soon as its stream stops (cancel, the receiver's early answer or cancel, the connection's end), not when it next yields", async () => {
    const server = createServer();
    server.handleStream("/early", async (stream) => {
      for await (const _ of stream) break;
      return "early";
    });
    server.handleStream("/refuse", async (stream) => {
      for await (const _ of stream) stream.cancel();
      return "x";
    });
    server.handleStream("/count", countBytes);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { keepAliveMs: 0 });
    try {
      /** A live source: one chunk, then nothing for now; `closed()` once pointsub released it. */
      const sources = {
        web: () => {
          let cancelled = false;
          const source = new ReadableStream<Uint8Array>({
            start: (c) => c.enqueue(new Uint8Array(10)),
            cancel: () => {
              cancelled = true;
            },
          });
          return { source, closed: () => cancelled };
        },
        node: () => {
          const source = new PassThrough();
          source.write(new Uint8Array(10));
          return { source, closed: () => source.destroyed };
        },
      };
      for (const [kind, make] of Object.entries(sources)) {
        for (const [how, route, code] of [
          ["cancel", "/count", "ERR_CANCELLED"],
          ["early answer", "/early", undefined],
          ["receiver cancel", "/refuse", "ERR_CANCELLED"],
        ] as const) {
          const { source, closed } = make();
          const t = conn.sendStream(route, source);
          if (how === "cancel") {
            await sleep(50);
            t.cancel();
          }
          if (code === undefined) assert.equal(new TextDecoder().decode(await t), "early");
          else await assert.rejects(t.done, { code });
          for (let i = 0; i < 200 && !closed(); i++) await sleep(5);
          assert.ok(closed(), `${kind} source still open after ${how}`);
        }
      }
      const { source, closed } = sources.web();
      const t = conn.sendStream("/count", source);
      await sleep(50);
      conn.destroy();
      await assert.rejects(t.done, { code: "ERR_CONNECTION_CLOSED" });
      for (let i = 0; i < 200 && !closed(); i++) await sleep(5);
      assert.ok(closed(), "web source still open after the connection's end");
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("the source of a stream that ends while it waits for a slot (abort, cancel, the connection's end or graceful close) is closed: it was never read, and a Node Readable kept its file open", async () => {
    const server = createServer({ maxConcurrentStreams: 1 });
    server.handleStream("/count", countBytes);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { keepAliveMs: 0 });
    const stop = Promise.withResolvers<void>();
    try {
      async function* live() {
        yield new Uint8Array(10);
        await stop.promise;
      }
      const feed = conn.sendStream("/count", live());
      feed.done.catch(() => {});
      let webCancelled = false;
      const web = new ReadableStream<Uint8Array>({
        cancel: () => {
          webCancelled = true;
        },
      });
      const aborted = new PassThrough();
      const cancelled = new PassThrough();
      const closing = new PassThrough();
      const ac = new AbortController();
      const t1 = conn.sendStream("/count", aborted, { signal: ac.signal });
      const t2 = conn.sendStream("/count", web, { signal: ac.signal });
      const t3 = conn.sendStream("/count", cancelled);
      const t4 = conn.sendStream("/count", closing);
      await sleep(50);
      ac.abort();
      t3.cancel();
      for (const t of [t1, t2, t3]) await assert.rejects(t.done, { code: "ERR_CANCELLED" });
      // The graceful close refuses the streams still waiting for a slot (nothing of them was sent).
      const closed = conn.close({ timeoutMs: 100 });
      await assert.rejects(t4.done, { code: "ERR_GOING_AWAY" });
      const open = () =>
        [
          aborted.destroyed ? "" : "aborted Readable",
          webCancelled ? "" : "aborted ReadableStream",
          cancelled.destroyed ? "" : "cancelled Readable",
          closing.destroyed ? "" : "Readable of a closing connection",
        ].filter((x) => x !== "");
      for (let i = 0; i < 200 && open().length !== 0; i++) await sleep(5);
      assert.deepEqual(open(), [], "sources left open");
      await closed;
    } finally {
      stop.resolve();
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a stream quiet for longer than progressTimeoutMs, then a burst through a steady reader, is not cut as if credit had been owed all along", async () => {
    const server = createServer({ streamWindow: 64 * 1024 });
    server.handleStream("/up", async (stream) => {
      let n = 0;
      for await (const c of stream) {
        n += c.length;
        await sleep(130); // a credit every ~130-260 ms while the sender waits, inside the 400 ms rule
      }
      return String(n);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { progressTimeoutMs: 400, keepAliveMs: 0 });
    try {
      async function* feed() {
        // Small events for 1 s (below the receiver's credit step: no credit comes back), then a burst.
        for (let t = 0; t < 1000; t += 100) {
          yield new Uint8Array(1000);
          await sleep(100);
        }
        yield new Uint8Array(256 * 1024); // four windows
      }
      const r = await conn.sendStream("/up", feed()).done;
      assert.equal(new TextDecoder().decode(r), String(10 * 1000 + 256 * 1024));
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });
});
