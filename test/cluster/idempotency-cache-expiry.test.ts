/**
 * The cluster idempotency store's cache of answers read from the engine
 * (what duplicates of one key share) lets go of them once their time is
 * past, without being read again: before, a burst of duplicates followed by
 * quiet kept them — up to 16 MiB, 1,024 answers — for the life of the
 * process. On a real Redis; the cache is the store's own (read through its
 * fields); its timer never keeps the process alive. Counts, not timings.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, redisCluster } from "../../src/cluster/index.ts";
import { createServer, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

describe("cluster idempotency store: the answers cache expires without reads", { timeout: 60_000 }, () => {
  let engine: EngineServer;
  let cluster: Cluster;
  let server: Server;

  before(async () => {
    engine = await startEngine("redis");
    cluster = redisCluster({ url: engine.url, nodeId: "a", name: "cache", heartbeatMs: 200, idempotencyTtlMs: 3000 });
    server = createServer({ cluster, idempotency: true });
    await server.listen("tcp://127.0.0.1:0");
  });

  after(async () => {
    await server.close({ timeoutMs: 100 });
    await engine?.stop();
  });

  it("drops cached answers past their ttl (30 answers of 32 KiB, 3 s), with no timer keeping the process", async () => {
    const store = cluster.idempotencyStore;
    assert.ok(store !== undefined);
    const inner = store as unknown as {
      cache: Map<string, unknown>;
      cacheBytes: number;
      sweeper: { hasRef(): boolean } | undefined;
    };
    for (let i = 0; i < 30; i++) {
      assert.equal(await store.begin(`k${i}`, "t", 60_000), undefined);
      await store.complete(`k${i}`, "t", { ok: true, data: new Uint8Array(32 * 1024) });
      // A duplicate: read from the engine, kept for the next ones.
      const e = await store.get(`k${i}`);
      assert.equal(e?.state, "done");
    }
    assert.equal(inner.cache.size, 30);
    assert.notEqual(inner.sweeper?.hasRef(), true, "the sweep's timer keeps the process alive");
    await until(() => inner.cache.size === 0, 15_000).catch(() => {});
    // Before: { entries: 30, bytes: 1,319,840 } until read again or pushed out. (A ttl of 3 s: the 30 round trips
    // above take well under it even on a loaded machine — at 200 ms some had expired before the count.)
    assert.deepEqual({ entries: inner.cache.size, bytes: inner.cacheBytes }, { entries: 0, bytes: 0 });
  });
});
