/**
 * sessionsInfo({ cluster: true }) against real engines (a redis-server and a
 * nats-server on free loopback ports), two servers in this process: a node's
 * session list crosses the bus a page at a time, each page asked for once
 * the one before arrived, so what a list puts in the engine for the asker is
 * one page per node, not the whole list at once. Pushed whole (every page at
 * once), a 40 MB list went over Redis's limit for a subscriber's output
 * (32 MB) and NATS's for a slow consumer: the engine cut the asking node's
 * connection, it lost the other nodes' heartbeats, and the list came back
 * short (Redis: 62 of 200 sessions; NATS: none) — and 20 lists of 4 MB asked
 * at once did the same (Redis: 0 of 200 in each). Concurrent lists on a node
 * now also share one gathering.
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

const SESSIONS = 200;

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster session list on ${kind}`, { timeout: 90_000 }, () => {
    let engine: EngineServer;
    let asker: Cluster;
    let holder: Cluster;
    let a: Server;
    let b: Server;
    let principal = "";
    const conns: Connection[] = [];
    const events: string[] = [];
    let raw: ClusterEngine | undefined;

    before(async () => {
      engine = await startEngine(kind);
      const make = (nodeId: string) => {
        const o = { nodeId, name: "list", heartbeatMs: 200, requestTimeoutMs: 1500 };
        return kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      };
      asker = make("a");
      holder = make("b");
      a = createServer({ cluster: asker });
      // The principal stands for whatever makes a session's info large (and many sessions for a long list):
      // its JSON is read when a list is asked for, so each case sets its own size.
      b = createServer({ cluster: holder, authenticate: () => ({ toJSON: () => principal }) });
      await a.listen("tcp://127.0.0.1:0");
      await b.listen("tcp://127.0.0.1:0");
      await until(() => asker.nodes().length === 2 && holder.nodes().length === 2, 5000);
      for (let i = 0; i < SESSIONS; i++) conns.push(await connect(b.urls[0], { credentials: "x" }));
      await until(() => b.sessions.size === SESSIONS, 5000);
      asker.on("nodeLeft", (id) => events.push(`nodeLeft ${id}`));
      asker.on("engine", (up) => events.push(`engine ${up}`));
    });

    after(async () => {
      await raw?.close();
      await Promise.all(conns.map((c) => c.close({ timeoutMs: 100 })));
      await a?.close({ timeoutMs: 100 });
      await b?.close({ timeoutMs: 100 });
      await engine?.stop();
    });

    const fromB = (list: { node: string }[]) => list.filter((s) => s.node === "b").length;

    it("a list of 40 MB arrives whole; the asking node stays on the bus", async () => {
      principal = "p".repeat(200_000);
      const list = await a.sessionsInfo({ cluster: true });
      assert.equal(fromB(list), SESSIONS, `${fromB(list)} of ${SESSIONS} sessions of b listed`);
      assert.ok(
        list.every((s) => s.node !== "b" || s.principal === principal),
        "every entry whole",
      );
      assert.deepEqual(events, [], "the asker neither lost b nor its engine");
    });

    it("20 lists of 4 MB asked at once all arrive whole; the asking node stays on the bus", async () => {
      principal = "q".repeat(20_000);
      const lists = await Promise.all(Array.from({ length: 20 }, () => a.sessionsInfo({ cluster: true })));
      const counts = lists.map(fromB);
      assert.deepEqual(
        counts,
        counts.map(() => SESSIONS),
        `sessions of b in each list: ${counts.join(", ")}`,
      );
      // Each caller gets its own array.
      lists[0].length = 0;
      assert.equal(fromB(lists[1]), SESSIONS);
      assert.deepEqual(events, [], "the asker neither lost b nor its engine");
    });

    it("a node with no session answers at once (its empty page was not JSON: the list waited requestTimeoutMs)", async () => {
      const e = createServer({
        cluster:
          kind === "redis"
            ? redisCluster({ nodeId: "e", name: "list", heartbeatMs: 200, url: engine.url })
            : natsCluster({ nodeId: "e", name: "list", heartbeatMs: 200, servers: engine.url }),
      });
      await e.listen("tcp://127.0.0.1:0");
      try {
        await until(() => asker.nodes().some((n) => n.id === "e"), 5000);
        principal = "s";
        const t0 = performance.now();
        const list = await a.sessionsInfo({ cluster: true });
        const ms = performance.now() - t0;
        assert.equal(fromB(list), SESSIONS);
        assert.ok(ms < 1000, `${Math.round(ms)} ms (requestTimeoutMs 1500)`);
      } finally {
        await e.close({ timeoutMs: 100 });
        await until(() => !asker.nodes().some((n) => n.id === "e"), 5000);
      }
    });

    it("a node that answers no page is left out after requestTimeoutMs; a cursor that is not the next one ends the list", async () => {
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_list", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      const pages: { last: boolean; c?: number; n: number }[] = [];
      await raw.subscribe("pointsub.list.node.mute", (d) => {
        const m = decode(d);
        if (m?.header.t === "infos") {
          const list = JSON.parse(new TextDecoder().decode(m.payload)) as unknown[];
          pages.push({ last: m.header.last, c: m.header.c, n: list.length });
        }
      });
      // "mute" heartbeats like a node, and answers nothing.
      const beat = setInterval(
        () => void raw?.publish("pointsub.list.members", encode({ t: "hb", n: "mute", urls: [], sessions: 1 })),
        100,
      );
      try {
        await until(() => asker.nodes().some((n) => n.id === "mute"), 5000);
        principal = "r".repeat(5000); // b's list takes pages of about 100 sessions
        const t0 = performance.now();
        const list = await a.sessionsInfo({ cluster: true });
        const ms = performance.now() - t0;
        assert.equal(fromB(list), SESSIONS);
        assert.ok(ms >= 1400 && ms < 4000, `${Math.round(ms)} ms`);
        // Asked by "mute": the first page, then a cursor b did not give.
        await raw.publish("pointsub.list.node.b", encode({ t: "info", n: "mute", i: "mute:x:1", c: 0 }));
        await until(() => pages.length === 1, 5000);
        assert.equal(pages[0].last, false);
        assert.ok(pages[0].n > 0 && pages[0].n < SESSIONS, `${pages[0].n} on the first page`);
        await raw.publish("pointsub.list.node.b", encode({ t: "info", n: "mute", i: "mute:x:1", c: 7 }));
        await until(() => pages.length === 2, 5000);
        assert.deepEqual(pages[1], { last: true, c: 0, n: 0 });
        // The right cursor after that finds no list either: it was dropped.
        await raw.publish("pointsub.list.node.b", encode({ t: "info", n: "mute", i: "mute:x:1", c: pages[0].c }));
        await until(() => pages.length === 3, 5000);
        assert.deepEqual(pages[2], { last: true, c: 0, n: 0 });
      } finally {
        clearInterval(beat);
        await sleep(0);
      }
    });
  });
}
