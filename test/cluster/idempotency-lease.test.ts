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

/**
 * Two nodes `a` and `b` on a `kind` engine started for the suite (before/after hooks), each serving `route`
 * with a handler that counts its runs and answers `ran on <node>` after `handlerMs`; a connection to each.
 */
function twoNodes(
  kind: "redis" | "nats",
  cluster: { name: string; idempotencyTtlMs?: number },
  idempotency: { waitMs?: number; leaseMs?: number },
  route: string,
  handlerMs: number,
): { runs: number; conns: Connection[] } {
  let engine: EngineServer | undefined;
  const clusters: Cluster[] = [];
  const servers: Server[] = [];
  const state = { runs: 0, conns: [] as Connection[] };
  before(async () => {
    engine = await startEngine(kind);
    const url = engine.url;
    for (const id of ["a", "b"]) {
      const o = { ...cluster, nodeId: id, heartbeatMs: 200 };
      const c = kind === "redis" ? redisCluster({ ...o, url }) : natsCluster({ ...o, servers: url });
      const server = createServer({ cluster: c, idempotency });
      server.handle(route, async () => {
        state.runs++;
        await sleep(handlerMs);
        return `ran on ${id}`;
      });
      await server.listen("tcp://127.0.0.1:0");
      clusters.push(c);
      servers.push(server);
    }
    await until(() => clusters.every((c) => c.nodes().length === 2), 5000);
    for (const s of servers) state.conns.push(await connect(s.urls[0]));
  });
  after(async () => {
    await Promise.all(state.conns.map((c) => c.close({ timeoutMs: 100 })));
    await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
    await engine?.stop();
  });
  return state;
}

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster idempotency lease on ${kind}`, { timeout: 60_000 }, () => {
    const n = twoNodes(kind, { name: "lease", idempotencyTtlMs: 1000 }, { waitMs: 10_000 }, "/slow", 3000);
    const conns = n.conns;

    it("a handler running past idempotencyTtlMs (within its lease) runs once: a retry on another node gets its answer", async () => {
      const key = new TextEncoder().encode(`k-${kind}`);
      const first = conns[0].request("/slow", "x", { idempotencyKey: key });
      await sleep(1800); // past the 1 s idempotencyTtlMs, well within the lease
      const retry = conns[1].request("/slow", "x", { idempotencyKey: key });
      const answers = (await Promise.all([first, retry])).map((d) => utf8.decode(d));
      assert.equal(n.runs, 1, `the handler ran ${n.runs} times (answers: ${answers.join(", ")})`);
      assert.deepEqual(answers, ["ran on a", "ran on a"]);
      // Done, the claim is no longer written again: the answer ages out after idempotencyTtlMs and the key runs anew.
      await sleep(1500);
      assert.equal(utf8.decode(await conns[1].request("/slow", "x", { idempotencyKey: key })), "ran on b");
      assert.equal(n.runs, 2);
    });
  });

  describe(`cluster idempotency with leaseMs: Infinity on ${kind}`, { timeout: 60_000 }, () => {
    // The middleware takes Infinity (a claim held until its handler ends), and the memory store keeps it so;
    // Redis refused its PX (every keyed request failed, retryable: ERR value is not an integer or out of
    // range), and NATS stored its end as null: the claim read as nothing and a duplicate ran the handler again.
    const n = twoNodes(kind, { name: "forever" }, { leaseMs: Number.POSITIVE_INFINITY }, "/once", 500);
    const conns = n.conns;

    it("a keyed request runs its handler once; a duplicate on another node meanwhile gets its answer", async () => {
      const key = `forever-${kind}`;
      const first = conns[0].request("/once", "x", { idempotencyKey: key });
      await until(() => n.runs === 1, 5000);
      const retry = conns[1].request("/once", "x", { idempotencyKey: key });
      const answers = (await Promise.all([first, retry])).map((d) => utf8.decode(d));
      assert.equal(n.runs, 1, `the handler ran ${n.runs} times (answers: ${answers.join(", ")})`);
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
