/**
 * `SharedConnection.close()` while its connection is still opening (a server
 * that accepts and never answers the handshake): close settles at once, the
 * transfers waiting in `get()` fail with ERR_CANCELLED, and the connect
 * under way is aborted through the signal `open` is given. Before, close
 * awaited the open: a hung connect hung close for the whole connect timeout.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { describe, it } from "node:test";
import { connect, type PointSubError, SharedConnection } from "../../src/index.ts";

describe("SharedConnection.close() during open", () => {
  it("settles before the hung connect does, rejects the waiting get() and aborts the connect", async () => {
    const sockets = new Set<net.Socket>();
    // Accepts and says nothing: the pointsub handshake never completes.
    const server = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as net.AddressInfo;
    let openSettled = false;
    let openError: unknown;
    const shared = new SharedConnection((signal?: AbortSignal) => {
      const p = connect(`tcp://127.0.0.1:${port}`, { connectTimeoutMs: 600_000, signal });
      p.then(
        () => {
          openSettled = true;
        },
        (e: unknown) => {
          openSettled = true;
          openError = e;
        },
      );
      return p;
    });
    try {
      const waiting = shared.get();
      waiting.catch(() => {});
      // Wait until the server holds the socket: the connect is under way, at its handshake.
      for (let i = 0; i < 200 && sockets.size === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(sockets.size, 1);
      await shared.close();
      await assert.rejects(waiting, (e: PointSubError) => e.code === "ERR_CANCELLED" && /closed/.test(e.message));
      await assert.rejects(shared.get(), (e: PointSubError) => e.code === "ERR_CANCELLED");
      // The connect under way was aborted, not left to its 10-minute deadline.
      for (let i = 0; i < 200 && !openSettled; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(openSettled, true);
      assert.equal((openError as PointSubError).code, "ERR_CANCELLED");
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });
});
