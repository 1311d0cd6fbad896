/**
 * A stall of a node's process past requestTimeoutMs while the ack of its
 * `sendTo` came in time and sat in the socket: the request's deadline ran
 * before the socket was read, and the sendTo failed ERR_TIMEOUT "did not
 * confirm sendTo … (the message may or may not have arrived)" though it
 * had. It now looks again after the turn's I/O. The target node is a
 * process of its own (this one's stall must not stop it); a real
 * redis-server on loopback.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, type Server } from "../../src/index.ts";
import { stallSoon } from "../helpers/stall.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";
import { type NodeProcess, startNode } from "./node-spawn.ts";

describe("a sendTo, a session list: a stall of the asking node's process", { timeout: 60_000 }, () => {
  let engine: EngineServer;
  let b: NodeProcess;
  let server: Server;
  let cluster: Cluster;
  let client: Connection | undefined;
  const got: string[] = [];

  before(async () => {
    engine = await startEngine("redis");
    b = await startNode(engine, "b", 0);
    cluster = redisCluster({
      url: engine.url,
      nodeId: "a",
      name: "test",
      heartbeatMs: 200,
      deadAfterMs: 10_000,
      requestTimeoutMs: 300,
    });
    server = createServer({ cluster });
    await server.listen("tcp://127.0.0.1:0");
    client = await connect(b.url);
    client.on("message", (m) => got.push(m.text()));
    await until(() => cluster.nodes().some((n) => n.id === "b"), 30_000);
  });

  after(async () => {
    await client?.close({ timeoutMs: 100 });
    await server?.close({ timeoutMs: 100 });
    await b?.kill();
    await engine?.stop();
  });

  it("an ack that came in time while the process stalled past requestTimeoutMs resolves it (it failed ERR_TIMEOUT)", async () => {
    const id = new TextDecoder().decode(await client?.request("/whoami"));
    // Sent this turn; node b delivers and acks at once; this process stalls 1 s before reading the ack.
    const sent = server.sendTo(id, "hello").then(
      () => "sent",
      (e: unknown) => e,
    );
    stallSoon(1000);
    assert.equal(await sent, "sent");
    await until(() => got.includes("hello"));
  });

  it("a session list whose node's page came in time while the process stalled past requestTimeoutMs has it (the node was left out)", async () => {
    const id = new TextDecoder().decode(await client?.request("/whoami"));
    // Asked this turn; node b answers at once; this process stalls 1 s before reading its page.
    const listed = server.sessionsInfo({ cluster: true });
    stallSoon(1000);
    const list = await listed;
    assert.ok(
      list.some((s) => s.id === id),
      `node b's session in ${JSON.stringify(list.map((s) => s.id))}`,
    );
  });
});
