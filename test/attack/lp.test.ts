/**
 * Hostile length-prefix peers over real sockets: one declaring 4 GiB, one
 * that never reads while we send, ones that trickle bytes or stop in the
 * middle of a message, and many together against the server's budget.
 * Whatever they do, what this side holds stays bounded and every send
 * settles.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connectLp, createLpServer, type LpConnection, type PointSubError } from "../../src/index.ts";
import { lpFrame, plainClient, plainServer } from "../helpers/lp-peer.ts";
import { sleep, until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

async function lpServer(options = {}) {
  const server = createLpServer(options);
  const sessions: LpConnection[] = [];
  const closes: (PointSubError | undefined)[] = [];
  const got: Uint8Array[] = [];
  server.on("session", (s) => sessions.push(s));
  server.on("sessionClose", (_s, e) => closes.push(e));
  server.on("message", (m) => got.push(m.data));
  const [url] = await server.listen("lp+tcp://127.0.0.1:0");
  return { server, url, sessions, closes, got };
}

describe("attack: length-prefix peers", () => {
  it("a peer declaring 4 GiB is disconnected with ERR_MESSAGE_TOO_LARGE before anything is held (server and client)", async () => {
    const { server, url, closes } = await lpServer();
    const peer = await plainClient(url);
    const gone = new Promise((r) => peer.socket.once("close", r));
    peer.socket.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    await gone;
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_MESSAGE_TOO_LARGE");
    assert.equal(server.memory.peak, 0);
    await server.close();
    // Our client, a hostile server.
    const evil = await plainServer(false);
    const conn = await connectLp(evil.url);
    const closed = new Promise<PointSubError | undefined>((r) => conn.once("close", r));
    await until(() => evil.peers.length === 1);
    evil.peers[0].socket.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    assert.equal((await closed)?.code, "ERR_MESSAGE_TOO_LARGE");
    await evil.close();
  });

  it("even with maxMessageSize at the format's 4 GiB − 1, a peer declaring it holds only what it sent (64 KiB)", async () => {
    const { server, url, sessions } = await lpServer({ maxMessageSize: 0xffff_ffff });
    const peer = await plainClient(url);
    peer.socket.write(Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff]), Buffer.alloc(1000)]));
    await until(() => server.memory.used > 0);
    assert.equal(server.memory.used, 64 * KiB);
    assert.equal(sessions[0].stats().bytesIn, 1004);
    peer.socket.destroy();
    await until(() => server.memory.used === 0);
    await server.close();
  });

  it("a peer that never reads: sends queue (bufferedAmount), then ERR_SLOW_PEER closes it and every queued send rejects", async () => {
    const { server, url, sessions, closes } = await lpServer({ slowPeerTimeoutMs: 300 });
    const peer = await plainClient(url);
    peer.socket.pause(); // reads nothing
    await until(() => sessions.length === 1);
    const s = sessions[0];
    const chunk = new Uint8Array(256 * KiB);
    // Fill the socket and the kernel's buffers until the transport asks to wait.
    let written = 0;
    while (s.writable && written < 256 * MiB) {
      void s.send(chunk);
      written += chunk.length;
      await sleep(0);
    }
    assert.equal(s.writable, false, "the transport never pushed back");
    const queued = Array.from({ length: 8 }, () => s.send(chunk));
    assert.equal(s.bufferedAmount, 8 * chunk.length);
    const outcomes = await Promise.allSettled(queued);
    assert.ok(outcomes.every((o) => o.status === "rejected" && (o.reason as PointSubError).code === "ERR_SLOW_PEER"));
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_SLOW_PEER");
    assert.equal(s.bufferedAmount, 0);
    peer.socket.destroy();
    await server.close();
  });

  it("close() with sends queued to a peer that never reads: new sends ERR_GOING_AWAY, queued ones reject after closeTimeoutMs", async () => {
    const evil = await plainServer(false);
    const conn = await connectLp(evil.url, { slowPeerTimeoutMs: 0, closeTimeoutMs: 200 });
    await until(() => evil.peers.length === 1);
    evil.peers[0].socket.pause();
    const chunk = new Uint8Array(256 * KiB);
    let n = 0;
    while (conn.writable && n++ < 1024) {
      void conn.send(chunk);
      await sleep(0);
    }
    const queued = [conn.send(chunk), conn.send("x")];
    const closing = conn.close(); // waits closeTimeoutMs for the queue to move
    await assert.rejects(conn.send("late"), (e: PointSubError) => e.code === "ERR_GOING_AWAY");
    await closing;
    assert.equal(conn.state, "closed");
    const outcomes = await Promise.allSettled(queued);
    assert.ok(
      outcomes.every((o) => o.status === "rejected" && (o.reason as PointSubError).code === "ERR_CONNECTION_CLOSED"),
    );
    await evil.close();
  });

  it("1-byte trickles: a message whose length and body come a byte at a time arrives whole", async () => {
    const { server, url, got } = await lpServer();
    const peer = await plainClient(url);
    peer.socket.setNoDelay(true);
    const body = Buffer.alloc(3000, 7);
    const wire = lpFrame(body);
    for (let i = 0; i < wire.length; i++) {
      peer.socket.write(wire.subarray(i, i + 1));
      if (i % 500 === 0) await sleep(1);
    }
    await until(() => got.length === 1);
    assert.ok(Buffer.from(got[0]).equals(body));
    assert.equal(server.memory.used, 0);
    peer.socket.destroy();
    await server.close();
  });

  it("a peer that stops in the middle of a message is closed with ERR_TIMEOUT after progressTimeoutMs; its bytes are released", async () => {
    const { server, url, closes } = await lpServer({ progressTimeoutMs: 200 });
    const peer = await plainClient(url);
    const gone = new Promise((r) => peer.socket.once("close", r));
    peer.socket.write(Buffer.concat([Buffer.from([0, 0x10, 0, 0]), Buffer.alloc(100)])); // 1 MiB declared, 100 B sent
    await until(() => server.memory.used > 0);
    await gone;
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_TIMEOUT");
    assert.equal(server.memory.used, 0);
    await server.close();
  });

  it("many peers with unfinished messages: the server's memoryBudget holds, the peer over it gets ERR_OVERLOADED", async () => {
    const { server, url, closes } = await lpServer({ memoryBudget: 200 * KiB });
    const peers = await Promise.all(Array.from({ length: 4 }, () => plainClient(url)));
    // Each declares 1 MiB and sends 64 KiB + 1 byte: its buffer must grow to 128 KiB.
    for (const p of peers) p.socket.write(Buffer.concat([Buffer.from([0, 0x10, 0, 0]), Buffer.alloc(64 * KiB + 1)]));
    await until(() => closes.length >= 2);
    assert.ok(closes.every((e) => e?.code === "ERR_OVERLOADED"));
    assert.ok(server.memory.peak <= 200 * KiB, `peak ${server.memory.peak}`);
    for (const p of peers) p.socket.destroy();
    await until(() => server.memory.used === 0);
    await server.close();
  });

  it("a connection flood against maxConnections: the ones over it are closed at once and reported as reject", async () => {
    const { server, url, sessions } = await lpServer({ maxConnections: 3 });
    const rejects: PointSubError[] = [];
    server.on("reject", (e) => rejects.push(e));
    const peers = await Promise.all(Array.from({ length: 8 }, () => plainClient(url)));
    await until(() => rejects.length === 5);
    assert.equal(sessions.length, 3);
    assert.equal(server.sessions.size, 3);
    assert.ok(rejects.every((e) => e.code === "ERR_OVERLOADED"));
    for (const p of peers) p.socket.destroy();
    await until(() => server.sessions.size === 0);
    await server.close();
  });
});
