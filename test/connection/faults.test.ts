import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { writeVarint } from "../../src/codec/varint.ts";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { startProxy } from "../helpers/proxy.ts";
import { handshake, rawClient, rawServer } from "../helpers/raw-peer.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A server whose session close errors are recorded. */
async function recordingServer(options = {}) {
  const server = createServer(options);
  const closes: (PointSubError | undefined)[] = [];
  const messages: Uint8Array[] = [];
  server.on("sessionClose", (_s, err) => closes.push(err));
  server.on("message", (m) => messages.push(m.data));
  server.handle("/echo/1.0.0", (req) => req.data);
  const [url] = await server.listen("tcp://127.0.0.1:0");
  return { server, url, closes, messages };
}

async function until(pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error("condition not reached");
    await sleep(2);
  }
}

function msgStart(id: number, total: number, data: Uint8Array): Uint8Array {
  const prefix = new Uint8Array(9);
  const n = writeVarint(prefix, 0, total);
  return encodeFrame(FrameType.MSG, Flag.START, id, Buffer.concat([prefix.subarray(0, n), data]));
}

/** A connection (keepalive off) to a raw server that completes the handshake and then answers nothing. */
async function silentPeer(): Promise<{ raw: Awaited<ReturnType<typeof rawServer>>; conn: Connection }> {
  const raw = await rawServer();
  const connP = connect(raw.url, { keepAliveMs: 0 });
  const peer = await raw.peer;
  peer.socket.write(handshake());
  return { raw, conn: await connP };
}

describe("faults", () => {
  for (const where of ["mid-header", "mid-body"] as const) {
    it(`peer closes ${where}: pending calls reject with ERR_CONNECTION_CLOSED at once, nothing truncated is delivered`, async () => {
      const raw = await rawServer();
      const connP = connect(raw.url);
      const peer = await raw.peer;
      peer.socket.write(handshake());
      const conn = await connP;
      const messages: Uint8Array[] = [];
      conn.on("message", (m) => messages.push(m.data));
      const calls = [conn.request("/a", "1"), conn.request("/b", "2"), conn.request("/c", "3")];
      const frame = encodeFrame(FrameType.MSG, Flag.START | Flag.END, 2, new Uint8Array(5000).fill(7));
      const cut = where === "mid-header" ? 2 : 2000;
      peer.socket.write(frame.subarray(0, cut));
      await sleep(20);
      const t0 = Date.now();
      peer.socket.destroy();
      const results = await Promise.allSettled(calls);
      assert.ok(Date.now() - t0 < 10_000, `${Date.now() - t0} ms (requestTimeoutMs is 30 s)`);
      for (const r of results) {
        assert.equal(r.status, "rejected");
        assert.equal((r as PromiseRejectedResult).reason.code, "ERR_CONNECTION_CLOSED");
      }
      assert.equal(messages.length, 0);
      assert.equal(conn.state, "closed");
      await assert.rejects(conn.send("x"), { code: "ERR_CONNECTION_CLOSED" });
      await raw.close();
    });
  }

  it("the server never delivers a message whose sender vanished mid-body", async () => {
    const { server, url, closes, messages } = await recordingServer();
    const peer = await rawClient(url);
    peer.socket.write(handshake());
    peer.socket.write(msgStart(1, 100_000, new Uint8Array(1000)));
    await sleep(20);
    peer.socket.destroy();
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_CONNECTION_CLOSED");
    assert.equal(messages.length, 0);
    await server.close();
  });

  it("a flipped byte on the wire gives ERR_CHECKSUM on both sides; the process carries on", async () => {
    const { server, url, closes } = await recordingServer();
    // Flip a byte well after the handshake, inside the 64 KiB request below.
    const proxy = await startProxy(url, { flip: { dir: "up", offset: 40_000 } });
    const conn = await connect(proxy.url);
    const closed = new Promise<PointSubError | undefined>((resolve) => conn.once("close", resolve));
    await assert.rejects(conn.request("/echo/1.0.0", new Uint8Array(60_000).fill(1)), { code: "ERR_CHECKSUM" });
    assert.equal((await closed)?.code, "ERR_CHECKSUM");
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_CHECKSUM");
    assert.equal(server.stats().errors.ERR_CHECKSUM, 1);
    // Other connections are unaffected.
    const ok = await connect(url);
    assert.equal((await ok.request("/echo/1.0.0", "fine")).length, 4);
    await ok.close();
    await proxy.close();
    await server.close();
  });

  it("a declared message length over maxMessageSize is rejected before anything is allocated", async () => {
    const { server, url, closes } = await recordingServer({ maxMessageSize: 1024 * 1024 });
    const peer = await rawClient(url);
    peer.socket.write(handshake());
    const rss0 = process.memoryUsage().rss;
    peer.socket.write(msgStart(1, 2 ** 50, new Uint8Array(10)));
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_MESSAGE_TOO_LARGE");
    assert.ok(process.memoryUsage().rss - rss0 < 64 * 1024 * 1024);
    // The peer was told why: a GOAWAY with errno 4001.
    await peer.closed;
    const got = peer.received();
    assert.ok(got.includes(Buffer.from([0x0f, 0xa1])), "GOAWAY carries errno 4001");
    await server.close();
  });

  it("many unfinished large messages cannot exceed maxAssemblyBytes", async () => {
    const { server, url, closes } = await recordingServer({
      maxMessageSize: 100 * 1024 * 1024,
      maxAssemblyBytes: 150 * 1024 * 1024,
    });
    const peer = await rawClient(url);
    peer.socket.write(handshake());
    for (let id = 1; id < 10; id += 2) peer.socket.write(msgStart(id, 100 * 1024 * 1024, new Uint8Array(100)));
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_FLOW_CONTROL");
    await server.close();
  });

  it("a frame larger than the credit the peer was granted is cut off with ERR_FLOW_CONTROL", async () => {
    // The server consumes (and re-grants) as it reads, so the most a peer can
    // have unacknowledged is what it sends before the server reads: one frame
    // over a 16 KiB window is a violation.
    const { server, url, closes } = await recordingServer({ connectionWindow: 16 * 1024, maxFrameSize: 64 * 1024 });
    const peer = await rawClient(url);
    peer.socket.write(handshake());
    peer.socket.write(encodeFrame(FrameType.MSG, 3, 1, new Uint8Array(32 * 1024)));
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_FLOW_CONTROL");
    await server.close();
  });

  it("the START frame of a chunked message larger than streamWindow is ERR_FLOW_CONTROL, as any later frame is", async () => {
    // Before: only frames after the START were checked against the stream window; a 20,003-byte
    // START with a 16 KiB streamWindow was taken (and credited back), a later frame of it refused.
    const { server, url, closes } = await recordingServer({
      streamWindow: 16 * 1024,
      connectionWindow: 64 * 1024,
      maxFrameSize: 64 * 1024,
    });
    const peer = await rawClient(url);
    peer.socket.write(handshake());
    peer.socket.write(msgStart(1, 40_000, new Uint8Array(20_000)));
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_FLOW_CONTROL");
    await peer.closed;
    assert.ok(peer.received().includes(Buffer.from([0x07, 0xd1])), "GOAWAY carries errno 2001");
    // At the window, it is taken.
    const ok = await rawClient(url);
    ok.socket.write(handshake());
    ok.socket.write(msgStart(1, 40_000, new Uint8Array(16 * 1024 - 8)));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(closes.length, 1);
    ok.socket.destroy();
    await server.close();
  });

  it("a message over the peer's limit is refused before a byte is written; the connection stays usable", async () => {
    const { server, url } = await recordingServer({ maxMessageSize: 1000 });
    const conn = await connect(url);
    const before = conn.stats().wire.bytesOut;
    await assert.rejects(conn.send(new Uint8Array(1001)), { code: "ERR_MESSAGE_TOO_LARGE" });
    await assert.rejects(conn.request("/echo/1.0.0", new Uint8Array(5000)), { code: "ERR_MESSAGE_TOO_LARGE" });
    assert.equal(conn.stats().wire.bytesOut, before);
    assert.equal((await conn.request("/echo/1.0.0", new Uint8Array(1000))).length, 1000);
    await conn.close();
    await server.close();
  });

  it("a response the caller could never assemble (chunked, over its maxAssemblyBytes) is an ERR_MESSAGE_TOO_LARGE answer, not a hang", async () => {
    const { server, url } = await recordingServer();
    const conn = await connect(url, {
      maxMessageSize: 1024 * 1024,
      maxAssemblyBytes: 50_000,
      requestTimeoutMs: 30_000,
    });
    try {
      await assert.rejects(conn.request("/echo/1.0.0", new Uint8Array(100_000)), { code: "ERR_MESSAGE_TOO_LARGE" });
      // Over the budget but one frame (no assembly): answered; and the connection stays usable.
      assert.equal((await conn.request("/echo/1.0.0", new Uint8Array(60_000))).length, 60_000);
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("a request that only its route (or key) makes chunked, to a peer with no assembly budget for it: ERR_MESSAGE_TOO_LARGE before a byte is written, not a wait for credit that never comes", async () => {
    const { server, url } = await recordingServer({ maxAssemblyBytes: 0 });
    const conn = await connect(url);
    try {
      const route = "/echo/1.0.0"; // 12 bytes of prefix: its length and the route
      const single = 64 * 1024;
      const key = "k".repeat(40); // 41 more with the key
      const before = conn.stats().wire.bytesOut;
      // (Before: each waited for assembly credit until its timeout, ERR_TIMEOUT, or for ever with timeoutMs 0.)
      for (const [size, options] of [
        [single - 11, { timeoutMs: 10_000 }],
        [single, { timeoutMs: 10_000 }],
        [single - 52, { timeoutMs: 10_000, idempotencyKey: key }],
      ] as const) {
        await assert.rejects(conn.request(route, new Uint8Array(size), options), { code: "ERR_MESSAGE_TOO_LARGE" });
      }
      assert.equal(conn.stats().wire.bytesOut, before);
      assert.equal(conn.stats().errors.ERR_MESSAGE_TOO_LARGE, 3);
      // One frame with its prefix: no assembly, answered.
      assert.equal((await conn.request(route, new Uint8Array(single - 12))).length, single - 12);
      assert.equal(
        (await conn.request(route, new Uint8Array(single - 53), { idempotencyKey: key })).length,
        single - 53,
      );
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("ERR_MESSAGE_TOO_LARGE names the peer's setting that refuses the message, not this side's one-frame size", async () => {
    // Before: "exceeds the peer's limit of 65536" to a peer with maxAssemblyBytes 0: this side's own size
    // for one frame (the peer's maxFrameSize is 1 MiB), named as the peer's limit.
    const { server, url } = await recordingServer({ maxAssemblyBytes: 0, maxMessageSize: 200_000 });
    const conn = await connect(url);
    try {
      await assert.rejects(conn.send(new Uint8Array(100_000)), (err: PointSubError) => {
        assert.equal(err.code, "ERR_MESSAGE_TOO_LARGE");
        assert.equal(err.message, "message of 100000 bytes exceeds the peer's maxAssemblyBytes of 0");
        return true;
      });
      await assert.rejects(conn.request("/echo/1.0.0", new Uint8Array(200_001)), (err: PointSubError) => {
        assert.equal(err.message, "message of 200001 bytes exceeds the peer's maxMessageSize of 200000");
        return true;
      });
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("ERR_MESSAGE_TOO_LARGE for a response names the caller's setting that refuses it, not both", async () => {
    // Before: "exceeds the caller's maxMessageSize (16777216) or maxAssemblyBytes (0)": which one, the caller guessed.
    const { server, url } = await recordingServer();
    server.handle("/big", (req) => new Uint8Array(Number(new TextDecoder().decode(req.data))));
    const tight = await connect(url, { maxAssemblyBytes: 0, maxMessageSize: 200_000 });
    try {
      await assert.rejects(tight.request("/big", "100000"), (err: PointSubError) => {
        assert.equal(err.code, "ERR_MESSAGE_TOO_LARGE");
        assert.match(err.message, /response of 100000 bytes exceeds the caller's maxAssemblyBytes of 0$/);
        return true;
      });
      await assert.rejects(tight.request("/big", "200001"), (err: PointSubError) => {
        assert.equal(err.code, "ERR_MESSAGE_TOO_LARGE");
        assert.match(err.message, /response of 200001 bytes exceeds the caller's maxMessageSize of 200000$/);
        return true;
      });
      // Refused answers, not a broken connection.
      assert.equal(new TextDecoder().decode(await tight.request("/echo/1.0.0", "still open")), "still open");
    } finally {
      await tight.close();
      await server.close();
    }
  });

  it("a peer speaking another protocol version is refused with ERR_VERSION", async () => {
    const { server, url, closes } = await recordingServer();
    const peer = await rawClient(url);
    const rejected = new Promise<PointSubError>((resolve) => server.once("reject", resolve));
    peer.socket.write(handshake({}, [2, 3]));
    assert.equal((await rejected).code, "ERR_VERSION");
    await peer.closed;
    assert.equal(closes.length, 0);
    // The preface alone, no HELLO after it (before: the server waited for a HELLO and refused it
    // handshakeTimeoutMs later with ERR_TIMEOUT); an inverted range too.
    for (const range of [
      [2, 2],
      [1, 0],
    ]) {
      const alone = await rawClient(url);
      const refused = new Promise<PointSubError>((resolve) => server.once("reject", resolve));
      alone.socket.write(Buffer.from([0x50, 0x53, 0x55, 0x42, ...range]));
      const t0 = Date.now();
      assert.equal((await refused).code, "ERR_VERSION");
      assert.ok(Date.now() - t0 < 5000, `${Date.now() - t0} ms (handshakeTimeoutMs is 10 s)`);
      await alone.closed;
    }
    await server.close();
  });

  it("a client that says GOAWAY where its AUTH belongs frees its slot at once (before: at handshakeTimeoutMs)", async () => {
    const server = createServer({ authenticate: () => ({ principal: "x" }), maxConnections: 1 });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const peer = await rawClient(url);
      const rejected = new Promise<PointSubError>((resolve) => server.once("reject", resolve));
      const bye = encodeFrame(FrameType.GOAWAY, 0, 0, new Uint8Array([0, 0, 0x62, 0x79, 0x65]));
      peer.socket.write(Buffer.concat([handshake(), bye]));
      const t0 = Date.now();
      const err = await rejected;
      assert.equal(err.code, "ERR_GOING_AWAY");
      assert.match(err.message, /closed the connection before authenticating/);
      assert.ok(Date.now() - t0 < 5000, `${Date.now() - t0} ms (handshakeTimeoutMs is 10 s)`);
      await peer.closed;
      // The one slot (maxConnections 1) is free: the next client is served.
      const ok = await connect(url, { credentials: "t" });
      await ok.close();
    } finally {
      await server.close();
    }
  });

  it("garbage instead of a preface is refused with ERR_PROTOCOL", async () => {
    const { server, url } = await recordingServer();
    const peer = await rawClient(url);
    const rejected = new Promise<PointSubError>((resolve) => server.once("reject", resolve));
    peer.socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.equal((await rejected).code, "ERR_PROTOCOL");
    await server.close();
  });

  it("a server that never answers the handshake: connect fails with ERR_TIMEOUT", async () => {
    const raw = await rawServer();
    // The TCP connect succeeded: what timed out is the handshake, and the error says so.
    await assert.rejects(connect(raw.url, { connectTimeoutMs: 200 }), { code: "ERR_TIMEOUT", phase: "handshake" });
    await raw.close();
  });

  it("nothing listening: connect fails with ERR_CONNECT", async () => {
    const raw = await rawServer();
    await raw.close();
    await assert.rejects(connect(raw.url), { code: "ERR_CONNECT", retryable: true });
    await assert.rejects(connect("ftp://127.0.0.1:1"), { code: "ERR_UNSUPPORTED_URL" });
  });

  it("a silent peer is detected by keepalive with ERR_KEEPALIVE", async () => {
    const raw = await rawServer();
    const connP = connect(raw.url, { keepAliveMs: 50 });
    const peer = await raw.peer;
    peer.socket.write(handshake());
    const conn = await connP;
    const err = await new Promise<PointSubError | undefined>((resolve) => conn.once("close", resolve));
    assert.equal(err?.code, "ERR_KEEPALIVE");
    await raw.close();
  });

  it("a peer that never answers a ping: ping(timeoutMs) rejects with ERR_TIMEOUT, phase ping", async () => {
    const { raw, conn } = await silentPeer();
    await assert.rejects(conn.ping({ timeoutMs: 100 }), { code: "ERR_TIMEOUT", phase: "ping" });
    conn.destroy();
    await raw.close();
  });

  it("ping({ timeoutMs }) negative or NaN is ERR_INVALID_ARGUMENT (it meant no timeout: a ping to a silent peer never settled)", async () => {
    const { raw, conn } = await silentPeer();
    const outcomes: string[] = [];
    for (const timeoutMs of [-1, Number.NaN]) {
      conn.ping({ timeoutMs }).then(
        () => outcomes.push(`${timeoutMs}: answered`),
        (e: PointSubError) => outcomes.push(`${timeoutMs}: ${e.code}`),
      );
    }
    // The peer answers no PING: a ping given a real timeout settles after the two above would have.
    await assert.rejects(conn.ping({ timeoutMs: 50 }), { code: "ERR_TIMEOUT", phase: "ping" });
    await until(() => outcomes.length === 2, 2000).catch(() => {});
    assert.deepEqual(outcomes.sort(), ["-1: ERR_INVALID_ARGUMENT", "NaN: ERR_INVALID_ARGUMENT"]);
    conn.destroy();
    await raw.close();
  });

  it("ping({ timeoutMs: Infinity }) or past a timer's largest delay waits (it timed out after 1 ms)", async () => {
    const { raw, conn } = await silentPeer();
    const outcomes: string[] = [];
    const long = [Number.POSITIVE_INFINITY, 3e9].map((timeoutMs) =>
      conn.ping({ timeoutMs }).then(
        () => outcomes.push(`${timeoutMs}: answered`),
        (e: PointSubError) => outcomes.push(`${timeoutMs}: ${e.code}`),
      ),
    );
    // The peer answers no PING: this one times out, after the two above did before.
    await assert.rejects(conn.ping({ timeoutMs: 50 }), { code: "ERR_TIMEOUT", phase: "ping" });
    assert.deepEqual(outcomes, []);
    conn.destroy();
    await Promise.all(long);
    assert.deepEqual(outcomes, ["Infinity: ERR_CONNECTION_CLOSED", "3000000000: ERR_CONNECTION_CLOSED"]);
    await raw.close();
  });

  it("keepalive keeps a quiet but healthy connection open", async () => {
    const { server, url } = await recordingServer({ keepAliveMs: 30 });
    const conn = await connect(url, { keepAliveMs: 30 });
    await sleep(300);
    assert.equal(conn.state, "open");
    assert.ok((await conn.ping()) >= 0);
    await conn.close();
    await server.close();
  });

  it("connection drop fails every pending call at once, then server keeps serving", async () => {
    const { server, url } = await recordingServer();
    server.handle("/never/1.0.0", () => new Promise(() => {}));
    const proxy = await startProxy(url);
    const conn = await connect(proxy.url);
    const calls = Array.from({ length: 50 }, () => conn.request("/never/1.0.0", "x", { timeoutMs: 0 }));
    await sleep(30);
    proxy.cutAll();
    const results = await Promise.allSettled(calls);
    assert.ok(results.every((r) => r.status === "rejected" && r.reason.code === "ERR_CONNECTION_CLOSED"));
    await proxy.close();
    await server.close();
  });
});

describe("server limits", () => {
  let server: Server;
  it("refuses connections over maxConnections", async () => {
    server = createServer({ maxConnections: 2 });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const a = await connect(url);
    const b = await connect(url);
    const rejected = new Promise<PointSubError>((resolve) => server.once("reject", resolve));
    // The refused client is told why (GOAWAY in place of HELLO), not just cut off.
    await assert.rejects(connect(url, { connectTimeoutMs: 2000 }), {
      code: "ERR_OVERLOADED",
      message: /connection limit reached/,
    });
    assert.match((await rejected).message, /connection limit/);
    await a.close();
    await b.close();
    await server.close();
  });
});
