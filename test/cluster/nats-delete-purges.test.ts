/**
 * The NATS engine's kvDelete, on a real nats-server: a KV delete left a
 * delete marker per key in the bucket's stream for its whole max age, so the
 * shared idempotency store deleting its oldest answers past its quota (and
 * every failed claim) freed almost nothing: 200 unique keys sent with a
 * quota of 10 left 200 messages of 200 subjects (33,970 bytes, against
 * 41,345 with no quota). It now purges the key's messages up to the
 * revision read — still a compare-and-delete: a later write stays.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { connect as natsConnect } from "nats";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { type Cluster, natsCluster } from "../../src/cluster/index.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { createServer, idempotencyStoreKey, type Server } from "../../src/index.ts";
import { checkCompareAndDelete, type EngineServer, startEngine } from "./engines.ts";

const enc = new TextEncoder();

async function streamState(engine: EngineServer, stream: string): Promise<{ messages: number; subjects: number }> {
  const nc = await natsConnect({ servers: engine.url });
  try {
    const si = await (await nc.jetstreamManager()).streams.info(stream);
    return { messages: si.state.messages, subjects: si.state.num_subjects ?? 0 };
  } finally {
    await nc.close();
  }
}

describe("NATS engine: kvDelete leaves nothing behind", { timeout: 60_000 }, () => {
  let engine: EngineServer;
  let e: ClusterEngine;
  let cluster: Cluster;
  let server: Server;

  before(async () => {
    engine = await startEngine("nats");
    e = natsEngine({ servers: engine.url, bucket: "pointsub_purge", bucketTtlMs: 600_000 });
    await e.connect();
    cluster = natsCluster({
      nodeId: "a",
      name: "flood",
      servers: engine.url,
      heartbeatMs: 200,
      idempotencyMaxEntries: 40,
      idempotencyMaxEntriesPerScope: 10,
    });
    server = createServer({ cluster, idempotency: true });
    await server.listen("tcp://127.0.0.1:0");
  });

  after(async () => {
    await server?.close({ timeoutMs: 100 });
    await e?.close();
    await engine?.stop();
  });

  it("is a compare-and-delete: a stale revision leaves the later write; the current one leaves no message", async () => {
    await checkCompareAndDelete(e, async () => {
      assert.deepEqual(await streamState(engine, "KV_pointsub_purge"), { messages: 0, subjects: 0 });
    });
  });

  it("a flood of unique keys leaves the node's quota in the bucket's stream, not a marker per key", async () => {
    const store = cluster.idempotencyStore;
    assert.ok(store !== undefined);
    for (let i = 0; i < 200; i++) {
      const k = idempotencyStoreKey("s", "/r", enc.encode(`k-${i}`));
      assert.equal(await store.begin(k, `t${i}`, 10_000), undefined);
      await store.complete(k, `t${i}`, { ok: true, data: enc.encode(`answer ${i}`) });
    }
    assert.equal(store.stats().kept, 10);
    const s = await streamState(engine, "KV_pointsub_flood");
    assert.ok(s.messages <= 10 && s.subjects <= 10, `${s.messages} messages of ${s.subjects} keys in the stream`);
  });
});
