/**
 * A node restarted under the same node id (a service manager restarting it, a pod with a
 * fixed name), against real engines: node b (a child process,
 * node-process.ts) is SIGKILLed while two keyed handlers run, and started
 * again as b. Its killed run left the keys' claims behind and session ids
 * that applications may still hold:
 * - before, the new run numbered its sessions from 1 again (`b.1`), so a
 *   `sendTo` with an id kept from the earlier run reached another client;
 * - before, every node took the earlier run's claim as live for its whole
 *   lease (10 minutes by default), since the node id was a member again: a
 *   retry of the key waited `waitMs` and failed with ERR_TIMEOUT, on another
 *   node and on the restarted one alike.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";
import { type NodeProcess, startNode } from "./node-spawn.ts";

const utf8 = new TextDecoder();
/** How long node a's duplicates wait for a running claim (node-process.ts: 10 s). */
const WAIT_MS = 4000;

for (const kind of ["redis", "nats"] as const) {
  describe(`a node restarted under the same id on ${kind}`, { timeout: 120_000 }, () => {
    let engine: EngineServer;
    let server: Server | undefined;
    let cluster: Cluster;
    const children: NodeProcess[] = [];
    const conns: Connection[] = [];
    const runsOnA: string[] = [];

    async function client(url: string): Promise<Connection> {
      const c = await connect(url);
      conns.push(c);
      return c;
    }

    before(async () => {
      engine = await startEngine(kind);
      // Node a in this process, in the cluster of node-process.ts (name "test", the same timings).
      const o = { nodeId: "a", name: "test", heartbeatMs: 200, deadAfterMs: 700, requestTimeoutMs: 3000 };
      cluster = kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      server = createServer({ cluster, idempotency: { leaseMs: 60_000, waitMs: WAIT_MS } });
      server.handle("/slow-count", (req) => {
        runsOnA.push(req.text());
        return "a:1";
      });
      await server.listen("tcp://127.0.0.1:0");
    });

    after(async () => {
      await Promise.all(conns.map((c) => c.close({ timeoutMs: 100 }).catch(() => {})));
      await Promise.all(children.map((c) => c.kill()));
      await server?.close({ timeoutMs: 100 });
      await engine?.stop();
    });

    it("session ids of the killed run are not given to new sessions; its claims do not hold their keys for the lease", async () => {
      const seesB = () => cluster.nodes().some((n) => n.id === "b");
      // The earlier run of b: a client with a session id, two keyed requests whose handlers take 60 s.
      const b1 = await startNode(engine, "b", 60_000);
      children.push(b1);
      await until(seesB, 15_000);
      const old = await client(b1.url);
      const oldId = utf8.decode(await old.request("/whoami", ""));
      const keys = ["retried-on-a", "retried-on-b"].map((k) => new TextEncoder().encode(`${k}-${kind}`));
      for (const [n, key] of keys.entries()) {
        old.request("/slow-count", `k${n}`, { idempotencyKey: key }).catch(() => {});
      }
      await until(() => b1.events.filter((e) => e.event === "started").length === 2, 10_000);
      await b1.kill();

      // The new run, under the same id.
      const b2 = await startNode(engine, "b", 100);
      children.push(b2);
      await until(seesB, 15_000);
      const fresh = await client(b2.url);
      const got: string[] = [];
      fresh.on("message", (m) => got.push(m.text()));
      const newId = utf8.decode(await fresh.request("/whoami", ""));
      assert.notEqual(newId, oldId, `the new run gave the killed run's session id ${oldId} to another client`);
      assert.match(newId, /^b\.[0-9a-z]{6}\.\d+$/);
      await assert.rejects(server?.sendTo(oldId, "for the killed run's client") as Promise<void>, (e: unknown) => {
        assert.ok(e instanceof PointSubError);
        assert.equal(e.code, "ERR_NOT_FOUND");
        return true;
      });
      await fresh.request("/whoami", ""); // (a message sent before would have arrived by now)
      assert.deepEqual(got, [], "the message for the killed run's client reached the new one");

      // A retry on the other node runs there (the claim's process is gone), well before waitMs.
      const onA = await client(server?.urls[0] as string);
      let t0 = performance.now();
      assert.equal(utf8.decode(await onA.request("/slow-count", "k0", { idempotencyKey: keys[0] })), "a:1");
      assert.ok(performance.now() - t0 < WAIT_MS / 2, `answered after ${Math.round(performance.now() - t0)} ms`);
      // A retry on the restarted node itself runs once it has been up deadAfterMs without hearing the killed run.
      t0 = performance.now();
      assert.equal(utf8.decode(await fresh.request("/slow-count", "k1", { idempotencyKey: keys[1] })), "b:1");
      assert.ok(performance.now() - t0 < 5000, `answered after ${Math.round(performance.now() - t0)} ms`);
      // Each ran once, and its answer is kept (asked on the other node).
      assert.equal(utf8.decode(await fresh.request("/slow-count", "k0", { idempotencyKey: keys[0] })), "a:1");
      assert.equal(utf8.decode(await onA.request("/slow-count", "k1", { idempotencyKey: keys[1] })), "b:1");
      assert.deepEqual(runsOnA, ["k0"]);
      assert.deepEqual(
        b2.events.filter((e) => e.event === "ran").map((e) => e.key),
        ["k1"],
      );
    });
  });
}
