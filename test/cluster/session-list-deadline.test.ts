/**
 * sessionsInfo({ cluster: true }) against a node (a raw engine client on a
 * real redis-server / nats-server) that answers every page it is asked for
 * well within requestTimeoutMs, one session a page, never the last. Each
 * page came in time, so the list asked for the next one, and the next: up
 * to 262,144 pages (MAX_LISTED_SESSIONS), hours at a page just under
 * requestTimeoutMs, and every list asked meanwhile shared the gathering. The
 * list now ends at `listTimeoutMs` with what it gathered: the other node's
 * sessions whole, the dripping node's with the pages it sent.
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

const utf8 = new TextEncoder();
const SESSIONS = 3;

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster session list with a node that drips pages, on ${kind}`, { timeout: 60_000 }, () => {
    let engine: EngineServer;
    let asker: Cluster;
    let a: Server;
    let b: Server;
    let raw: ClusterEngine;
    const conns: Connection[] = [];
    let beat: ReturnType<typeof setInterval> | undefined;
    const drips = new Set<ReturnType<typeof setTimeout>>();
    let asked = 0;
    let dripping = true;

    before(async () => {
      engine = await startEngine(kind);
      const make = (nodeId: string) => {
        // listTimeoutMs is expected to fire here, once b answered (at once; 4 s for a loaded machine);
        // requestTimeoutMs is not (drip answers in 200 ms).
        const o = { nodeId, name: "drip", heartbeatMs: 200, requestTimeoutMs: 6000, listTimeoutMs: 4000 };
        return kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      };
      asker = make("a");
      a = createServer({ cluster: asker });
      b = createServer({ cluster: make("b") });
      await a.listen("tcp://127.0.0.1:0");
      await b.listen("tcp://127.0.0.1:0");
      for (let k = 0; k < SESSIONS; k++) conns.push(await connect(b.urls[0]));
      await until(() => b.sessions.size === SESSIONS, 10_000);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_drip", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      // "drip" answers each page 200 ms after it is asked: one session, not the last, the next cursor.
      await raw.subscribe("pointsub.drip.node.drip", (d) => {
        const m = decode(d);
        if (m?.header.t !== "info" || !dripping) return;
        asked++;
        const { i, n: from } = m.header;
        const c = (typeof m.header.c === "number" ? m.header.c : 0) + 1;
        const t = setTimeout(() => {
          drips.delete(t);
          const page = utf8.encode(JSON.stringify([{ id: `drip.x.${c}` }]));
          void raw.publish(`pointsub.drip.node.${from}`, encode({ t: "infos", n: "drip", i, last: false, c }, page));
        }, 200);
        drips.add(t);
      });
      beat = setInterval(
        () => void raw.publish("pointsub.drip.members", encode({ t: "hb", n: "drip", urls: [], sessions: 1 })),
        100,
      );
      await until(() => asker.nodes().length === 3, 10_000);
    });

    after(async () => {
      dripping = false;
      clearInterval(beat);
      for (const t of drips) clearTimeout(t);
      await sleep(0);
      await raw?.close();
      await Promise.all(conns.map((c) => c.close({ timeoutMs: 100 })));
      await a?.close({ timeoutMs: 100 });
      await b?.close({ timeoutMs: 100 });
      await engine?.stop();
    });

    it("the list ends at listTimeoutMs with what it gathered; the dripping node is asked no more", async () => {
      const list = a.sessionsInfo({ cluster: true });
      // A guard far past listTimeoutMs (4 s): before, the list went on for as long as drip answered.
      const settled = await Promise.race([list.then(() => true), sleep(20_000).then(() => false)]);
      const pages = asked;
      dripping = false; // a list still gathering now ends after requestTimeoutMs
      const got = await list;
      assert.ok(settled, `the list had not settled after 20 s: ${pages} pages asked of "drip"`);
      const count = (node: string) => got.filter((s) => s.node === node).length;
      assert.equal(count("b"), SESSIONS, "b's sessions whole");
      assert.ok(count("drip") >= 1, "drip's pages sent in time kept");
      assert.equal(count("drip"), got.length - SESSIONS, "nothing else");
      // No page is asked for once the list ended (pages answered meanwhile are dropped): an ask sent just
      // before the end may still arrive within the first second; none after it.
      dripping = true;
      await sleep(1000);
      const before = asked;
      await sleep(1000);
      assert.equal(asked, before, "drip asked for no more pages after the list ended");
    });
  });
}
