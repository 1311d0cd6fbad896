/**
 * A node restarted under the same id (a pod with a fixed name) while its
 * earlier process still ran — frozen, cut off from the engine, then closed:
 * that process's `bye` named only the node id, so every node dropped the
 * new process from the membership (its sendTos failed, its running claims
 * were taken over by the other nodes and their handlers ran again) until
 * its next heartbeat. A `bye` now names its incarnation, and one from
 * another incarnation than the member's is ignored. Real engines; the
 * earlier process's `bye` is published raw.
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
  describe(`a bye from a node's earlier process, on ${kind}`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    let raw: ClusterEngine;
    let ca: Cluster;
    let a: Server;
    let b: Server | undefined;
    const left: string[] = [];
    const byes: string[] = [];

    before(async () => {
      engine = await startEngine(kind);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_bye", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      await raw.subscribe("pointsub.bye.members", (d) => {
        const m = decode(d);
        if (m?.header.t === "bye") byes.push(new TextDecoder().decode(d.subarray(4)));
      });
      const make = (nodeId: string) => {
        const o = { nodeId, name: "bye", heartbeatMs: 200 };
        return kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      };
      ca = make("a");
      ca.on("nodeLeft", (id) => left.push(id));
      a = createServer({ cluster: ca });
      await a.listen("tcp://127.0.0.1:0");
      // b's earlier process: it ran, and closed (its bye is kept to publish again below).
      const first = createServer({ cluster: make("b") });
      await first.listen("tcp://127.0.0.1:0");
      await until(() => ca.nodes().length === 2, 10_000);
      await first.close({ timeoutMs: 100 });
      await until(() => left.includes("b") && byes.length === 1, 10_000);
      left.length = 0;
      b = createServer({ cluster: make("b") });
      await b.listen("tcp://127.0.0.1:0");
      await until(() => ca.nodes().length === 2, 10_000);
    });

    after(async () => {
      await a?.close({ timeoutMs: 100 });
      await b?.close({ timeoutMs: 100 });
      await raw?.close();
      await engine?.stop();
    });

    it("the new process stays a member", async () => {
      // The earlier process's bye again (as if it closed only now), then a heartbeat of another node "z" on
      // the same subject from the same publisher: once a knows z, it has read the bye.
      const header = new TextEncoder().encode(byes[0]);
      const again = new Uint8Array(4 + header.length);
      new DataView(again.buffer).setUint32(0, header.length);
      again.set(header, 4);
      assert.equal(decode(again)?.header.t, "bye");
      await raw.publish("pointsub.bye.members", again);
      await raw.publish("pointsub.bye.members", encode({ t: "hb", n: "z", urls: [], sessions: 0 }));
      await until(() => ca.nodes().some((n) => n.id === "z"), 10_000);
      assert.deepEqual(left, [], "b did not leave");
      assert.ok(ca.nodes().some((n) => n.id === "b"));
    });
  });
}
