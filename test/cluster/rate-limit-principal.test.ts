/**
 * clusterRateLimit per principal when principals are objects (what an
 * `authenticate` hook commonly returns: `{ id, roles }`). The scope was
 * `String(principal)`: "[object Object]" for every one of them, so all
 * authenticated users shared one allowance and one user's burst refused
 * everyone else's requests. The scope is now the principal's as the
 * idempotency store has it (its `id`, else its JSON). Real redis-server.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { clusterRateLimit, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { type EngineServer, startEngine } from "./engines.ts";

describe("cluster rate limit per principal, principals that are objects", { timeout: 30_000 }, () => {
  let engine: EngineServer;
  let server: Server;
  const conns = new Map<string, Connection>();

  before(async () => {
    engine = await startEngine("redis");
    const cluster = redisCluster({ url: engine.url, nodeId: "a", name: "rlp", heartbeatMs: 200 });
    server = createServer({
      cluster,
      authenticate: (cred) => ({ id: new TextDecoder().decode(cred), roles: ["user"] }),
    });
    server.use(clusterRateLimit(cluster, { perSecond: 3, per: "principal", leaseSize: 3 }));
    server.handle("/work", () => "ok");
    await server.listen("tcp://127.0.0.1:0");
    for (const who of ["alice", "bob"]) conns.set(who, await connect(server.urls[0], { credentials: who }));
  });

  after(async () => {
    await Promise.all([...conns.values()].map((c) => c.close({ timeoutMs: 100 })));
    await server?.close({ timeoutMs: 100 });
    await engine?.stop();
  });

  const work = (who: string): Promise<string> =>
    (conns.get(who) as Connection).request("/work", "x").then(
      (d) => new TextDecoder().decode(d),
      (e: PointSubError) => e.code,
    );

  it("one principal over its allowance does not refuse another", async () => {
    // alice until she is refused (at most 3 of a window pass; a window may end meanwhile: 20 tries at most).
    const alice: string[] = [];
    for (let n = 0; n < 20 && !alice.includes("ERR_RATE_LIMITED"); n++) alice.push(await work("alice"));
    assert.ok(alice.includes("ERR_RATE_LIMITED"), `alice: ${alice.join(", ")}`);
    assert.equal(await work("bob"), "ok", "bob has his own allowance");
  });
});
