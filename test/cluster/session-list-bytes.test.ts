/**
 * sessionsInfo({ cluster: true }) against a node (a raw engine client on a
 * real redis-server / nats-server) whose every page holds one session of
 * ~7 KB, never the last. A list held at most 262,144 sessions, but nothing
 * bounded their bytes: each page asked for was kept, up to 262,144 pages of
 * `maxBusMessageBytes` (128 GiB at the default 512 KiB) in the asker's
 * memory. Now a list gathers at most 512 pages' worth of bytes (256 MiB at
 * the default); past it, pages are dropped and counted as malformed, and
 * that node's part of the list ends.
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

const BUS_BYTES = 8192;
/** Pages "fat" answers at most (then its last): before, the asker kept every one. */
const FAT_PAGES = 2000;

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster session list from a node whose pages never end, on ${kind}`, { timeout: 90_000 }, () => {
    let engine: EngineServer;
    let asker: Cluster;
    let a: Server;
    let raw: ClusterEngine;
    let beat: ReturnType<typeof setInterval> | undefined;
    let asked = 0;

    before(async () => {
      engine = await startEngine(kind);
      const o = { nodeId: "a", name: "fat", heartbeatMs: 200, requestTimeoutMs: 2000, maxBusMessageBytes: BUS_BYTES };
      asker = kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      a = createServer({ cluster: asker });
      await a.listen("tcp://127.0.0.1:0");
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_fat", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      const page = new TextEncoder().encode(JSON.stringify([{ id: "fat.x.1", principal: "p".repeat(7000) }]));
      await raw.subscribe("pointsub.fat.node.fat", (d) => {
        const m = decode(d);
        if (m?.header.t !== "info" || typeof m.header.c !== "number") return;
        asked++;
        const last = asked >= FAT_PAGES;
        const header = { t: "infos" as const, n: "fat", i: m.header.i, last, c: m.header.c + 1 };
        void raw.publish(`pointsub.fat.node.${m.header.n}`, encode(header, page));
      });
      beat = setInterval(
        () => void raw.publish("pointsub.fat.members", encode({ t: "hb", n: "fat", urls: [], sessions: 1 })),
        100,
      );
      await until(() => asker.nodes().some((n) => n.id === "fat"), 5000);
    });

    after(async () => {
      clearInterval(beat);
      await sleep(0);
      await raw?.close();
      await a?.close({ timeoutMs: 100 });
      await engine?.stop();
    });

    it("a list keeps at most 512 pages' worth of bytes; that node's part ends there", async () => {
      const before = asker.stats().malformed;
      const list = await a.sessionsInfo({ cluster: true });
      const fat = list.filter((s) => s.node === "fat").length;
      const most = Math.floor((512 * BUS_BYTES) / 7000);
      assert.ok(fat <= most, `${fat} sessions of ~7 KB kept from "fat" (${asked} pages asked)`);
      assert.ok(fat >= most / 2, `${fat} sessions kept`);
      assert.ok(asked <= fat + 1, `${asked} pages asked for ${fat} kept`);
      assert.ok(asker.stats().malformed > before, "the page past the bound counted");
    });
  });
}
