/**
 * Keyed handlers whose connection ended run on for a bounded time (review,
 * session 29): a handler honouring ctx.signal was aborted by a drop and its
 * retry ran it again; keeping them all running let a client that keeps
 * disconnecting pile up thousands, and held a closing server's process.
 * Now they run on for the middleware's waitMs, at most 1024 per server, and
 * the server's close aborts them.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { orphanCount } from "../../src/connection/orphans.ts";
import { connect, createServer, idempotency } from "../../src/index.ts";
import { concat, connectPeer, F, frame, routeBytes, T, utf8 } from "../helpers/attacker.ts";
import { sleep, until } from "../helpers/wait.ts";

/**
 * A server whose /job handler waits `ms` or until its signal aborts; counts how each ended. `waitMs`: the
 * middleware's, long enough that a check made just after a drop still sees the keyed handlers running
 * under CPU load (400 ms was: a late timer or a slow poll saw them aborted already).
 */
async function jobServer(ms: number, options: Parameters<typeof createServer>[0] = {}, waitMs = 2_000) {
  const counts = { running: 0, aborted: 0, finished: 0 };
  const server = createServer(options);
  server.use(idempotency({ waitMs }));
  server.handle("/job", async (_req, ctx) => {
    counts.running++;
    try {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(resolve, ms);
        ctx.signal.addEventListener("abort", () => {
          clearTimeout(t);
          reject(ctx.signal.reason);
        });
      });
      counts.finished++;
      return "done";
    } catch (err) {
      counts.aborted++;
      throw err;
    } finally {
      counts.running--;
    }
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  return { server, url, counts };
}

describe("idempotency: handlers that outlive their connection", () => {
  it("run on for waitMs after a drop, then are aborted; unkeyed ones are aborted at once", async () => {
    const { server, url, counts } = await jobServer(60_000);
    try {
      const conn = await connect(url);
      const calls = [
        conn.request("/job", "a", { idempotencyKey: "k1" }),
        conn.request("/job", "b", { idempotencyKey: "k2" }),
        conn.request("/job", "c"),
      ];
      for (const c of calls) c.catch(() => {});
      await until(() => counts.running === 3);
      conn.destroy();
      await until(() => counts.aborted === 1); // the unkeyed one
      await sleep(200);
      assert.equal(counts.running, 2, "the keyed ones run on");
      await until(() => counts.running === 0, 15_000); // waitMs (2 s) after the drop
      assert.equal(counts.aborted, 3);
    } finally {
      await server.close();
    }
  });

  it("at most 1024 per server run on; the server's close aborts them at once", async () => {
    // waitMs 60 s, as long as the handlers: only the server's close can end those that run on in this test.
    const { server, url, counts } = await jobServer(60_000, { maxConcurrentRequests: 2000 }, 60_000);
    const conn = await connect(url, { requestTimeoutMs: 0 });
    const calls = Array.from({ length: 1100 }, (_, i) => conn.request("/job", "x", { idempotencyKey: `k${i}` }));
    for (const c of calls) c.catch(() => {});
    await until(() => counts.running === 1100);
    conn.destroy();
    await until(() => counts.aborted === 1100 - 1024);
    await sleep(100);
    assert.equal(counts.running, 1024);
    await server.close({ timeoutMs: 200 });
    // Neither the handlers (60 s) nor waitMs (60 s) end them by then: the close aborted them.
    await until(() => counts.running === 0, 20_000);
    assert.equal(counts.aborted, 1100);
    assert.equal(counts.finished, 0);
  });

  it("a keyed call whose handler finished (its answer still queued) is not kept running; a client's connection keeps none", async () => {
    // Before: a finished handler never settles again, so it held one of the 1024 places for waitMs.
    const server = createServer({ maxConcurrentRequests: 2000 });
    server.use(idempotency({ waitMs: 10_000 }));
    server.handle("/fast", () => new Uint8Array(256 * 1024));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const budget = (server as unknown as { budget: object }).budget;
    const peer = await connectPeer({ port: Number(new URL(url).port), read: "paused" });
    try {
      const frames = Array.from({ length: 200 }, (_, i) =>
        frame(T.REQ, F.START | F.END | 4, 2 * i + 1, concat(routeBytes("/fast"), Uint8Array.of(2), utf8(`k${i}`))),
      );
      peer.write(concat(...frames));
      await until(() => server.memory.used > 0);
      await sleep(300); // every handler answered; the answers wait for this peer to read
      peer.destroy();
      await until(() => server.memory.used === 0);
      assert.equal(orphanCount(budget), 0);
    } finally {
      peer.destroy();
      await server.close();
    }
    // A client's connection that serves keyed calls ends their handlers with it (they kept its process up).
    const s2 = createServer();
    const [url2] = await s2.listen("tcp://127.0.0.1:0");
    const conn = await connect(url2);
    conn.use(idempotency({ waitMs: 10_000 }));
    let aborted = false;
    conn.handle(
      "/job",
      (_r, ctx) =>
        new Promise<string>((_resolve, reject) => {
          ctx.signal.addEventListener("abort", () => {
            aborted = true;
            reject(ctx.signal.reason);
          });
        }),
    );
    try {
      await until(() => s2.sessions.size === 1);
      const session = [...s2.sessions][0];
      const call = session.request("/job", "x", { idempotencyKey: "k" });
      call.catch(() => {});
      await sleep(100);
      conn.destroy();
      await until(() => aborted, 2000);
    } finally {
      await s2.close();
    }
  });
});
