/**
 * A node's server closed, the cluster and its engine still up: its
 * `sendTo` to another node's session failed ERR_CONNECTION_CLOSED "the
 * cluster's engine is unreachable" (retryable: a retry could never send
 * it), and that `sendTo` or a `broadcast` counted and emitted a busError
 * for a publish never tried. Now: "the server left the cluster", no
 * busError. Real redis-server, two nodes, a client of the other one.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

describe("a node whose server closed", { timeout: 30_000 }, () => {
  let engine: EngineServer;
  let ca: Cluster;
  let a: Server;
  let b: Server;
  let c: Connection;
  const busErrors: Error[] = [];

  before(async () => {
    engine = await startEngine("redis");
    const make = (nodeId: string) => redisCluster({ nodeId, name: "closed", heartbeatMs: 200, url: engine.url });
    ca = make("a");
    ca.on("busError", (e: Error) => busErrors.push(e));
    a = createServer({ cluster: ca });
    b = createServer({ cluster: make("b") });
    await a.listen("tcp://127.0.0.1:0");
    await b.listen("tcp://127.0.0.1:0");
    await until(() => ca.nodes().length === 2, 10_000);
    c = await connect(b.urls[0]);
    await until(() => b.sessionsInfo().length === 1, 5_000);
  });

  after(async () => {
    await c?.close();
    await a?.close({ timeoutMs: 100 });
    await b?.close({ timeoutMs: 100 });
    await engine?.stop();
  });

  it("fails a sendTo as closed, not as an engine unreachable; no busError for it or a broadcast", async () => {
    const id = b.sessionsInfo()[0].id;
    await a.sendTo(id, "before"); // crosses the bus while a is open
    await a.close({ timeoutMs: 100 });
    const err = (await a.sendTo(id, "after").then(
      () => assert.fail("sent after close"),
      (e: PointSubError) => e,
    )) as PointSubError;
    assert.equal(err.code, "ERR_CONNECTION_CLOSED");
    assert.match(err.message, /server left the cluster/);
    assert.doesNotMatch(err.message, /unreachable/);
    assert.deepEqual(await a.broadcast("after"), { sent: 0, queued: 0, failed: [] });
    assert.deepEqual(
      busErrors.map((e) => e.message),
      [],
    );
    assert.equal(ca.stats().busErrors, 0);
  });
});
