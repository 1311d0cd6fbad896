/**
 * A node asked for its part of a session list must not answer for another
 * node asked by the same list. Node "a" (a real server on a real
 * redis-server / nats-server) lists the cluster's sessions; "b" and "h" are
 * nodes of raw heartbeats: "b" answers its ask honestly, 300 ms later; "h"
 * answers its own at once and forges a page for "b" under the request id it
 * was given. Every node asked by one list was given the same id, so the
 * forged page counted as "b"'s: sessions of h's choosing listed as b's (or
 * an empty last page, b's own sessions left out). Each node is now given a
 * request id of its own.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { redisEngine } from "../../src/cluster/redis-engine.ts";
import { decode, encode } from "../../src/cluster/wire.ts";
import { createServer, type Server } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

const utf8 = new TextEncoder();
const page = (ids: string[]) => utf8.encode(JSON.stringify(ids.map((id) => ({ id }))));

for (const kind of ["redis", "nats"] as const) {
  describe(`session-list pages one node forges for another, on ${kind}`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    let raw: ClusterEngine;
    let cluster: Cluster;
    let server: Server;
    let beat: ReturnType<typeof setInterval> | undefined;
    const timers = new Set<ReturnType<typeof setTimeout>>();
    let forged = 0;

    before(async () => {
      engine = await startEngine(kind);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_peer", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      // "b": its one session, on one last page, 300 ms after it is asked.
      await raw.subscribe("pointsub.peer.node.b", (d) => {
        const m = decode(d);
        if (m?.header.t !== "info") return;
        const { i, n: to } = m.header;
        const t = setTimeout(() => {
          timers.delete(t);
          void raw.publish(
            `pointsub.peer.node.${to}`,
            encode({ t: "infos", n: "b", i, last: true, c: 1 }, page(["b.real.1"])),
          );
        }, 300);
        timers.add(t);
      });
      // "h": a page for "b" under the id h was given (not the last: b's own pages would still count), then its own.
      await raw.subscribe("pointsub.peer.node.h", (d) => {
        const m = decode(d);
        if (m?.header.t !== "info") return;
        const { i, n: to } = m.header;
        forged++;
        void raw.publish(
          `pointsub.peer.node.${to}`,
          encode({ t: "infos", n: "b", i, last: false, c: 1 }, page(["b.forged.1"])),
        );
        void raw.publish(`pointsub.peer.node.${to}`, encode({ t: "infos", n: "h", i, last: true, c: 1 }, page([])));
      });
      const o = { nodeId: "a", name: "peer", heartbeatMs: 100, requestTimeoutMs: 3000 };
      cluster = kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      server = createServer({ cluster });
      await server.listen("tcp://127.0.0.1:0");
      beat = setInterval(() => {
        for (const n of ["b", "h"])
          void raw.publish("pointsub.peer.members", encode({ t: "hb", n, urls: [], sessions: 1 }));
      }, 100);
      await until(() => cluster.nodes().length === 3, 10_000);
    });

    after(async () => {
      clearInterval(beat);
      for (const t of timers) clearTimeout(t);
      await sleep(0);
      await server?.close({ timeoutMs: 100 });
      await raw?.close();
      await engine?.stop();
    });

    it("a page one node sends in another's name is not part of the list", async () => {
      const list = await server.sessionsInfo({ cluster: true });
      assert.equal(forged, 1, "h was asked, and forged a page for b");
      assert.deepEqual(
        list.map((s) => `${s.node} ${s.id}`),
        ["b b.real.1"],
      );
    });
  });
}
