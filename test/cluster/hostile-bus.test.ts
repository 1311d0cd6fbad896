/**
 * A publisher on the cluster's engine writing what no node writes (real
 * redis-server and nats-server on loopback): what it writes is dropped and
 * counted, or fails with a typed error; it cannot make a node hold memory
 * out of proportion to what a node writes.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { natsCluster, redisCluster } from "../../src/cluster/index.ts";
import type { Cluster } from "../../src/cluster/member.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { redisEngine } from "../../src/cluster/redis-engine.ts";
import { encode } from "../../src/cluster/wire.ts";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`hostile data on the ${kind} engine`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    let raw: ClusterEngine;
    let cluster: Cluster;
    let server: Server;
    let client: Connection;
    const got: string[] = [];

    before(async () => {
      engine = await startEngine(kind);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_hostile", bucketTtlMs: 600_000 });
      await raw.connect();
      const filters = { prefix: (_s: Connection, arg: string | undefined) => arg === undefined || arg.startsWith("") };
      const o = { nodeId: "q", name: "hostile", heartbeatMs: 100, filters };
      cluster = kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      server = createServer({ cluster });
      await server.listen("tcp://127.0.0.1:0");
      client = await connect(server.urls[0]);
      client.on("message", (m) => got.push(m.text()));
      await until(() => server.sessions.size === 1, 5000);
    });

    after(async () => {
      await client?.close({ timeoutMs: 100 });
      await server?.close({ timeoutMs: 100 });
      await raw?.close();
      await engine?.stop();
    });

    it("a message id longer than any node makes is malformed: a node does not remember 8,192 ids of 64 KiB", async () => {
      const before = cluster.stats();
      const long = `p:${"x".repeat(60_000)}`;
      await raw.publish("pointsub.hostile.bc", encode({ t: "bc", n: "p", i: long }, new TextEncoder().encode("long")));
      await raw.publish(
        "pointsub.hostile.bc",
        encode({ t: "bc", n: "p", i: "p:abc:1" }, new TextEncoder().encode("ok")),
      );
      await until(() => got.includes("ok"), 5000);
      assert.deepEqual(got, ["ok"], "the broadcast with the long id was not delivered");
      assert.equal(cluster.stats().malformed, before.malformed + 1);
      assert.equal(cluster.stats().broadcastsReceived, before.broadcastsReceived + 1);
    });

    it("an idempotency entry no node writes (fields of the wrong type) is no entry: a claim takes the key, no TypeError", async () => {
      const store = cluster.idempotencyStore;
      assert.ok(store !== undefined);
      const e = Date.now() + 60_000;
      const garbage = [
        { s: "d", e, ok: true },
        { s: "d", e, ok: true, d: 5 },
        { s: "d", e, ok: "yes", d: "AA==" },
        { s: "r", e, t: 5, n: "p" },
        { s: "r", e, t: "t", n: { id: "p" } },
      ];
      for (const [n, value] of garbage.entries()) {
        const key = `garbage-${kind}-${n}`;
        assert.equal(await raw.kvCreate(`pointsub.hostile.idem.${key}`, JSON.stringify(value), 60_000), true);
        assert.equal(await store.begin(key, `mine-${n}`, 60_000), undefined, `claimed over ${JSON.stringify(value)}`);
        const mine = await store.get(key);
        assert.ok(mine?.state === "running" && mine.token === `mine-${n}`, JSON.stringify(mine));
      }
    });

    it("sendTo a session id far longer than any node makes: ERR_NOT_FOUND at once, not ERR_TIMEOUT after requestTimeoutMs", async () => {
      const o = { nodeId: "p", name: "hostile", heartbeatMs: 100 };
      const p = kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      const ps = createServer({ cluster: p });
      try {
        await ps.listen("tcp://127.0.0.1:0");
        await until(() => cluster.nodes().some((n) => n.id === "p"), 5000);
        const err = await server.sendTo(`p.${"x".repeat(70_000)}`, "hi").then(
          () => undefined,
          (e: PointSubError) => e,
        );
        assert.equal(err?.code, "ERR_NOT_FOUND", err?.message);
      } finally {
        await ps.close({ timeoutMs: 100 });
      }
    });

    it("a broadcast whose filter name or argument is not a string is malformed: the named filter never gets it", async () => {
      const before = cluster.stats();
      const bad = [{ f: "prefix", a: 5 }, { f: "prefix", a: { x: 1 } }, { f: ["prefix"] }];
      for (const [n, extra] of bad.entries()) {
        const header = { t: "bc", n: "p", i: `p:bad-filter:${n}`, ...extra };
        await raw.publish("pointsub.hostile.bc", encode(header as never, new TextEncoder().encode(`bad ${n}`)));
      }
      const good = encode(
        { t: "bc", n: "p", i: "p:good-filter", f: "prefix", a: "x" },
        new TextEncoder().encode("good"),
      );
      await raw.publish("pointsub.hostile.bc", good);
      await until(() => got.includes("good"), 5000);
      assert.ok(!got.some((g) => g.startsWith("bad")), got.join());
      const now = cluster.stats();
      assert.equal(now.handlerErrors, before.handlerErrors, "no TypeError in the application's filter");
      assert.equal(now.malformed, before.malformed + bad.length);
    });
  });
}
