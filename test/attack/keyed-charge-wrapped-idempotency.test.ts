/**
 * KEYED_OVERHEAD (3.5 KiB) covers what the idempotency middleware holds for a
 * keyed call (its claim, or a duplicate's wait: ~1.3–3.4 KB of heap). Since it
 * is charged only when the router sees an idempotency middleware in its chain
 * (`Router.deduplicates`), one wrapped in a middleware of the application's
 * (`server.use((ctx, next) => ctx.route.startsWith("/pay") ? idem(ctx, next) :
 * next())`: idempotency for some routes only) was not seen: its keyed calls
 * held its claim or wait for 1 KiB charged, and all 150 calls of a 256 KiB
 * budget ran where ~55 fit with it unwrapped. Now the middleware itself takes
 * the charge when the dispatcher did not. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { CALL_OVERHEAD, KEYED_OVERHEAD } from "../../src/connection/dispatch.ts";
import { connect, createServer, idempotency, type PointSubError } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

/** A server with a 256 KiB budget and the idempotency middleware wrapped (or not) in one of the application's. */
async function serve(wrapped: boolean) {
  const server = createServer({ keepAliveMs: 0, memoryBudget: 256 * 1024 });
  cleanup.push(() => server.close({ timeoutMs: 200 }));
  const idem = idempotency({ waitMs: 30_000 });
  let entered = 0;
  if (wrapped) {
    server.use((ctx, next) => {
      if (!ctx.route.startsWith("/pay")) return next();
      entered++;
      return idem(ctx, next);
    });
  } else {
    server.use((_ctx, next) => {
      entered++;
      return next();
    });
    server.use(idem);
  }
  const gate = Promise.withResolvers<void>();
  cleanup.push(() => gate.resolve());
  let started = 0;
  server.handle("/pay", async () => {
    started++;
    await gate.promise;
    return "ok";
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url);
  cleanup.push(() => conn.close({ timeoutMs: 100 }).catch(() => {}));
  return { server, conn, gate, started: () => started, entered: () => entered };
}

/** `n` keyed calls (`distinct` keys, or one) of the gated handler: how many started or waited, their codes. */
async function admitted(wrapped: boolean, n: number, distinct: boolean) {
  const key = (i: number) => (distinct ? `k${i}` : "same");
  const { server, conn, gate, started, entered } = await serve(wrapped);
  const codes = new Map<string, number>();
  const calls = Array.from({ length: n }, (_, i) =>
    conn
      .request("/pay", "x", { idempotencyKey: key(i), timeoutMs: 30_000 })
      .then(
        () => "ok",
        (e: PointSubError) => e.code,
      )
      .then((c) => {
        codes.set(c, (codes.get(c) ?? 0) + 1);
      }),
  );
  // Every call is in: refused for the budget, or its handler started (distinct keys), or in the idempotency
  // middleware, charged (one key: its first attempt runs, the others wait for it).
  const overloaded = () => codes.get("ERR_OVERLOADED") ?? 0;
  await until(() => (distinct ? started() + overloaded() === n : entered() === n && started() === 1));
  const used = server.memory.used;
  gate.resolve();
  await Promise.all(calls);
  await until(() => server.memory.used === 0);
  return { used, codes, started: started() };
}

describe("keyed calls through an idempotency middleware wrapped in another", { timeout: 60_000 }, () => {
  it("first attempts are charged its claim, as through an unwrapped one", async () => {
    const direct = await admitted(false, 150, true);
    const wrapped = await admitted(true, 150, true);
    assert.ok(direct.started < 100, `${direct.started} keyed calls fit under the idempotency middleware`);
    assert.equal(
      wrapped.started,
      direct.started,
      `wrapped: ${wrapped.started} started, codes ${JSON.stringify([...wrapped.codes])}`,
    );
    assert.equal(wrapped.codes.get("ERR_OVERLOADED"), 150 - wrapped.started);
    assert.equal(wrapped.codes.get("ok"), wrapped.started);
  });

  it("waiting duplicates are charged their wait, and every charge comes back", async () => {
    const n = 20;
    const r = await admitted(true, n, false);
    assert.equal(r.started, 1, "the handler ran once");
    assert.equal(r.codes.get("ok"), n);
    assert.ok(r.used >= n * (CALL_OVERHEAD + KEYED_OVERHEAD), `${r.used} B charged for ${n} keyed calls`);
  });
});
