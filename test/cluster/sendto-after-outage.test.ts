/**
 * A node whose engine comes back after an outage (a frozen redis-server or
 * nats-server on loopback, SIGSTOP / SIGCONT) forgot the other nodes while
 * it was down, and learns of them again only from their next heartbeats.
 * Until then a `sendTo` to a session of theirs failed ERR_NOT_FOUND — "no
 * open session", not retryable — though the session was open all along (an
 * application flushing what it held back on `engine` true lost all of it).
 * Now, for `deadAfterMs` after it (re)joined, a node not heard from yet may
 * be there: such a sendTo fails ERR_CONNECTION_CLOSED (retryable).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`a sendTo as the ${kind} engine comes back`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    const servers: Server[] = [];
    const clusters: Cluster[] = [];
    let client: Connection | undefined;

    before(async () => {
      engine = await startEngine(kind);
      for (const nodeId of ["a", "b"]) {
        const o = { nodeId, name: "comeback", heartbeatMs: 100, deadAfterMs: 400, engineTimeoutMs: 300 };
        const cluster =
          kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
        const server = createServer({ cluster });
        await server.listen("tcp://127.0.0.1:0");
        clusters.push(cluster);
        servers.push(server);
      }
      client = await connect(servers[1].urls[0] as string);
      await until(() => servers[1].sessions.size === 1 && clusters.every((c) => c.nodes().length === 2), 10_000);
    });

    after(async () => {
      engine?.resume();
      await client?.close({ timeoutMs: 100 });
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await engine?.stop();
    });

    it("fails retryable, not ERR_NOT_FOUND, until the node is heard from again; then it is sent", async () => {
      const [a] = clusters;
      const id = [...servers[1].sessions][0].id;
      const events: boolean[] = [];
      let atComeback: Promise<unknown> | undefined;
      a.on("engine", (up) => {
        events.push(up);
        // What an application holding sendTos back while the engine was down does when it comes back.
        if (up)
          atComeback ??= servers[0].sendTo(id, "at the comeback").then(
            () => "sent",
            (e: unknown) => e,
          );
      });
      engine.pause();
      try {
        await until(() => events.includes(false) && a.nodes().length === 1, 10_000);
      } finally {
        engine.resume();
      }
      await until(() => atComeback !== undefined, 15_000);
      const err = await atComeback;
      if (err !== "sent") {
        assert.ok(err instanceof PointSubError, String(err));
        assert.equal(err.code, "ERR_CONNECTION_CLOSED", err.message);
        assert.equal(err.retryable, true);
      }
      await until(() => a.nodes().length === 2, 10_000);
      await servers[0].sendTo(id, "once heard from");
    });
  });
}
