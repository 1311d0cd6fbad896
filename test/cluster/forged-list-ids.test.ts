/**
 * A node's part of a session list holds its own sessions only: every
 * node's session ids start with its id. A node (here "h", raw heartbeats on
 * a real redis-server / nats-server) listing sessions under another node's
 * ids put them in the list as its own — the same session twice, under two
 * nodes, or sessions b never had, whose ids a `sendTo` would take to b.
 * Such entries are now dropped and counted as malformed.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { redisEngine } from "../../src/cluster/redis-engine.ts";
import { decode, encode } from "../../src/cluster/wire.ts";
import { type Connection, connect, createServer, type Server } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`a node listing sessions under another node's ids, on ${kind}`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    let raw: ClusterEngine;
    let asker: Cluster;
    let a: Server;
    let b: Server;
    let conn: Connection;
    let beat: ReturnType<typeof setInterval> | undefined;
    let bSession = "";

    before(async () => {
      engine = await startEngine(kind);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_ids", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      const make = (nodeId: string) => {
        const o = { nodeId, name: "ids", heartbeatMs: 200 };
        return kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      };
      asker = make("a");
      a = createServer({ cluster: asker });
      b = createServer({ cluster: make("b") });
      await a.listen("tcp://127.0.0.1:0");
      await b.listen("tcp://127.0.0.1:0");
      conn = await connect(b.urls[0]);
      await until(() => b.sessions.size === 1, 10_000);
      bSession = b.sessionsInfo()[0].id;
      // "h" lists b's session, one b never had, and one of its own.
      await raw.subscribe("pointsub.ids.node.h", (d) => {
        const m = decode(d);
        if (m?.header.t !== "info") return;
        const page = new TextEncoder().encode(JSON.stringify([{ id: bSession }, { id: "b.zz.9" }, { id: "h.x.1" }]));
        void raw.publish(
          `pointsub.ids.node.${m.header.n}`,
          encode({ t: "infos", n: "h", i: m.header.i, last: true, c: 1 }, page),
        );
      });
      beat = setInterval(
        () => void raw.publish("pointsub.ids.members", encode({ t: "hb", n: "h", urls: [], sessions: 1 })),
        100,
      );
      await until(() => asker.nodes().length === 3, 10_000);
    });

    after(async () => {
      clearInterval(beat);
      await sleep(0);
      await conn?.close({ timeoutMs: 100 });
      await a?.close({ timeoutMs: 100 });
      await b?.close({ timeoutMs: 100 });
      await raw?.close();
      await engine?.stop();
    });

    it("only each node's own sessions are listed under it", async () => {
      const list = await a.sessionsInfo({ cluster: true });
      assert.deepEqual(list.map((s) => `${s.node} ${s.id}`).sort(), [`b ${bSession}`, "h h.x.1"]);
    });
  });
}
