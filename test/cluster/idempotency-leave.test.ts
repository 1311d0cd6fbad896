/**
 * A keyed handler still running when its node leaves the cluster (the
 * server closed with a short timeout and the handler does not stop at its
 * signal), against real engines. Once the node had left, the other nodes
 * took over its claims: a retry of the key on another node ran the handler
 * a second time while the first still ran. Now the leaving node answers
 * the key with ERR_HANDLER (the outcome is unknown) before it leaves, and
 * the retry gets that answer; the handler ran once.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

const utf8 = new TextDecoder();

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster idempotency when a node leaves mid-handler on ${kind}`, { timeout: 60_000 }, () => {
    let engine: EngineServer | undefined;
    const servers: Server[] = [];
    const clusters: Cluster[] = [];
    const conns: Connection[] = [];
    const runs: string[] = [];
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });

    before(async () => {
      engine = await startEngine(kind);
      const url = engine.url;
      for (const id of ["a", "b"]) {
        const o = { name: "leave", nodeId: id, heartbeatMs: 200 };
        const c = kind === "redis" ? redisCluster({ ...o, url }) : natsCluster({ ...o, servers: url });
        const server = createServer({ cluster: c, idempotency: { waitMs: 10_000 } });
        // A handler that ignores its signal: it runs until the test lets it go.
        server.handle("/slow", async () => {
          runs.push(id);
          if (id === "a") await held;
          return `ran on ${id}`;
        });
        // One that stops soon after its signal aborts (the close ends its session).
        server.handle("/polite", async (_req, ctx) => {
          runs.push(`polite ${id}`);
          if (id === "a") {
            await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
            await sleep(30);
            throw ctx.signal.reason;
          }
          return `ran on ${id}`;
        });
        await server.listen("tcp://127.0.0.1:0");
        clusters.push(c);
        servers.push(server);
      }
      await until(() => clusters.every((c) => c.nodes().length === 2), 5000);
      for (const s of servers) conns.push(await connect(s.urls[0]));
    });
    after(async () => {
      release();
      await Promise.all(conns.map((c) => c.close({ timeoutMs: 100 })));
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await engine?.stop();
    });

    it("a retry on another node gets ERR_HANDLER (outcome unknown), and the handler does not run again", async () => {
      const key = `leave-${kind}`;
      const first = conns[0].request("/slow", "x", { idempotencyKey: key }).then(
        () => "answered",
        (e: PointSubError) => e.code,
      );
      const polite = conns[0].request("/polite", "x", { idempotencyKey: `${key}-polite` }).catch(() => {});
      await until(() => runs.length === 2, 5000);
      // Node a closes with its handler still running; once it has left, node b alone knows the key.
      await servers[0].close({ timeoutMs: 100 });
      await until(() => clusters[1].nodes().length === 1, 5000);
      assert.notEqual(await first, "answered");
      await assert.rejects(conns[1].request("/slow", "x", { idempotencyKey: key }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_HANDLER");
        assert.match(e.message, /still running on node a when it left the cluster/);
        return true;
      });
      assert.deepEqual(runs.sort(), ["a", "polite a"], "the handler ran once");
      await polite;
      // A handler that stopped at its signal, within the leaving node's grace, failed its own claim: it runs again.
      assert.equal(
        utf8.decode(await conns[1].request("/polite", "x", { idempotencyKey: `${key}-polite` })),
        "ran on b",
      );
      runs.length = 0;
      // The first attempt ending afterwards changes nothing: the key keeps the answer it has.
      release();
      await sleep(100);
      await assert.rejects(conns[1].request("/slow", "x", { idempotencyKey: key }), { code: "ERR_HANDLER" });
      // Other keys run on the node that stays.
      assert.equal(utf8.decode(await conns[1].request("/slow", "x", { idempotencyKey: `${key}-2` })), "ran on b");
      assert.deepEqual(runs, ["b"]);
    });
  });
}
