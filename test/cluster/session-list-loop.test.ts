/**
 * sessionsInfo({ cluster: true }) against a node (a raw engine client on a
 * real redis-server / nats-server) whose pages carry no session: a JSON
 * value that is not an array, or an array of non-objects, each page marked
 * not last with a cursor. Such a page adds nothing to the list, yet the
 * asker asked for the next one, with no end: every page came within
 * requestTimeoutMs, so the list never settled (thousands of pages asked in
 * 3 s), and every later list on that node shared the gathering and hung
 * with it. A page that adds no session now ends that node's part of the
 * list, as an empty one does.
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

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster session list from a node whose pages add nothing, on ${kind}`, { timeout: 60_000 }, () => {
    let engine: EngineServer;
    let asker: Cluster;
    let a: Server;
    let raw: ClusterEngine;
    let conn: Connection;
    let beat: ReturnType<typeof setInterval> | undefined;
    /** What "loop" answers each page with (undefined: nothing). */
    let payload: Uint8Array | undefined;
    let asked = 0;
    /** Whether "loop" answers as an older node would, pushing pages unasked (here a page of "{}" every 100 ms, at most 60). */
    let pushJunk = false;
    const pushers: ReturnType<typeof setInterval>[] = [];

    before(async () => {
      engine = await startEngine(kind);
      const o = { nodeId: "a", name: "loop", heartbeatMs: 200, requestTimeoutMs: 1000 };
      asker = kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      a = createServer({ cluster: asker });
      await a.listen("tcp://127.0.0.1:0");
      conn = await connect(a.urls[0]);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_loop", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      // "loop" answers every page it is asked for at once, never the last, with the next cursor (or, pushJunk,
      // pushes pages unasked).
      await raw.subscribe("pointsub.loop.node.loop", (d) => {
        const m = decode(d);
        if (m?.header.t !== "info") return;
        if (pushJunk) {
          const { i, n: from } = m.header;
          let n = 0;
          const push = setInterval(() => {
            if (++n > 60) clearInterval(push);
            else {
              const junk = encode({ t: "infos", n: "loop", i, last: false }, utf8.encode("{}"));
              void raw.publish(`pointsub.loop.node.${from}`, junk);
            }
          }, 100);
          pushers.push(push);
          return;
        }
        if (payload === undefined) return;
        asked++;
        const c = typeof m.header.c === "number" ? m.header.c + 1 : undefined;
        const header = {
          t: "infos" as const,
          n: "loop",
          i: m.header.i,
          last: false,
          ...(c === undefined ? {} : { c }),
        };
        void raw.publish(`pointsub.loop.node.${m.header.n}`, encode(header, payload));
      });
      beat = setInterval(
        () => void raw.publish("pointsub.loop.members", encode({ t: "hb", n: "loop", urls: [], sessions: 1 })),
        100,
      );
      await until(() => asker.nodes().some((n) => n.id === "loop"), 5000);
    });

    after(async () => {
      payload = undefined;
      pushJunk = false;
      for (const t of pushers) clearInterval(t);
      clearInterval(beat);
      await sleep(0);
      await raw?.close();
      await conn?.close({ timeoutMs: 100 });
      await a?.close({ timeoutMs: 100 });
      await engine?.stop();
    });

    it("an older node's pushed pages that add nothing do not hold the list past requestTimeoutMs", async () => {
      // "loop" answers as a node without cursors would (every page pushed unasked), but with no end: a page of
      // "{}" every 100 ms (at most 60), never the last.
      payload = undefined;
      pushJunk = true;
      try {
        const t0 = performance.now();
        const list = await a.sessionsInfo({ cluster: true });
        const ms = performance.now() - t0;
        assert.deepEqual(
          list.map((s) => s.node),
          ["a"],
        );
        assert.ok(ms < 2500, `${Math.round(ms)} ms (requestTimeoutMs 1000)`);
      } finally {
        pushJunk = false;
        for (const t of pushers) clearInterval(t);
      }
    });

    for (const [what, body] of [
      ["a JSON object", "{}"],
      ["an array of numbers", "[1,2,3]"],
    ] as const) {
      it(`pages of ${what} end that node's list: the list settles`, async () => {
        payload = utf8.encode(body);
        asked = 0;
        const t0 = performance.now();
        const list = a.sessionsInfo({ cluster: true });
        const settled = await Promise.race([list.then(() => true), sleep(3000).then(() => false)]);
        const n = asked;
        // Unblock a list still looping: "loop" answers nothing more, and is left out after requestTimeoutMs.
        payload = undefined;
        const got = await list;
        assert.ok(settled, `the list had not settled after 3 s: ${n} pages asked of "loop"`);
        assert.ok(n <= 2, `${n} pages asked of "loop"`);
        assert.ok(performance.now() - t0 < 3000);
        assert.deepEqual(
          got.map((s) => s.node),
          ["a"],
          "a's own session, nothing from loop",
        );
      });
    }
  });
}
