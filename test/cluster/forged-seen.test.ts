/**
 * Every node drops a broadcast whose id it has seen (the last 8,192), so a
 * message repeated on the bus reaches a session once. A broadcast's id was
 * `<node>:<incarnation>:<n>`, the incarnation in every heartbeat: a
 * publisher on the bus sent, ahead of time, broadcasts under the ids node
 * "b" would use next — with a filter no node has, so they reached no
 * session — and every node then dropped b's real broadcasts as duplicates.
 * A broadcast's id now ends in a random part. Real engines, two servers in
 * this process and a raw publisher.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { redisEngine } from "../../src/cluster/redis-engine.ts";
import { decode, encode } from "../../src/cluster/wire.ts";
import { type Connection, connect, createServer, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

const AHEAD = 64;

for (const kind of ["redis", "nats"] as const) {
  describe(`broadcast ids taken ahead by a publisher on the bus, on ${kind}`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    let raw: ClusterEngine;
    let ca: Cluster;
    let a: Server;
    let b: Server;
    let conn: Connection;
    let incarnation = "";
    const got: string[] = [];

    before(async () => {
      engine = await startEngine(kind);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_seen", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      await raw.subscribe("pointsub.seen.members", (d) => {
        const m = decode(d);
        if ((m?.header.t === "hb" || m?.header.t === "hello") && m.header.n === "b" && typeof m.header.k === "string") {
          incarnation = m.header.k.slice(0, m.header.k.indexOf("."));
        }
      });
      const make = (nodeId: string) => {
        const o = { nodeId, name: "seen", heartbeatMs: 200 };
        return kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      };
      ca = make("a");
      a = createServer({ cluster: ca });
      b = createServer({ cluster: make("b") });
      await a.listen("tcp://127.0.0.1:0");
      await b.listen("tcp://127.0.0.1:0");
      conn = await connect(a.urls[0]);
      conn.on("message", (m) => got.push(m.text()));
      await until(() => a.sessions.size === 1 && ca.nodes().length === 2 && incarnation !== "", 10_000);
    });

    after(async () => {
      await conn?.close({ timeoutMs: 100 });
      await a?.close({ timeoutMs: 100 });
      await b?.close({ timeoutMs: 100 });
      await raw?.close();
      await engine?.stop();
    });

    it("b's broadcasts still reach a's sessions", async () => {
      const before = ca.stats().unknownFilters;
      for (let n = 0; n < AHEAD; n++) {
        const i = `b:${incarnation}:${n.toString(36)}`;
        await raw.publish("pointsub.seen.bc", encode({ t: "bc", n: "x", i, f: "none" }));
      }
      // Every one read by a (dropped there: no filter "none").
      await until(() => ca.stats().unknownFilters - before === AHEAD, 10_000);
      await b.broadcast("from b");
      await until(() => got.includes("from b") || ca.stats().duplicates > 0, 10_000);
      assert.deepEqual(got, ["from b"], `a dropped ${ca.stats().duplicates} of b's broadcasts as duplicates`);
    });
  });
}
