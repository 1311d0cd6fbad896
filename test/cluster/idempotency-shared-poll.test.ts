/**
 * Duplicates of a keyed request still running, waiting on the cluster's
 * shared store (a real redis-server on loopback): each ran its own polling
 * loop (a read of the key at 25 ms, doubling to 250 ms, from its own
 * arrival), so the reads the engine got grew with the duplicates — 100
 * waiting were ~400 reads a second of one key from one node, and a client
 * that keeps sending duplicates of a long request multiplies the engine's
 * load. Now a node's waiters of a key share one poll: a few reads however
 * many wait, and every one of them gets the answer.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { createClient } from "redis";
import { redisCluster } from "../../src/cluster/index.ts";
import { connect, createServer, type IdempotencyStore, idempotency, type Server } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

/** GET commands the Redis at `url` ran so far. */
async function gets(url: string): Promise<number> {
  const c = createClient({ url });
  await c.connect();
  try {
    const info = await c.info("commandstats");
    return Number(/cmdstat_get:calls=(\d+)/.exec(info)?.[1] ?? 0);
  } finally {
    await c.quit();
  }
}

describe("waiting duplicates on a cluster's shared store", { timeout: 60_000 }, () => {
  let engine: EngineServer | undefined;
  let server: Server | undefined;

  after(async () => {
    await server?.close({ timeoutMs: 200 });
    await engine?.stop();
  });

  it("share one poll of their key: a few engine reads for many waiters, and all get the answer", async () => {
    const e = await startEngine("redis");
    engine = e;
    const cluster = redisCluster({ url: e.url, nodeId: "a", name: "poll", heartbeatMs: 500 });
    server = createServer({ cluster });
    const gate = Promise.withResolvers<void>();
    let runs = 0;
    let arrived = 0;
    server.use((_ctx, next) => {
      arrived++;
      return next();
    });
    server.handle("/slow", async () => {
      runs++;
      await gate.promise;
      return "the answer";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // After the counter: it sees every duplicate arrive.
    // Counts the claims answered (a duplicate's claim reads the key; it waits next).
    const shared = cluster.idempotencyStore as IdempotencyStore;
    let begun = 0;
    const store: IdempotencyStore = {
      begin: (...a) => shared.begin(...a).finally(() => begun++),
      get: (key) => shared.get(key),
      complete: (...a) => shared.complete(...a),
      fail: (key, token) => shared.fail(key, token),
      wait: (key, signal) => shared.wait(key, signal),
    };
    server.use(idempotency({ store, waitMs: 30_000 }));
    const conn = await connect(url);
    try {
      const first = conn.request("/slow", "x", { idempotencyKey: "k", timeoutMs: 30_000 });
      await until(() => runs === 1);
      // Arriving over a while (as retries do), their own polls did not line up (concurrent reads were shared).
      const waiters = 100;
      const dups: Promise<Uint8Array>[] = [];
      for (let i = 0; i < waiters; i++) {
        dups.push(conn.request("/slow", "x", { idempotencyKey: "k", timeoutMs: 30_000 }));
        await sleep(5);
      }
      for (const p of [first, ...dups]) p.catch(() => {}); // awaited below
      await until(() => arrived === 1 + waiters && begun === 1 + waiters); // all wait now
      const before = await gets(e.url);
      await sleep(1_500);
      const read = (await gets(e.url)) - before - 1; // less this count's own
      // One poll: a read at 25 ms, doubling to 250 ms (~8 in 1.5 s); before, 160 and more.
      assert.ok(read < waiters / 4, `${read} reads of the key while ${waiters} duplicates waited 1.5 s`);
      gate.resolve();
      const answers = await Promise.all([first, ...dups]);
      for (const a of answers) assert.equal(new TextDecoder().decode(a), "the answer");
      assert.equal(runs, 1);
    } finally {
      gate.resolve();
      conn.close();
    }
  });
});
