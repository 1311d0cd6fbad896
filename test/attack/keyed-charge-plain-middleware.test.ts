/**
 * KEYED_OVERHEAD (3.5 KiB) covers what the idempotency middleware holds for a
 * keyed call (its claim, or a duplicate's wait). It was charged for a keyed
 * call through any middleware: a server with a plain logging middleware and
 * no idempotency charged 4.6 KB for a keyed call holding what an unkeyed one
 * does (~1 KB more with the client's side, measured), and refused keyed calls
 * with ERR_OVERLOADED at a fifth of the unkeyed ones' concurrency. Now only a
 * chain with an idempotency middleware charges it. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { connect, createServer, type PointSubError } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

/** How `n` calls of a gated handler settle on a server with a 256 KiB budget: handlers started, codes. */
async function admitted(keyed: boolean, idempotency: boolean, n: number) {
  const server = createServer({ keepAliveMs: 0, memoryBudget: 256 * 1024, idempotency });
  cleanup.push(() => server.close({ timeoutMs: 200 }));
  let logged = 0;
  server.use((_ctx, next) => {
    logged++;
    return next();
  });
  const gate = Promise.withResolvers<void>();
  cleanup.push(() => gate.resolve());
  let started = 0;
  server.handle("/slow", async () => {
    started++;
    await gate.promise;
    return "ok";
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url);
  cleanup.push(() => conn.close({ timeoutMs: 100 }).catch(() => {}));
  const codes = new Map<string, number>();
  const calls = Array.from({ length: n }, (_, i) =>
    conn
      .request("/slow", "x", keyed ? { idempotencyKey: `k${i}`, timeoutMs: 30_000 } : { timeoutMs: 30_000 })
      .then(
        () => "ok",
        (e: PointSubError) => e.code,
      )
      .then((c) => codes.set(c, (codes.get(c) ?? 0) + 1)),
  );
  await until(() => started + (codes.get("ERR_OVERLOADED") ?? 0) === n);
  const running = started;
  gate.resolve();
  await Promise.all(calls);
  await until(() => server.memory.used === 0);
  return { running, codes, logged };
}

describe("keyed calls through a middleware other than idempotency", { timeout: 60_000 }, () => {
  it("are charged as unkeyed ones: as many fit the memory budget", async () => {
    // 150 calls of ~1 KiB fit 256 KiB; at 4.6 KB each, ~55 did.
    const plain = await admitted(false, false, 150);
    const keyed = await admitted(true, false, 150);
    assert.equal(plain.running, 150);
    assert.equal(
      keyed.running,
      150,
      `keyed calls started: ${keyed.running}, codes ${JSON.stringify([...keyed.codes])}`,
    );
    assert.equal(keyed.codes.get("ok"), 150);
    assert.equal(keyed.logged, 150);
  });

  it("still pay KEYED_OVERHEAD with an idempotency middleware in the chain", async () => {
    const deduped = await admitted(true, true, 150);
    assert.ok(deduped.running < 100, `${deduped.running} keyed calls fit under the idempotency middleware`);
    assert.equal(deduped.codes.get("ERR_OVERLOADED"), 150 - deduped.running);
  });
});
