/**
 * sessionsInfo({ cluster: true }) right after a session of another node
 * closed and a new one opened there. A node shares the copy of its sessions
 * taken for one list with the lists asked in the next second, as long as
 * its session count is the same: one closed and one opened left the count
 * the same, so the next list got the old copy — the closed session skipped,
 * the new one missing. Real engines, two servers in this process.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster session list after a session closed and another opened, on ${kind}`, { timeout: 60_000 }, () => {
    let engine: EngineServer;
    let a: Server;
    let b: Server;
    const conns: Connection[] = [];

    before(async () => {
      engine = await startEngine(kind);
      const make = (nodeId: string) => {
        const o = { nodeId, name: "snap", heartbeatMs: 200 };
        return kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      };
      const asker = make("a");
      a = createServer({ cluster: asker });
      b = createServer({ cluster: make("b") });
      await a.listen("tcp://127.0.0.1:0");
      await b.listen("tcp://127.0.0.1:0");
      await until(() => asker.nodes().length === 2, 10_000);
      for (let k = 0; k < 2; k++) conns.push(await connect(b.urls[0]));
      await until(() => b.sessions.size === 2, 10_000);
    });

    after(async () => {
      await Promise.all(conns.map((c) => c.close({ timeoutMs: 100 })));
      await a?.close({ timeoutMs: 100 });
      await b?.close({ timeoutMs: 100 });
      await engine?.stop();
    });

    const ofB = async () =>
      (await a.sessionsInfo({ cluster: true }))
        .filter((s) => s.node === "b")
        .map((s) => s.id)
        .sort();
    const bHas = () =>
      b
        .sessionsInfo()
        .map((s) => s.id)
        .sort();

    it("the next list has the new session", async () => {
      assert.deepEqual(await ofB(), bHas());
      // One closes, one opens: the count is the same as when b took its copy for the list above.
      await (conns.shift() as Connection).close({ timeoutMs: 1000 });
      await until(() => b.sessions.size === 1, 10_000);
      conns.push(await connect(b.urls[0]));
      await until(() => b.sessions.size === 2, 10_000);
      const now = bHas();
      assert.deepEqual(await ofB(), now);
    });
  });
}
