/**
 * A keyed handler that runs longer than the cluster's `idempotencyTtlMs`
 * but within its lease (`leaseMs`, 10 min by default), against real
 * engines: a retry on another node waits for it and gets its answer — the
 * handler runs once. Redis keeps a claim for its lease; a JetStream bucket
 * ages every key by its max age (`idempotencyTtlMs`) whatever the lease, so
 * on NATS the claim vanished after 1 s here and the retry on the other node
 * ran the handler a second time (2 runs, two different answers).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, type Server } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

const utf8 = new TextDecoder();

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster idempotency lease on ${kind}`, { timeout: 60_000 }, () => {
    let engine: EngineServer;
    const clusters: Cluster[] = [];
    const servers: Server[] = [];
    const conns: Connection[] = [];
    let runs = 0;

    before(async () => {
      engine = await startEngine(kind);
      for (const id of ["a", "b"]) {
        const o = { nodeId: id, name: "lease", heartbeatMs: 200, idempotencyTtlMs: 1000 };
        const cluster =
          kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
        const server = createServer({ cluster, idempotency: { waitMs: 10_000 } });
        server.handle("/slow", async () => {
          runs++;
          await sleep(3000);
          return `ran on ${id}`;
        });
        await server.listen("tcp://127.0.0.1:0");
        clusters.push(cluster);
        servers.push(server);
      }
      await until(() => clusters.every((c) => c.nodes().length === 2), 5000);
      for (const s of servers) conns.push(await connect(s.urls[0]));
    });

    after(async () => {
      await Promise.all(conns.map((c) => c.close({ timeoutMs: 100 })));
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await engine?.stop();
    });

    it("a handler running past idempotencyTtlMs (within its lease) runs once: a retry on another node gets its answer", async () => {
      const key = new TextEncoder().encode(`k-${kind}`);
      const first = conns[0].request("/slow", "x", { idempotencyKey: key });
      await sleep(1800); // past the 1 s idempotencyTtlMs, well within the lease
      const retry = conns[1].request("/slow", "x", { idempotencyKey: key });
      const answers = (await Promise.all([first, retry])).map((d) => utf8.decode(d));
      assert.equal(runs, 1, `the handler ran ${runs} times (answers: ${answers.join(", ")})`);
      assert.deepEqual(answers, ["ran on a", "ran on a"]);
      // Done, the claim is no longer written again: the answer ages out after idempotencyTtlMs and the key runs anew.
      await sleep(1500);
      assert.equal(utf8.decode(await conns[1].request("/slow", "x", { idempotencyKey: key })), "ran on b");
      assert.equal(runs, 2);
    });
  });

  describe(`cluster idempotency with leaseMs: Infinity on ${kind}`, { timeout: 60_000 }, () => {
    // The middleware takes Infinity (a claim held until its handler ends), and the memory store keeps it so;
    // Redis refused its PX (every keyed request failed, retryable: ERR value is not an integer or out of
    // range), and NATS stored its end as null: the claim read as nothing and a duplicate ran the handler again.
    let engine: EngineServer;
    const clusters: Cluster[] = [];
    const servers: Server[] = [];
    const conns: Connection[] = [];
    let runs = 0;

    before(async () => {
      engine = await startEngine(kind);
      for (const id of ["a", "b"]) {
        const o = { nodeId: id, name: "forever", heartbeatMs: 200 };
        const cluster =
          kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
        const server = createServer({ cluster, idempotency: { leaseMs: Number.POSITIVE_INFINITY } });
        server.handle("/once", async () => {
          runs++;
          await sleep(500);
          return `ran on ${id}`;
        });
        await server.listen("tcp://127.0.0.1:0");
        clusters.push(cluster);
        servers.push(server);
      }
      await until(() => clusters.every((c) => c.nodes().length === 2), 5000);
      for (const s of servers) conns.push(await connect(s.urls[0]));
    });

    after(async () => {
      await Promise.all(conns.map((c) => c.close({ timeoutMs: 100 })));
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await engine?.stop();
    });

    it("a keyed request runs its handler once; a duplicate on another node meanwhile gets its answer", async () => {
      const key = `forever-${kind}`;
      const first = conns[0].request("/once", "x", { idempotencyKey: key });
      await until(() => runs === 1, 5000);
      const retry = conns[1].request("/once", "x", { idempotencyKey: key });
      const answers = (await Promise.all([first, retry])).map((d) => utf8.decode(d));
      assert.equal(runs, 1, `the handler ran ${runs} times (answers: ${answers.join(", ")})`);
      assert.deepEqual(answers, ["ran on a", "ran on a"]);
    });
  });
}

describe("cluster idempotency on nats with idempotencyTtlMs past two timer ranges (50 days)", {
  timeout: 60_000,
}, () => {
  it("a claim held past the bucket's max age is written again every half of it, not every millisecond", async () => {
    // Half the max age (60 days: 30) is past a timer's range (24.8 days), which Node fires at once: a claim
    // with a longer lease (leaseMs: Infinity) was read and written again every millisecond while its handler ran.
    const engine = await startEngine("nats");
    const day = 24 * 3600 * 1000;
    const cluster = natsCluster({ servers: engine.url, name: "longttl", idempotencyTtlMs: 60 * day });
    const server = createServer({ cluster, idempotency: { leaseMs: Number.POSITIVE_INFINITY } });
    server.handle("/slow", async () => {
      await sleep(1000);
      return "done";
    });
    const { connect: natsConnect } = await import("nats");
    const nc = await natsConnect({ servers: engine.url });
    try {
      await server.listen("tcp://127.0.0.1:0");
      const jsm = await nc.jetstreamManager();
      const c = await connect(server.urls[0] as string);
      assert.equal(utf8.decode(await c.request("/slow", "x", { idempotencyKey: "k" })), "done");
      await c.close();
      // The claim, its answer: 2 writes (before: one a millisecond, hundreds).
      const writes = (await jsm.streams.info("KV_pointsub_longttl")).state.last_seq;
      assert.ok(writes <= 3, `${writes} writes to the bucket for one keyed request`);
    } finally {
      await nc.close();
      await server.close({ timeoutMs: 100 });
      await engine.stop();
    }
  });
});
