/**
 * A node on a NATS cluster of two servers (routed, on loopback) whose
 * server freezes (SIGSTOP: a partition that resets nothing) notices it
 * (its heartbeats no longer come back) and reconnects: it must reach the
 * other server while the frozen one stays frozen.
 * - nats.js dialed the frozen server first, which takes the TCP connection
 *   and never sends its INFO, and waited its default 20 s for it before
 *   trying the other server: the node was cut off for 20 s and more.
 * - With more published before the freeze was noticed than the socket's
 *   buffers hold (broadcasts of a few MB), nats.js's reconnect() waited for
 *   that to be written before it dropped the connection — for as long as
 *   the server stayed frozen: the node never reconnected.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, natsCluster } from "../../src/cluster/index.ts";
import { createServer, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, freePort, startEngine } from "./engines.ts";

for (const queued of [0, 40]) {
  const what = queued === 0 ? "" : `, ${queued} broadcasts of 400 KiB sent as it froze`;
  describe(`a node whose NATS server freezes, in a cluster of two NATS servers${what}`, { timeout: 60_000 }, () => {
    const engines: EngineServer[] = [];
    const servers: Server[] = [];
    const clusters: Cluster[] = [];
    const events: string[] = [];

    before(async () => {
      const routes = [await freePort(), await freePort()];
      for (const [k, port] of routes.entries()) {
        const args = ["-cluster", `nats://127.0.0.1:${port}`, "-routes", `nats://127.0.0.1:${routes[1 - k]}`];
        engines.push(await startEngine("nats", { jetstream: false, args: [...args, "--cluster_name", "failover"] }));
      }
      // a on the first server (it learns the second from it), b on the second.
      for (const [k, nodeId] of ["a", "b"].entries()) {
        const cluster = natsCluster({
          servers: engines[k].url,
          jetstream: false,
          nodeId,
          name: "failover",
          heartbeatMs: 100,
          deadAfterMs: 500,
        });
        cluster.on("engine", (up) => events.push(`${nodeId} ${up}`));
        const server = createServer({ cluster });
        await server.listen("tcp://127.0.0.1:0");
        clusters.push(cluster);
        servers.push(server);
      }
      await until(() => clusters.every((c) => c.nodes().length === 2), 15_000);
    });

    after(async () => {
      for (const e of engines) e.resume();
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await Promise.all(engines.map((e) => e.stop()));
    });

    it("reconnects through the other server well before 20 s", async () => {
      engines[0].pause();
      try {
        const payload = new Uint8Array(400 * 1024);
        for (let n = 0; n < queued; n++) await servers[0].broadcast(payload);
        await until(() => events.includes("a false"), 10_000);
        const t0 = performance.now();
        // Generous for a loaded machine; before, not before 20 s (or not while the server stays frozen).
        await until(() => events.includes("a true"), 15_000).catch(() => {});
        assert.ok(events.includes("a true"), `a did not reconnect within ${Math.round(performance.now() - t0)} ms`);
        // The two nodes hear each other again (each had timed the other out meanwhile).
        await until(() => clusters.every((c) => c.nodes().length === 2), 10_000);
      } finally {
        engines[0].resume();
      }
    });
  });
}
