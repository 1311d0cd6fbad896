/**
 * A peer that ends its side of the stream (TCP FIN, `socket.end()`,
 * `shutdown(SHUT_WR)`) while it still has bytes of ours to read. The lp mode
 * has no half-close (docs/PROTOCOL.md §8): a send after that must reject
 * with ERR_CONNECTION_CLOSED. Before, the connection stayed open and
 * writable until the socket had flushed: a send resolved while its bytes
 * were dropped (the socket's side was ended), and later ones queued until
 * ERR_SLOW_PEER; a `close()` whose queued sends were lost that way ended
 * as a clean close.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { connectLp, createLpServer, type LpConnection } from "../../src/index.ts";
import { closeOutcome, until } from "../helpers/wait.ts";

const turn = () => new Promise<void>((r) => setImmediate(r));

describe("lp: the peer ends its side while it is still owed bytes", () => {
  it("a server session's send after the peer's FIN rejects with ERR_CONNECTION_CLOSED; what resolved before arrives", async () => {
    const server = createLpServer();
    const sessions: LpConnection[] = [];
    server.on("session", (s) => sessions.push(s));
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const sock = net.connect({ host: "127.0.0.1", port: Number(new URL(url).port) });
    sock.on("error", () => {});
    sock.pause();
    try {
      await new Promise((r) => sock.once("connect", r));
      await until(() => sessions.length === 1);
      const [session] = sessions;
      const outcome = closeOutcome(session);
      // Fill the kernel's buffers, then some of the socket's own (under the 1 MiB at which sends queue).
      const chunk = new Uint8Array(64 * 1024).fill(7);
      let sent = 0;
      for (let i = 0; i < 4000 && session.owedBytes < 128 * 1024; i++) {
        await session.send(chunk);
        sent++;
        await turn();
      }
      assert.ok(session.owedBytes > 0 && session.writable, `${session.owedBytes} bytes owed`);
      sock.end();
      await until(() => !session.writable);
      await assert.rejects(session.send("after the peer's FIN"), { code: "ERR_CONNECTION_CLOSED" });
      await assert.rejects(session.send(new Uint8Array(100_000)), { code: "ERR_CONNECTION_CLOSED" });
      // Nothing more can go out: drain() waits for the connection's end (the peer reads what it holds).
      const drained = session.drain();
      let got = 0;
      sock.on("data", (c: Buffer) => {
        got += c.length;
      });
      sock.resume();
      await drained;
      assert.equal(session.state, "closed");
      await new Promise((r) => sock.once("close", r));
      await until(() => outcome.closed);
      assert.equal(outcome.error, undefined);
      assert.equal(got, sent * (4 + chunk.length));
    } finally {
      sock.destroy();
      await server.close({ timeoutMs: 200 });
    }
  });

  it("close() whose queued sends the peer's FIN made impossible reports ERR_CONNECTION_CLOSED, and they reject", async () => {
    const sockets: net.Socket[] = [];
    const peer = net.createServer((s) => {
      sockets.push(s);
      s.on("error", () => {});
      s.pause();
    });
    await new Promise<void>((r) => peer.listen(0, "127.0.0.1", r));
    try {
      const conn = await connectLp(`lp+tcp://127.0.0.1:${(peer.address() as net.AddressInfo).port}`);
      await until(() => sockets.length === 1);
      const outcome = closeOutcome(conn);
      const chunk = new Uint8Array(64 * 1024).fill(3);
      for (let i = 0; i < 2000 && conn.writable; i++) void conn.send(chunk).catch(() => {});
      const queued = [conn.send(chunk), conn.send(chunk)];
      assert.ok(conn.bufferedAmount > 0, "sends queued");
      const closing = conn.close({ timeoutMs: 60_000 });
      sockets[0].end();
      // The FIN seen: the queued sends are refused (before, they waited for the peer to read).
      await until(() => conn.bufferedAmount === 0);
      for (const p of queued) await assert.rejects(p, { code: "ERR_CONNECTION_CLOSED" });
      sockets[0].on("data", () => {});
      sockets[0].resume();
      await closing;
      await until(() => outcome.closed);
      assert.equal(outcome.error?.code, "ERR_CONNECTION_CLOSED");
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => peer.close(() => r()));
    }
  });

  it("drain() after the peer's FIN waits for the connection's end: a producer looping on state, writable and drain() yields", async () => {
    // Before, it resolved at once while the state stayed "open" and writable false until the socket
    // flushed (or slowPeerTimeoutMs): such a loop spun without yielding, holding the event loop.
    const sockets: net.Socket[] = [];
    const peer = net.createServer((s) => {
      sockets.push(s);
      s.on("error", () => {});
      s.pause();
    });
    await new Promise<void>((r) => peer.listen(0, "127.0.0.1", r));
    try {
      const conn = await connectLp(`lp+tcp://127.0.0.1:${(peer.address() as net.AddressInfo).port}`);
      await until(() => sockets.length === 1);
      const chunk = new Uint8Array(64 * 1024).fill(5);
      for (let i = 0; i < 2000 && conn.writable; i++) void conn.send(chunk).catch(() => {});
      assert.equal(conn.writable, false, "the peer reads nothing: the socket backed up");
      sockets[0].end();
      await until(() => conn.bufferedAmount === 0 && conn.state === "open");
      let rounds = 0;
      let refused = 0;
      const producer = (async () => {
        while (conn.state === "open" && rounds < 10_000) {
          rounds++;
          if (!conn.writable) await conn.drain();
          await conn.send(chunk).catch(() => refused++);
        }
      })();
      for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
      assert.ok(rounds <= 2, `the producer waits in drain() (it looped ${rounds} times)`);
      sockets[0].on("data", () => {});
      sockets[0].resume();
      await producer;
      assert.equal(conn.state, "closed");
      // (A round may have begun before the FIN arrived: its drain() woke on the FIN, its send was refused.)
      assert.ok(rounds <= 2 && refused <= rounds, `${rounds} rounds, ${refused} sends refused`);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => peer.close(() => r()));
    }
  });
});
