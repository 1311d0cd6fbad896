/**
 * A NATS cluster's listen that timed out (nats-server on loopback, frozen
 * with SIGSTOP while it connected) and a later listen that succeeds: the
 * first attempt's connection, made once the server resumes, is closed
 * rather than kept beside the second's (closing the server left it open,
 * and the process could not exit). Connections are counted by a TCP relay
 * in front of the server.
 */
import assert from "node:assert/strict";
import { connect as netConnect, createServer as netServer, type Socket } from "node:net";
import { after, describe, it } from "node:test";
import { natsCluster } from "../../src/cluster/index.ts";
import { createServer, type PointSubError, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

describe("natsCluster: a listen retried after one that timed out", { timeout: 30_000 }, () => {
  let engine: EngineServer | undefined;
  let server: Server | undefined;
  const sockets = new Set<Socket>();
  const relay = netServer((client) => {
    const port = Number(engine?.url.split(":").pop());
    const upstream = netConnect(port, "127.0.0.1");
    sockets.add(client);
    const end = () => {
      sockets.delete(client);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on("error", end);
      s.on("close", end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });

  after(async () => {
    engine?.resume();
    await server?.close({ timeoutMs: 100 });
    for (const s of sockets) s.destroy();
    await new Promise((r) => relay.close(r));
    await engine?.stop();
  });

  it("leaves one connection to NATS, and none once the server closed", async () => {
    engine = await startEngine("nats");
    await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
    const url = `127.0.0.1:${(relay.address() as { port: number }).port}`;
    const cluster = natsCluster({ nodeId: "a", name: "retry", heartbeatMs: 100, connectTimeoutMs: 2000, servers: url });
    server = createServer({ cluster });
    engine.pause();
    const first = await server.listen("tcp://127.0.0.1:0").then(
      () => undefined,
      (e: PointSubError) => e,
    );
    assert.equal(first?.code, "ERR_CONNECT");
    engine.resume();
    await server.listen("tcp://127.0.0.1:0");
    // The first attempt's connect completes once the server answers again; its connection is then closed.
    await until(() => sockets.size === 1, 5000);
    await server.close({ timeoutMs: 100 });
    server = undefined;
    await until(() => sockets.size === 0, 5000);
  });
});
