/**
 * `SharedConnection.close()` while its connection is still opening (a server
 * that accepts and never answers the handshake): close settles at once, the
 * transfers waiting in `get()` fail with ERR_CANCELLED, and the connect
 * under way is aborted through the signal `open` is given. Before, close
 * awaited the open: a hung connect hung close for the whole connect timeout.
 * Also: a transfer waiting before its next attempt is woken by close() and
 * fails with ERR_CANCELLED at once (it waited out its backoff, up to 5 s).
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { describe, it, mock } from "node:test";
import { connect, createServer, type PointSubError, SharedConnection, sendResumable } from "../../src/index.ts";

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

  it("wakes a transfer waiting before its retry: it fails with ERR_CANCELLED at once, not after its backoff", async () => {
    // A port nothing listens on: every connect is refused (ERR_CONNECT, retryable).
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const { port } = probe.address() as net.AddressInfo;
    await new Promise((r) => probe.close(r));
    const shared = new SharedConnection((signal) => connect(`tcp://127.0.0.1:${port}`, { signal }));
    // The wait before the retry never ends by itself (setTimeout mocked, never ticked): only close() ends it.
    mock.timers.enable({ apis: ["setTimeout"] });
    let guard: ReturnType<typeof setInterval> | undefined;
    try {
      let retries = 0;
      const t = sendResumable(
        shared,
        "/files/1.0.0",
        { size: 3, transferId: "shared-close-wait", open: () => [new Uint8Array(3)] },
        {
          retries: 5,
          onRetry: () => {
            retries++;
            void shared.close();
          },
        },
      );
      // setInterval is not mocked: a real 10 s guard (the fixed path settles in microtasks).
      const timedOut = new Promise<"waited">((r) => {
        guard = setInterval(() => r("waited"), 10_000);
      });
      const outcome = await Promise.race([
        t.done.then(
          () => "done",
          (e: PointSubError) => e.code,
        ),
        timedOut,
      ]);
      assert.equal(retries, 1);
      assert.equal(outcome, "ERR_CANCELLED");
    } finally {
      clearInterval(guard);
      mock.timers.reset();
      await shared.close();
    }
  });
});

describe("SharedConnection from another copy of pointsub", () => {
  it("is taken by sendResumable (instanceof does not see it; it was refused as no Connection)", async () => {
    // A second instance of the module (another URL): its SharedConnection is another class, as with two installed copies.
    const copy = (await import(
      `../../src/client/resumable.ts?copy=${process.pid}`
    )) as typeof import("../../src/client/resumable.ts");
    assert.notEqual(copy.SharedConnection, SharedConnection);
    const server = createServer();
    server.handleStream(
      "/store/1.0.0",
      async (stream) => {
        let n = 0;
        for await (const chunk of stream) n += chunk.length;
        return String(n);
      },
      { resume: () => ({ offset: 0, crc: 0 }) },
    );
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const shared = new copy.SharedConnection(() => connect(url));
    try {
      assert.equal(SharedConnection.isSharedConnection(shared), true);
      assert.equal(SharedConnection.isSharedConnection({ get: () => {} }), false);
      const t = sendResumable(shared, "/store/1.0.0", {
        size: 5,
        transferId: "c".repeat(40),
        open: () => [new Uint8Array(5)],
      });
      assert.equal(new TextDecoder().decode(await t.done), "5");
    } finally {
      await shared.close();
      await server.close();
    }
  });
});
