/**
 * A node whose engine is down (a real redis-server or nats-server on
 * loopback, killed by PID): once it no longer hears the other nodes it
 * cannot tell a session of theirs from none, so a sendTo to one fails
 * retryable (ERR_CONNECTION_CLOSED, the engine unreachable), not
 * ERR_NOT_FOUND, which says the session is gone.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`a sendTo while the ${kind} engine is down`, { timeout: 30_000 }, () => {
    let engine: EngineServer | undefined;
    const servers: Server[] = [];
    let client: Connection | undefined;

    after(async () => {
      await client?.close({ timeoutMs: 100 });
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await engine?.stop();
    });

    it("fails ERR_CONNECTION_CLOSED (retryable) once the other nodes are forgotten, not ERR_NOT_FOUND", async () => {
      const e = await startEngine(kind);
      engine = e;
      const clusters: Cluster[] = [];
      for (const nodeId of ["a", "b"]) {
        const o = { nodeId, name: "down", heartbeatMs: 100, deadAfterMs: 300 };
        const cluster = kind === "redis" ? redisCluster({ ...o, url: e.url }) : natsCluster({ ...o, servers: e.url });
        const server = createServer({ cluster });
        await server.listen("tcp://127.0.0.1:0");
        clusters.push(cluster);
        servers.push(server);
      }
      client = await connect(servers[1].urls[0]);
      await until(() => servers[1].sessions.size === 1 && clusters[0].nodes().length === 2, 5000);
      const id = [...servers[1].sessions][0].id;
      await servers[0].sendTo(id, "before");
      const ups: boolean[] = [];
      clusters[0].on("engine", (up) => ups.push(up));
      await e.kill();
      await until(() => ups.includes(false) && clusters[0].nodes().length === 1, 10_000);
      const err = await servers[0].sendTo(id, "during").then(
        () => undefined,
        (x: PointSubError) => x,
      );
      assert.equal(err?.code, "ERR_CONNECTION_CLOSED", err?.message);
      assert.equal(err?.retryable, true);
    });
  });
}
