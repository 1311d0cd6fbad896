/**
 * A claim whose write timed out (the engine frozen a moment: a real
 * redis-server or nats-server on loopback, SIGSTOP then SIGCONT) may still
 * land once the engine resumes. Its begin failed, so no handler runs under
 * it: a retry of the key claims it, instead of waiting on it for the lease.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { redisEngine } from "../../src/cluster/redis-engine.ts";
import { createServer, type PointSubError, type Server } from "../../src/index.ts";
import { sleep } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`a claim that timed out on ${kind}`, { timeout: 30_000 }, () => {
    let engine: EngineServer | undefined;
    let server: Server | undefined;

    after(async () => {
      engine?.resume();
      await server?.close({ timeoutMs: 100 });
      await engine?.stop();
    });

    it("does not hold its key for the lease once it lands: the retry claims it", async () => {
      const e = await startEngine(kind);
      engine = e;
      // The engine is not taken for down while frozen a moment (no reset drops the claim's write).
      const o = { nodeId: "a", name: "ghost", heartbeatMs: 1000, deadAfterMs: 20_000, engineTimeoutMs: 300 };
      const cluster = kind === "redis" ? redisCluster({ ...o, url: e.url }) : natsCluster({ ...o, servers: e.url });
      server = createServer({ cluster });
      await server.listen("tcp://127.0.0.1:0");
      const store = cluster.idempotencyStore;
      assert.ok(store !== undefined);
      // Frozen, the engine answers nothing: the claim's write times out. (Up to 3 keys: on a loaded machine a
      // write may still be answered, the freeze not in force yet.)
      let key = "";
      let err: PointSubError | undefined;
      for (let n = 1; n <= 3 && err?.code !== "ERR_TIMEOUT"; n++) {
        key = `order-${n}`;
        e.pause();
        err = await store.begin(key, "first", 600_000).then(
          () => undefined,
          (x: PointSubError) => x,
        );
        e.resume();
      }
      assert.equal(err?.code, "ERR_TIMEOUT", String(err?.message));
      // The first claim's write lands once the engine resumes (read past the store, as it is in the engine),
      // unless the node deleted it first (it tries: the read it deletes on may come after it).
      const raw =
        kind === "redis"
          ? redisEngine({ url: e.url })
          : natsEngine({ servers: e.url, bucket: "pointsub_ghost", bucketTtlMs: 600_000 });
      await raw.connect();
      try {
        for (let i = 0; i < 40 && (await raw.kvGet(`pointsub.ghost.idem.${key}`)) === undefined; i++) await sleep(25);
      } finally {
        await raw.close();
      }
      const retry = await store.begin(key, "second", 600_000);
      assert.equal(retry, undefined, `the retry claims the key (got ${JSON.stringify(retry)})`);
      const now = await store.get(key);
      assert.ok(now?.state === "running" && now.token === "second", JSON.stringify(now));
    });
  });
}
