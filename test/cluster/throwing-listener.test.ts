/**
 * A cluster event whose first listener throws (the application's bug): it
 * is counted (`handlerErrors`) and the listeners after it still run. Before,
 * the cluster emitted with `eventemitter3`, whose `emit` stops at a
 * throwing listener: the ones after it never heard of the node that joined
 * or left.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, redisCluster } from "../../src/cluster/index.ts";
import { createServer, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

describe("cluster: an event whose first listener throws", { timeout: 30_000 }, () => {
  let engine: EngineServer;
  const servers: Server[] = [];

  before(async () => {
    engine = await startEngine("redis");
  });

  after(async () => {
    await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
    await engine?.stop();
  });

  const node = async (nodeId: string): Promise<{ cluster: Cluster; server: Server }> => {
    const cluster = redisCluster({
      nodeId,
      name: "throwing-listener",
      heartbeatMs: 100,
      deadAfterMs: 400,
      url: engine.url,
    });
    const server = createServer({ cluster });
    servers.push(server);
    return { cluster, server };
  };

  it("nodeJoined and nodeLeft: counted, heard by the next listener", async () => {
    const b = await node("b");
    const heard: string[] = [];
    b.cluster.on("nodeJoined", () => {
      throw new Error("bug in nodeJoined");
    });
    b.cluster.on("nodeJoined", (n) => heard.push(`joined ${n.id}`));
    b.cluster.on("nodeLeft", () => {
      throw new Error("bug in nodeLeft");
    });
    b.cluster.on("nodeLeft", (id) => heard.push(`left ${id}`));
    await b.server.listen("tcp://127.0.0.1:0");
    const a = await node("a");
    await a.server.listen("tcp://127.0.0.1:0");
    await until(() => heard.includes("joined a"), 10_000);
    await a.server.close({ timeoutMs: 100 });
    await until(() => heard.includes("left a"), 10_000);
    const aEvents = heard.filter((h) => h.endsWith(" a"));
    assert.deepEqual(aEvents, ["joined a", "left a"]);
    // One throw per event b emitted (its own join too, when it hears of itself).
    assert.equal(b.cluster.stats().handlerErrors, heard.length);
  });
});
