/**
 * A hostile libp2p peer against a pointsub/libp2p server, over real loopback QUIC and TCP
 * streams. What a peer can make the server hold is bounded: a QUIC stream keeps being read
 * while the server does not read it (libp2p-quic has no pause), so what piles up is capped
 * (the session's connection window + 1/8 + 1 MiB), then the stream is reset; a peer that
 * opens the protocol and says nothing is closed after the handshake timeout.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { Libp2p } from "@libp2p/interface";
import { multiaddr } from "@multiformats/multiaddr";
import type { PointSubError } from "../../src/index.ts";
import { connect, createLibp2pNode, createServer, PROTOCOL_ID } from "../../src/p2p/index.ts";
import { concat, handshake, msg } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

describe("pointsub/libp2p against a hostile peer", () => {
  let attacker: Libp2p;
  before(async () => {
    attacker = await createLibp2pNode();
  });
  after(async () => {
    await attacker.stop();
  });

  it("QUIC: a peer flooding a session that stopped reading is cut off at the bound, and the server serves on", async () => {
    const serverNode = await createLibp2pNode({ listen: ["/ip4/127.0.0.1/udp/0/quic-v1"] });
    // Messages wait for tokens (1 per second): past 64 held messages the session stops reading.
    const server = createServer({
      libp2p: serverNode,
      connectionWindow: MiB,
      rateLimit: { session: { messages: { perSecond: 1, burst: 1 } } },
    });
    server.handle("/echo", (req) => req.data);
    const closes: (PointSubError | undefined)[] = [];
    server.on("sessionClose", (_s, err) => closes.push(err));
    const [url] = await server.listen(serverNode.peerId.toString());
    try {
      const stream = await attacker.dialProtocol(multiaddr(url), PROTOCOL_ID);
      stream.maxReadBufferLength = 64 * MiB;
      stream.send(handshake());
      const small = Array.from({ length: 100 }, (_, i) => msg(2 * i + 1, new Uint8Array(8)));
      stream.send(concat(...small));
      await until(() => server.sessions.size === 1);
      // Then 6 MiB more, ignoring credit: the bound for a 1 MiB window is 2.125 MiB.
      const big = new Uint8Array(60 * KiB);
      let sent = 0;
      for (let id = 1001; sent < 6 * MiB && stream.status === "open"; id += 2) {
        if (!stream.send(msg(id, big))) await stream.onDrain().catch(() => {});
        sent += big.length;
      }
      await until(() => closes.length === 1, 30_000);
      assert.equal(closes[0]?.code, "ERR_CONNECTION_CLOSED");
      const limit = MiB + MiB / 8 + MiB;
      assert.match(String((closes[0]?.cause as Error | undefined)?.message), new RegExp(`exceeded limit of ${limit}`));
      // Another peer is served as before.
      const conn = await connect(url, { libp2p: attacker });
      assert.equal(new TextDecoder().decode(await conn.request("/echo", "still here")), "still here");
      await conn.close();
    } finally {
      await server.close({ timeoutMs: 500 });
      await serverNode.stop();
    }
  });

  it("TCP: sessions that only handshake and ping hold no 64 KiB write buffers (memory outside the budget)", async () => {
    // Before: every write, even a 20-byte HELLO or PING, took a 68 KiB reused buffer: ~68 KiB per
    // session on each side, outside the memory budget, for as long as the peer kept talking.
    const server = createServer();
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("/ip4/127.0.0.1/tcp/0");
    const conns: { ping(): Promise<number>; close(): Promise<void> }[] = [];
    // A real collection before each reading: garbage of the tests before is not this test's growth.
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    try {
      gc();
      const before = process.memoryUsage().arrayBuffers;
      for (let i = 0; i < 24; i++) conns.push(await connect(url, { libp2p: attacker }));
      for (const c of conns) await c.ping();
      gc();
      const grown = process.memoryUsage().arrayBuffers - before;
      // 24 sessions, both sides in this process: 3.3 MB of scratch buffers before.
      assert.ok(grown < 1.5 * MiB, `array buffers grew ${(grown / MiB).toFixed(2)} MiB for 24 sessions`);
    } finally {
      for (const c of conns) await c.close();
      await server.close();
    }
  });

  it("TCP: a server that takes the stream and says nothing fails connect with ERR_TIMEOUT (was ERR_CONNECTION_CLOSED)", async () => {
    // Before: the connection destroyed its libp2p stream with the timeout error and the stream reported
    // its close synchronously, so the connection was torn down as a plain close first.
    const silent = await createLibp2pNode({ listen: ["/ip4/127.0.0.1/tcp/0"] });
    await silent.handle(PROTOCOL_ID, () => {});
    try {
      const url = silent.getMultiaddrs()[0]?.toString() as string;
      await assert.rejects(connect(url, { libp2p: attacker, connectTimeoutMs: 800 }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_TIMEOUT");
        assert.match(e.message, /handshake/);
        return true;
      });
    } finally {
      await silent.stop();
    }
  });

  it("a dial the peer aborts (QUIC's inbound limits do) is ERR_CONNECT, not a timeout; an Event as the reason is named", async () => {
    // Before: any AbortError read as the connect timeout ("timed out after 10000 ms" after 100 ms), and an
    // Event thrown by libp2p became "[object Event]". A stand-in node: the refusal is what is tested.
    const abort = Object.assign(new Error("The operation was aborted"), { name: "AbortError" });
    const addr = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    for (const [thrown, expect] of [
      [abort, /cannot connect to .*: The operation was aborted/],
      [new Event("abort"), /cannot connect to .*: the peer ended the dial \(abort\)/],
    ] as const) {
      const node = {
        status: "started",
        peerId: "12D3KooWEU17gpATwfUKTPkPoZe5QWYyYeZZaKPCDfjf42pZP9jy",
        dial: () => Promise.reject(thrown),
        handle: () => Promise.resolve(),
        unhandle: () => Promise.resolve(),
        getMultiaddrs: () => [],
      } as unknown as Libp2p;
      await assert.rejects(connect(addr, { libp2p: node, connectTimeoutMs: 10_000 }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_CONNECT");
        assert.match(e.message, expect);
        return true;
      });
    }
  });

  it("maxConnectionsPerAddress counts a host's sessions, whatever its libp2p connections and peer ids", async () => {
    // Before: the key was the whole remote URL (port and peer id in it): every new libp2p connection
    // or generated peer id got a fresh quota (10 sessions from one host under a limit of 2).
    const server = createServer({ maxConnectionsPerAddress: 2 });
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("/ip4/127.0.0.1/tcp/0");
    const other = await createLibp2pNode();
    const conns: { close(): Promise<void> }[] = [];
    try {
      conns.push(await connect(url, { libp2p: attacker }));
      conns.push(await connect(url, { libp2p: other }));
      for (const node of [attacker, other]) {
        await assert.rejects(connect(url, { libp2p: node, connectTimeoutMs: 3000 }), (e: PointSubError) => {
          assert.match(e.code, /^ERR_(OVERLOADED|CONNECT|CONNECTION_CLOSED)$/);
          return true;
        });
      }
      assert.equal(server.sessions.size, 2);
    } finally {
      for (const c of conns) await c.close();
      await server.close();
      await other.stop();
    }
  });

  it("TCP: a peer that opens /pointsub/1 and says nothing is closed after handshakeTimeoutMs", async () => {
    const server = createServer({ handshakeTimeoutMs: 300 });
    const [url] = await server.listen("/ip4/127.0.0.1/tcp/0");
    try {
      const stream = await attacker.dialProtocol(multiaddr(url), PROTOCOL_ID);
      const closed = new Promise<void>((resolve) => stream.addEventListener("close", () => resolve(), { once: true }));
      await closed;
      assert.equal(server.sessions.size, 0);
    } finally {
      await server.close();
    }
  });
});
