/**
 * Two servers given the same `nodeId` (a configuration error, reported by
 * `duplicateNodeId`) both read every `sendTo` for that id. Their session ids
 * differ in the run part (`<nodeId>.<run>.<n>`), so only the one holding the
 * session delivers it — but the other acked ERR_NOT_FOUND at once, and the
 * sender took whichever ack came first: about half the sendTos to either
 * process's sessions failed "no open session", not retryable, though the
 * session got the message. A process now leaves a session id naming the
 * run of another process it hears under its id to that process. And each
 * skipped the other's broadcasts as its own (by the node id): neither's
 * sessions got the other's, and a sendTo from one to a session of the
 * other failed ERR_NOT_FOUND (it knew no such node). Real engines.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { redisEngine } from "../../src/cluster/redis-engine.ts";
import { decode, encode } from "../../src/cluster/wire.ts";
import { type Connection, connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`a sendTo to a node id two servers share, on ${kind}`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    const servers: Server[] = [];
    const clusters: Cluster[] = [];
    const clients: Connection[] = [];
    const got: string[][] = [[], []];
    let duplicates = 0;

    before(async () => {
      engine = await startEngine(kind);
      for (const nodeId of ["a", "a", "c"]) {
        const o = { nodeId, name: "twins", heartbeatMs: 100, deadAfterMs: 3000 };
        const cluster =
          kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
        cluster.on("duplicateNodeId", () => duplicates++);
        const server = createServer({ cluster });
        await server.listen("tcp://127.0.0.1:0");
        clusters.push(cluster);
        servers.push(server);
      }
      for (const [k, s] of servers.slice(0, 2).entries()) {
        const c = await connect(s.urls[0] as string);
        c.on("message", (m) => got[k].push(m.text()));
        clients.push(c);
      }
      await until(
        () =>
          duplicates >= 2 &&
          clusters[2].nodes().length === 2 &&
          servers[0].sessions.size === 1 &&
          servers[1].sessions.size === 1,
        10_000,
      );
    });

    after(async () => {
      await Promise.all(clients.map((c) => c.close({ timeoutMs: 100 })));
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await engine?.stop();
    });

    it("is answered by the process holding the session: every one resolves, each session gets its own", async () => {
      const ids = [0, 1].map((k) => [...servers[k].sessions][0].id);
      assert.notEqual(ids[0], ids[1]);
      const failed: string[] = [];
      for (let n = 0; n < 10; n++) {
        for (const [k, id] of ids.entries()) {
          await servers[2].sendTo(id, `${k}:${n}`).catch((e: Error) => failed.push(`${id}: ${e.message}`));
        }
      }
      assert.deepEqual(failed, []);
      await until(() => got[0].length === 10 && got[1].length === 10, 10_000);
      assert.ok(
        got.every((list, k) => list.every((m) => m.startsWith(`${k}:`))),
        JSON.stringify(got),
      );
    });

    it("a sendTo from one to a session of the other reaches it", async () => {
      for (const list of got) list.length = 0;
      await servers[0].sendTo([...servers[1].sessions][0].id, "to the second");
      await servers[1].sendTo([...servers[0].sessions][0].id, "to the first");
      await until(() => got.every((list) => list.length === 1), 10_000);
      assert.deepEqual(got, [["to the first"], ["to the second"]]);
    });

    it("a broadcast from either reaches the other's sessions, once", async () => {
      for (const list of got) list.length = 0;
      await servers[0].broadcast("from the first");
      await servers[1].broadcast("from the second");
      await servers[2].broadcast("from c");
      await until(() => got.every((list) => list.length >= 3), 10_000).catch(() => {});
      for (const list of got) assert.deepEqual([...list].sort(), ["from c", "from the first", "from the second"]);
    });
  });
}

// A process that just joined (or came back from an outage) has not heard the other process under its id yet: a
// heartbeat of that one comes every heartbeatMs, and a hello under its own id is not answered. Meanwhile it acked
// a sendTo to the other's session ERR_NOT_FOUND at once (often the ack taken, though the session got it), and its
// own sendTo to such a session failed ERR_NOT_FOUND without being sent. Node a's first process beats every 5 s.
for (const kind of ["redis", "nats"] as const) {
  describe(`a process given a node id another already has, just joined, on ${kind}`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    let raw: ClusterEngine | undefined;
    const servers: Server[] = [];
    const clusters: Cluster[] = [];
    let client: Connection | undefined;
    const got: string[] = [];
    const acks: string[] = [];
    let barrier = false;

    async function start(nodeId: string): Promise<Server> {
      const o = { nodeId, name: "late-twin", heartbeatMs: 5000, deadAfterMs: 15_000 };
      const cluster =
        kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      const server = createServer({ cluster });
      await server.listen("tcp://127.0.0.1:0");
      servers.push(server);
      clusters.push(cluster);
      return server;
    }

    before(async () => {
      engine = await startEngine(kind);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_late", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      await raw.subscribe("pointsub.late-twin.node.c", (d) => {
        const h = decode(d)?.header;
        if (h?.t === "ack") acks.push(h.code ?? "ok");
      });
      await raw.subscribe("pointsub.late-twin.bc", (d) => {
        if (decode(d)?.header.t === "bc") barrier = true; // the only broadcast
      });
      await start("a");
      await start("c");
      client = await connect(servers[0].urls[0] as string);
      client.on("message", (m) => got.push(m.text()));
      await until(() => servers[0].sessions.size === 1 && clusters[1].nodes().length === 2, 10_000);
    });

    after(async () => {
      await client?.close({ timeoutMs: 100 });
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await raw?.close();
      await engine?.stop();
    });

    it("leaves a sendTo to the other's session to it, and its own reaches it", async () => {
      const id = [...servers[0].sessions][0].id;
      const late = await start("a");
      for (let n = 0; n < 5; n++) await servers[1].sendTo(id, `from c ${n}`);
      // Published by the late process after any ack it sent for those: read after them.
      await late.broadcast("barrier");
      await until(() => barrier, 10_000);
      assert.deepEqual(acks, ["ok", "ok", "ok", "ok", "ok"]);
      await late.sendTo(id, "from the late one");
      await until(() => got.length === 7, 10_000);
      assert.deepEqual(got, [
        "from c 0",
        "from c 1",
        "from c 2",
        "from c 3",
        "from c 4",
        "barrier",
        "from the late one",
      ]);
    });
  });
}

// The earlier process of a node restarted under the same id, closing late (or one of two given one id): once its
// bye is read, a sendTo to a session of its run is ERR_NOT_FOUND. It was left to that process for deadAfterMs more,
// unanswered: ERR_TIMEOUT after requestTimeoutMs ("may or may not have arrived"), retryable.
for (const kind of ["redis", "nats"] as const) {
  describe(`a sendTo to a session of another process under a node's id that left, on ${kind}`, {
    timeout: 30_000,
  }, () => {
    let engine: EngineServer;
    const servers: Server[] = [];
    const clusters: Cluster[] = [];
    const clients: Connection[] = [];
    let raw: ClusterEngine | undefined;

    async function start(nodeId: string): Promise<void> {
      const o = { nodeId, name: "left-twin", heartbeatMs: 200, deadAfterMs: 1500, requestTimeoutMs: 3000 };
      const cluster =
        kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      const server = createServer({ cluster });
      await server.listen("tcp://127.0.0.1:0");
      servers.push(server);
      clusters.push(cluster);
    }

    before(async () => {
      engine = await startEngine(kind);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_left", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      await start("a");
      await start("c");
      await start("a");
      // The later process heard the earlier one.
      const heard = () => clusters[2].stats().duplicateNodeIds > 0;
      for (const k of [0, 2]) clients.push(await connect(servers[k].urls[0] as string));
      await until(() => heard() && servers[0].sessions.size === 1 && servers[2].sessions.size === 1, 10_000);
    });

    after(async () => {
      await Promise.all(clients.map((c) => c.close({ timeoutMs: 100 })));
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await raw?.close();
      await engine?.stop();
    });

    it("is ERR_NOT_FOUND once that process said bye", async () => {
      const gone = [...servers[0].sessions][0].id;
      await servers[0].close({ timeoutMs: 100 });
      // A heartbeat of a node z published after the bye: once the other process lists z, it has read the bye.
      await raw?.publish("pointsub.left-twin.members", encode({ t: "hb", n: "z", urls: [], sessions: 0 }));
      await until(() => clusters[2].nodes().some((n) => n.id === "z"), 10_000);
      const err = await servers[2].sendTo(gone, "to the run that left").then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof PointSubError, String(err));
      assert.equal(err.code, "ERR_NOT_FOUND", err.message);
    });
  });
}

// Two processes under one node id heard in turn by another node (an earlier run closing late beside the new one, or
// two given one id), the one it heard last says bye: it removed the node (`nodeLeft`), and the other's sessions were
// unreachable until its next heartbeat — a sendTo failed ERR_NOT_FOUND, not retryable. The first process of a beats
// every 50 ms, the second every second: the first is the one heard last.
for (const kind of ["redis", "nats"] as const) {
  describe(`a bye of one of two processes under a node's id, heard by another node, on ${kind}`, {
    timeout: 30_000,
  }, () => {
    let engine: EngineServer;
    let raw: ClusterEngine | undefined;
    const servers: Server[] = [];
    const clusters: Cluster[] = [];
    let client: Connection | undefined;
    const runs: string[] = [];
    const got: string[] = [];

    async function start(nodeId: string, heartbeatMs: number): Promise<void> {
      const o = { nodeId, name: "bye-twin", heartbeatMs, deadAfterMs: 3000 };
      const cluster =
        kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      const server = createServer({ cluster });
      await server.listen("tcp://127.0.0.1:0");
      servers.push(server);
      clusters.push(cluster);
    }

    /** Resolves once node c has read what was published before (a heartbeat of a node named `n` published after). */
    async function readByC(n: string): Promise<void> {
      await raw?.publish("pointsub.bye-twin.members", encode({ t: "hb", n, urls: [], sessions: 0 }));
      await until(() => clusters[1].nodes().some((node) => node.id === n), 10_000);
    }

    before(async () => {
      engine = await startEngine(kind);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_bye", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      await raw.subscribe("pointsub.bye-twin.members", (d) => {
        const h = decode(d)?.header;
        if (h?.n === "a" && (h.t === "hb" || h.t === "hello") && typeof h.k === "string") runs.push(h.k.split(".")[0]);
      });
      await start("a", 50);
      await start("c", 100);
      await start("a", 1000);
      client = await connect(servers[2].urls[0] as string);
      client.on("message", (m) => got.push(m.text()));
      // c heard the first process, then the second, then the first again: the two take turns.
      await until(() => {
        const second = runs.findIndex((r) => r !== runs[0]);
        return second > 0 && runs.slice(second).includes(runs[0]) && servers[2].sessions.size === 1;
      }, 10_000);
      await readByC("z1");
    });

    after(async () => {
      await client?.close({ timeoutMs: 100 });
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await raw?.close();
      await engine?.stop();
    });

    it("leaves the node listed, and a sendTo to the other's session reaches it", async () => {
      const left: string[] = [];
      clusters[1].on("nodeLeft", (id) => left.push(id));
      await servers[0].close({ timeoutMs: 100 });
      await readByC("z2");
      assert.deepEqual(left, []);
      await servers[1].sendTo([...servers[2].sessions][0].id, "after the bye");
      await until(() => got.length === 1, 10_000);
      assert.deepEqual(got, ["after the bye"]);
    });
  });
}
