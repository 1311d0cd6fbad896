/**
 * Length-prefix peers that send and do not read what the application sends
 * back (the README's echo server, over real loopback sockets): this side
 * stops reading such a peer once more than `slowPeerBytes` is owed to it,
 * so TCP slows the peer instead of this side's memory growing; it reads on
 * as the peer reads, and every send settles. A peer that reads a trickle
 * holds no more, and one that takes less than 256 KiB per slowPeerTimeoutMs
 * is closed with ERR_SLOW_PEER although it takes a little.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { connectLp, createLpServer, type LpConnection, type PointSubError } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** `count` 64-byte messages, length-prefixed, in one buffer (the attacker's burst). */
function burst(count: number): Buffer {
  const one = Buffer.alloc(4 + 64, 0x61);
  one.writeUInt32BE(64, 0);
  return Buffer.concat(Array.from({ length: count }, () => one));
}

/** Resolves once `value()` stops changing for 5 polls 100 ms apart (or reaches `target`): how far the reader got. */
async function settled(value: () => number, target: number): Promise<number> {
  let last = -1;
  let same = 0;
  for (let i = 0; i < 300 && same < 5; i++) {
    const v = value();
    if (v >= target) return v;
    same = v === last ? same + 1 : 0;
    last = v;
    await sleep(100);
  }
  return value();
}

/** An LpServer that echoes every message (the README's), tracking the most any session owed its peer, and queued. */
async function echoServer(options: object) {
  const server = createLpServer(options);
  const sessions: LpConnection[] = [];
  const closes: (PointSubError | undefined)[] = [];
  const state = { peakOwed: 0, peakQueued: 0 };
  server.on("session", (s) => sessions.push(s));
  server.on("sessionClose", (_s, e) => closes.push(e));
  server.on("message", (m, s) => {
    void s.send(m.data);
    const owed = s.owedBytes;
    if (owed > state.peakOwed) state.peakOwed = owed;
    if (s.bufferedAmount > state.peakQueued) state.peakQueued = s.bufferedAmount;
  });
  const [url] = await server.listen("lp+tcp://127.0.0.1:0");
  return { server, url, sessions, closes, state };
}

async function rawClient(url: string): Promise<net.Socket> {
  const u = new URL(url);
  const sock = net.connect({ host: u.hostname, port: Number(u.port) });
  sock.on("error", () => {});
  await new Promise((r) => sock.once("connect", r));
  return sock;
}

/**
 * What one read's messages may add past the bound before reading stops: a
 * 64 KiB read holds ~960 68-byte frames, echoed and queued at 64 + 512
 * bytes each (owedBytes counts a queued send's bookkeeping).
 */
const SLACK = 1 * MiB;

describe("attack: a length-prefix peer that does not read what it is sent back", () => {
  it("an echo LpServer stops reading a client that floods and never reads once slowPeerBytes is owed; it reads on as the client reads, every echo arrives", async () => {
    const BOUND = 1 * MiB;
    const { server, url, sessions, closes, state } = await echoServer({ slowPeerBytes: BOUND });
    const sock = await rawClient(url);
    sock.pause(); // reads nothing
    const b = burst(4096); // 272 KiB
    const total = 128 * b.length; // 34 MiB, 524,288 messages
    for (let i = 0; i < 128; i++) sock.write(b);
    await until(() => sessions.length === 1);
    const s = sessions[0];
    const read = await settled(() => s.stats().bytesIn, total);
    // (What it read and echoed sits in the kernel's buffers, a few MiB on loopback, and 1 MiB in its socket's.)
    assert.ok(read < total / 4, `the server read ${read} of ${total} bytes from a client that read nothing`);
    assert.ok(state.peakQueued <= BOUND + SLACK, `queued ${state.peakQueued} bytes`);
    assert.ok(state.peakOwed <= BOUND + SLACK, `owed ${state.peakOwed} bytes (slowPeerBytes ${BOUND})`);
    assert.equal(s.readingPaused, true);
    assert.ok(sock.writableLength > total / 2, "the client's writes stall (TCP)");
    assert.equal(closes.length, 0);
    // The client reads: the server reads on, every echo arrives, what it owed stayed bounded throughout.
    let got = 0;
    sock.on("data", (c: Buffer) => {
      got += c.length;
    });
    sock.resume();
    await until(() => got === total, 60_000);
    assert.equal(s.stats().messagesIn, total / 68);
    assert.equal(s.stats().messagesOut, total / 68);
    assert.ok(state.peakOwed <= BOUND + SLACK, `owed ${state.peakOwed} bytes (slowPeerBytes ${BOUND})`);
    assert.equal(closes.length, 0);
    sock.destroy();
    await server.close({ timeoutMs: 100 });
  });

  it("a flood of empty messages, echoed and never read, is bounded as well (each queued send counts its bookkeeping)", async () => {
    const BOUND = 1 * MiB;
    const { server, url, sessions, closes, state } = await echoServer({ slowPeerBytes: BOUND });
    const sock = await rawClient(url);
    sock.pause();
    const empties = Buffer.alloc(4 * 65536); // 65,536 empty messages: four zero bytes each
    const total = 128 * empties.length; // 32 MiB, 8,388,608 messages
    for (let i = 0; i < 128; i++) sock.write(empties);
    await until(() => sessions.length === 1);
    const s = sessions[0];
    const read = await settled(() => s.stats().bytesIn, total);
    // (What it read and echoed sits in the kernel's buffers, a few MiB on loopback, and 1 MiB in its socket's.)
    assert.ok(read < total / 4, `the server read ${read} of ${total} bytes from a client that read nothing`);
    assert.equal(s.bufferedAmount, 0, "empty messages queue no bytes");
    // A 64 KiB read holds 16,384 empty messages: 8 MiB of bookkeeping past the bound at most.
    assert.ok(state.peakOwed <= BOUND + 8 * MiB + SLACK, `owed ${state.peakOwed} bytes`);
    assert.equal(s.readingPaused, true);
    assert.equal(closes.length, 0);
    sock.destroy();
    await server.close({ timeoutMs: 100 });
  });

  it("the lp client (connectLp) echoing a server that floods and never reads stops reading it the same way", async () => {
    const BOUND = 1 * MiB;
    const b = burst(4096);
    const total = 128 * b.length;
    let peer: net.Socket | undefined;
    const evil = net.createServer((sock) => {
      peer = sock;
      sock.on("error", () => {});
      sock.pause(); // reads nothing
      for (let i = 0; i < 128; i++) sock.write(b);
    });
    await new Promise<void>((r) => evil.listen(0, "127.0.0.1", r));
    const port = (evil.address() as net.AddressInfo).port;
    const conn = await connectLp(`lp+tcp://127.0.0.1:${port}`, { slowPeerBytes: BOUND });
    let peakOwed = 0;
    let peakQueued = 0;
    let closed: PointSubError | undefined | "open" = "open";
    conn.on("close", (e) => {
      closed = e;
    });
    conn.on("message", (m) => {
      void conn.send(m.data);
      if (conn.owedBytes > peakOwed) peakOwed = conn.owedBytes;
      if (conn.bufferedAmount > peakQueued) peakQueued = conn.bufferedAmount;
    });
    await until(() => peer !== undefined);
    const p = peer as net.Socket;
    const read = await settled(() => conn.stats().bytesIn, total);
    assert.ok(read < total / 4, `the client read ${read} of ${total} bytes from a server that read nothing`);
    assert.ok(peakQueued <= BOUND + SLACK, `queued ${peakQueued} bytes`);
    assert.ok(peakOwed <= BOUND + SLACK, `owed ${peakOwed} bytes (slowPeerBytes ${BOUND})`);
    assert.equal(conn.readingPaused, true);
    assert.ok(p.writableLength > total / 2, "the server's writes stall (TCP)");
    let got = 0;
    p.on("data", (c: Buffer) => {
      got += c.length;
    });
    p.resume();
    await until(() => got === total, 60_000);
    assert.equal(conn.stats().messagesOut, total / 68);
    assert.ok(peakOwed <= BOUND + SLACK, `owed ${peakOwed} bytes (slowPeerBytes ${BOUND})`);
    assert.equal(closed, "open");
    conn.destroy();
    p.destroy();
    await new Promise((r) => evil.close(r));
  });

  it("a client flooding while it reads a trickle (20 ms in every 400) holds no more than slowPeerBytes on the server", async () => {
    const BOUND = 512 * KiB;
    const { server, url, sessions, closes, state } = await echoServer({
      slowPeerBytes: BOUND,
      slowPeerTimeoutMs: 1000,
    });
    const sock = await rawClient(url);
    let readBytes = 0;
    sock.on("data", (c: Buffer) => {
      readBytes += c.length;
    });
    sock.pause();
    const b = burst(4096);
    let sent = 0;
    // ~13 MB/s, unread answers or not (up to 40 MiB).
    const flood = setInterval(() => {
      if (sent < 40 * MiB) {
        sock.write(b);
        sent += b.length;
      }
    }, 20);
    const trickle = setInterval(() => {
      sock.resume();
      setTimeout(() => sock.pause(), 20);
    }, 400);
    try {
      await until(() => sessions.length === 1);
      const s = sessions[0];
      // Eight trickles.
      for (let i = 0; i < 16; i++) {
        await sleep(200);
        // What the server read and did not send back sits in its queue and its socket (and the kernel's buffers).
        assert.ok(s.bufferedAmount <= BOUND + SLACK, `queued ${s.bufferedAmount} bytes`);
        state.peakOwed = Math.max(state.peakOwed, s.owedBytes);
      }
    } finally {
      clearInterval(flood);
      clearInterval(trickle);
    }
    assert.ok(state.peakQueued <= BOUND + SLACK, `queued ${state.peakQueued} bytes at most`);
    assert.ok(state.peakOwed <= BOUND + SLACK, `owed ${state.peakOwed} bytes at most (slowPeerBytes ${BOUND})`);
    assert.ok(readBytes > 0, "the client read its trickles");
    assert.equal(closes.length, 0, "a client reading some of every slowPeerTimeoutMs stays");
    sock.destroy();
    await until(() => closes.length === 1);
    await server.close({ timeoutMs: 100 });
  });

  it("a client that takes less than 256 KiB of its echoes per slowPeerTimeoutMs, a little at a time, is closed with ERR_SLOW_PEER", async () => {
    const { server, url, sessions, closes } = await echoServer({ slowPeerBytes: 256 * KiB, slowPeerTimeoutMs: 500 });
    const sock = await rawClient(url);
    sock.pause();
    const b = burst(4096);
    for (let i = 0; i < 32; i++) sock.write(b); // 8.5 MiB: the server backs up
    await until(() => sessions.length === 1);
    const s = sessions[0];
    await until(() => s.readingPaused || closes.length > 0);
    const sendsBefore = s.stats().messagesOut;
    // 2 KiB every 50 ms: 20 KiB per slowPeerTimeoutMs (Node's socket reads ahead of it 64 KiB at a time):
    // the socket takes some now and then, which does not restart the period.
    let taken = 0;
    let periods = 0;
    while (closes.length === 0 && periods++ < 60) {
      const c = sock.read(2 * KiB) as Buffer | null;
      if (c !== null) taken += c.length;
      await sleep(50);
    }
    assert.equal(closes.length, 1, `still open after ${periods} reads (${taken} bytes taken)`);
    assert.equal(closes[0]?.code, "ERR_SLOW_PEER");
    assert.ok(s.stats().messagesOut >= sendsBefore);
    assert.equal(s.bufferedAmount, 0, "every queued send settled (rejected)");
    sock.destroy();
    await server.close({ timeoutMs: 100 });
  });
});
