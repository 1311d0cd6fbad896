/**
 * A graceful close whose last bytes a peer never takes (hostile-server
 * review, session 35): a server that stops reading after its HELLO. The
 * client's sends resolved (handed to the transport), its close gave up
 * waiting for the peer's GOAWAY, ended the transport and, when the close
 * timeout passed with the bytes still unsent and the peer's side still
 * open, destroyed the connection — and its `close` event said nothing
 * went wrong. Now that close reports ERR_CONNECTION_CLOSED: what was sent
 * last may not have arrived.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { handshake } from "../helpers/raw-peer.ts";
import { closeOutcome, until } from "../helpers/wait.ts";

describe("a graceful close whose bytes the peer never takes", () => {
  it("reports ERR_CONNECTION_CLOSED on its close event (not a clean close)", async () => {
    const sockets = new Set<net.Socket>();
    const server = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      s.write(handshake());
      // Reads nothing, ever: what the client sends backs up in the kernel and in its socket.
      s.pause();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const conn = await connect(`tcp://127.0.0.1:${port}`, { closeTimeoutMs: 400, keepAliveMs: 0 });
      const outcome = closeOutcome(conn);
      const chunk = new Uint8Array(64 * 1024).fill(3);
      // Sends until the transport pushes back: each is handed to it (resolves), none waits in pointsub's queue.
      const sends: Promise<void>[] = [];
      for (let i = 0; i < 2000 && conn.writable; i++) sends.push(conn.send(chunk));
      await Promise.all(sends);
      assert.equal(conn.bufferedAmount, 0, "nothing waits in pointsub's queue");
      assert.ok(sends.length > 1, `${sends.length} sends`);
      await conn.close();
      await until(() => outcome.closed);
      assert.equal(outcome.error?.code, "ERR_CONNECTION_CLOSED");
      assert.match(outcome.error?.message ?? "", /may not have arrived/);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it("close({ timeoutMs: Infinity }) to a peer that takes everything: a clean close, no timer overflow", async () => {
    // Before: the wait for the peer's side was setTimeout(Infinity), which Node fires after 1 ms
    // (TimeoutOverflowWarning): a healthy peer's close was reported with ERR_CONNECTION_CLOSED ("closed
    // after Infinity ms"); before that error was added, the same 1 ms timer cut the close, reporting none.
    const server = createServer();
    let got = 0;
    server.on("session", (s) => s.on("message", () => got++));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const overflows: Error[] = [];
    const onWarning = (w: Error) => {
      if (w.name === "TimeoutOverflowWarning") overflows.push(w);
    };
    process.on("warning", onWarning);
    try {
      const conn = await connect(url);
      const outcome = closeOutcome(conn);
      const chunk = new Uint8Array(256 * 1024).fill(5);
      for (let i = 0; i < 64; i++) void conn.send(chunk);
      await conn.close({ timeoutMs: Number.POSITIVE_INFINITY });
      await until(() => outcome.closed);
      assert.equal(outcome.error, undefined, outcome.error?.message);
      await until(() => got === 64);
      // Warnings are emitted on the next tick.
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(overflows, []);
    } finally {
      process.off("warning", onWarning);
      await server.close();
    }
  });

  it("a peer that takes everything and closes: a clean close, as before", async () => {
    const server = createServer();
    let got = 0;
    server.on("session", (s) => s.on("message", () => got++));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const conn = await connect(url, { closeTimeoutMs: 2000 });
      const outcome = closeOutcome(conn);
      const chunk = new Uint8Array(64 * 1024).fill(3);
      for (let i = 0; i < 64; i++) void conn.send(chunk);
      await conn.close();
      await until(() => outcome.closed);
      assert.equal(outcome.error, undefined);
      await until(() => got === 64);
    } finally {
      await server.close();
    }
  });
});
