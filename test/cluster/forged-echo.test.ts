/**
 * A node knows its engine carries its messages by reading its own
 * heartbeats back (each with its echo key). A heartbeat under its id with
 * no key — which its own never are: a publisher on the bus, or an older
 * node given the same id — was taken for its own echo: while none of its
 * own heartbeats came back (its publishes lost), those kept the engine
 * counted as up, for ever, and no `duplicateNodeId` was reported. Real
 * engines; the node's engine drops its heartbeats (a publish path that
 * loses what it is given) while a raw publisher sends key-less ones.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { Cluster } from "../../src/cluster/member.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { redisEngine } from "../../src/cluster/redis-engine.ts";
import { encode } from "../../src/cluster/wire.ts";
import { createServer, type Server } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`heartbeats under a node's id without its echo key, on ${kind}`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    let raw: ClusterEngine;
    let cluster: Cluster;
    let server: Server;
    let beat: ReturnType<typeof setInterval> | undefined;
    let lose = false;
    const events: string[] = [];

    before(async () => {
      engine = await startEngine(kind);
      const make = (bucket: string) =>
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket, bucketTtlMs: 600_000, jetstream: false });
      raw = make("pointsub_echo_raw");
      await raw.connect();
      const real = make("pointsub_echo");
      const lossy: ClusterEngine = Object.create(real);
      const publish = real.publish.bind(lossy); // on lossy's connections (connect made them there)
      lossy.publish = (subject, data) =>
        lose && subject === "pointsub.echo.members" ? Promise.resolve() : publish(subject, data);
      cluster = new Cluster(lossy, { nodeId: "a", name: "echo", heartbeatMs: 100, deadAfterMs: 600 });
      cluster.on("engine", (up) => events.push(`engine ${up}`));
      cluster.on("duplicateNodeId", () => events.push("duplicateNodeId"));
      server = createServer({ cluster });
      await server.listen("tcp://127.0.0.1:0");
    });

    after(async () => {
      clearInterval(beat);
      lose = false;
      await sleep(0);
      await server?.close({ timeoutMs: 100 });
      await raw?.close();
      await engine?.stop();
    });

    it("the node's engine counts as down once its own heartbeats stop coming back; the other is reported", async () => {
      beat = setInterval(
        () => void raw.publish("pointsub.echo.members", encode({ t: "hb", n: "a", urls: [], sessions: 0 })),
        50,
      );
      lose = true;
      // Many times deadAfterMs (600 ms): before, the engine never counted as down.
      await until(() => events.includes("engine false"), 8000).catch(() => {});
      assert.ok(events.includes("engine false"), `events: ${events.join(", ")}`);
      assert.equal(events.filter((e) => e === "duplicateNodeId").length, 1, `events: ${events.join(", ")}`);
    });
  });
}
