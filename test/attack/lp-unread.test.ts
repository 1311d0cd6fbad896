/**
 * Length-prefix peers that send and do not read what the application sends
 * back (the README's echo server, over real loopback sockets): once more
 * than `maxOwedBytes` is owed to such a peer the connection closes with
 * ERR_SLOW_PEER and every queued send rejects with it (before, an echo
 * server flooded by a non-reader grew by ~160 MiB/s). Reading is never
 * paused for it: an honest client that bursts more than it reads back, or
 * two peers that each send the other more than they read at first, go on
 * (a first version that stopped reading past the bound deadlocked both).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { connectLp, createLpServer, type LpConnection, type PointSubError } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** `count` messages of `size` bytes, length-prefixed, in one buffer. */
function burst(count: number, size = 64): Buffer {
  const one = Buffer.alloc(4 + size, 0x61);
  one.writeUInt32BE(size, 0);
  return Buffer.concat(Array.from({ length: count }, () => one));
}

/** An LpServer that echoes every message (the README's), tracking the most any session owed its peer. */
async function echoServer(options: object) {
  const server = createLpServer(options);
  const sessions: LpConnection[] = [];
  const closes: (PointSubError | undefined)[] = [];
  const failedSends: string[] = [];
  const state = { peakOwed: 0 };
  server.on("session", (s) => sessions.push(s));
  server.on("sessionClose", (_s, e) => closes.push(e));
  server.on("message", (m, s) => {
    s.send(m.data).catch((e: PointSubError) => failedSends.push(e.code));
    if (s.owedBytes > state.peakOwed) state.peakOwed = s.owedBytes;
  });
  const [url] = await server.listen("lp+tcp://127.0.0.1:0");
  return { server, url, sessions, closes, failedSends, state };
}

async function rawClient(url: string): Promise<net.Socket> {
  const u = new URL(url);
  const sock = net.connect({ host: u.hostname, port: Number(u.port) });
  sock.on("error", () => {});
  await new Promise((r) => sock.once("connect", r));
  return sock;
}

describe("attack: a length-prefix peer that does not read what it is sent back", () => {
  it("an echo LpServer closes a client that floods and never reads once maxOwedBytes is owed: ERR_SLOW_PEER, queued sends reject", async () => {
    const BOUND = 1 * MiB;
    const { server, url, closes, failedSends, state } = await echoServer({ maxOwedBytes: BOUND });
    const sock = await rawClient(url);
    sock.pause(); // never reads
    try {
      // 32 MiB of 64-byte messages (more than loopback's socket buffers): every one is echoed.
      for (let i = 0; i < 16; i++) sock.write(burst(30_000));
      await until(() => closes.length === 1, 20_000);
      assert.equal(closes[0]?.code, "ERR_SLOW_PEER");
      assert.match(closes[0]?.message ?? "", /maxOwedBytes 1048576/);
      // What was owed when it closed: the bound plus what one send added.
      assert.ok(state.peakOwed <= BOUND + 4 * KiB, `owed ${state.peakOwed} bytes (maxOwedBytes ${BOUND})`);
      await until(() => failedSends.length > 0, 5000);
      assert.ok(
        failedSends.every((c) => c === "ERR_SLOW_PEER"),
        failedSends.slice(0, 3).join(),
      );
    } finally {
      sock.destroy();
      await server.close();
    }
  });

  it("a flood of empty messages, echoed and never read, is bounded too (each queued send counts its bookkeeping)", async () => {
    const { server, url, closes } = await echoServer({ maxOwedBytes: 1 * MiB });
    const sock = await rawClient(url);
    sock.pause();
    try {
      for (let i = 0; i < 16; i++) sock.write(Buffer.alloc(4 * 250_000)); // 4 M empty messages
      await until(() => closes.length === 1, 20_000);
      assert.equal(closes[0]?.code, "ERR_SLOW_PEER");
    } finally {
      sock.destroy();
      await server.close();
    }
  });

  it("the lp client (connectLp) echoing a server that floods and never reads is bounded the same way", async () => {
    const flooders = new Set<net.Socket>();
    const srv = net.createServer((sock) => {
      flooders.add(sock);
      sock.pause(); // never reads the client's echoes
      sock.on("error", () => {});
      for (let i = 0; i < 16; i++) sock.write(burst(30_000));
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
    const { port } = srv.address() as net.AddressInfo;
    const conn = await connectLp(`lp+tcp://127.0.0.1:${port}`, { maxOwedBytes: 1 * MiB });
    const closed = new Promise<PointSubError | undefined>((r) => conn.once("close", r));
    conn.on("message", (m) => {
      conn.send(m.data).catch(() => {});
    });
    try {
      const err = await closed;
      assert.equal(err?.code, "ERR_SLOW_PEER");
    } finally {
      conn.destroy();
      for (const s of flooders) s.destroy();
      await new Promise((r) => srv.close(r));
    }
  });

  it("honest peers that send more than they read at first go on: a client bursting 32 MiB at the echo server without awaiting drain gets every echo", async () => {
    // With reading paused past the bound, both sides stopped reading each other: no echo arrived.
    const { server, url, closes } = await echoServer({});
    const client = await connectLp(url);
    let echoed = 0;
    client.on("message", (m) => {
      echoed += m.data.length;
    });
    try {
      const chunk = new Uint8Array(64 * KiB).fill(7);
      const sends: Promise<void>[] = [];
      for (let i = 0; i < 512; i++) sends.push(client.send(chunk));
      await Promise.all(sends);
      await until(() => echoed === 512 * 64 * KiB, 30_000);
      assert.deepEqual(closes, []);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("two peers that each send the other 16 MiB before reading both finish", async () => {
    const server = createLpServer();
    let serverGot = 0;
    const sessionDone = new Promise<void>((resolve) => {
      server.on("session", (s) => {
        const sends: Promise<void>[] = [];
        for (let i = 0; i < 256; i++) sends.push(s.send(new Uint8Array(64 * KiB)));
        void Promise.all(sends).then(() => resolve());
      });
    });
    server.on("message", (m) => {
      serverGot += m.data.length;
    });
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const client = await connectLp(url);
    let clientGot = 0;
    client.on("message", (m) => {
      clientGot += m.data.length;
    });
    try {
      const sends: Promise<void>[] = [];
      for (let i = 0; i < 256; i++) sends.push(client.send(new Uint8Array(64 * KiB)));
      await Promise.all([...sends, sessionDone]);
      await until(() => serverGot === 16 * MiB && clientGot === 16 * MiB, 30_000);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("an honest client that pipelines requests and reads at full speed is not cut while the server answers a burst (100 MiB, under the default bound)", async () => {
    // The handlers all waited for one drain and queued 1 MiB each in the same turn: 80 MiB owed to a
    // client that read everything, cut at the first version's 64 MiB as a peer that "does not take what it is sent".
    const server = createLpServer();
    const closes: (PointSubError | undefined)[] = [];
    server.on("sessionClose", (_s, e) => closes.push(e));
    const answer = new Uint8Array(MiB).fill(3);
    server.on("message", async (_m, s) => {
      if (!s.writable) await s.drain();
      s.send(answer).catch(() => {});
    });
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const client = await connectLp(url);
    let got = 0;
    client.on("message", (m) => {
      got += m.data.length;
    });
    try {
      for (let i = 0; i < 100; i++) void client.send("x");
      await until(() => got === 100 * MiB || closes.length > 0, 30_000);
      assert.deepEqual(closes, []);
      assert.equal(got, 100 * MiB);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("a queued echo of a message that arrived in a large read holds its own bytes, not the read's buffer; a large part of the sender's own buffer is not copied", async () => {
    // 16,380-byte messages each in its own read: an echo was a view of a 64 KiB read buffer, so what was
    // held was ~4× what was counted owed.
    const { server, url, sessions } = await echoServer({});
    const sock = await rawClient(url);
    sock.pause();
    try {
      for (let i = 0; i < 2000 && (sessions[0]?.bufferedAmount ?? 0) < 4 * MiB; i++) {
        sock.write(burst(1, 16_380));
        await new Promise((r) => setImmediate(r));
      }
      await until(() => (sessions[0]?.bufferedAmount ?? 0) > 0, 5000);
      // Every queued echo's memory is its own length (read from the writer's queue: internal).
      const writer = (sessions[0] as unknown as { writer: { queue: { data: Uint8Array }[]; queueHead: number } })
        .writer;
      const views = writer.queue.slice(writer.queueHead).map((q) => q.data);
      assert.ok(views.length > 0);
      assert.ok(
        views.every((v) => v.buffer.byteLength === v.byteLength),
        `${views.filter((v) => v.buffer.byteLength !== v.byteLength).length} of ${views.length} queued sends keep a larger buffer`,
      );
      // 1 MiB parts of the sender's own 8 MiB buffer, queued: not copied (the sender keeps the buffer anyway).
      const own = new Uint8Array(8 * MiB);
      const s = sessions[0] as LpConnection;
      for (let i = 0; i < 8; i++) s.send(own.subarray(i * MiB, (i + 1) * MiB)).catch(() => {});
      const tail = writer.queue
        .slice(writer.queueHead)
        .map((q) => q.data)
        .slice(-8);
      assert.ok(tail.every((v) => v.buffer === own.buffer));
    } finally {
      sock.destroy();
      await server.close();
    }
  });
});
