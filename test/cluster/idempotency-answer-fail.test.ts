/**
 * A keyed handler answered, and the engine refused the write of its answer
 * (a real redis-server at its `maxmemory`: writes fail with OOM while reads
 * and publishes go on). The caller gets the answer either way; the key's
 * claim stayed "running", this node's and live, until its lease (10 min)
 * ended: a retry once the engine takes writes again waited `waitMs` and
 * failed ERR_TIMEOUT ("still running"), again and again. Now the node
 * writes the answer again in the background until it lands (or the lease
 * ends): the retry gets it.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient } from "redis";
import { type Cluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { type EngineServer, startEngine } from "./engines.ts";

describe("cluster idempotency: an answer the engine refused to write", { timeout: 60_000 }, () => {
  let engine: EngineServer;
  let cluster: Cluster;
  let server: Server;
  let conns: Connection[] = [];
  let admin: ReturnType<typeof createClient>;
  let runs = 0;
  const storeErrors: string[] = [];

  before(async () => {
    engine = await startEngine("redis");
    admin = createClient({ url: engine.url });
    await admin.connect();
    cluster = redisCluster({ url: engine.url, nodeId: "a", name: "answer", heartbeatMs: 200 });
    server = createServer({
      cluster,
      idempotency: { waitMs: 3000, onStoreError: (e, op) => storeErrors.push(`${op}: ${(e as Error).message}`) },
    });
    server.handle("/pay", async () => {
      runs++;
      // Redis at its maxmemory once the handler ran: the answer's write is refused (OOM).
      await admin.configSet({ maxmemory: "1", "maxmemory-policy": "noeviction" });
      return `paid ${runs}`;
    });
    await server.listen("tcp://127.0.0.1:0");
    conns = [await connect(server.urls[0]), await connect(server.urls[0])];
  });

  after(async () => {
    await Promise.all(conns.map((c) => c.close({ timeoutMs: 100 })));
    await server?.close({ timeoutMs: 100 });
    await admin?.quit().catch(() => {});
    await engine?.stop();
  });

  it("a retry once the engine takes writes again gets the answer, not ERR_TIMEOUT after waitMs", async () => {
    const first = await conns[0].request("/pay", "x", { idempotencyKey: "order-1" });
    assert.equal(new TextDecoder().decode(first), "paid 1", "the caller gets the handler's answer");
    assert.equal(storeErrors.length, 1, "the answer's write failed");
    assert.match(storeErrors[0], /^complete: .*OOM/);
    await admin.configSet({ maxmemory: "0" });
    const retry = await conns[1].request("/pay", "x", { idempotencyKey: "order-1" }).then(
      (d) => new TextDecoder().decode(d),
      (e: PointSubError) => `${e.code}: ${e.message}`,
    );
    assert.equal(retry, "paid 1");
    assert.equal(runs, 1, "the handler ran once");
  });
});
