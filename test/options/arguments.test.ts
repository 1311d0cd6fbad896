/**
 * Invalid arguments of the public API, table-driven: each is refused with a
 * PointSubError ERR_INVALID_ARGUMENT (thrown by a synchronous call, a
 * rejection of an asynchronous one), never a raw TypeError or something
 * sent. Real sockets on 127.0.0.1; every wait is bounded.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Pool } from "../../src/client/pool.ts";
import { Housekeeper, housekeepingPeriod } from "../../src/connection/housekeeping.ts";
import {
  blobSource,
  Client,
  connect,
  connectLp,
  connectLpResilient,
  connectResilient,
  createLpServer,
  createNodeRuntime,
  createRuntime,
  createServer,
  encodeBundle,
  FILE_ROUTE,
  fileCrc32c,
  fileSink,
  fileSource,
  fileTransferId,
  idempotency,
  isPointSubError,
  memoryIdempotencyStore,
  SharedConnection,
  sendFile,
  sendResumable,
} from "../../src/index.ts";
import { MAX_TIMER_MS } from "../../src/util/timer-limit.ts";
import { createBrowserRuntime } from "../../src/web/runtime.ts";
import { sleep, until } from "../helpers/wait.ts";

/** What `f` did: "ok", or the error's code (a PointSubError) or class name (anything else). */
async function outcome(f: () => unknown): Promise<string> {
  try {
    await f();
    return "ok";
  } catch (e) {
    return isPointSubError(e) ? e.code : `raw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`;
  }
}

describe("options: invalid arguments", () => {
  it("sendStream: a route that is not a non-empty string and an onProgress that is not a function fail its transfer", async () => {
    const server = createServer();
    server.handleStream("/sink/1", async (stream) => {
      for await (const _ of stream);
      return "ok";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const cases: [string, () => Promise<unknown>][] = [
        ["route 5", () => conn.sendStream(5 as never, [new Uint8Array(3)]).done],
        ["route ''", () => conn.sendStream("", [new Uint8Array(3)]).done],
        ["onProgress 5", () => conn.sendStream("/sink/1", [new Uint8Array(3)], { onProgress: 5 as never }).done],
        ["onProgress null", () => conn.sendStream("/sink/1", [new Uint8Array(3)], { onProgress: null as never }).done],
      ];
      for (const [name, f] of cases) assert.equal(await outcome(f), "ERR_INVALID_ARGUMENT", name);
      let calls = 0;
      await conn.sendStream("/sink/1", [new Uint8Array(3)], { onProgress: () => calls++ }).done;
      assert.ok(calls > 0, "a function still hears progress");
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("createServer: a cluster that is not a cluster (5, true, {}, null) is ERR_INVALID_ARGUMENT", async () => {
    for (const cluster of [5, "redis", true, {}, null, { join: 1 }]) {
      assert.equal(await outcome(() => createServer({ cluster } as never)), "ERR_INVALID_ARGUMENT", String(cluster));
    }
  });

  it("closeSession: a reason that is not a string rejects ERR_INVALID_ARGUMENT and leaves the session open", async () => {
    const server = createServer();
    server.handle("/echo/1", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      await until(() => server.sessions.size === 1);
      const [session] = [...server.sessions];
      assert.ok(session !== undefined);
      for (const reason of [5, null, {}, Symbol("x")]) {
        assert.equal(await outcome(() => server.closeSession(session.id, reason as never)), "ERR_INVALID_ARGUMENT");
      }
      assert.equal(new TextDecoder().decode(await conn.request("/echo/1", "still open")), "still open");
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("server methods given options that are not an object (null, 5) refuse them with ERR_INVALID_ARGUMENT", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      await until(() => server.sessions.size === 1);
      const [session] = [...server.sessions];
      assert.ok(session !== undefined);
      for (const options of [null, 5]) {
        const cases: [string, () => unknown][] = [
          ["handleStream", () => server.handleStream("/sink/1", () => undefined, options as never)],
          ["events", () => server.events(options as never)],
          ["broadcast", () => server.broadcast("x", options as never)],
          ["closeSession", () => server.closeSession(session.id, "bye", options as never)],
          ["close", () => server.close(options as never)],
        ];
        for (const [name, f] of cases) {
          assert.equal(await outcome(f), "ERR_INVALID_ARGUMENT", `${name}(${String(options)})`);
        }
      }
      assert.equal(server.sessions.size, 1, "nothing was closed");
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("server.handleStream: a resume that is not a function is ERR_INVALID_ARGUMENT, not kept for its queries to fail", async () => {
    const server = createServer();
    try {
      for (const resume of [5, "lookup", {}, null]) {
        const f = () => server.handleStream("/sink/1", () => undefined, { resume } as never);
        assert.equal(await outcome(f), "ERR_INVALID_ARGUMENT", String(resume));
      }
      assert.equal(await outcome(() => server.handleStream("/sink/1", () => undefined, { resume: undefined })), "ok");
    } finally {
      await server.close();
    }
  });

  it("server.handle / handleStream: a route over 1024 bytes of UTF-8 is ERR_INVALID_ARGUMENT (it was registered, and no client could ever call it)", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const long = `/${"é".repeat(512)}`; // 1,025 bytes in 513 characters
      assert.equal(await outcome(() => server.handle(long, () => "reached")), "ERR_INVALID_ARGUMENT");
      assert.equal(await outcome(() => server.handleStream(long, () => undefined)), "ERR_INVALID_ARGUMENT");
      // What a client does with it: refused before anything is sent.
      assert.equal(await outcome(() => conn.request(long, "")), "ERR_INVALID_ARGUMENT");
      // 1,024 bytes is a route, and reachable.
      const most = `/${"é".repeat(511)}a`;
      assert.equal(await outcome(() => server.handle(most, () => "reached")), "ok");
      assert.equal(new TextDecoder().decode(await conn.request(most, "")), "reached");
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("entry points given options that are not an object (null, 5) refuse them with ERR_INVALID_ARGUMENT", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      for (const options of [null, 5, "x"]) {
        const o = options as never;
        const cases: [string, () => unknown, boolean][] = [
          ["connect", () => connect(url, o), true],
          ["connect lp+", () => connect("lp+tcp://127.0.0.1:1", o), true],
          ["connectLp", () => connectLp("lp+tcp://127.0.0.1:1", o), true],
          ["connectResilient", () => connectResilient(url, o), true],
          ["connectLpResilient", () => connectLpResilient("lp+tcp://127.0.0.1:1", o), true],
          ["createServer", () => createServer(o), false],
          ["createLpServer", () => createLpServer(o), false],
          ["Client", () => new Client(o), false],
        ];
        for (const [name, f, async] of cases) {
          const what = `${name}(${String(options)})`;
          if (async) {
            // Promise-returning: a rejection, never a synchronous throw.
            let p: unknown;
            assert.doesNotThrow(() => {
              p = f();
            }, what);
            assert.ok(p instanceof Promise, what);
            await assert.rejects(p, { code: "ERR_INVALID_ARGUMENT" }, what);
          } else assert.equal(await outcome(f), "ERR_INVALID_ARGUMENT", what);
        }
      }
    } finally {
      await server.close();
    }
  });

  it('connectResilient: a reconnect or offline that is no object ("off", 0, "fail") is ERR_INVALID_ARGUMENT, not the defaults', async () => {
    // Before, taken for the defaults: reconnect "off" or 0 reconnected for ever, offline "fail" queued the calls.
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      for (const options of [{ reconnect: "off" }, { reconnect: 0 }, { offline: "fail" }, { offline: 5 }]) {
        const what = JSON.stringify(options);
        assert.equal(await outcome(() => connectResilient(url, options as never)), "ERR_INVALID_ARGUMENT", what);
        const lp = () => connectLpResilient("lp+tcp://127.0.0.1:1", options as never);
        assert.equal(await outcome(lp), "ERR_INVALID_ARGUMENT", `lp ${what}`);
      }
      for (const options of [
        { reconnect: false },
        { reconnect: true },
        { reconnect: {} },
        { offline: { policy: "fail" } },
      ]) {
        const c = await connectResilient(url, options as never);
        await c.close();
      }
    } finally {
      await server.close();
    }
  });

  it('Client: a breaker or pool that is no object ("off", 5) is ERR_INVALID_ARGUMENT, not the defaults', async () => {
    // Before, taken for the defaults: breaker "off" kept the breaker on.
    for (const options of [{ breaker: "off" }, { breaker: 0 }, { pool: 5 }, { pool: "small" }]) {
      assert.equal(await outcome(() => new Client(options as never)), "ERR_INVALID_ARGUMENT", JSON.stringify(options));
    }
    for (const options of [{ breaker: { failureThreshold: 2 } }, { pool: { maxPerNode: 2 } }, { breaker: undefined }]) {
      await new Client(options).close();
    }
  });

  it("Client: a connection option out of range (keepAliveMs -1, requestTimeoutMs NaN) is ERR_INVALID_ARGUMENT at construction, naming it", async () => {
    // Before, the Client was made and every call to a live server failed with it.
    const server = createServer();
    server.handle("/who/1", () => "here");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      for (const [name, value] of [
        ["keepAliveMs", -1],
        ["requestTimeoutMs", Number.NaN],
        ["connectTimeoutMs", -5],
      ] as const) {
        let made: Client | undefined;
        assert.throws(
          () => {
            made = new Client({ [name]: value });
          },
          { code: "ERR_INVALID_ARGUMENT", message: new RegExp(name) },
        );
        if (made !== undefined) {
          await made.request(url, "/who/1", "x").catch(() => {});
          await made.close();
        }
      }
      const ok = new Client({ keepAliveMs: 1000 });
      assert.equal(new TextDecoder().decode(await ok.request(url, "/who/1", "x")), "here");
      await ok.close();
    } finally {
      await server.close();
    }
  });

  it("rttProbeMs beyond a timer's range (2^31 - 1 ms) pings no more often than that, not every millisecond", async () => {
    const server = createServer();
    server.handle("/who/1", () => "here");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    const client = new Client({ rttProbeMs: 2 ** 40 });
    try {
      await client.request(url, "/who/1", "x");
      await until(() => server.sessionsInfo().length === 1);
      const [before] = server.sessionsInfo().map((s) => s.bytesIn);
      await sleep(300);
      const [after] = server.sessionsInfo().map((s) => s.bytesIn);
      assert.equal(after, before, "no ping went out");
      assert.deepEqual(warnings, []);
    } finally {
      process.off("warning", onWarning);
      await client.close();
      await server.close();
    }
  });

  it("pool.idleTimeoutMs of 2^32 ms or more sweeps the pool every 2^31 - 1 ms at most, not every 10 ms", async () => {
    const server = createServer();
    server.handle("/who/1", () => "here");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // The pool's sweep, counted (a private method, on the prototype).
    const proto = Pool.prototype as unknown as { sweep(): void };
    const sweep = proto.sweep;
    let sweeps = 0;
    proto.sweep = function (this: unknown) {
      sweeps++;
      sweep.call(this);
    };
    const client = new Client({ pool: { idleTimeoutMs: 2 ** 32 }, rttProbeMs: 0 });
    try {
      await client.request(url, "/who/1", "x");
      await sleep(300);
      assert.equal(sweeps, 0);
    } finally {
      proto.sweep = sweep;
      await client.close();
      await server.close();
    }
  });

  it("keepAliveMs and idleTimeoutMs of 2^32 ms or more: housekeeping ticks within a timer's range, not every 10 ms", async () => {
    // Each case's period, then a real connection with those times: its housekeeping ticks counted.
    const off = { keepAliveMs: 0, slowPeerTimeoutMs: 0, progressTimeoutMs: 0, idleTimeoutMs: 0 };
    for (const times of [{ keepAliveMs: 2 ** 32 }, { keepAliveMs: 2 ** 40 }, { idleTimeoutMs: 2 ** 34 }]) {
      const period = housekeepingPeriod({ ...off, ...times });
      assert.equal(period, MAX_TIMER_MS, JSON.stringify(times));
    }
    const proto = Housekeeper.prototype;
    const tick = proto.tick;
    let ticks = 0;
    proto.tick = function (this: Housekeeper, now: number) {
      ticks++;
      tick.call(this, now);
    };
    const times = { keepAliveMs: 2 ** 32, slowPeerTimeoutMs: 0, progressTimeoutMs: 0 };
    const server = createServer(times);
    server.handle("/who/1", () => "here");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, times);
    try {
      await conn.request("/who/1", "x");
      await sleep(300);
      assert.equal(ticks, 0);
    } finally {
      proto.tick = tick;
      await conn.close();
      await server.close();
    }
  });

  it("progressIntervalMs beyond a timer's range: no report between the first and the last, no TimeoutOverflowWarning", async () => {
    const server = createServer();
    server.handleStream("/sink/1", async (stream) => {
      for await (const _ of stream);
      return "ok";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    try {
      // 64 chunks of 64 KiB, a turn of the event loop apart: the receiver acknowledges them as they go.
      async function* chunks() {
        for (let i = 0; i < 64; i++) {
          await sleep(1);
          yield new Uint8Array(64 * 1024);
        }
      }
      const reports: number[] = [];
      const t = conn.sendStream("/sink/1", chunks(), {
        progressIntervalMs: 2 ** 40,
        onProgress: (s) => reports.push(s.bytes),
      });
      await t.done;
      await sleep(50);
      assert.ok(reports.length <= 2, `reports: ${reports.length}`);
      assert.deepEqual(warnings, []);
    } finally {
      process.off("warning", onWarning);
      await conn.close();
      await server.close();
    }
  });

  it("sendFile: a target that is no connection, with a missing file or a bad transferId, is ERR_INVALID_ARGUMENT, with no unhandled rejection", async () => {
    // Before, `done` rejected for the target and the file's own failure went unhandled (a crash by default).
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    try {
      const missing = join(tmpdir(), `pointsub-missing-${process.pid}`);
      for (const target of [null, 5, "tcp://127.0.0.1:1"]) {
        const t = target as never;
        assert.equal(await outcome(() => sendFile(t, missing).done), "ERR_INVALID_ARGUMENT", `${target}, missing file`);
        const bad = () => sendFile(t, import.meta.filename, { transferId: "short" }).done;
        assert.equal(await outcome(bad), "ERR_INVALID_ARGUMENT", `${target}, bad transferId`);
      }
      // Long enough for the file's stat to fail, and its rejection to be reported.
      await sleep(100);
      assert.deepEqual(unhandled, []);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });

  it("SharedConnection: a URL or a connection in place of its open function is ERR_INVALID_ARGUMENT at once", async () => {
    // Before, kept: every transfer over it retried ERR_CONNECT "this.open is not a function" for ~11 s.
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      for (const open of [url, conn, undefined]) {
        assert.equal(await outcome(() => new SharedConnection(open as never)), "ERR_INVALID_ARGUMENT", typeof open);
      }
      const shared = new SharedConnection(() => connect(url));
      assert.equal((await shared.get()).state, "open");
      await shared.close();
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("sendFile: a connect function that gives no connection (a URL), or an onAttempt that is no function, is ERR_INVALID_ARGUMENT; one that returns a Connection without a promise works", async () => {
    // Before: ERR_SOURCE "p.then is not a function" / "conn.destroy is not a function".
    const server = createServer();
    const dir = join(tmpdir(), `pointsub-connect-fn-${process.pid}`);
    let opened = 0;
    server.on("session", () => opened++);
    server.handleStream(FILE_ROUTE, fileSink(dir, { durability: "none" }).handler);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      for (const open of [() => url, async () => url, async () => undefined]) {
        const f = () => sendFile(open as never, import.meta.filename, { retries: 0 }).done;
        assert.equal(await outcome(f), "ERR_INVALID_ARGUMENT", String(open));
      }
      // One that opens something else it is refused, and closed: a ResilientConnection was left reconnecting.
      const resilient = () =>
        sendFile((() => connectResilient(url)) as never, import.meta.filename, { retries: 0 }).done;
      assert.equal(await outcome(resilient), "ERR_INVALID_ARGUMENT", "a ResilientConnection");
      // Its session opens on the server (it was open when refused), then ends.
      await until(() => opened === 2 && server.sessions.size === 1, 10_000);
      const receipt = await sendFile((() => conn) as never, import.meta.filename, { name: "sync-open.ts" }).done;
      assert.equal(receipt.name, "sync-open.ts");
      // A hook that is no function, as sendResumable refuses it (before: ERR_SOURCE "options.onAttempt is not a function").
      const hook = () => sendFile(() => connect(url), import.meta.filename, { onAttempt: 5 as never }).done;
      assert.equal(await outcome(hook), "ERR_INVALID_ARGUMENT", "onAttempt 5");
    } finally {
      await conn.close().catch(() => {});
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("sendResumable: a source whose open or prefixCrc is no function is ERR_INVALID_ARGUMENT, not ERR_SOURCE", async () => {
    // Before: every attempt failed as the source, ERR_SOURCE "src.open is not a function".
    const server = createServer();
    server.handleStream("/r", async (s) => String((await s.bytes()).length), { resume: () => ({ offset: 0, crc: 0 }) });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const transferId = "t".repeat(32);
    try {
      for (const source of [
        { size: 3, transferId, open: 5 },
        { size: 3, transferId },
        { size: 3, transferId, open: () => [new Uint8Array(3)], prefixCrc: 5 },
        null,
      ]) {
        const f = () => sendResumable(conn, "/r", source as never).done;
        assert.equal(await outcome(f), "ERR_INVALID_ARGUMENT", JSON.stringify(source));
      }
      const answer = await sendResumable(conn, "/r", { size: 3, transferId, open: () => [new Uint8Array(3)] }).done;
      assert.equal(new TextDecoder().decode(answer), "3");
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("sendFile: a path that is not a string, or options null, is ERR_INVALID_ARGUMENT, with no unhandled rejection", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    try {
      const cases: [string, () => PromiseLike<unknown>][] = [
        ["path 5", () => sendFile(conn, 5 as never)],
        ["path undefined", () => sendFile(conn, undefined as never)],
        ["path ''", () => sendFile(conn, "")],
        ["options null", () => sendFile(conn, import.meta.filename, null as never)],
      ];
      for (const [name, f] of cases) assert.equal(await outcome(f), "ERR_INVALID_ARGUMENT", name);
      // Long enough for a stat the call started to fail, and its rejection to be reported.
      await sleep(100);
      assert.deepEqual(unhandled, []);
    } finally {
      process.off("unhandledRejection", onUnhandled);
      await conn.close();
      await server.close();
    }
  });

  it("sendResumable: a signal that is no AbortSignal, hooks that are not functions, a target that is no connection fail its transfer with ERR_INVALID_ARGUMENT", async () => {
    const server = createServer();
    server.handleStream(
      "/sink/1",
      async (stream) => {
        for await (const _ of stream);
        return "ok";
      },
      { resume: () => ({ offset: 0, crc: 0 }) },
    );
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const source = () => ({ size: 3, transferId: "t1", open: () => [new Uint8Array(3)] });
    try {
      const cases: [string, () => PromiseLike<unknown>][] = [
        ["signal 5", () => sendResumable(conn, "/sink/1", source(), { signal: 5 as never }).done],
        [
          "signal controller",
          () => sendResumable(conn, "/sink/1", source(), { signal: new AbortController() as never }).done,
        ],
        ["onProgress 5", () => sendResumable(conn, "/sink/1", source(), { onProgress: 5 as never }).done],
        ["onAttempt 5", () => sendResumable(conn, "/sink/1", source(), { onAttempt: 5 as never }).done],
        ["onRetry 5", () => sendResumable(conn, "/sink/1", source(), { onRetry: 5 as never }).done],
        ["target 5", () => sendResumable(5 as never, "/sink/1", source()).done],
        ["target null", () => sendResumable(null as never, "/sink/1", source()).done],
        ["options null", () => sendResumable(conn, "/sink/1", source(), null as never).done],
      ];
      for (const [name, f] of cases) assert.equal(await outcome(f), "ERR_INVALID_ARGUMENT", name);
      let reports = 0;
      const ok = sendResumable(conn, "/sink/1", source(), {
        onProgress: () => reports++,
        signal: AbortSignal.timeout(60_000),
      });
      assert.equal(new TextDecoder().decode(await ok.done), "ok");
      assert.ok(reports > 0, "a function still hears progress");
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("fileCrc32c: a length that is not an integer >= 0, or a path that is not a string, rejects ERR_INVALID_ARGUMENT", async () => {
    for (const [path, length] of [
      [import.meta.filename, -1],
      [import.meta.filename, Number.NaN],
      [import.meta.filename, 1.5],
      [import.meta.filename, "5"],
      [5, 1],
    ] as const) {
      assert.equal(
        await outcome(() => fileCrc32c(path as never, length as never)),
        "ERR_INVALID_ARGUMENT",
        `${path} ${length}`,
      );
    }
    assert.equal(await fileCrc32c(import.meta.filename, 0), 0);
  });

  it("fileSink and fileSource: a directory that is not a string, or options null, are ERR_INVALID_ARGUMENT", async () => {
    for (const [name, make] of [
      ["fileSink", fileSink],
      ["fileSource", fileSource],
    ] as const) {
      for (const [dir, options] of [
        [5, {}],
        [undefined, {}],
        ["", {}],
        [tmpdir(), null],
        [tmpdir(), 5],
      ]) {
        const what = `${name}(${String(dir)}, ${String(options)})`;
        assert.equal(await outcome(() => make(dir as never, options as never)), "ERR_INVALID_ARGUMENT", what);
      }
    }
  });

  it("createLpServer: a maxConnections of 0 or a fraction is ERR_INVALID_ARGUMENT, as for createServer", async () => {
    // Before, taken: 0 refused every connection, 1.5 was 2.
    for (const maxConnections of [0, 1.5, -1, Number.NaN]) {
      assert.equal(
        await outcome(() => createLpServer({ maxConnections })),
        "ERR_INVALID_ARGUMENT",
        String(maxConnections),
      );
      assert.equal(
        await outcome(() => createServer({ maxConnections })),
        "ERR_INVALID_ARGUMENT",
        String(maxConnections),
      );
    }
    for (const maxConnections of [1, Number.POSITIVE_INFINITY]) await createLpServer({ maxConnections }).close();
  });

  it("fileSink and fileSource: a hook that is no function is ERR_INVALID_ARGUMENT at once", async () => {
    // Before, kept: onStream "x" refused every upload (ERR_HANDLER), onFile 5 threw uncaught at the first stored file.
    for (const hook of ["onStream", "onFile", "onBundle"]) {
      for (const value of [5, "x", {}]) {
        const f = () => fileSink(tmpdir(), { [hook]: value } as never);
        assert.equal(await outcome(f), "ERR_INVALID_ARGUMENT", `fileSink ${hook} ${String(value)}`);
      }
    }
    for (const hook of ["onGet", "onGetEnd"]) {
      const f = () => fileSource(tmpdir(), { [hook]: 5 } as never);
      assert.equal(await outcome(f), "ERR_INVALID_ARGUMENT", `fileSource ${hook}`);
    }
    const dir = await mkdtemp(join(tmpdir(), "pointsub-hooks-"));
    try {
      assert.equal(await outcome(() => fileSink(dir, { onFile: () => {}, onStream: undefined })), "ok");
      assert.equal(await outcome(() => fileSource(dir, { onGet: () => {} })), "ok");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("LpConnection.close and LpServer.close given null options reject ERR_INVALID_ARGUMENT and close nothing", async () => {
    const server = createLpServer();
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const conn = await connectLp(url);
    try {
      for (const options of [null, 5]) {
        assert.equal(await outcome(() => conn.close(options as never)), "ERR_INVALID_ARGUMENT", `conn ${options}`);
        assert.equal(await outcome(() => server.close(options as never)), "ERR_INVALID_ARGUMENT", `server ${options}`);
      }
      assert.equal(conn.state, "open");
      await conn.send("still open");
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("Client.request, requestClosest and ResilientConnection.request given null options reject ERR_INVALID_ARGUMENT", async () => {
    const server = createServer();
    server.handle("/who/1", () => "here");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = new Client({ rttProbeMs: 0 });
    client.addNode("/who/1", url);
    const resilient = await connectResilient(url);
    try {
      // The pool's connection open first: the call then takes the connection's own path.
      await client.request(url, "/who/1", "x");
      for (const options of [null, 5]) {
        const o = options as never;
        assert.equal(
          await outcome(() => client.request(url, "/who/1", "x", o)),
          "ERR_INVALID_ARGUMENT",
          `request ${options}`,
        );
        assert.equal(
          await outcome(() => client.requestClosest("/who/1", "x", o)),
          "ERR_INVALID_ARGUMENT",
          `closest ${options}`,
        );
        let p: unknown;
        assert.doesNotThrow(() => {
          p = resilient.request("/who/1", "x", o);
        });
        assert.equal(await outcome(() => p), "ERR_INVALID_ARGUMENT", `resilient ${options}`);
      }
    } finally {
      await resilient.close();
      await client.close();
      await server.close();
    }
  });

  it("Client.requestClosest: a key that is not a string, a Uint8Array or true (with a payload that is neither) is ERR_INVALID_ARGUMENT", async () => {
    // Before, it reached webcrypto's digest: a raw TypeError (code ERR_INVALID_ARG_TYPE).
    const server = createServer();
    server.handle("/who/1", () => "here");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = new Client({ rttProbeMs: 0 });
    client.addNode("/who/1", url);
    try {
      for (const key of [5, {}, new ArrayBuffer(4), null]) {
        const o = { key } as never;
        assert.equal(await outcome(() => client.requestClosest("/who/1", "x", o)), "ERR_INVALID_ARGUMENT", String(key));
      }
      assert.equal(
        await outcome(() => client.requestClosest("/who/1", 5 as never, { key: true })),
        "ERR_INVALID_ARGUMENT",
        "key: true, payload 5",
      );
      for (const key of ["user-1", new Uint8Array([1, 2]), true] as const) {
        assert.equal(new TextDecoder().decode(await client.requestClosest("/who/1", "x", { key })), "here");
      }
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("encodeBundle: content that is not a Uint8Array, an entry without a name or path, or no array is ERR_INVALID_ARGUMENT", async () => {
    const cases: [string, unknown][] = [
      ["string content", [{ name: "a.txt", content: "hello" }]],
      ["no content", [{ name: "a.txt" }]],
      ["no name", [{ content: new Uint8Array(2) }]],
      ["name 5", [{ name: 5, content: new Uint8Array(2) }]],
      ["entry 5", [5]],
      ["entry null", [null]],
      ["null", null],
      ["a string", "a.txt"],
    ];
    for (const [name, files] of cases) {
      assert.equal(await outcome(() => encodeBundle(files as never)), "ERR_INVALID_ARGUMENT", name);
    }
    assert.ok(encodeBundle([{ name: "a.txt", content: new Uint8Array(2) }]).length > 2);
  });

  it("fileTransferId: a path that is not a string or no file, a key or route of another type reject ERR_INVALID_ARGUMENT", async () => {
    const here = import.meta.filename;
    const cases: [string, () => Promise<unknown>][] = [
      ["path 5", () => fileTransferId(5 as never, { key: "k" })],
      ["no such file", () => fileTransferId(join(tmpdir(), "pointsub-no-such-file"), { key: "k" })],
      ["key 5", () => fileTransferId(here, { key: 5 as never })],
      ["key null", () => fileTransferId(here, { key: null as never })],
      ["route 5", () => fileTransferId(here, { key: "k", route: 5 as never })],
      ["options null", () => fileTransferId(here, null as never)],
    ];
    for (const [name, f] of cases) assert.equal(await outcome(f), "ERR_INVALID_ARGUMENT", name);
    assert.match(await fileTransferId(here, { key: "k" }), /^[0-9a-f]{64}$/);
  });

  it("idempotency: a store that is no IdempotencyStore, a scope or onStoreError that is no function is ERR_INVALID_ARGUMENT at once", async () => {
    for (const options of [
      { store: 5 },
      { store: {} },
      { store: "redis" },
      { store: null },
      { scope: 5 },
      { scope: "principal" },
      // Kept before, called only when the store failed and its TypeError swallowed: nothing reported.
      { onStoreError: 5 },
      { onStoreError: "console.error" },
    ]) {
      const what = JSON.stringify(options);
      assert.equal(await outcome(() => idempotency(options as never)), "ERR_INVALID_ARGUMENT", what);
      assert.equal(await outcome(() => createServer({ idempotency: options as never })), "ERR_INVALID_ARGUMENT", what);
    }
    assert.equal(await outcome(() => idempotency({ store: memoryIdempotencyStore() })), "ok");
  });

  it("createNodeRuntime: options of the wrong type are ERR_INVALID_ARGUMENT at once, and so is a memoryLimit() that is no byte count", async () => {
    for (const options of [null, { transports: 5 }, { transports: [5] }, { memoryLimit: 5 }, { diagnostics: 5 }]) {
      assert.equal(
        await outcome(() => createNodeRuntime(options as never)),
        "ERR_INVALID_ARGUMENT",
        JSON.stringify(options),
      );
    }
    // A limit of NaN turned the memory budget off (nothing is over NaN): refused where the budget is made.
    for (const n of [Number.NaN, -1, 0, "5"]) {
      const runtime = createNodeRuntime({ memoryLimit: () => n as never });
      assert.equal(
        await outcome(() => createServer({ runtime })),
        "ERR_INVALID_ARGUMENT",
        `memoryLimit() ${String(n)}`,
      );
    }
    const runtime = createNodeRuntime({ memoryLimit: () => 64 * 1024 * 1024 });
    const server = createServer({ runtime });
    server.handle("/who/1", () => "here");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { runtime });
    try {
      assert.equal(new TextDecoder().decode(await conn.request("/who/1", "x")), "here");
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("createRuntime, createBrowserRuntime: a memoryLimit that is not a function (bytes given as a number) is ERR_INVALID_ARGUMENT at once", async () => {
    // Before, the number was kept and the first createServer or connect threw "memoryLimit is not a function".
    for (const memoryLimit of [64 * 1024 * 1024, "64MiB"]) {
      const what = String(memoryLimit);
      assert.equal(
        await outcome(() => createRuntime({ memoryLimit: memoryLimit as never })),
        "ERR_INVALID_ARGUMENT",
        what,
      );
      assert.equal(
        await outcome(() => createBrowserRuntime({ memoryLimit: memoryLimit as never })),
        "ERR_INVALID_ARGUMENT",
        what,
      );
    }
    const runtime = createRuntime({ memoryLimit: () => 512 * 1024 * 1024 });
    assert.equal(runtime.memoryLimit(), 512 * 1024 * 1024);
    assert.equal(createServer({ runtime, maxMessageSize: 1024 }).memory.limit, 512 * 1024 * 1024);
  });

  it("blobSource: options that are not an object are ERR_INVALID_ARGUMENT", async () => {
    for (const options of [null, 5]) {
      assert.equal(await outcome(() => blobSource(new Blob(["abc"]), options as never)), "ERR_INVALID_ARGUMENT");
    }
    assert.equal(blobSource(new Blob(["abc"])).size, 3);
  });

  it("broadcast highWaterMark as text and sendStream compress that is not a name are ERR_INVALID_ARGUMENT", async () => {
    const server = createServer();
    server.handleStream("/sink/1", async (stream) => {
      for await (const _ of stream);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      assert.equal(await outcome(() => server.broadcast("x", { highWaterMark: "5" as never })), "ERR_INVALID_ARGUMENT");
      await until(() => server.sessions.size === 1);
      const r = await server.broadcast("x", { highWaterMark: 5 });
      assert.equal(r.sent + r.queued, 1);
      for (const compress of [null, 5]) {
        const t = conn.sendStream("/sink/1", [new Uint8Array(10)], { compress: compress as never });
        assert.equal(await outcome(() => t.done), "ERR_INVALID_ARGUMENT", String(compress));
      }
      // A name this side has no codec for stays what it was.
      const t = conn.sendStream("/sink/1", [new Uint8Array(10)], { compress: "lzma" as never });
      assert.equal(await outcome(() => t.done), "ERR_COMPRESSION");
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
