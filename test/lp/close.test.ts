/**
 * A length-prefix connection's graceful close (review, session 35): the
 * format has no goodbye, so `close()` ends the byte stream and waits for
 * the peer's end. When the close timeout passed first — the peer stopped
 * reading — the connection was destroyed and its `close` event said
 * nothing went wrong, though what was sent last had not arrived; and
 * `close({ timeoutMs: Infinity })` cut the wait after 1 ms (a timer over
 * 2^31 - 1 ms fires at once). Now such a close reports
 * ERR_CONNECTION_CLOSED, and an unbounded close to a healthy peer is clean.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { connectLp, createLpServer } from "../../src/index.ts";
import { closeOutcome, until } from "../helpers/wait.ts";

describe("lp: a graceful close", () => {
  it("whose bytes the peer never takes reports ERR_CONNECTION_CLOSED (not a clean close)", async () => {
    const sockets = new Set<net.Socket>();
    const server = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      s.pause(); // reads nothing, ever
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const conn = await connectLp(`lp+tcp://127.0.0.1:${port}`);
      const outcome = closeOutcome(conn);
      const chunk = new Uint8Array(64 * 1024).fill(3);
      const sends: Promise<void>[] = [];
      for (let i = 0; i < 2000 && conn.writable; i++) sends.push(conn.send(chunk));
      await Promise.all(sends);
      assert.ok(sends.length > 1, `${sends.length} sends`);
      await conn.close({ timeoutMs: 300 });
      await until(() => outcome.closed);
      assert.equal(outcome.error?.code, "ERR_CONNECTION_CLOSED");
      assert.match(outcome.error?.message ?? "", /may not have arrived|with sends queued/);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it("close({ timeoutMs: Infinity }) to a peer that reads everything is clean, and waits for it", async () => {
    const server = createLpServer();
    let got = 0;
    server.on("message", () => got++);
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    try {
      const conn = await connectLp(url);
      const outcome = closeOutcome(conn);
      const chunk = new Uint8Array(64 * 1024).fill(3);
      for (let i = 0; i < 64; i++) void conn.send(chunk);
      await conn.close({ timeoutMs: Number.POSITIVE_INFINITY });
      await until(() => outcome.closed);
      assert.equal(outcome.error, undefined);
      assert.equal(got, 64);
      assert.ok(!warnings.includes("TimeoutOverflowWarning"), warnings.join());
    } finally {
      process.off("warning", onWarning);
      await server.close();
    }
  });
});
