/**
 * Plain length-prefix peers (`lp+tcp://`, `lp+unix://`): pointsub's lp mode
 * against peers written without pointsub — a node:net peer and a Python
 * standard-library peer — in both roles, with messages of 0 B, 1 B, 1 MiB,
 * exactly maxMessageSize and one byte more.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect as coreConnect } from "../../src/client/connect.ts";
import {
  connect,
  connectLp,
  connectLpResilient,
  connectResilient,
  createLpServer,
  createRuntime,
  createServer,
  defaultRuntime,
  type LpConnection,
  lpTcpTransport,
  type Message,
  type PointSubError,
} from "../../src/index.ts";
import { lpFrame, plainClient, plainServer, pythonPeer } from "../helpers/lp-peer.ts";
import { staleSocket } from "../helpers/stale-socket.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), "pointsub-lp-"));

function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** Collects an lp connection's messages; `next(n)` resolves once n arrived. */
function collect(conn: LpConnection): { got: Uint8Array[]; next(n: number): Promise<Uint8Array[]> } {
  const got: Uint8Array[] = [];
  conn.on("message", (m: Message) => got.push(m.data));
  return { got, next: (n) => until(() => got.length >= n, 5000).then(() => got) };
}

function closeError(conn: LpConnection): Promise<PointSubError | undefined> {
  return new Promise((r) => conn.once("close", r));
}

describe("lp+tcp:// client against a plain node:net peer", () => {
  it("connect refuses an invalid connectTimeoutMs at once, naming it (it was passed to the transport unchecked)", async () => {
    for (const connectTimeoutMs of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      await assert.rejects(connect("lp+tcp://127.0.0.1:1", { connectTimeoutMs }), {
        code: "ERR_INVALID_ARGUMENT",
        message: /^connectTimeoutMs must be/,
      });
    }
  });

  it("0 B, 1 B and 1 MiB (= maxMessageSize) go out as length + bytes and come back whole", async () => {
    const peer = await plainServer(true);
    const max = MiB;
    const conn = await connect(peer.url as `lp+${string}`, { maxMessageSize: max });
    assert.equal(conn.state, "open");
    assert.match(conn.remoteUrl, /^lp\+tcp:\/\/127\.0\.0\.1:\d+$/);
    const { next } = collect(conn);
    const sizes = [0, 1, max, 2];
    const sent = sizes.map((n, i) => bytes(n, i));
    await Promise.all(sent.map((b) => conn.send(b)));
    const got = await next(sizes.length);
    assert.deepEqual(
      got.map((b) => b.length),
      sizes,
    );
    for (let i = 0; i < sizes.length; i++)
      assert.ok(Buffer.from(got[i]).equals(Buffer.from(sent[i])), `size ${sizes[i]}`);
    // On the wire: exactly a u32 BE length before each message, nothing else.
    const wire = Buffer.concat(peer.peers[0].raw);
    assert.ok(wire.equals(Buffer.concat(sent.map(lpFrame))));
    assert.deepEqual(conn.stats(), {
      messagesIn: 4,
      messagesOut: 4,
      bytesIn: wire.length,
      bytesOut: wire.length,
    });
    await conn.close();
    assert.equal(conn.state, "closed");
    await peer.close();
  });

  it("a message over maxMessageSize is refused before a byte is written; the connection stays usable", async () => {
    const peer = await plainServer(false);
    const conn = await connectLp(peer.url, { maxMessageSize: 1000 });
    await assert.rejects(conn.send(new Uint8Array(1001)), (e: PointSubError) => e.code === "ERR_MESSAGE_TOO_LARGE");
    await conn.send(new Uint8Array(1000));
    await conn.send("after");
    const got = await peer.peers[0].waitFor(2);
    assert.deepEqual(
      got.map((b) => b.length),
      [1000, 5],
    );
    await conn.close();
    await peer.close();
  });

  it("the peer sending maxMessageSize + 1 closes the connection with ERR_MESSAGE_TOO_LARGE", async () => {
    const peer = await plainServer(false);
    const conn = await connectLp(peer.url, { maxMessageSize: 1000 });
    const { got } = collect(conn);
    await until(() => peer.peers.length === 1);
    const closed = closeError(conn);
    peer.peers[0].send(new Uint8Array(1000));
    peer.peers[0].send(new Uint8Array(1001));
    const err = await closed;
    assert.equal(err?.code, "ERR_MESSAGE_TOO_LARGE");
    assert.deepEqual(
      got.map((b) => b.length),
      [1000],
    );
    await assert.rejects(conn.send("x"), (e: PointSubError) => e.code === "ERR_CONNECTION_CLOSED");
    await peer.close();
  });

  it("a burst of 20,000 small messages arrives complete and in order", async () => {
    const peer = await plainServer(false);
    const conn = await connectLp(peer.url);
    const n = 20_000;
    for (let i = 0; i < n; i++) {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, i);
      void conn.send(b);
      if (!conn.writable) await conn.drain();
    }
    const got = await peer.peers[0].waitFor(n);
    for (let i = 0; i < n; i++) assert.equal(got[i].readUInt32BE(0), i);
    await conn.close();
    await peer.close();
  });

  it("a 16 MiB flood over lp+tcp reuses its send slabs: a handful allocated, not one per 64 KiB", async () => {
    // A peer that only counts bytes.
    let received = 0;
    const sink = net.createServer((s) => s.on("data", (c: Buffer) => (received += c.length)));
    await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
    let slabs = 0;
    const runtime = createRuntime({
      name: "counting",
      transports: [lpTcpTransport],
      allocBody: (n) => {
        if (n >= 64 * 1024) slabs++;
        return new Uint8Array(n);
      },
    });
    const conn = await connectLp(`lp+tcp://127.0.0.1:${(sink.address() as net.AddressInfo).port}`, { runtime });
    const msg = new Uint8Array(60);
    const n = (16 * MiB) / 64;
    for (let i = 0; i < n; i++) {
      void conn.send(msg);
      if (!conn.writable) await conn.drain();
    }
    await conn.close();
    await until(() => received === n * 64);
    assert.ok(slabs <= 40, `${slabs} slabs of 64 KiB for 256 slabs' worth of messages`);
    await new Promise((r) => sink.close(r));
  });

  it("the peer ending the stream between messages is a clean close; in the middle of one, ERR_CONNECTION_CLOSED", async () => {
    const peer = await plainServer(false);
    const a = await connectLp(peer.url);
    const b = await connectLp(peer.url);
    await until(() => peer.peers.length === 2);
    const aClosed = closeError(a);
    const bClosed = closeError(b);
    // Which accepted socket is whose: the local port of a is the remote port of one peer.
    const portOf = (c: LpConnection) => Number(new URL(c.localUrl).port);
    const pa = peer.peers.find((p) => p.socket.remotePort === portOf(a));
    const pb = peer.peers.find((p) => p.socket.remotePort === portOf(b));
    assert.ok(pa && pb);
    pa.send(bytes(3));
    pa.socket.end();
    pb.socket.end(Buffer.from([0, 0, 0, 10, 1, 2]));
    assert.equal(await aClosed, undefined);
    assert.equal(a.closeReason, "peer closed");
    const eb = await bClosed;
    assert.equal(eb?.code, "ERR_CONNECTION_CLOSED");
    assert.match(eb?.message ?? "", /middle of a message/);
    await peer.close();
  });
});

describe("lp+tcp:// server against a plain node:net client", () => {
  it("messages both ways, sessions and a clean sessionClose when the client ends", async () => {
    const server = createLpServer({ maxMessageSize: MiB });
    const messages: [Uint8Array, LpConnection][] = [];
    server.on("message", (m, s) => {
      messages.push([m.data, s]);
      // Echo: the format's only answer is a message back.
      void s.send(m.data);
    });
    const sessions: LpConnection[] = [];
    server.on("session", (s) => sessions.push(s));
    const closes: [LpConnection, PointSubError | undefined][] = [];
    server.on("sessionClose", (s, e) => closes.push([s, e]));
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    assert.match(url, /^lp\+tcp:\/\/127\.0\.0\.1:\d+$/);
    const client = await plainClient(url);
    const sizes = [0, 1, MiB, 3];
    const sent = sizes.map((n, i) => bytes(n, i + 7));
    for (const b of sent) client.send(b);
    const back = await client.waitFor(sizes.length);
    for (let i = 0; i < sizes.length; i++) assert.ok(back[i].equals(Buffer.from(sent[i])), `size ${sizes[i]}`);
    assert.equal(sessions.length, 1);
    assert.equal(server.sessions.size, 1);
    assert.ok(messages.every(([, s]) => s === sessions[0]));
    client.socket.end();
    await until(() => closes.length === 1);
    assert.equal(closes[0][1], undefined);
    assert.equal(server.sessions.size, 0);
    await server.close();
  });

  it("a client sending maxMessageSize + 1 is disconnected with ERR_MESSAGE_TOO_LARGE (error, then sessionClose)", async () => {
    const server = createLpServer({ maxMessageSize: 100 });
    const errors: PointSubError[] = [];
    server.on("error", (e) => errors.push(e));
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const client = await plainClient(url);
    const ended = new Promise((r) => client.socket.once("close", r));
    client.send(new Uint8Array(101));
    await ended;
    await until(() => errors.length === 1);
    assert.equal(errors[0].code, "ERR_MESSAGE_TOO_LARGE");
    await server.close();
  });
});

describe("lp+unix://", () => {
  it("client and server over a unix socket, against plain node:net peers; stale socket files replaced", async () => {
    // Our client, their server.
    const path = join(dir, "plain.sock");
    const peer = await plainServer(true, { path });
    assert.equal(peer.url, `lp+unix://${path}`);
    const conn = await connect(`lp+unix://${path}`);
    assert.equal(conn.remoteUrl, `lp+unix://${path}`);
    const { next } = collect(conn);
    await conn.send(bytes(MiB));
    await conn.send(new Uint8Array(0));
    const got = await next(2);
    assert.ok(Buffer.from(got[0]).equals(Buffer.from(bytes(MiB))));
    assert.equal(got[1].length, 0);
    await conn.close();
    await peer.close();
    // Our server, their client; a stale socket file is replaced, a live one refused.
    const ours = join(dir, "ours.sock");
    staleSocket(ours);
    const server = createLpServer();
    server.on("message", (m, s) => void s.send(m.data.slice().reverse()));
    const [url] = await server.listen(`lp+unix://${ours}`);
    await assert.rejects(createLpServer().listen(`lp+unix://${ours}`), (e: PointSubError) => e.code === "ERR_CONNECT");
    const client = await plainClient(url);
    client.send(Buffer.from("abc"));
    assert.equal((await client.waitFor(1))[0].toString(), "cba");
    client.socket.destroy();
    await server.close();
  });
});

describe("a Python standard-library peer", () => {
  it("as the server, then as the client: 0 B, 1 B and 1 MiB messages both ways", async () => {
    const sizes = [0, 1, MiB, 5];
    const py = pythonPeer(sizes.map(String), 20_000);
    const server = createLpServer();
    try {
      // Python serves, we connect: every message comes back reversed.
      const port = (await py.lines.next()).value as string;
      const conn = await connect(`lp+tcp://127.0.0.1:${port.trim()}`);
      const { next } = collect(conn);
      const sent = sizes.map((n, i) => bytes(n, i + 3));
      for (const b of sent) void conn.send(b);
      const got = await next(sizes.length);
      for (let i = 0; i < sizes.length; i++) {
        assert.ok(Buffer.from(got[i]).equals(Buffer.from(sent[i].slice().reverse())), `size ${sizes[i]}`);
      }
      await conn.close();
      // We serve, Python connects: it checks the answers itself and says "ok".
      const seen: number[] = [];
      server.on("message", (m, s) => {
        seen.push(m.data.length);
        void s.send(m.data.slice().reverse());
      });
      const [url] = await server.listen("lp+tcp://127.0.0.1:0");
      py.child.stdin?.end(`${new URL(url).port}\n`);
      assert.equal((await py.lines.next()).value, "ok");
      assert.equal(await py.exited, 0);
      assert.deepEqual(seen, sizes);
    } finally {
      py.kill();
      await server.close();
    }
  });
});

describe("what the format cannot carry", () => {
  it("request, sendStream, handle and ping fail with ERR_INVALID_ARGUMENT saying why", async () => {
    const peer = await plainServer(false);
    const conn = await connectLp(peer.url);
    const why = (e: PointSubError) => e.code === "ERR_INVALID_ARGUMENT" && /one-way messages only/.test(e.message);
    await assert.rejects(conn.request("/echo/1.0.0", "x"), why);
    await assert.rejects(conn.ping(), why);
    assert.throws(() => conn.sendStream("/x", []), why);
    assert.throws(() => conn.handle("/x", () => undefined), why);
    await conn.close();
    await peer.close();
  });

  it("pointsub's own connect and Server.listen refuse lp+ URLs (ERR_UNSUPPORTED_URL): no preface goes to an lp peer", async () => {
    const peer = await plainServer(false);
    await assert.rejects(coreConnect(peer.url, { runtime: defaultRuntime() }), (e: PointSubError) => {
      return e.code === "ERR_UNSUPPORTED_URL" && /connectLp/.test(e.message);
    });
    const server = createServer();
    await assert.rejects(server.listen("lp+tcp://127.0.0.1:0"), (e: PointSubError) => {
      return e.code === "ERR_UNSUPPORTED_URL" && /createLpServer/.test(e.message);
    });
    await server.close();
    // Nothing reached the peer (its socket was never opened).
    assert.equal(peer.peers.length, 0);
    // And the lp mode refuses URLs that are not lp+.
    await assert.rejects(connectLp("tcp://127.0.0.1:1"), (e: PointSubError) => e.code === "ERR_UNSUPPORTED_URL");
    await assert.rejects(createLpServer().listen("tcp://127.0.0.1:0"), (e: PointSubError) => {
      return e.code === "ERR_UNSUPPORTED_URL";
    });
    await peer.close();
  });

  it("connect to a closed port fails with ERR_CONNECT", async () => {
    const peer = await plainServer(false);
    const url = peer.url;
    await peer.close();
    await assert.rejects(connectLp(url), (e: PointSubError) => e.code === "ERR_CONNECT");
  });
});

describe('connectResilient("lp+…")', () => {
  it("reconnects after the server drops it; sends made meanwhile are held and delivered once connected again", async () => {
    const server = createLpServer();
    const got: string[] = [];
    server.on("message", (m) => got.push(m.text()));
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const rc = await connectResilient(url as `lp+${string}`, { reconnect: { initialDelayMs: 20, maxDelayMs: 50 } });
    const states: string[] = [];
    rc.on("state", (to) => states.push(to));
    assert.equal(rc.state, "connected");
    await rc.send("one");
    await until(() => got.length === 1);
    // The server drops the session: the client reconnects; a send while it does is held.
    const dropped = new Promise<Promise<void>[]>((r) => rc.once("state", () => r([rc.send("two")])));
    for (const s of server.sessions) s.destroy();
    const [held] = await dropped;
    await rc.whenConnected();
    await held;
    await until(() => got.length === 2);
    assert.deepEqual(got, ["one", "two"]);
    assert.deepEqual(states, ["reconnecting", "connected"]);
    // Closed for good while the server is gone: what is held rejects.
    const gone = new Promise<Promise<void>[]>((r) => rc.once("state", () => r([rc.send("never")])));
    await server.close();
    const [refused] = await gone;
    const closed = new Promise<PointSubError | undefined>((r) => rc.once("close", r));
    await rc.close();
    assert.equal(rc.state, "closed");
    await assert.rejects(refused, (e: PointSubError) => e.code === "ERR_CONNECTION_CLOSED");
    assert.equal(await closed, undefined);
  });

  it("offline.policy fail refuses sends while disconnected; maxAttempts gives up with ERR_CONNECT", async () => {
    const server = createLpServer();
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const rc = await connectLpResilient(url, {
      reconnect: { initialDelayMs: 5, maxDelayMs: 10, maxAttempts: 3 },
      offline: { policy: "fail" },
    });
    const closed = new Promise<PointSubError | undefined>((r) => rc.once("close", r));
    // A send the moment the connection dropped (the state event is synchronous).
    const offline = new Promise<Promise<void>[]>((r) => rc.once("state", () => r([rc.send("x")])));
    await server.close();
    const [refused] = await offline;
    await assert.rejects(refused, (e: PointSubError) => e.code === "ERR_OFFLINE");
    const err = await closed;
    assert.equal(err?.code, "ERR_CONNECT");
    assert.match(err?.message ?? "", /gave up after 3 attempts/);
  });
});

/**
 * The keepalive timer of the socket with local port `local` (and remote port
 * `remote`) in /proc/net/tcp: `timer` 2 is keepalive, `when` its clock ticks
 * (1/100 s) to the next probe. Linux only.
 */
function tcpTimer(local: number, remote: number): { timer: number; when: number } | undefined {
  const hex = (p: number) => p.toString(16).toUpperCase().padStart(4, "0");
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6 || !f[1].endsWith(`:${hex(local)}`) || !f[2].endsWith(`:${hex(remote)}`)) continue;
    const [timer, when] = f[5].split(":");
    return { timer: Number.parseInt(timer, 16), when: Number.parseInt(when, 16) };
  }
  return undefined;
}

describe("keepalive", () => {
  it("lp+tcp sockets get TCP keepalive after keepAliveMs (client and server side); keepAliveMs: 0 turns it off", async () => {
    const server = createLpServer({ keepAliveMs: 5000 });
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const serverPort = Number(new URL(url).port);
    const on = await connectLp(url, { keepAliveMs: 7000 });
    const off = await connectLp(url, { keepAliveMs: 0 });
    await until(() => server.sessions.size === 2);
    const portOf = (c: LpConnection) => Number(new URL(c.localUrl).port);
    const mine = tcpTimer(portOf(on), serverPort);
    assert.equal(mine?.timer, 2, "keepalive timer armed on the client socket");
    assert.ok(mine.when > 0 && mine.when <= 700, `first probe in ${mine.when} ticks`);
    assert.equal(tcpTimer(portOf(off), serverPort)?.timer, 0);
    const theirs = tcpTimer(serverPort, portOf(off));
    assert.equal(theirs?.timer, 2, "keepalive timer armed on the accepted socket");
    assert.ok(theirs.when > 0 && theirs.when <= 500, `first probe in ${theirs.when} ticks`);
    on.destroy();
    off.destroy();
    await server.close();
  });
});

describe("heartbeat", () => {
  it("heartbeat: true sends an empty message after keepAliveMs of silence, and empty messages received are not emitted", async () => {
    const peer = await plainServer(false);
    const conn = await connectLp(peer.url, { heartbeat: true, keepAliveMs: 50 });
    const { got } = collect(conn);
    await until(() => peer.peers.length === 1);
    const beats = await peer.peers[0].waitFor(2, 3000);
    assert.ok(beats.every((b) => b.length === 0));
    peer.peers[0].send(new Uint8Array(0));
    peer.peers[0].send(Buffer.from("x"));
    await until(() => got.length === 1);
    assert.equal(Buffer.from(got[0]).toString(), "x");
    await conn.close();
    await peer.close();
  });
});
