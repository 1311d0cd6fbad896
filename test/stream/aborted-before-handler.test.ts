/**
 * A stream whose call ended (the sender cancelled it, its connection closed)
 * while a middleware awaited before `next()` (an authorization lookup, a
 * cluster-wide limit): its handler ran afterwards with its signal aborted
 * already, and one that only listens for the signal's "abort" event never
 * settled — its charge and one of the connection's abandoned-handler slots
 * held for ever. Now it is not started. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type CallContext, connect, createServer } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

describe("a stream that ends while a middleware awaits", { timeout: 30_000 }, () => {
  for (const end of ["cancelled", "connection closed"] as const) {
    it(`${end}: its handler is not started, and what it held comes back`, async () => {
      const server = createServer({ keepAliveMs: 0 });
      const gate = Promise.withResolvers<void>();
      const seen: CallContext[] = [];
      server.use(async (ctx, next) => {
        seen.push(ctx);
        await gate.promise;
        return next();
      });
      let started = 0;
      server.handleStream("/in", (_stream, ctx) => {
        started++;
        // Listens only for its signal's "abort" event.
        return new Promise((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)));
      });
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const conn = await connect(url);
      const stop = Promise.withResolvers<void>();
      try {
        async function* live() {
          yield new Uint8Array(10);
          await stop.promise;
        }
        const ac = new AbortController();
        const t = conn.sendStream("/in", live(), { signal: ac.signal });
        const done = t.done.then(
          () => "ok",
          (e: { code?: string }) => e.code,
        );
        await until(() => seen.length === 1);
        if (end === "cancelled") ac.abort();
        else conn.destroy();
        assert.notEqual(await done, "ok");
        await until(() => seen[0].signal.aborted);
        gate.resolve();
        await until(() => server.memory.used === 0);
        assert.equal(started, 0);
      } finally {
        gate.resolve();
        stop.resolve();
        conn.destroy();
        await server.close({ timeoutMs: 100 });
      }
    });
  }
});
