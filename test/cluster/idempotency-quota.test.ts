/**
 * The cluster's shared idempotency store against a peer flooding unique
 * keys, on real engines: every answer was written to Redis or the JetStream
 * bucket and kept for `idempotencyTtlMs` (10 min by default), so what the
 * engine held grew with the request rate (200 keys sent, 200 kept) — an
 * authenticated client could fill Redis for the whole cluster. Now each
 * node keeps at most its quota there (its oldest answers deleted from the
 * engine past it), per principal a quarter by default: 200 sent, 10 kept.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { connect as natsConnect } from "nats";
import { createClient } from "redis";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, idempotencyStoreKey, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

const utf8 = new TextDecoder();
const enc = new TextEncoder();

/** Keys of the shared store in the engine now. */
async function storedKeys(engine: EngineServer, name: string): Promise<number> {
  if (engine.kind === "redis") {
    const c = createClient({ url: engine.url });
    await c.connect();
    try {
      return (await c.keys(`pointsub.${name}.idem.*`)).length;
    } finally {
      await c.quit();
    }
  }
  const nc = await natsConnect({ servers: engine.url });
  try {
    const kv = await nc.jetstream().views.kv(`pointsub_${name}`);
    let n = 0;
    for await (const _ of await kv.keys()) n++;
    return n;
  } finally {
    await nc.close();
  }
}

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster idempotency store quota on ${kind}`, { timeout: 90_000 }, () => {
    let engine: EngineServer;
    const clusters: Cluster[] = [];
    const servers: Server[] = [];
    const conns: Connection[] = [];
    const runs = new Map<string, number>();

    before(async () => {
      engine = await startEngine(kind);
      for (const id of ["a", "b", "c"]) {
        // c: quotas by bytes only.
        const o = {
          nodeId: id,
          name: "quota",
          heartbeatMs: 200,
          ...(id === "c"
            ? { idempotencyMaxBytes: 8000, idempotencyMaxBytesPerScope: 4000 }
            : { idempotencyMaxEntries: 40, idempotencyMaxEntriesPerScope: 10 }),
        };
        const cluster =
          kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
        const server = createServer({ cluster, idempotency: true });
        server.handle("/op", (req) => {
          const k = utf8.decode(req.data);
          runs.set(k, (runs.get(k) ?? 0) + 1);
          return `done ${k} on ${id}`;
        });
        await server.listen("tcp://127.0.0.1:0");
        clusters.push(cluster);
        servers.push(server);
      }
      await until(() => clusters.every((c) => c.nodes().length === 3), 5000);
      for (const s of servers) conns.push(await connect(s.urls[0]));
    });

    after(async () => {
      await Promise.all(conns.map((c) => c.close({ timeoutMs: 100 })));
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await engine?.stop();
    });

    it("a client flooding unique keys through one node leaves its quota in the engine, the newest answers", async () => {
      const sent = 200;
      for (let i = 0; i < sent; i += 20) {
        await Promise.all(
          Array.from({ length: 20 }, (_, j) =>
            conns[0].request("/op", `k${i + j}`, { idempotencyKey: enc.encode(`flood-${i + j}`) }),
          ),
        );
      }
      const held = await storedKeys(engine, "quota");
      assert.ok(held <= 10, `${held} of ${sent} answers kept in the engine (quota 10)`);
      const stats = clusters[0].idempotencyStore?.stats();
      assert.equal(stats?.kept, 10);
      assert.equal(stats?.evicted, sent - 10);
      // The newest answer is still shared: a retry on the other node gets it without running the handler.
      const last = `k${sent - 1}`;
      assert.equal(
        utf8.decode(await conns[1].request("/op", last, { idempotencyKey: enc.encode(`flood-${sent - 1}`) })),
        `done ${last} on a`,
      );
      assert.equal(runs.get(last), 1);
      // The oldest was deleted to make room: its retry runs the handler again (as the in-memory store's eviction).
      assert.equal(
        utf8.decode(await conns[1].request("/op", "k0", { idempotencyKey: enc.encode("flood-0") })),
        "done k0 on b",
      );
      assert.equal(runs.get("k0"), 2);
    });

    it("a scope at its quota deletes its own oldest answers, never another scope's", async () => {
      const store = clusters[1].idempotencyStore;
      assert.ok(store !== undefined);
      const before = store.stats();
      const keyOf = (scope: string, i: number) => idempotencyStoreKey(scope, "/direct", enc.encode(`d-${i}`));
      // Scope "quiet" stores 5 answers, then scope "noisy" stores 60 through the same node.
      for (let i = 0; i < 5; i++) {
        const k = keyOf("quiet", i);
        assert.equal(await store.begin(k, `t${i}`, 10_000), undefined);
        await store.complete(k, `t${i}`, { ok: true, data: enc.encode(`quiet ${i}`) });
      }
      for (let i = 0; i < 60; i++) {
        const k = keyOf("noisy", i);
        assert.equal(await store.begin(k, `n${i}`, 10_000), undefined);
        await store.complete(k, `n${i}`, { ok: true, data: enc.encode(`noisy ${i}`) });
      }
      const after = store.stats();
      assert.equal(after.evicted - before.evicted, 50, "the noisy scope's 50 oldest deleted, nothing else");
      // Read through the other node (its own cache never saw them): from the engine.
      const other = clusters[0].idempotencyStore;
      for (let i = 0; i < 5; i++) {
        const e = await other?.get(keyOf("quiet", i));
        assert.equal(e?.state, "done", `quiet ${i} was deleted`);
      }
      assert.equal(await other?.get(keyOf("noisy", 0)), undefined);
      assert.equal((await other?.get(keyOf("noisy", 59)))?.state, "done");
    });

    it("by bytes: a scope keeps at most its bytes; one answer over them is kept as too large (the handler ran once)", async () => {
      const store = clusters[2].idempotencyStore;
      assert.ok(store !== undefined);
      const keyOf = (i: number) => idempotencyStoreKey("bytes", "/direct", enc.encode(`b-${i}`));
      // 30 answers of 300 bytes (~ 760 counted each, base64 and the entry's overhead included) through node c.
      for (let i = 0; i < 30; i++) {
        assert.equal(await store.begin(keyOf(i), `b${i}`, 10_000), undefined);
        await store.complete(keyOf(i), `b${i}`, { ok: true, data: new Uint8Array(300).fill(i) });
      }
      const s = store.stats();
      assert.ok(s.bytes <= 4000 && s.kept >= 4, `${s.kept} answers, ${s.bytes} bytes kept (per-scope quota 4,000)`);
      assert.equal(s.evicted, 30 - s.kept);
      const other = clusters[0].idempotencyStore;
      assert.equal((await other?.get(keyOf(29)))?.state, "done");
      assert.equal(await other?.get(keyOf(0)), undefined);
      // One answer larger than the scope's quota: kept as an error, so a retry does not run the handler again.
      const big = idempotencyStoreKey("bytes", "/direct", enc.encode("big"));
      assert.equal(await store.begin(big, "big", 10_000), undefined);
      await store.complete(big, "big", { ok: true, data: new Uint8Array(5000) });
      const e = await other?.get(big);
      assert.equal(e?.state, "done");
      assert.ok(e?.state === "done" && !e.outcome.ok && e.outcome.code === "ERR_HANDLER", JSON.stringify(e));
    });
  });
}
