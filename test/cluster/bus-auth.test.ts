/**
 * The cluster's `secret`: every bus message signed (HMAC-SHA256, bound to
 * its subject, sender process and sequence number, within 30 s), and every
 * node dropping what is not. Before, the bus was trusted as it came: any
 * client of the engine could publish a heartbeat and be a node, a `bye` in
 * a node's name and have it removed everywhere, or replay a node's
 * heartbeat after it left and bring it back (forged acks and pages were only
 * bounded, by unguessable ids and the sender's name, not refused).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { BusAuth } from "../../src/cluster/bus-auth.ts";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { type Cluster, IpcRelay, ipcEngine, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { Cluster as ClusterClass } from "../../src/cluster/member.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { redisEngine } from "../../src/cluster/redis-engine.ts";
import { encode } from "../../src/cluster/wire.ts";
import { type Connection, connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";
import { memoryChannel } from "./ipc-channel.ts";

const SECRET = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
const OTHER = "ffffffffffffffff0000000000000000";

for (const kind of ["redis", "nats"] as const) {
  describe(`bus messages signed with the cluster's secret, on ${kind}`, { timeout: 60_000 }, () => {
    let engine: EngineServer;
    /** A client of the engine that is no node: it reads and publishes what it likes. */
    let raw: ClusterEngine;
    const clusters = new Map<string, Cluster>();
    const servers = new Map<string, Server>();
    let client: Connection | undefined;
    /** Every message read on the members subject, as it came. */
    const members: Uint8Array[] = [];
    const make = async (nodeId: string, secret: string | string[] | undefined) => {
      // Heartbeats every 100 ms; a node is taken for gone only after 5 s (a loaded machine's stalls are not).
      const o = { nodeId, name: "auth", heartbeatMs: 100, deadAfterMs: 5000, secret };
      const cluster =
        kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      const server = createServer({ cluster });
      await server.listen("tcp://127.0.0.1:0");
      clusters.set(nodeId, cluster);
      servers.set(nodeId, server);
      return cluster;
    };
    const ids = (c: Cluster) =>
      c
        .nodes()
        .map((n) => n.id)
        .sort();

    before(async () => {
      engine = await startEngine(kind);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_auth", bucketTtlMs: 600_000, jetstream: false });
      await raw.connect();
      await raw.subscribe("pointsub.auth.members", (d) => void members.push(d.slice()));
      await make("a", SECRET);
      await make("b", SECRET);
      await until(
        () => ids(clusters.get("a") as Cluster).join() === "a,b" && ids(clusters.get("b") as Cluster).join() === "a,b",
        10_000,
      );
    });

    after(async () => {
      await client?.close({ timeoutMs: 100 });
      await Promise.all([...servers.values()].map((s) => s.close({ timeoutMs: 100 })));
      await raw?.close();
      await engine?.stop();
    });

    it("two nodes with the same secret form the cluster: broadcast and sendTo cross", async () => {
      const a = servers.get("a") as Server;
      const b = servers.get("b") as Server;
      client = await connect(b.urls[0]);
      const got: string[] = [];
      client.on("message", (m) => got.push(m.text()));
      await until(() => b.sessions.size === 1, 10_000);
      await a.broadcast("signed broadcast");
      await a.sendTo([...b.sessions][0].id, "signed sendTo");
      await until(() => got.length === 2, 10_000);
      assert.deepEqual(got.sort(), ["signed broadcast", "signed sendTo"]);
      const listed = await a.sessionsInfo({ cluster: true });
      assert.deepEqual(
        listed.map((s) => s.node),
        ["b"],
      );
      const stats = (clusters.get("a") as Cluster).stats();
      assert.equal(stats.unauthenticated, 0);
      assert.equal(stats.replayed, 0);
    });

    it("unsigned messages from a client of the engine are dropped: no forged node, no forged bye", async () => {
      const a = clusters.get("a") as Cluster;
      const left: string[] = [];
      a.on("nodeLeft", (id, why) => {
        if (why === "left") left.push(id);
      });
      const reports: PointSubError[] = [];
      a.on("unauthenticated", (e) => reports.push(e));
      const before = a.stats().unauthenticated;
      // Forged: a node "x" that does not exist, and "b" leaving (it has not).
      await raw.publish("pointsub.auth.members", encode({ t: "hb", n: "x", urls: ["tcp://evil:1"], sessions: 5 }));
      await raw.publish("pointsub.auth.members", encode({ t: "bye", n: "b" }));
      await until(() => a.stats().unauthenticated >= before + 2, 10_000);
      assert.deepEqual(ids(a), ["a", "b"]);
      assert.deepEqual(left, []);
      assert.equal(reports[0]?.code, "ERR_UNAUTHORIZED");
      assert.match(reports[0]?.message ?? "", /unsigned message.*sent as node "x"/);
    });

    it("a genuine message replayed is dropped: a node's heartbeat after it left does not bring it back", async () => {
      const a = clusters.get("a") as Cluster;
      members.length = 0;
      const e = await make("e", SECRET);
      const ofE = () => members.filter((m) => Buffer.from(m).includes('"t":"hb","n":"e"'));
      await until(() => ids(a).includes("e") && ofE().length >= 3, 10_000);
      await (servers.get("e") as Server).close({ timeoutMs: 100 });
      servers.delete("e");
      await until(() => !ids(a).includes("e"), 10_000);
      assert.equal(e.nodes().length, 0);
      const captured = ofE().slice(0, 3);
      const before = a.stats().replayed;
      for (const m of captured) await raw.publish("pointsub.auth.members", m);
      await until(() => a.stats().replayed >= before + captured.length, 10_000);
      assert.deepEqual(ids(a), ["a", "b"]);
    });

    it("a node with another secret, or none, is cut off and says why", async () => {
      const a = clusters.get("a") as Cluster;
      const reportsA: PointSubError[] = [];
      a.on("unauthenticated", (e) => reportsA.push(e));
      const reportsC: PointSubError[] = [];
      const c = await make("c", OTHER);
      c.on("unauthenticated", (e) => reportsC.push(e));
      const d = await make("d", undefined);
      const reportsD: PointSubError[] = [];
      d.on("unauthenticated", (e) => reportsD.push(e));
      await until(
        () =>
          reportsA.some((e) => /does not match.*"c"/.test(e.message)) &&
          reportsC.some((e) => /does not match/.test(e.message)) &&
          reportsD.some((e) => /signed message.*sent as node "[abc]"/.test(e.message)),
        10_000,
      );
      // Both have heard the others for a while now: none took them in.
      assert.deepEqual(ids(a), ["a", "b"]);
      assert.deepEqual(ids(c), ["c"]);
      assert.deepEqual(ids(d), ["d"]);
      assert.ok(c.stats().unauthenticated > 0 && d.stats().unauthenticated > 0);
      assert.equal(reportsC[0]?.code, "ERR_UNAUTHORIZED");
      await (servers.get("c") as Server).close({ timeoutMs: 100 });
      await (servers.get("d") as Server).close({ timeoutMs: 100 });
      servers.delete("c");
      servers.delete("d");
    });

    it("secret rotation: a node signing with the old secret and accepting the new one joins both", async () => {
      const a = clusters.get("a") as Cluster;
      const r = await make("r", [SECRET, OTHER]);
      await until(() => ids(a).includes("r") && ids(r).join() === "a,b,r", 10_000);
      await (servers.get("r") as Server).close({ timeoutMs: 100 });
      servers.delete("r");
    });
  });
}

describe("bus messages signed over the workers' relay", { timeout: 30_000 }, () => {
  it("a peer of the relay without the secret is dropped; a dead worker's will still removes it", async () => {
    const relay = new IpcRelay({ advanced: false });
    const servers: Server[] = [];
    try {
      const chans = ["w1", "w2"].map(() => memoryChannel(relay));
      const clusters = ["w1", "w2"].map(
        (nodeId, k) =>
          new ClusterClass(ipcEngine(chans[k].channel), { nodeId, heartbeatMs: 50, deadAfterMs: 5000, secret: SECRET }),
      );
      for (const cluster of clusters) {
        const s = createServer({ cluster });
        await s.listen("tcp://127.0.0.1:0");
        servers.push(s);
      }
      await until(() => clusters.every((c) => c.nodes().length === 2), 10_000);
      // A third peer of the relay that has not the secret publishes a node of its own and w2's bye.
      const intruder = ipcEngine(memoryChannel(relay).channel);
      await intruder.connect();
      const before = clusters[0].stats().unauthenticated;
      await intruder.publish("pointsub.pointsub.members", encode({ t: "hb", n: "x", urls: [], sessions: 0 }));
      await intruder.publish("pointsub.pointsub.members", encode({ t: "bye", n: "w2" }));
      await until(() => clusters[0].stats().unauthenticated >= before + 2, 10_000);
      assert.deepEqual(
        clusters[0]
          .nodes()
          .map((n) => n.id)
          .sort(),
        ["w1", "w2"],
      );
      // w2 dies without closing: the relay publishes the bye it left, signed, any time later.
      const left: string[] = [];
      clusters[0].on("nodeLeft", (id, why) => left.push(`${id} ${why}`));
      relay.detach(chans[1].peer);
      await until(() => left.length === 1, 10_000);
      assert.deepEqual(left, ["w2 left"]);
    } finally {
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      relay.close();
    }
  });
});

describe("the cluster's secret option", () => {
  it("is at least 16 bytes: a shorter one, or one that is no string or bytes, throws ERR_INVALID_ARGUMENT", () => {
    for (const secret of ["short", "", [], [SECRET, "short"], 42 as unknown as string]) {
      assert.throws(
        () => redisCluster({ url: "redis://127.0.0.1:1", secret }),
        (e: PointSubError) =>
          e instanceof PointSubError && e.code === "ERR_INVALID_ARGUMENT" && /secret/.test(e.message),
      );
    }
    assert.ok(redisCluster({ url: "redis://127.0.0.1:1", secret: new Uint8Array(32) }));
  });
});

describe("BusAuth: the seal of one bus message", () => {
  const message = encode({ t: "hb", n: "a", urls: [], sessions: 0 });

  it("is bound to its subject: one sealed for node a's subject does not open on node b's", () => {
    const a = new BusAuth(SECRET, "a", "inc1");
    const b = new BusAuth(SECRET, "b", "inc2");
    const sealed = a.seal("pointsub.x.node.a", message);
    assert.deepEqual(b.open("pointsub.x.node.b", sealed), { ok: false, why: "bad-signature", node: "a" });
    const opened = b.open("pointsub.x.node.a", sealed);
    assert.ok(opened.ok && Buffer.from(opened.message).equals(Buffer.from(message)));
  });

  it("any changed byte fails; a message overtaking others opens once; one too far behind or too old does not", () => {
    const a = new BusAuth(SECRET, "a", "inc1");
    const r = new BusAuth(SECRET, "r", "inc3");
    const s = "pointsub.x.members";
    const sealed = Array.from({ length: 1100 }, () => a.seal(s, message));
    const flipped = sealed[0].slice();
    flipped[flipped.length - 1] ^= 1;
    assert.equal(r.open(s, flipped).ok, false);
    assert.equal(r.open(s, sealed[1050]).ok, true);
    assert.equal(r.open(s, sealed[1000]).ok, true, "behind the highest, within the window: once");
    assert.equal(r.open(s, sealed[1000]).ok, false);
    assert.equal(r.open(s, sealed[1050]).ok, false);
    assert.equal(r.open(s, sealed[10]).ok, false, "more than 1,024 behind the highest");
    const late = a.seal(s, message);
    const res = r.open(s, late, Date.now() + 31_000);
    assert.equal(res.ok, false);
    assert.equal(!res.ok && res.why, "replayed");
    assert.ok(!res.ok && (res.skewMs ?? 0) > 30_000, "sent more than 30 s before this node's clock");
    assert.equal(r.open(s, late).ok, true, "the same message, in time");
  });

  it("keeps its own copy of a secret given as bytes: the caller zeroing its buffer changes nothing", () => {
    const key = Buffer.from(SECRET);
    const a = new BusAuth(key, "a", "inc1");
    const r = new BusAuth([key], "r", "inc3");
    // Zeroed after use, as a careful application does with key material: before, both signed and checked with
    // the buffer as it was at each message — zeros — and a node so configured was cut off from the others.
    key.fill(0);
    const other = new BusAuth(SECRET, "o", "inc4");
    const s = "pointsub.x.members";
    assert.equal(other.open(s, a.seal(s, message)).ok, true, "a signs with the secret it was given");
    assert.equal(r.open(s, other.seal(s, message)).ok, true, "r checks with the secret it was given");
  });
});
