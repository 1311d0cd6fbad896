/**
 * Hostile WebSocket clients (the `ws` package, driven by hand): a text
 * message, a message over the 1 MiB limit, no subprotocol, plain HTTP, a
 * client that never reads, a slowloris that never finishes its upgrade.
 * Each ends in a typed close with bounded memory.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { afterEach, describe, it } from "node:test";
import { WebSocket } from "ws";
import {
  type Connection,
  createServer,
  type PointSubError,
  type Server,
  WS_MAX_MESSAGE,
  WS_SUBPROTOCOL,
} from "../../src/index.ts";
import { concat, F, frame, T, utf8, varint } from "../helpers/attacker.ts";
import { echoRequest, handshake } from "../helpers/raw-peer.ts";
import { sleep, until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;

/** What a test opened, closed after it whatever happened. */
const servers: Server[] = [];
const clients: WebSocket[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.terminate();
  await Promise.all(servers.splice(0).map((s) => s.close({ timeoutMs: 1000 })));
});

async function wsServer(options = {}) {
  const server = createServer(options);
  servers.push(server);
  server.handle("/echo/1.0.0", (req) => req.data);
  const sessions: Connection[] = [];
  const closes: (PointSubError | undefined)[] = [];
  const rejects: PointSubError[] = [];
  server.on("session", (s) => sessions.push(s));
  server.on("sessionClose", (_s, err) => closes.push(err));
  server.on("reject", (err) => rejects.push(err));
  server.on("error", () => {});
  const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
  return { server, url, sessions, closes, rejects };
}

/** A raw WebSocket client that has sent the pointsub handshake. */
async function rawWs(url: string, settings = {}) {
  const ws = new WebSocket(url, [WS_SUBPROTOCOL], { perMessageDeflate: false });
  clients.push(ws);
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  ws.on("error", () => {});
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  ws.send(handshake(settings));
  return { ws, closed };
}

describe("attack: hostile WebSocket clients", () => {
  it("a text message closes with 1003 and a typed ERR_PROTOCOL", async () => {
    const { server, url, sessions, closes } = await wsServer();
    const { ws, closed } = await rawWs(url);
    await until(() => sessions.length === 1);
    ws.send("hello");
    const c = await closed;
    assert.equal(c.code, 1003);
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_PROTOCOL");
    assert.match(closes[0]?.message ?? "", /text message/);
    await server.close();
  });

  it("a text message before the handshake is a reject with ERR_PROTOCOL, not a plain close", async () => {
    const { server, url, rejects } = await wsServer();
    const ws = new WebSocket(url, [WS_SUBPROTOCOL], { perMessageDeflate: false });
    clients.push(ws);
    ws.on("error", () => {});
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
    ws.send("hello");
    assert.equal(await closed, 1003);
    await until(() => rejects.length === 1);
    assert.equal(rejects[0]?.code, "ERR_PROTOCOL");
    assert.match(rejects[0]?.message ?? "", /text message/);
    await server.close();
  });

  it("a message over WS_MAX_MESSAGE closes with 1009 and a typed ERR_PROTOCOL, before it is buffered whole", async () => {
    const { server, url, sessions, closes } = await wsServer();
    const { ws, closed } = await rawWs(url);
    await until(() => sessions.length === 1);
    ws.send(new Uint8Array(WS_MAX_MESSAGE + 1));
    const c = await closed;
    assert.equal(c.code, 1009);
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_PROTOCOL");
    await server.close();
  });

  it("an upgrade without the pointsub subprotocol, or plain HTTP, is refused", async () => {
    const { server, url } = await wsServer();
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const status = await new Promise<number | undefined>((resolve) => {
      ws.once("unexpected-response", (_req, res) => resolve(res.statusCode));
      ws.once("open", () => resolve(undefined));
      ws.on("error", () => {});
    });
    assert.equal(status, 400);
    ws.terminate();
    const res = await fetch(url.replace("ws:", "http:"));
    assert.equal(res.status, 426);
    await res.text();
    await server.close();
  });

  it("connections that never finish their upgrade are bounded (maxPendingUpgrades) and closed at the deadline", async () => {
    const { server, url, rejects } = await wsServer({ handshakeTimeoutMs: 300, ws: { maxPendingUpgrades: 5 } });
    const u = new URL(url);
    const closedAt: Promise<number>[] = [];
    const sockets = await Promise.all(
      Array.from(
        { length: 8 },
        () =>
          new Promise<net.Socket>((resolve) => {
            const s = net.connect({ host: u.hostname, port: Number(u.port) }, () => resolve(s));
            s.on("error", () => {});
            // Read (and drop) what the server answers, a refusal's 503: a socket that leaves it unread
            // emits "close" on a reset only, never on the server's FIN (on Node 22 the refused ones got
            // the FIN and no reset, and the test waited for ever). Listened from the start: a refusal
            // may close a socket before every one connected.
            s.resume();
            closedAt.push(new Promise<number>((done) => s.once("close", () => done(Date.now()))));
          }),
      ),
    );
    // Half a request line, then nothing (a slowloris).
    for (const s of sockets) s.write("GET /pointsub HTTP/1.1\r\nHost: x\r\n");
    const t0 = Date.now();
    const times = await Promise.all(closedAt);
    const early = times.filter((t) => t - t0 < 150).length;
    assert.ok(early >= 3, `${early} of 8 closed at once (limit 5)`);
    assert.ok(Math.max(...times) - t0 < 2000, "the rest closed at the 300 ms deadline");
    // Each one is reported once: refused over the limit, or timed out waiting for its upgrade.
    await until(() => rejects.length === 8);
    const codes = rejects.map((e) => e.code);
    assert.ok(codes.filter((c) => c === "ERR_OVERLOADED").length >= 3, codes.join());
    assert.deepEqual([...new Set(codes)].sort(), ["ERR_OVERLOADED", "ERR_TIMEOUT"]);
    await server.close();
  });

  it("a client that stops reading once the socket took its small answers is closed after slowPeerTimeoutMs, and their charges return", async () => {
    // Answers below the transport's high-water mark leave no backpressure: only the socket's own
    // counts (Transport.bytesHeld/bytesTaken) show that none of them went out. Messages now and then
    // keep the connection past keepalive. Before: it stayed open for ever.
    const { server, url, sessions, closes } = await wsServer({ slowPeerTimeoutMs: 1000, keepAliveMs: 2000 });
    server.handle("/some", () => new Uint8Array(2048).fill(1));
    const { ws } = await rawWs(url, { connectionWindow: 2 ** 31 - 1 });
    await until(() => sessions.length === 1);
    ws.pause();
    (ws as unknown as { _socket: net.Socket })._socket.pause(); // the kernel's buffers fill, then nothing goes out
    // The server's side of the socket (test-only access): answers until it holds bytes the kernel would not take.
    const serverSocket = (sessions[0] as unknown as { transport: { socket: net.Socket } }).transport.socket;
    const route = utf8("/some");
    let id = 1;
    for (let burst = 0; burst < 2000 && serverSocket.writableLength === 0; burst++) {
      for (let i = 0; i < 20; i++, id += 2)
        ws.send(frame(T.REQ, F.START | F.END, id, concat(varint(route.length), route)));
      await sleep(10);
    }
    assert.ok(serverSocket.writableLength > 0, "the kernel took every answer");
    let msgId = 100_001;
    const t0 = Date.now();
    while (closes.length === 0 && Date.now() - t0 < 10_000) {
      ws.send(frame(T.MSG, F.START | F.END, msgId, utf8("x")));
      msgId += 2;
      await sleep(200);
    }
    assert.equal(closes[0]?.code, "ERR_SLOW_PEER", `the session is still open after 10 s (${closes.length} closes)`);
    await until(() => server.memory.used === 0);
  });

  it("a client that never reads: the server stops reading it (bounded memory), then closes it with ERR_SLOW_PEER", async () => {
    const { server, url, sessions, closes } = await wsServer({ maxMessageSize: 64 * MiB, slowPeerTimeoutMs: 2000 });
    const { ws, closed } = await rawWs(url, { connectionWindow: 2 ** 31 - 1, streamWindow: 2 ** 31 - 1 });
    ws.pause(); // never reads
    const count = 8;
    for (let i = 0; i < count; i++) {
      for (const f of echoRequest(2 * i + 1, 16 * MiB, i + 1)) {
        for (let off = 0; off < f.length; off += WS_MAX_MESSAGE) ws.send(f.subarray(off, off + WS_MAX_MESSAGE));
      }
    }
    // A wait, not a bound: at load ~30 (two suite runs beside busy loops) the first 8 MiB took over
    // the default 10 s, on this commit's parent as here.
    await until(() => sessions.length === 1 && sessions[0].stats().wire.bytesIn > 8 * MiB, 60_000);
    const rss0 = process.memoryUsage().rss;
    let last = -1;
    for (let i = 0; i < 50 && closes.length === 0; i++) {
      await sleep(100);
      const now = sessions[0].stats().wire.bytesIn;
      if (now === last) break;
      last = now;
    }
    assert.ok(last < 80 * MiB, `server read ${last} bytes from a client that reads nothing`);
    await until(() => closes.length === 1, 20_000);
    assert.equal(closes[0]?.code, "ERR_SLOW_PEER");
    const growth = process.memoryUsage().rss - rss0;
    assert.ok(growth < 256 * MiB, `rss grew ${growth >> 20} MiB`);
    ws.resume();
    await closed;
    await server.close();
  });
});
