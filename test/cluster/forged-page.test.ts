/**
 * A page of a session list must answer a request the asker made. Node "a"
 * (a real server on a real redis-server / nats-server) lists the cluster's
 * sessions while "m" (a node of raw heartbeats) answers nothing; another
 * publisher on the bus knows "a"'s incarnation from its heartbeats, and the
 * ids of "a"'s requests were `<node>:<incarnation>:<n>`: it answered them
 * as "m", with sessions of its choosing (or an empty last page, leaving a
 * node's sessions out). A request id now ends in a random part.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { redisEngine } from "../../src/cluster/redis-engine.ts";
import { decode, encode } from "../../src/cluster/wire.ts";
import { createServer, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`session-list pages for guessed request ids, on ${kind}`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    let raw: ClusterEngine;
    let cluster: Cluster;
    let server: Server;
    let beat: ReturnType<typeof setInterval> | undefined;
    let incarnation = "";
    let asked = 0;

    before(async () => {
      engine = await startEngine(kind);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_page", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      await raw.subscribe("pointsub.page.members", (d) => {
        const m = decode(d);
        if (m?.header.t === "hb" && m.header.n === "a" && typeof m.header.k === "string") {
          incarnation = m.header.k.slice(0, m.header.k.indexOf("."));
        }
      });
      await raw.subscribe("pointsub.page.node.m", (d) => {
        if (decode(d)?.header.t === "info") asked++;
      });
      const o = { nodeId: "a", name: "page", heartbeatMs: 100, requestTimeoutMs: 1500 };
      cluster = kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      server = createServer({ cluster });
      await server.listen("tcp://127.0.0.1:0");
      beat = setInterval(
        () => void raw.publish("pointsub.page.members", encode({ t: "hb", n: "m", urls: [], sessions: 1 })),
        100,
      );
      await until(() => cluster.nodes().some((n) => n.id === "m") && incarnation !== "", 5000);
    });

    after(async () => {
      clearInterval(beat);
      await server?.close({ timeoutMs: 100 });
      await raw?.close();
      await engine?.stop();
    });

    it("a page for a guessed request id is not part of the list", async () => {
      const list = server.sessionsInfo({ cluster: true });
      await until(() => asked === 1, 5000);
      const fake = new TextEncoder().encode(JSON.stringify([{ id: "m.forged.1" }]));
      for (let n = 0; n < 64; n++) {
        const i = `a:${incarnation}:${n.toString(36)}`;
        await raw.publish("pointsub.page.node.a", encode({ t: "infos", n: "m", i, last: true, c: 1 }, fake));
      }
      const ids = (await list).map((s) => s.id);
      assert.ok(!ids.includes("m.forged.1"), `the list: ${ids.join(", ")}`);
    });
  });
}
