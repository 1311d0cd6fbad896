/**
 * A keyed handler answered, and the engine refused the write of its answer
 * (a real redis-server at its `maxmemory`: writes fail with OOM while reads
 * and publishes go on; a real nats-server whose bucket's stream takes no
 * message as large as the answer). The caller gets the answer either way;
 * the key's claim stayed "running", this node's and live, until its lease
 * (10 min) ended: a retry once the engine takes the write again waited
 * `waitMs` and failed ERR_TIMEOUT ("still running"), again and again. Now
 * the node writes the answer again in the background until it lands (or
 * the lease ends): the retry gets it.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { connect as natsConnect } from "nats";
import { createClient } from "redis";
import { natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { type EngineServer, startEngine } from "./engines.ts";

const ANSWER = "paid ".padEnd(4000, "."); // larger than the claim's entry

/** Makes the engine refuse the answer's write (`on`), or take it again. */
type Refuser = { set(on: boolean): Promise<void>; close(): Promise<void> };

async function refuser(kind: "redis" | "nats", url: string): Promise<Refuser> {
  if (kind === "redis") {
    // No reconnection: the engine may be killed under it.
    const admin = createClient({ url, socket: { reconnectStrategy: false } });
    admin.on("error", () => {});
    await admin.connect();
    return {
      set: async (on) => {
        await admin.configSet(on ? { maxmemory: "1", "maxmemory-policy": "noeviction" } : { maxmemory: "0" });
      },
      close: async () => {
        if (admin.isOpen) await admin.disconnect().catch(() => {});
      },
    };
  }
  const nc = await natsConnect({ servers: url });
  const jsm = await nc.jetstreamManager();
  const stream = "KV_pointsub_answer";
  return {
    set: async (on) => {
      const { config } = await jsm.streams.info(stream);
      await jsm.streams.update(stream, { ...config, max_msg_size: on ? 1000 : -1 });
    },
    close: () => nc.close(),
  };
}

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster idempotency on ${kind}: an answer the engine refused to write`, { timeout: 60_000 }, () => {
    let engine: EngineServer | undefined;
    let server: Server | undefined;
    let refuse: Refuser | undefined;
    const conns: Connection[] = [];

    after(async () => {
      await Promise.all(conns.map((c) => c.close({ timeoutMs: 100 })));
      await server?.close({ timeoutMs: 100 });
      await refuse?.close();
      await engine?.stop();
    });

    it("a retry once the engine takes the write again gets the answer, not ERR_TIMEOUT after waitMs", async () => {
      const e = await startEngine(kind);
      engine = e;
      const o = { nodeId: "a", name: "answer", heartbeatMs: 200 };
      const cluster = kind === "redis" ? redisCluster({ ...o, url: e.url }) : natsCluster({ ...o, servers: e.url });
      const storeErrors: string[] = [];
      let runs = 0;
      server = createServer({
        cluster,
        idempotency: { waitMs: 3000, onStoreError: (x, op) => storeErrors.push(`${op}: ${(x as Error).message}`) },
      });
      const r = await refuser(kind, e.url);
      refuse = r;
      server.handle("/pay", async () => {
        runs++;
        // The engine refuses the answer's write once the handler ran.
        await r.set(true);
        return ANSWER;
      });
      await server.listen("tcp://127.0.0.1:0");
      conns.push(await connect(server.urls[0]), await connect(server.urls[0]));
      const first = await conns[0].request("/pay", "x", { idempotencyKey: "order-1" });
      assert.equal(new TextDecoder().decode(first), ANSWER, "the caller gets the handler's answer");
      assert.equal(storeErrors.length, 1, "the answer's write failed");
      assert.match(storeErrors[0], /^complete: /);
      await r.set(false);
      const retry = await conns[1].request("/pay", "x", { idempotencyKey: "order-1" }).then(
        (d) => new TextDecoder().decode(d),
        (x: PointSubError) => `${x.code}: ${x.message}`,
      );
      assert.equal(retry, ANSWER);
      assert.equal(runs, 1, "the handler ran once");
    });
  });
}

describe("cluster idempotency: answers being written again when the server closes with its engine down", {
  timeout: 60_000,
}, () => {
  let engine: EngineServer | undefined;
  let server: Server | undefined;
  let refuse: Refuser | undefined;
  let conn: Connection | undefined;

  after(async () => {
    await conn?.close({ timeoutMs: 100 });
    await server?.close({ timeoutMs: 100 });
    await refuse?.close().catch(() => {});
    await engine?.stop();
  });

  it("are dropped: nothing is kept or tried again for the lease's 10 minutes", async () => {
    const e = await startEngine("redis");
    engine = e;
    const cluster = redisCluster({ url: e.url, nodeId: "a", name: "answer", heartbeatMs: 100, deadAfterMs: 300 });
    server = createServer({ cluster, idempotency: { waitMs: 3000, onStoreError: () => {} } });
    const r = await refuser("redis", e.url);
    refuse = r;
    server.handle("/pay", async () => {
      await r.set(true);
      return ANSWER;
    });
    await server.listen("tcp://127.0.0.1:0");
    conn = await connect(server.urls[0]);
    await conn.request("/pay", "x", { idempotencyKey: "order-2" });
    const inner = cluster.idempotencyStore as unknown as { unsettled: Map<string, unknown> };
    assert.equal(inner.unsettled.size, 1, "the answer is being written again");
    const down = new Promise<void>((resolve) => cluster.on("engine", (up) => up || resolve()));
    await e.kill();
    await down;
    await server.close({ timeoutMs: 100 });
    assert.equal(inner.unsettled.size, 0);
  });
});

describe("cluster idempotency: a handler that answers after the server closed", { timeout: 60_000 }, () => {
  let engine: EngineServer | undefined;
  let server: Server | undefined;
  let conn: Connection | undefined;

  after(async () => {
    conn?.destroy();
    await server?.close({ timeoutMs: 100 });
    await engine?.stop();
  });

  it("is not written again on the closed engine until its lease ends (10 min)", async () => {
    const e = await startEngine("redis");
    engine = e;
    const cluster = redisCluster({ url: e.url, nodeId: "a", name: "late", heartbeatMs: 100 });
    const storeErrors: string[] = [];
    server = createServer({
      cluster,
      idempotency: { waitMs: 3000, onStoreError: (x, op) => storeErrors.push(`${op}: ${(x as Error).message}`) },
    });
    let go!: () => void;
    const gate = new Promise<void>((r) => (go = r));
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    server.handle("/pay", async () => {
      started();
      await gate;
      return ANSWER;
    });
    await server.listen("tcp://127.0.0.1:0");
    conn = await connect(server.urls[0]);
    void conn.request("/pay", "x", { idempotencyKey: "order-3", timeoutMs: 0 }).catch(() => {});
    await running;
    // The close does not wait for the handler (past its timeout): the cluster leaves, its engine is closed.
    await server.close({ timeoutMs: 100 });
    go();
    for (let i = 0; i < 250 && storeErrors.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.match(storeErrors[0] ?? "", /^complete: /, "the late answer's write failed");
    const inner = cluster.idempotencyStore as unknown as { unsettled: Map<string, unknown> };
    assert.equal(inner.unsettled.size, 0, "nothing kept to be written again");
  });
});
