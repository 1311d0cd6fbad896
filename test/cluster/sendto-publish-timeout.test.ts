/**
 * A `sendTo` whose publish is not answered within `engineTimeoutMs` (Redis
 * frozen for a moment — shorter than `deadAfterMs`, so no node takes it for
 * down) was rejected at once with ERR_CONNECTION_CLOSED, "sendTo not sent",
 * retryable: yet node-redis still held the PUBLISH, wrote it when Redis
 * resumed, and the target node delivered it — a retry by the application
 * reached the session twice (cluster `sendTo` is at most once). Now such a
 * publish may still land, so the request waits for its ack (it resolves) or
 * its own timeout (ERR_TIMEOUT, "may or may not have arrived"). A real
 * redis-server on loopback (SIGSTOP / SIGCONT). NATS's client takes a
 * publish at once (its buffer), so its publishes do not time out.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, type Server } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

const ENGINE_TIMEOUT_MS = 200;

describe("a sendTo whose publish times out on a frozen Redis", { timeout: 30_000 }, () => {
  let engine: EngineServer;
  const servers: Server[] = [];
  const clusters: Cluster[] = [];
  let client: Connection | undefined;
  const got: string[] = [];

  before(async () => {
    engine = await startEngine("redis");
    for (const nodeId of ["a", "b"]) {
      const cluster = redisCluster({
        url: engine.url,
        nodeId,
        name: "pubtimeout",
        heartbeatMs: 1000,
        deadAfterMs: 10_000,
        engineTimeoutMs: ENGINE_TIMEOUT_MS,
        requestTimeoutMs: 10_000,
      });
      const server = createServer({ cluster });
      await server.listen("tcp://127.0.0.1:0");
      clusters.push(cluster);
      servers.push(server);
    }
    client = await connect(servers[1].urls[0] as string);
    client.on("message", (m) => got.push(m.text()));
    await until(() => servers[1].sessions.size === 1 && clusters.every((c) => c.nodes().length === 2), 10_000);
  });

  after(async () => {
    engine?.resume();
    await client?.close({ timeoutMs: 100 });
    await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
    await engine?.stop();
  });

  it("is not said to be unsent: it resolves once the ack comes, and the session gets it once", async () => {
    const id = [...servers[1].sessions][0].id;
    const busErrors: string[] = [];
    clusters[0].on("busError", (e) => busErrors.push(e.message));
    engine.pause();
    let outcome: Promise<string>;
    try {
      outcome = servers[0].sendTo(id, "during a freeze").then(
        () => "sent",
        (e: Error) => `failed: ${e.message}`,
      );
      // Its publish times out (the deadline is expected to fire), then Redis resumes.
      await sleep(ENGINE_TIMEOUT_MS + 200);
      await until(() => busErrors.some((m) => m.includes("did not answer publish")), 10_000);
    } finally {
      engine.resume();
    }
    await until(() => got.length === 1, 10_000);
    assert.equal(await outcome, "sent");
    await servers[0].sendTo(id, "after");
    await until(() => got.length === 2, 10_000);
    assert.deepEqual(got, ["during a freeze", "after"]);
  });
});
