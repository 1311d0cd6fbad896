/**
 * The wall clock stepped (NTP correcting it, a VM resumed from a snapshot)
 * is no silence on the bus. Membership and engine liveness were timed with
 * `Date.now()`: a step forward of more than `deadAfterMs` removed every
 * other node at the next heartbeat (`nodeLeft` "timeout"; their running
 * idempotency claims taken for released, so a retry ran the handler a
 * second time) and reported the engine down; a step back kept a dead node
 * for the length of the step. They are now timed on the monotonic clock.
 * The step is made by replacing `Date.now` in this process for a second
 * (the only way to step a clock in a test); real engines.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { createServer, type Server } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`the wall clock stepped an hour forward, on ${kind}`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    const servers: Server[] = [];
    const clusters: Cluster[] = [];

    before(async () => {
      engine = await startEngine(kind);
      // a beats often, b seldom: a reads its own heartbeats back, stepped, well before b's next one.
      for (const [nodeId, heartbeatMs] of [
        ["a", 50],
        ["b", 500],
      ] as const) {
        const o = { nodeId, name: "clock", heartbeatMs, deadAfterMs: 3000 };
        const cluster =
          kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
        const server = createServer({ cluster });
        await server.listen("tcp://127.0.0.1:0");
        clusters.push(cluster);
        servers.push(server);
      }
      await until(() => clusters.every((c) => c.nodes().length === 2), 10_000);
    });

    after(async () => {
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await engine?.stop();
    });

    it("removes no node and does not take the engine for down", async () => {
      const events: string[] = [];
      for (const [k, c] of clusters.entries()) {
        c.on("nodeLeft", (id, why) => events.push(`${k}: nodeLeft ${id} ${why}`));
        c.on("engine", (up) => events.push(`${k}: engine ${up}`));
      }
      // Stepped just after one of b's heartbeats reached a (its next is 500 ms away).
      const seen = () => clusters[0].nodes().find((n) => n.id === "b")?.lastSeen;
      const last = seen();
      await until(() => seen() !== last, 10_000);
      const real = Date.now;
      Date.now = () => real() + 3_600_000;
      try {
        // Heartbeats and liveness checks (a's 50 ms apart); before, a removed b before b's next heartbeat.
        await sleep(1000);
      } finally {
        Date.now = real;
      }
      assert.deepEqual(events, []);
      assert.ok(
        clusters.every((c) => c.nodes().length === 2),
        "every node still lists the other",
      );
    });
  });
}
