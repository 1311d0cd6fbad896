/**
 * A frozen engine (SIGSTOP: a partition that resets nothing) silences every
 * node at once, this one's own heartbeats included. The other nodes' silence
 * says nothing of them then, yet a node timed them out a heartbeat or two
 * before it noticed its own heartbeats missing (theirs stopped coming a
 * little before its own first unanswered one was sent): in that window it
 * reported each as gone (`nodeLeft` "timeout", its claims taken for
 * released) and a `sendTo` to a session of theirs failed with ERR_NOT_FOUND —
 * "no open session", not retryable — though the session was open all along.
 * Now the others are timed out against this node's own last heartbeat read
 * back: while the engine carries nothing they stay until the engine counts
 * as down, and a sendTo then fails ERR_CONNECTION_CLOSED (retryable). Real
 * engines on loopback.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`the other nodes while the ${kind} engine is frozen`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    const servers: Server[] = [];
    const clusters: Cluster[] = [];
    let client: Connection | undefined;

    before(async () => {
      engine = await startEngine(kind);
      // a beats often, b seldom: b's last heartbeat before the freeze comes well before a's last one.
      for (const [nodeId, heartbeatMs] of [
        ["a", 50],
        ["b", 300],
      ] as const) {
        const o = { nodeId, name: "freeze", heartbeatMs, deadAfterMs: 1000, engineTimeoutMs: 300 };
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

    it("are not timed out before the engine counts as down; a sendTo to their session fails retryable", async () => {
      const [a] = clusters;
      const id = [...servers[1].sessions][0].id;
      const events: string[] = [];
      let during: Promise<unknown> | undefined;
      a.on("engine", (up) => events.push(`engine ${up}`));
      a.on("nodeLeft", (node, why) => {
        events.push(`nodeLeft ${node} ${why}`);
        // What an application does when told the node is gone: the session is still open on it.
        during ??= servers[0].sendTo(id, "while frozen").then(
          () => "sent",
          (e: unknown) => e,
        );
      });
      // Frozen 200 ms after one of b's heartbeats reached a (100 ms before its next).
      const seen = () => a.nodes().find((n) => n.id === "b")?.lastSeen;
      const last = seen();
      await until(() => seen() !== last, 10_000);
      await sleep(200);
      engine.pause();
      try {
        await until(() => events.includes("nodeLeft b timeout"), 10_000);
        const err = await during;
        assert.ok(err instanceof PointSubError, String(err));
        assert.equal(err.code, "ERR_CONNECTION_CLOSED", err.message);
        assert.equal(err.retryable, true);
        assert.equal(events[0], "engine false", `the engine was not down yet: ${events.join(", ")}`);
      } finally {
        engine.resume();
      }
      await until(() => events.includes("engine true") && clusters.every((c) => c.nodes().length === 2), 15_000);
      await servers[0].sendTo(id, "after");
    });
  });
}
