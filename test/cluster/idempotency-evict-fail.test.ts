/**
 * The shared idempotency store's quota when a delete of an answer past it
 * fails (the engine down, or slower than engineTimeoutMs, just then): the
 * answer was dropped from the node's ledger and lived on in the engine,
 * uncounted — with a quota of 2, three answers stayed in Redis while
 * stats() said 2, and every later delete that failed added one. Now such an
 * answer stays counted and is deleted again at the next answer kept.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient } from "redis";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { engineIdempotencyStore } from "../../src/cluster/idempotency-store.ts";
import { redisCluster } from "../../src/cluster/index.ts";
import { redisEngine } from "../../src/cluster/redis-engine.ts";
import { idempotencyStoreKey, PointSubError } from "../../src/index.ts";
import { type EngineServer, startEngine } from "./engines.ts";

const enc = new TextEncoder();

describe("cluster idempotency store: a delete past the quota that fails", { timeout: 60_000 }, () => {
  let engine: EngineServer;
  let redis: ClusterEngine;
  /** Engine keys whose reads fail as a timed-out engine call does. */
  const unanswered = new Set<string>();

  before(async () => {
    engine = await startEngine("redis");
    redis = redisEngine({ url: engine.url });
    await redis.connect();
  });

  after(async () => {
    await redis?.close();
    await engine?.stop();
  });

  async function held(): Promise<number> {
    const c = createClient({ url: engine.url });
    await c.connect();
    try {
      return (await c.keys("evict.*")).length;
    } finally {
      await c.quit();
    }
  }

  it("stays counted and is deleted again at the next answer kept", async () => {
    const flaky: ClusterEngine = {
      ...redis,
      name: redis.name,
      hasKv: true,
      connect: () => redis.connect(),
      publish: (s, d) => redis.publish(s, d),
      subscribe: (s, m) => redis.subscribe(s, m),
      onState: (cb) => redis.onState(cb),
      kvCreate: (k, v, t) => redis.kvCreate(k, v, t),
      kvGet: (k) =>
        unanswered.has(k)
          ? Promise.reject(new PointSubError("ERR_TIMEOUT", "redis did not answer kvGet within 2000 ms"))
          : redis.kvGet(k),
      kvUpdate: (k, v, r, t) => redis.kvUpdate(k, v, r, t),
      kvDelete: (k, r) => redis.kvDelete(k, r),
      close: () => redis.close(),
    };
    const store = engineIdempotencyStore(flaky, {
      prefix: "evict.",
      nodeId: "a",
      holds: () => true,
      ttlMs: 60_000,
      maxEntries: 2,
      maxEntriesPerScope: 2,
    });
    const key = (i: number) => idempotencyStoreKey("s", "/r", enc.encode(`k${i}`));
    const answer = async (i: number) => {
      assert.equal(await store.begin(key(i), `t${i}`, 10_000), undefined);
      await store.complete(key(i), `t${i}`, { ok: true, data: enc.encode(`answer ${i}`) });
    };
    await answer(0);
    await answer(1);
    // k0 is deleted to make room for k2, and the engine does not answer that read.
    unanswered.add(`evict.${key(0)}`);
    await answer(2);
    assert.equal(await held(), 3, "k0 still in the engine");
    assert.equal(store.stats().kept, 3, "and counted");
    unanswered.clear();
    await answer(3);
    assert.equal(await held(), 2, "k0 deleted again, with k1 (the oldest) for k3");
    assert.deepEqual({ kept: store.stats().kept, evicted: store.stats().evicted }, { kept: 2, evicted: 2 });
    assert.equal(await store.get(key(0)), undefined);
    assert.equal((await store.get(key(3)))?.state, "done");
  });

  it("a scope's quota set over the node's is held to the node's: one answer cannot take it all", async () => {
    // The per-principal quota raised (as advised for a server whose clients are not authenticated) past
    // the node's own: an answer over the node's bytes deleted every other answer and was kept, over it.
    const store = engineIdempotencyStore(redis, {
      prefix: "evict.big.",
      nodeId: "a",
      holds: () => true,
      ttlMs: 60_000,
      maxBytes: 4000,
      maxBytesPerScope: 100_000,
    });
    const key = (scope: string, i: number) => idempotencyStoreKey(scope, "/r", enc.encode(`k${i}`));
    for (let i = 0; i < 3; i++) {
      assert.equal(await store.begin(key("quiet", i), `q${i}`, 10_000), undefined);
      await store.complete(key("quiet", i), `q${i}`, { ok: true, data: new Uint8Array(200) });
    }
    assert.equal(await store.begin(key("noisy", 0), "n0", 10_000), undefined);
    await store.complete(key("noisy", 0), "n0", { ok: true, data: new Uint8Array(6000) });
    const s = store.stats();
    assert.ok(s.bytes <= 4000, `${s.bytes} bytes kept (maxBytes 4,000)`);
    assert.equal(s.evicted, 0, "the quiet scope's answers stay");
    const e = await store.get(key("noisy", 0));
    assert.ok(e?.state === "done" && !e.outcome.ok && e.outcome.code === "ERR_HANDLER", "kept as too large");
  });

  it("a bad quota option is refused by its own name", () => {
    for (const [name, value] of [
      ["idempotencyMaxEntries", 0],
      ["idempotencyMaxBytes", -1],
      ["idempotencyMaxEntriesPerScope", 1.5],
      ["idempotencyMaxBytesPerScope", Number.NaN],
    ] as const) {
      assert.throws(
        () => redisCluster({ url: engine.url, [name]: value }),
        (err: PointSubError) => err.code === "ERR_INVALID_ARGUMENT" && err.message.startsWith(`${name} `),
        name,
      );
    }
  });
});
