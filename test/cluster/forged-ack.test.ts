/**
 * A sendTo's ack must come from the node the sendTo went to. Node "a" (a
 * real server on a real redis-server / nats-server) sends to a session of
 * "b" (a node of raw heartbeats that never acks); another publisher on the
 * bus ("c") acks it. Before, any ack naming the request id settled the
 * sendTo — and the ids were `<node>:<incarnation>:<n>`, the incarnation in
 * every heartbeat of "a": "c" guessed them and resolved "a"'s sendTos to
 * "b" (or failed them with a code of its choice). Now a request id carries
 * a random part, and an ack naming another node than the addressed one is
 * ignored and counted (stats().foreignAcks).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { redisEngine } from "../../src/cluster/redis-engine.ts";
import { decode, encode } from "../../src/cluster/wire.ts";
import { createServer, type PointSubError, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`acks from a node a sendTo did not go to, on ${kind}`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    let raw: ClusterEngine;
    let cluster: Cluster;
    let server: Server;
    let beat: ReturnType<typeof setInterval> | undefined;
    /** "a"'s incarnation, from its heartbeats' echo key. */
    let incarnation = "";
    /** The `to`s read on "b"'s subject. */
    const tos: string[] = [];

    before(async () => {
      engine = await startEngine(kind);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_forged", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      await raw.subscribe("pointsub.forged.members", (d) => {
        const m = decode(d);
        if (m?.header.t === "hb" && m.header.n === "a" && typeof m.header.k === "string") {
          incarnation = m.header.k.slice(0, m.header.k.indexOf("."));
        }
      });
      await raw.subscribe("pointsub.forged.node.b", (d) => {
        const m = decode(d);
        if (m?.header.t === "to") tos.push(m.header.i);
      });
      const o = { nodeId: "a", name: "forged", heartbeatMs: 100, requestTimeoutMs: 1500 };
      cluster = kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      server = createServer({ cluster });
      await server.listen("tcp://127.0.0.1:0");
      // "b": a member that never acks.
      beat = setInterval(
        () => void raw.publish("pointsub.forged.members", encode({ t: "hb", n: "b", urls: [], sessions: 1 })),
        100,
      );
      await until(() => cluster.nodes().some((n) => n.id === "b") && incarnation !== "", 5000);
    });

    after(async () => {
      clearInterval(beat);
      await server?.close({ timeoutMs: 100 });
      await raw?.close();
      await engine?.stop();
    });

    it("an ack for a guessed request id does not settle the sendTo", async () => {
      const sent = server.sendTo("b.x.1", "hi").then(
        () => "resolved",
        (e: PointSubError) => e.code,
      );
      await until(() => tos.length === 1, 5000);
      // "c" knows "a"'s incarnation from its heartbeats and its ids are numbered from 0: it acks them all.
      for (let n = 0; n < 64; n++) {
        const i = `a:${incarnation}:${n.toString(36)}`;
        await raw.publish("pointsub.forged.node.a", encode({ t: "ack", i }));
        await raw.publish("pointsub.forged.node.a", encode({ t: "ack", n: "b", i }));
      }
      assert.equal(await sent, "ERR_TIMEOUT", "only b's ack settles it, and b never acks");
    });

    it("an ack naming another node than the one addressed is ignored and counted", async () => {
      const before = cluster.stats().foreignAcks;
      tos.length = 0;
      const sent = server.sendTo("b.x.1", "hi").then(
        () => "resolved",
        (e: PointSubError) => e.code,
      );
      await until(() => tos.length === 1, 5000);
      // "c" reads the request on b's subject, and acks it as itself.
      await raw.publish("pointsub.forged.node.a", encode({ t: "ack", n: "c", i: tos[0] }));
      await raw.publish(
        "pointsub.forged.node.a",
        encode({ t: "ack", n: "c", i: tos[0], code: "ERR_NOT_FOUND", message: "gone" }),
      );
      assert.equal(await sent, "ERR_TIMEOUT");
      assert.equal(cluster.stats().foreignAcks, before + 2);
    });
  });
}
