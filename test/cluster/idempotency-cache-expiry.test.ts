/**
 * The cluster idempotency store's cache of answers read from the engine
 * (what duplicates of one key share) lets go of them once their time is
 * past, without being read again: before, a burst of duplicates followed by
 * quiet kept them — up to 16 MiB, 1,024 answers — for the life of the
 * process. The engine is an in-memory stand-in (the cache is the store's
 * own); the timer never keeps the process alive. Counts, not timings.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ClusterEngine, KvEntry } from "../../src/cluster/engine.ts";
import { engineIdempotencyStore } from "../../src/cluster/idempotency-store.ts";
import { until } from "../helpers/wait.ts";

/** The key-value half of an engine, in memory (no ttl: the store's entries carry their expiry). */
function memoryKv(): ClusterEngine {
  const kv = new Map<string, KvEntry>();
  let rev = 0;
  const put = (key: string, value: string) => kv.set(key, { value, revision: String(++rev) });
  return {
    kvCreate: async (key: string, value: string) => {
      if (kv.has(key)) return false;
      put(key, value);
      return true;
    },
    kvGet: async (key: string) => kv.get(key),
    kvUpdate: async (key: string, value: string, revision: string) => {
      if (kv.get(key)?.revision !== revision) return false;
      put(key, value);
      return true;
    },
    kvDelete: async (key: string, revision: string) => {
      if (kv.get(key)?.revision === revision) kv.delete(key);
    },
  } as unknown as ClusterEngine;
}

const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;

describe("cluster idempotency store: the answers cache expires without reads", () => {
  it("drops cached answers past their ttl (30 answers of 32 KiB), with no timer keeping the process", async () => {
    const store = engineIdempotencyStore(memoryKv(), { prefix: "idem.", nodeId: "a", holds: () => true, ttlMs: 200 });
    const cache = (store as unknown as { cache: Map<string, unknown>; cacheBytes: number }).cache;
    const before = timers();
    for (let i = 0; i < 30; i++) {
      assert.equal(await store.begin(`k${i}`, "t", 60_000), undefined);
      await store.complete(`k${i}`, "t", { ok: true, data: new Uint8Array(32 * 1024) });
      // A duplicate: read from the engine, kept for the next ones.
      const e = await store.get(`k${i}`);
      assert.equal(e?.state, "done");
    }
    assert.equal(cache.size, 30);
    assert.equal(timers(), before);
    await until(() => cache.size === 0, 5000).catch(() => {});
    const held = { entries: cache.size, bytes: (store as unknown as { cacheBytes: number }).cacheBytes };
    // Before: { entries: 30, bytes: 1,319,840 } until read again or pushed out.
    assert.deepEqual(held, { entries: 0, bytes: 0 });
  });
});
