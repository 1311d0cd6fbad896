/**
 * clusterRateLimit per principal in a cluster being upgraded node by node:
 * the principal's shared count must be the one older nodes count. An older
 * node keys a principal's count by SHA-256 of `String(principal)`; 9bfe1c6
 * (object principals told apart) keyed every principal by the idempotency
 * store's scope instead (`"s" + name` for a string), so a string principal's
 * requests were counted twice over, once by the older nodes and once by the
 * newer: up to twice `perSecond` were admitted while both ran. String (and
 * number) principals keep the older key; only objects get a scope of their
 * own. Real redis-server; the older node's count is taken as it takes it.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { type Cluster, clusterRateLimit, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { type EngineServer, startEngine } from "./engines.ts";

/** The key an older node counts `principal`'s window `w` under (rate-limit.ts before 9bfe1c6). */
const olderKey = (principal: string, w: number) =>
  `requests.${createHash("sha256").update(principal).digest("base64url").slice(0, 22)}.${w}`;

describe("cluster rate limit per principal next to an older node", { timeout: 30_000 }, () => {
  let engine: EngineServer;
  let cluster: Cluster;
  let server: Server;
  let conn: Connection;

  before(async () => {
    engine = await startEngine("redis");
    cluster = redisCluster({ url: engine.url, nodeId: "a", name: "rlm", heartbeatMs: 200 });
    server = createServer({ cluster, authenticate: (cred) => new TextDecoder().decode(cred) });
    server.use(clusterRateLimit(cluster, { perSecond: 3, per: "principal", leaseSize: 3 }));
    server.handle("/work", () => "ok");
    await server.listen("tcp://127.0.0.1:0");
    conn = await connect(server.urls[0], { credentials: "alice" });
  });

  after(async () => {
    await conn?.close({ timeoutMs: 100 });
    await server?.close({ timeoutMs: 100 });
    await engine?.stop();
  });

  it("a string principal's allowance, all taken on an older node, is not given again", async () => {
    // The older node admitted alice's 3 of this window and the next two (the request lands in one of them).
    const w = Math.floor(Date.now() / 1000);
    for (const win of [w, w + 1, w + 2]) assert.equal(await cluster.reserve(olderKey("alice", win), 3, 3, 4000), 3);
    const got = await conn.request("/work", "x").then(
      (d) => new TextDecoder().decode(d),
      (e: PointSubError) => e.code,
    );
    assert.equal(got, "ERR_RATE_LIMITED", "alice's allowance is the one the older node counts");
  });
});
