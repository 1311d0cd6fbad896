/**
 * Diagnostics channels (docs/OBSERVABILITY.md) over real loopback sockets:
 * every channel observed with its fields through node:diagnostics_channel;
 * nothing published (not even a message object built) when nobody
 * subscribed; channels looked up once per runtime; the portable
 * `localDiagnostics`; DEBUG / NODE_DEBUG output, set up by
 * createNodeRuntime and never on import.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as dc from "node:diagnostics_channel";
import { after, before, describe, it } from "node:test";
import {
  type CallEndMessage,
  type CallStartMessage,
  CHANNELS,
  type Connection,
  type ConnectionCloseMessage,
  type ConnectionOpenMessage,
  connect,
  createNodeRuntime,
  createServer,
  type Diagnostics,
  type DiagnosticsChannel,
  type ErrorMessage,
  type HandshakeErrorMessage,
  localDiagnostics,
  type MessageMessage,
  PointSubError,
  type RequestEndMessage,
  type RequestStartMessage,
  type Server,
  type StreamEndMessage,
  type StreamProgressMessage,
  type StreamStartMessage,
  tokenAuth,
} from "../../src/index.ts";
import { debugSelects, formatDebugLine, installDebugOutput } from "../../src/node/debug.ts";
import { sleep, until } from "../helpers/wait.ts";

const INDEX = new URL("../../src/index.ts", import.meta.url).href;

interface Seen {
  name: string;
  // biome-ignore lint/suspicious/noExplicitAny: messages of every channel
  m: any;
}

describe("diagnostics channels", () => {
  let server: Server;
  let url: string;
  let conn: Connection;
  const seen: Seen[] = [];
  /** Only the events of this test's connections (the channels are process-wide). */
  const ours = new Set<Connection>();
  const listener = (m: unknown, name: string | symbol) => {
    const c = (m as { connection?: Connection }).connection;
    if (c !== undefined && ours.has(c)) seen.push({ name: String(name), m });
  };
  const track = (m: unknown) => {
    ours.add((m as ConnectionOpenMessage).connection);
  };
  const of = (name: string) => seen.filter((s) => s.name === name).map((s) => s.m);

  before(async () => {
    // Subscribed first, so the open message of each connection already finds it in `ours`.
    dc.subscribe(CHANNELS.connectionOpen, track);
    for (const name of Object.values(CHANNELS)) dc.subscribe(name, listener);
    // A small stream window: the receiver returns stream credit (the sender's progress) often.
    server = createServer({ streamWindow: 128 * 1024 });
    server.handle("/echo", (req) => req.data);
    server.handle(
      "/hang",
      (_req, ctx) =>
        new Promise((_, reject) => {
          ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
        }),
    );
    server.handle("/fail", () => {
      throw new PointSubError("ERR_UNAUTHORIZED", "nope");
    });
    server.handleStream("/slow", async (stream) => {
      let n = 0;
      for await (const c of stream) {
        n += c.length;
        await sleep(60);
      }
      return String(n);
    });
    [url] = await server.listen("tcp://127.0.0.1:0");
    conn = await connect(url);
  });

  after(async () => {
    await conn.close();
    await server.close();
    for (const name of Object.values(CHANNELS)) dc.unsubscribe(name, listener);
    dc.unsubscribe(CHANNELS.connectionOpen, track);
  });

  it("connection:open for both ends, with the role", async () => {
    // connect() resolves once the client opened; the session may open a moment later.
    await until(() => of(CHANNELS.connectionOpen).length === 2);
    const opens = of(CHANNELS.connectionOpen) as ConnectionOpenMessage[];
    assert.ok(opens.some((o) => o.connection === conn && o.role === "client"));
    assert.ok(opens.some((o) => o.connection !== conn && o.role === "server"));
  });

  it("request:start and request:end with route, status, code, duration and bytes; message and error", async () => {
    seen.length = 0;
    assert.equal(new TextDecoder().decode(await conn.request("/echo", "x".repeat(2000))), "x".repeat(2000));
    await assert.rejects(conn.request("/nope", "ab"), { code: "ERR_NO_ROUTE" });
    await assert.rejects(conn.request("/fail"), { code: "ERR_UNAUTHORIZED" });
    const starts = of(CHANNELS.requestStart) as RequestStartMessage[];
    assert.deepEqual(
      starts.map((s) => [s.route, s.bytes]),
      [
        ["/echo", 2000],
        ["/nope", 2],
        ["/fail", 0],
      ],
    );
    const ends = of(CHANNELS.requestEnd) as RequestEndMessage[];
    assert.deepEqual(
      ends.map((e) => [e.route, e.status, e.code, e.bytesIn, e.bytesOut, e.routed]),
      [
        ["/echo", "ok", undefined, 2000, 2000, true],
        ["/nope", "error", "ERR_NO_ROUTE", 2, 0, false],
        ["/fail", "error", "ERR_UNAUTHORIZED", 0, 0, true],
      ],
    );
    for (const [i, e] of ends.entries()) {
      assert.equal(e.id, starts[i].id);
      assert.ok(e.durationMs >= 0 && e.durationMs < 10_000, `durationMs ${e.durationMs}`);
      assert.notEqual(e.connection, conn, "served by the server's session");
    }
    const messages = of(CHANNELS.message) as MessageMessage[];
    // The client sent 3 request bodies, the session received them and answered one.
    const mine = messages.filter((m) => m.connection === conn);
    assert.deepEqual(
      mine.map((m) => [m.direction, m.size, m.sizeClass]),
      [
        ["out", 2000, "small"],
        ["in", 2000, "small"],
        ["out", 2, "tiny"],
        ["out", 0, "tiny"],
      ],
    );
    // The client's side of the same three calls.
    const callStarts = of(CHANNELS.callStart) as CallStartMessage[];
    const callEnds = of(CHANNELS.callEnd) as CallEndMessage[];
    assert.deepEqual(
      callEnds.map((e) => [e.route, e.status, e.code, e.bytesOut, e.bytesIn]),
      [
        ["/echo", "ok", undefined, 2000, 2000],
        ["/nope", "error", "ERR_NO_ROUTE", 2, 0],
        ["/fail", "error", "ERR_UNAUTHORIZED", 0, 0],
      ],
    );
    for (const [i, e] of callEnds.entries()) {
      assert.equal(e.connection, conn);
      assert.equal(e.start, callStarts[i], "call:end names its call:start message");
      assert.ok(e.durationMs >= 0 && e.durationMs < 10_000);
    }
    const errors = of(CHANNELS.error) as ErrorMessage[];
    // Counted on both ends: the session answered with it, the client's call failed with it.
    assert.equal(errors.filter((e) => e.code === "ERR_NO_ROUTE").length, 2);
    assert.equal(errors.filter((e) => e.code === "ERR_UNAUTHORIZED").length, 2);
  });

  it("a call the caller aborts: call:end ERR_CANCELLED here, request:end ERR_CANCELLED on the session", async () => {
    seen.length = 0;
    const ac = new AbortController();
    const p = conn.request("/hang", "", { signal: ac.signal });
    await until(() => of(CHANNELS.requestStart).length === 1);
    ac.abort();
    await assert.rejects(p, { code: "ERR_CANCELLED" });
    await until(() => of(CHANNELS.requestEnd).length === 1);
    const [end] = of(CHANNELS.requestEnd) as RequestEndMessage[];
    assert.deepEqual([end.route, end.status, end.code], ["/hang", "error", "ERR_CANCELLED"]);
    assert.ok(end.durationMs >= 0);
    const [callEnd] = of(CHANNELS.callEnd) as CallEndMessage[];
    assert.deepEqual([callEnd.route, callEnd.code], ["/hang", "ERR_CANCELLED"]);
  });

  it("one-way messages: message in and out", async () => {
    seen.length = 0;
    const got = new Promise((r) => server.once("message", r));
    await conn.send(new Uint8Array(70_000));
    await got;
    const messages = of(CHANNELS.message) as MessageMessage[];
    assert.deepEqual(
      messages.map((m) => [m.connection === conn ? "client" : "session", m.direction, m.size, m.sizeClass]),
      [
        ["client", "out", 70_000, "medium"],
        ["session", "in", 70_000, "medium"],
      ],
    );
  });

  it("stream:start, throttled stream:progress and stream:end in both directions; deltas add up", async () => {
    seen.length = 0;
    const chunk = new Uint8Array(64 * 1024);
    const total = 12 * chunk.length;
    const source = (async function* () {
      for (let i = 0; i < 12; i++) yield chunk;
    })();
    const answer = await conn.sendStream("/slow", source, { total });
    assert.equal(new TextDecoder().decode(answer), String(total));
    await until(() => of(CHANNELS.streamEnd).length === 2);
    for (const direction of ["in", "out"] as const) {
      const starts = (of(CHANNELS.streamStart) as StreamStartMessage[]).filter((s) => s.direction === direction);
      assert.equal(starts.length, 1, direction);
      assert.equal(starts[0].route, "/slow");
      assert.equal(starts[0].total, total);
      assert.equal(starts[0].offset, 0);
      const progress = (of(CHANNELS.streamProgress) as StreamProgressMessage[]).filter(
        (s) => s.direction === direction,
      );
      for (const p of progress) assert.equal(p.id, starts[0].id);
      const end = (of(CHANNELS.streamEnd) as StreamEndMessage[]).find((s) => s.direction === direction);
      assert.ok(end !== undefined);
      assert.equal(end.status, "ok");
      assert.equal(end.code, undefined);
      assert.equal(end.bytes, total);
      assert.ok(end.durationMs > 0);
      // 12 chunks read 60 ms apart: at least one progress message, at most one per 250 ms.
      const most = Math.ceil(end.durationMs / 250) + 1;
      assert.ok(progress.length >= 1 && progress.length <= most, `${direction}: ${progress.length} progress messages`);
      const sum = progress.reduce((a, p) => a + p.delta, 0) + end.delta;
      assert.equal(sum, total, `${direction}: deltas add up to the bytes`);
    }
  });

  it("stream:end with the error code when the route does not exist", async () => {
    seen.length = 0;
    await assert.rejects(async () => await conn.sendStream("/none", [new Uint8Array(10)]), { code: "ERR_NO_ROUTE" });
    await until(() => of(CHANNELS.streamEnd).length === 2);
    const ends = of(CHANNELS.streamEnd) as StreamEndMessage[];
    assert.deepEqual(ends.map((e) => [e.direction, e.status, e.code]).sort(), [
      ["in", "error", "ERR_NO_ROUTE"],
      ["out", "error", "ERR_NO_ROUTE"],
    ]);
  });

  it("stream:end of a stream answered before its end counts what the receiver took, not the declared total", async () => {
    // An early answer (the handler returns before reading to the END) stops the sender: its stream:end
    // said the whole declared total went out (64 MiB here, with under 1 MiB sent), and the Prometheus
    // adapter's transfer bytes counted it.
    seen.length = 0;
    server.handleStream("/early", async (stream) => {
      for await (const _ of stream) break;
      return "enough";
    });
    const chunk = new Uint8Array(64 * 1024);
    const total = 1024 * chunk.length;
    const source = (async function* () {
      for (let i = 0; i < 1024; i++) yield chunk;
    })();
    const answer = await conn.sendStream("/early", source, { total });
    assert.equal(new TextDecoder().decode(answer), "enough");
    await until(() => of(CHANNELS.streamEnd).length === 2);
    const out = (of(CHANNELS.streamEnd) as StreamEndMessage[]).find((e) => e.direction === "out");
    assert.ok(out !== undefined);
    assert.equal(out.status, "ok");
    // The server's 128 KiB stream window bounds what was acknowledged; the 16 MiB connection window what was sent.
    assert.ok(out.bytes < 16 * 1024 * 1024, `out bytes ${out.bytes} of a ${total}-byte total`);
    const progress = (of(CHANNELS.streamProgress) as StreamProgressMessage[]).filter((p) => p.direction === "out");
    assert.equal(progress.reduce((a, p) => a + p.delta, 0) + out.delta, out.bytes, "deltas add up to the bytes");
  });

  it("handshake:error when authentication fails; connection:close when an open connection closes", async () => {
    const guarded = createServer({ authenticate: tokenAuth(["secret"]) });
    const failures: HandshakeErrorMessage[] = [];
    const closes: ConnectionCloseMessage[] = [];
    const onFail = (m: unknown) => failures.push(m as HandshakeErrorMessage);
    const onClose = (m: unknown) => closes.push(m as ConnectionCloseMessage);
    dc.subscribe(CHANNELS.handshakeError, onFail);
    dc.subscribe(CHANNELS.connectionClose, onClose);
    try {
      const [gurl] = await guarded.listen("tcp://127.0.0.1:0");
      await assert.rejects(connect(gurl, { credentials: "wrong" }), { code: "ERR_UNAUTHORIZED" });
      await until(() => failures.length === 2);
      assert.deepEqual(failures.map((f) => [f.role, f.error.code]).sort(), [
        ["client", "ERR_UNAUTHORIZED"],
        ["server", "ERR_UNAUTHORIZED"],
      ]);
      const ok = await connect(gurl, { credentials: "secret" });
      await ok.close();
      await until(() => closes.length === 2);
      assert.ok(closes.some((c) => c.connection === ok && c.role === "client" && c.error === undefined));
      assert.ok(closes.every((c) => c.durationMs >= 0));
    } finally {
      dc.unsubscribe(CHANNELS.handshakeError, onFail);
      dc.unsubscribe(CHANNELS.connectionClose, onClose);
      await guarded.close();
    }
  });

  it("connection:close's durationMs is a duration: the wall clock set back an hour while open does not make it negative", async (t) => {
    // Before: Date.now() at the close less Date.now() at the open: about -3,600,000 here.
    const server = createServer();
    const closes: ConnectionCloseMessage[] = [];
    const onClose = (m: unknown) => closes.push(m as ConnectionCloseMessage);
    dc.subscribe(CHANNELS.connectionClose, onClose);
    try {
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const conn = await connect(url);
      await conn.ping();
      const wall = Date.now;
      t.mock.method(Date, "now", () => wall() - 3_600_000);
      await conn.close();
      await until(() => closes.length === 2);
      for (const c of closes) {
        assert.ok(Number.isInteger(c.durationMs) && c.durationMs >= 0, `${c.role}: durationMs ${c.durationMs}`);
      }
    } finally {
      t.mock.restoreAll();
      dc.unsubscribe(CHANNELS.connectionClose, onClose);
      await server.close();
    }
  });
});

/** Diagnostics whose channels never have subscribers and count what is asked of them. */
function countingDiagnostics(): Diagnostics & { channels: number; publishes: number; reads: number } {
  const d = {
    channels: 0,
    publishes: 0,
    reads: 0,
    channel(): DiagnosticsChannel {
      d.channels++;
      return {
        get hasSubscribers() {
          d.reads++;
          return false;
        },
        publish() {
          d.publishes++;
        },
      };
    },
    subscribe() {},
    unsubscribe: () => false,
  };
  return d;
}

describe("diagnostics without subscribers", () => {
  it("publish is never called and channels are looked up once per runtime, not per connection or message", async () => {
    const diagnostics = countingDiagnostics();
    const runtime = createNodeRuntime({ diagnostics });
    const server = createServer({ runtime });
    server.handle("/echo", (req) => req.data);
    server.handleStream("/sink", async (s) => {
      for await (const _ of s);
      return "ok";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conns = await Promise.all([1, 2, 3].map(() => connect(url, { runtime })));
    for (const c of conns) {
      await c.request("/echo", "hi");
      await assert.rejects(c.request("/nope"), { code: "ERR_NO_ROUTE" });
      await c.send("one-way");
      await c.sendStream("/sink", [new Uint8Array(300_000)]);
    }
    for (const c of conns) await c.close();
    await server.close();
    assert.equal(diagnostics.publishes, 0);
    assert.equal(diagnostics.channels, Object.keys(CHANNELS).length, "one lookup per channel");
    assert.ok(diagnostics.reads > 0, "hasSubscribers was checked");
  });

  it("localDiagnostics: a portable runtime's own channels, subscribe and unsubscribe", async () => {
    const diagnostics = localDiagnostics();
    const runtime = createNodeRuntime({ diagnostics });
    const ends: RequestEndMessage[] = [];
    const onEnd = (m: unknown) => ends.push(m as RequestEndMessage);
    // Not on node:diagnostics_channel: a process-wide subscriber sees nothing of this runtime.
    const global: unknown[] = [];
    const onGlobal = (m: unknown) => global.push(m);
    dc.subscribe(CHANNELS.requestEnd, onGlobal);
    diagnostics.subscribe(CHANNELS.requestEnd, onEnd);
    const server = createServer({ runtime });
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const c = await connect(url, { runtime });
    await c.request("/echo", "one");
    assert.equal(diagnostics.unsubscribe(CHANNELS.requestEnd, onEnd), true);
    assert.equal(diagnostics.unsubscribe(CHANNELS.requestEnd, onEnd), false);
    await c.request("/echo", "two");
    await c.close();
    await server.close();
    dc.unsubscribe(CHANNELS.requestEnd, onGlobal);
    assert.deepEqual(
      ends.map((e) => [e.route, e.status, e.bytesIn]),
      [["/echo", "ok", 3]],
    );
    assert.deepEqual(global, []);
  });
});

describe("debug output", () => {
  const script = `
    import { connect, createServer } from ${JSON.stringify(INDEX)};
    const server = createServer();
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const c = await connect(url);
    await c.request("/echo", "hi");
    await c.close();
    await server.close();
  `;
  const runWith = (env: NodeJS.ProcessEnv, code = script) => {
    const clean = { ...process.env };
    delete clean.DEBUG;
    delete clean.NODE_DEBUG;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", code], {
      env: { ...clean, ...env },
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr);
    return r.stderr;
  };

  it("DEBUG=pointsub:request* prints the request channels and nothing else", () => {
    const out = runWith({ DEBUG: "pointsub:request*" });
    assert.match(out, /^pointsub:request:start tcp:\/\/127\.0\.0\.1:\d+ id=1 route=\/echo bytes=2$/m);
    assert.match(
      out,
      /^pointsub:request:end tcp:\/\/\S+ id=1 route=\/echo status=ok durationMs=[\d.]+ bytesIn=2 bytesOut=2 routed=true$/m,
    );
    assert.doesNotMatch(out, /pointsub:(connection|message)/);
  });

  it("DEBUG=pointsub*,-pointsub:message excludes; NODE_DEBUG=pointsub prints through util.debuglog", () => {
    const out = runWith({ DEBUG: "pointsub*,-pointsub:message" });
    assert.match(out, /^pointsub:connection:open \S+ role=client$/m);
    assert.match(out, /^pointsub:connection:close \S+ role=server durationMs=\d+$/m);
    assert.doesNotMatch(out, /pointsub:message/);
    const node = runWith({ NODE_DEBUG: "pointsub" });
    assert.match(node, /^POINTSUB \d+: pointsub:message \S+ direction=out size=2 sizeClass=tiny$/m);
  });

  it("a route a peer chose prints with terminal controls escaped (ESC, 8-bit CSI, bidi overrides, line separators)", () => {
    const line = formatDebugLine("pointsub:request:end", {
      route: "/x\x1b[1A\x1b[2K\x1b]0;owned\x07\x9b31mFAKE\u202e\u2028",
      status: "ok",
    });
    assert.equal(
      line,
      'pointsub:request:end route="/x\\u001b[1A\\u001b[2K\\u001b]0;owned\\u0007\\u009b31mFAKE\\u202e\\u2028" status=ok',
    );
    // biome-ignore lint/suspicious/noControlCharactersInRegex: no control character may be left
    assert.doesNotMatch(line, /[\x00-\x1f\x7f-\x9f\u202e\u2028]/);
  });

  it("nothing is printed on import alone", () => {
    assert.equal(runWith({ DEBUG: "pointsub*" }, `await import(${JSON.stringify(INDEX)});`), "");
  });

  it("installDebugOutput: subscribes only to the channels the variables select, once per diagnostics", () => {
    assert.equal(installDebugOutput(localDiagnostics(), {}), 0);
    const d = localDiagnostics();
    assert.equal(installDebugOutput(d, { DEBUG: "other,pointsub:request*" }), 2);
    assert.equal(d.channel(CHANNELS.requestEnd).hasSubscribers, true);
    assert.equal(d.channel(CHANNELS.message).hasSubscribers, false);
    assert.equal(installDebugOutput(d, { DEBUG: "pointsub*" }), 0, "already installed");
    assert.equal(debugSelects("pointsub*", "pointsub:stream:end"), true);
    assert.equal(debugSelects("*,-pointsub:stream*", "pointsub:stream:end"), false);
    assert.equal(debugSelects("pointsub:call:*", "pointsub:request:end"), false);
    assert.equal(debugSelects(undefined, "pointsub:error"), false);
  });
});
