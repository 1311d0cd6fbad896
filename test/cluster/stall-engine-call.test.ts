/**
 * A stall of a node's process past engineTimeoutMs while the engine's
 * answer to one of its calls came in time and sat in the socket: the
 * call's deadline ran before the socket was read, and the call failed
 * ERR_TIMEOUT "did not answer … (engine frozen or unreachable)". It now
 * looks again after the turn's I/O. Real engines on loopback.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { createServer, type Server } from "../../src/index.ts";
import { stallSoon } from "../helpers/stall.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`a ${kind} engine call: a stall of the node's process`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    let server: Server;
    let cluster: Cluster;

    before(async () => {
      engine = await startEngine(kind, { jetstream: true });
      const o = { nodeId: "a", name: "stall", engineTimeoutMs: 300 };
      cluster = kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      server = createServer({ cluster });
      await server.listen("tcp://127.0.0.1:0");
      await until(() => cluster.nodes().length === 1, 10_000);
      // Warmed up: the key-value store exists.
      assert.equal(await cluster.reserve("warm", 1, 10, 60_000), 1);
    });

    after(async () => {
      await server?.close({ timeoutMs: 100 });
      await engine?.stop();
    });

    it("an answer that came in time while the process stalled past engineTimeoutMs counts (it failed ERR_TIMEOUT)", async () => {
      // The call's request goes out this turn; the engine answers at once; this process stalls 600 ms before reading it.
      const taken = cluster.reserve("c", 1, 10, 60_000).then(
        (n) => n,
        (e: unknown) => e,
      );
      stallSoon(600);
      assert.equal(await taken, 1);
    });
  });
}
