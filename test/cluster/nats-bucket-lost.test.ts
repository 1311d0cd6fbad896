/**
 * A nats-server restarted without the JetStream store it had (a new pod
 * without a kept volume, memory storage): the bucket of the shared
 * idempotency store is gone, and the node's key-value view named a stream
 * that no longer existed — every keyed request failed (503, "stream not
 * found", a get timing out) for as long as the process lived, though the
 * server was back. A node now makes the bucket again once a key-value call
 * fails and the server has it no more. Real nats-server, restarted with its
 * store wiped.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, natsCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

const utf8 = new TextDecoder();

describe("cluster idempotency on a nats-server that lost its JetStream store", { timeout: 60_000 }, () => {
  let engine: EngineServer;
  let cluster: Cluster;
  let server: Server;
  let conn: Connection;
  let runs = 0;
  const events: boolean[] = [];

  before(async () => {
    engine = await startEngine("nats");
    cluster = natsCluster({ servers: engine.url, nodeId: "a", name: "lost", heartbeatMs: 200 });
    cluster.on("engine", (up) => events.push(up));
    server = createServer({ cluster, idempotency: true });
    server.handle("/once", () => `run ${++runs}`);
    await server.listen("tcp://127.0.0.1:0");
    conn = await connect(server.urls[0]);
  });

  after(async () => {
    await conn?.close({ timeoutMs: 100 });
    await server?.close({ timeoutMs: 100 });
    await engine?.stop();
  });

  const keyed = async (key: string): Promise<string> => {
    try {
      return utf8.decode(await conn.request("/once", "x", { idempotencyKey: new TextEncoder().encode(key) }));
    } catch (err) {
      return (err as PointSubError).code;
    }
  };

  it("keyed requests run again once the server is back", async () => {
    assert.equal(await keyed("k1"), "run 1");
    await engine.restart({ wipe: true });
    await until(() => events.includes(false) && events.at(-1) === true, 20_000);
    // Retried as a client would (each failure is retryable): at most 40 tries, 250 ms apart.
    const answers: string[] = [];
    for (let n = 0; n < 40 && !answers.includes("run 2"); n++) {
      answers.push(await keyed("k2"));
      if (!answers.includes("run 2")) await sleep(250);
    }
    assert.ok(answers.includes("run 2"), `answers: ${answers.join(", ")}`);
    assert.equal(await keyed("k2"), "run 2", "a duplicate gets the kept answer");
  });
});
