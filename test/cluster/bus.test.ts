/**
 * The cluster's bus and shared store against real engines (a redis-server
 * and a nats-server with JetStream on free loopback ports), two servers in
 * this process: what is read from the bus is checked (garbage and oversized
 * headers are dropped and counted, the nodes keep working), a duplicate
 * message on the bus (a retry) reaches each session once, a filter
 * function cannot cross the cluster, large payloads stay point to point,
 * and the shared idempotency store gives a key to exactly one of many
 * concurrent claims across nodes and answers the claims of a node that
 * left while they ran.
 */
import assert from "node:assert/strict";
import { createServer as createNetServer } from "node:net";
import { after, before, describe, it } from "node:test";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { Cluster, MAX_CLUSTER_NODES } from "../../src/cluster/member.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { redisEngine } from "../../src/cluster/redis-engine.ts";
import { encode } from "../../src/cluster/wire.ts";
import {
  type Connection,
  connect,
  createServer,
  type IdempotencyStore,
  type PointSubError,
  type Server,
} from "../../src/index.ts";
import { connectPeer, type Peer } from "../helpers/attacker.ts";
import { sleep, until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster bus on ${kind}`, { timeout: 30_000 }, () => {
    let engine: EngineServer;
    let raw: ClusterEngine;
    const clusters: Cluster[] = [];
    const servers: Server[] = [];
    const clients: Connection[] = [];
    const got: string[][] = [];
    const make = (nodeId: string, extra: { heartbeatMs?: number; maxBusMessageBytes?: number } = {}) => {
      const o = { nodeId, name: "bus", heartbeatMs: 100, filters: { all: () => true }, ...extra };
      return kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
    };

    before(async () => {
      engine = await startEngine(kind);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_bus", bucketTtlMs: 600_000 });
      await raw.connect();
      for (const id of ["p", "q"]) {
        const cluster = make(id);
        const server = createServer({ cluster });
        await server.listen("tcp://127.0.0.1:0");
        const c = await connect(server.urls[0]);
        const list: string[] = [];
        c.on("message", (m) => list.push(m.text()));
        clusters.push(cluster);
        servers.push(server);
        clients.push(c);
        got.push(list);
      }
      await until(() => clusters.every((c) => c.nodes().length === 2), 5000);
      await until(() => servers.every((s) => s.sessions.size === 1), 5000);
    });

    after(async () => {
      await Promise.all(clients.map((c) => c.close({ timeoutMs: 100 })));
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await raw?.close();
      await engine?.stop();
    });

    it("garbage on the bus is dropped and counted; the nodes keep working", async () => {
      const q = clusters[1];
      const before = q.stats().malformed;
      const header = new Uint8Array(8);
      new DataView(header.buffer).setUint32(0, 0xffffffff); // a header length far over the limit
      const junk = [
        new Uint8Array([1, 2]),
        header,
        encode({ t: "bc", n: "x", i: "1" }).subarray(0, 10),
        new TextEncoder().encode('\u0000\u0000\u0000\u0004{"t"}'),
        new TextEncoder().encode('\u0000\u0000\u0000\u000d{"t":"nope"}x'),
      ];
      for (const j of junk) {
        await raw.publish("pointsub.bus.bc", j);
        await raw.publish("pointsub.bus.members", j);
        await raw.publish("pointsub.bus.node.q", j);
      }
      await until(() => q.stats().malformed >= before + 3 * junk.length - 1, 5000);
      await servers[0].broadcast("still fine");
      await until(() => got[1].includes("still fine"), 5000);
    });

    it("a sendTo or session-list request naming a sender that is not a node id is dropped: nothing published for it, the engine link stays up", async () => {
      // The ack (and a list's pages) go to `node.<sender>`: NATS took a sender with CR LF as protocol, so a
      // publisher on the bus made q publish on a subject of its choosing, and "a b c" cut q's connection.
      const q = clusters[1];
      const ups: boolean[] = [];
      const onEngine = (up: boolean) => ups.push(up);
      q.on("engine", onEngine);
      const injected: string[] = [];
      await raw.subscribe("evil.in", (d) => injected.push(new TextDecoder().decode(d)));
      const acks: string[] = [];
      await raw.subscribe("pointsub.bus.node.p", (d) => acks.push(new TextDecoder().decode(d)));
      const before = q.stats();
      const session = [...servers[1].sessions][0].id;
      // A sendTo from p, after the others on q's subject: once its ack is out, so is whatever q sent for them.
      const marker = async (n: number) => {
        const text = `marker ${n} after the senders`;
        const to = encode({ t: "to", n: "p", i: `p:marker-${n}`, s: session }, new TextEncoder().encode(text));
        await raw.publish("pointsub.bus.node.q", to);
        await until(() => got[1].includes(text) && acks.some((a) => a.includes(`"p:marker-${n}"`)), 5000);
      };
      const from = "x 0\r\n\r\nPUB evil.in 2\r\nhi\r\nPUB pointsub.bus.node.y";
      await raw.publish("pointsub.bus.node.q", encode({ t: "to", n: from, i: "evil:1", s: session }));
      await raw.publish("pointsub.bus.node.q", encode({ t: "info", n: from, i: "evil:2", c: 0 }));
      await marker(1);
      await sleep(100);
      assert.deepEqual(injected, [], "nothing published on a subject the sender chose");
      await raw.publish("pointsub.bus.node.q", encode({ t: "to", n: "a b c", i: "evil:3", s: session }));
      await marker(2);
      q.off("engine", onEngine);
      assert.deepEqual(ups, [], "q's engine link stayed up");
      assert.equal(q.stats().malformed, before.malformed + 3);
      assert.equal(q.stats().sendsReceived, before.sendsReceived + 2, "only the markers");
    });

    it("whole session lists asked unpaged (an earlier version's ask) are sent at most once a second to one node", async () => {
      // Each is every session serialised and published: 30 asks from one publisher were 30 whole lists.
      const lists = new Set<string>();
      await raw.subscribe("pointsub.bus.node.zz", (d) => {
        const text = new TextDecoder().decode(d);
        const i = /"i":"(flood:\d+)"/.exec(text)?.[1];
        if (i !== undefined && text.includes('"last":true')) lists.add(i);
      });
      for (let k = 0; k < 30; k++)
        await raw.publish("pointsub.bus.node.q", encode({ t: "info", n: "zz", i: `flood:${k}` }));
      // A sendTo after them on q's subject: once it is delivered, q has read every ask.
      const session = [...servers[1].sessions][0].id;
      const text = "marker after the list asks";
      await raw.publish(
        "pointsub.bus.node.q",
        encode({ t: "to", n: "p", i: "p:list-marker", s: session }, new TextEncoder().encode(text)),
      );
      await until(() => got[1].includes(text) && lists.size > 0, 5000);
      await sleep(100);
      assert.deepEqual([...lists], ["flood:0"]);
    });

    it("another node announcing this node's id is reported (duplicateNodeId, once per node) and counted", async () => {
      // Two servers given one nodeId hand out the same session ids: a sendTo reached a session on each.
      const q = clusters[1];
      const reported: string[] = [];
      q.on("duplicateNodeId", (e) => reported.push(`${e.code} ${e.message}`));
      const before = q.stats().duplicateNodeIds;
      const hb = encode({ t: "hb", n: "q", urls: ["tcp://127.0.0.1:9"], sessions: 0, k: "impostor.0" });
      await raw.publish("pointsub.bus.members", hb);
      await raw.publish("pointsub.bus.members", hb);
      await until(() => q.stats().duplicateNodeIds >= before + 2, 5000);
      assert.equal(reported.length, 1);
      assert.match(reported[0], /^ERR_INVALID_ARGUMENT another node announces this node's id "q"/);
      assert.deepEqual(
        q
          .nodes()
          .map((n) => n.id)
          .sort(),
        ["p", "q"],
        "the impostor is not a member",
      );
    });

    it("a publisher inventing node ids: ids that are not ids dropped, at most MAX_CLUSTER_NODES members; a hello flood answered once per window", async () => {
      const q = clusters[1];
      const hb = (n: string, t: "hb" | "hello" = "hb") => encode({ t, n, urls: [], sessions: 0 });
      const start = q.stats();
      await raw.publish("pointsub.bus.members", hb("x".repeat(5000)));
      await raw.publish("pointsub.bus.members", hb("a.b"));
      await until(() => q.stats().malformed >= start.malformed + 2, 5000);
      // Heard from q on the bus while hellos of invented nodes pour in: its answers.
      let answers = 0;
      await raw.subscribe("pointsub.bus.members", (d) => {
        if (new TextDecoder().decode(d).includes('"t":"hb","n":"q"')) answers++;
      });
      const t0 = performance.now();
      const extra = 100;
      await Promise.all(
        Array.from({ length: MAX_CLUSTER_NODES + extra }, (_, i) =>
          raw.publish("pointsub.bus.members", hb(`fake${i}`, "hello")),
        ),
      );
      // A malformed message after them: once q counted it, q has read every hello (the bus keeps a
      // publisher's order). Waiting for `extra` ignored ones instead failed on a loaded machine: the first
      // invented nodes timed out (deadAfterMs 300) while the flood was still read, and later ones took their
      // places.
      const marked = q.stats().malformed;
      await raw.publish("pointsub.bus.members", hb("end.of.flood"));
      await until(() => q.stats().malformed > marked, 10_000);
      const ms = performance.now() - t0;
      assert.ok(q.stats().ignoredNodes > start.ignoredNodes, "no invented node was ignored");
      assert.ok(q.nodes().length <= MAX_CLUSTER_NODES + 1, `${q.nodes().length} nodes`);
      await sleep(50);
      // One answer per heartbeatMs / 4 (25 ms) at most, plus its periodic heartbeats (every 100 ms).
      const bound = Math.ceil((ms + 50) / 25) + Math.ceil((ms + 50) / 100) + 2;
      assert.ok(
        answers <= bound,
        `${answers} heartbeats from q for ${MAX_CLUSTER_NODES + extra} hellos in ${Math.round(ms)} ms (bound ${bound})`,
      );
      // The invented nodes time out (deadAfterMs 300); p is still a member, and broadcasts flow.
      await until(() => q.nodes().length === 2, 5000);
      await servers[0].broadcast("after the fakes");
      await until(() => got[1].includes("after the fakes"), 5000);
    });

    it("a duplicate broadcast or sendTo on the bus (a retry) reaches the session once", async () => {
      const payload = new TextEncoder().encode("only once");
      const bc = encode({ t: "bc", n: "elsewhere", i: "elsewhere:dup1" }, payload);
      await raw.publish("pointsub.bus.bc", bc);
      await raw.publish("pointsub.bus.bc", bc);
      const id = [...servers[1].sessions][0].id;
      const to = encode({ t: "to", n: "p", i: "p:dup-to-1", s: id }, new TextEncoder().encode("direct once"));
      await raw.publish("pointsub.bus.node.q", to);
      await raw.publish("pointsub.bus.node.q", to);
      await until(() => got[1].includes("only once") && got[1].includes("direct once"), 5000);
      await servers[0].broadcast("marker after the duplicates");
      await until(() => got[1].includes("marker after the duplicates"), 5000);
      assert.equal(got[1].filter((g) => g === "only once").length, 1);
      assert.equal(got[1].filter((g) => g === "direct once").length, 1);
      assert.ok(clusters[1].stats().duplicates >= 2);
    });

    it("a filter function cannot cross the cluster; names can; large payloads stay point to point", async () => {
      const p = servers[0];
      await assert.rejects(p.broadcast("x", { filter: () => true }), { code: "ERR_INVALID_ARGUMENT" });
      await assert.rejects(p.broadcast("x", { filter: "nope" }), { code: "ERR_INVALID_ARGUMENT" });
      // Before: this node's filter got 5, the other nodes' "5".
      await assert.rejects(p.broadcast("x", { filter: "all", filterArg: 5 as unknown as string }), {
        code: "ERR_INVALID_ARGUMENT",
        message: /filterArg must be a string, not number/,
      });
      const local = await p.broadcast("local only", { filter: () => true, local: true });
      assert.equal(local.sent + local.queued, 1);
      await p.broadcast("named", { filter: "all" });
      await until(() => got[0].includes("local only") && got[0].includes("named") && got[1].includes("named"), 5000);
      const big = new Uint8Array(512 * 1024 + 1);
      await assert.rejects(p.broadcast(big), { code: "ERR_MESSAGE_TOO_LARGE" });
      const remote = [...servers[1].sessions][0].id;
      await assert.rejects(p.sendTo(remote, big), { code: "ERR_MESSAGE_TOO_LARGE" });
      // To its own session a server sends any size, as without a cluster.
      await p.sendTo([...p.sessions][0].id, big);
      await sleep(50);
      assert.ok(!got[1].includes("local only"));
    });

    it("a maxBusMessageBytes over the engine's largest message: what the engine would refuse is ERR_MESSAGE_TOO_LARGE, not a retryable engine failure", async () => {
      // NATS refuses a publish over its max_payload (1 MiB): with maxBusMessageBytes 2 MiB a 1.5 MB sendTo
      // failed ERR_CONNECTION_CLOSED "the cluster's engine is unreachable" (retryable, for ever) and a
      // broadcast resolved but never reached the other nodes. Redis takes it.
      const m = make("m", { maxBusMessageBytes: 2 * 1024 * 1024 });
      const ms = createServer({ cluster: m });
      try {
        await ms.listen("tcp://127.0.0.1:0");
        await until(() => m.nodes().some((n) => n.id === "q"), 5000);
        const big = new Uint8Array(1536 * 1024).fill(7);
        const id = [...servers[1].sessions][0].id;
        const sizes: number[] = [];
        const sizesP: number[] = [];
        clients[1].on("message", (msg) => sizes.push(msg.data.length));
        clients[0].on("message", (msg) => sizesP.push(msg.data.length));
        if (kind === "nats") {
          await assert.rejects(ms.sendTo(id, big), (e: PointSubError) => {
            assert.equal(e.code, "ERR_MESSAGE_TOO_LARGE");
            assert.equal(e.retryable, false);
            return true;
          });
          await assert.rejects(ms.broadcast(big), { code: "ERR_MESSAGE_TOO_LARGE" });
          // Under the engine's limit still crosses.
          await ms.sendTo(id, new Uint8Array(900 * 1024));
          await until(() => sizes.includes(900 * 1024), 5000);
        } else {
          await ms.sendTo(id, big);
          await ms.broadcast(big);
          await until(() => sizes.filter((n) => n === big.length).length === 2, 5000);
          // The broadcast reached node p's session too: the next test's broadcast finds that session with
          // 1.5 MB queued (over the default high-water mark) and skips it unless it has drained.
          await until(() => sizesP.includes(big.length), 5000);
        }
      } finally {
        await ms.close({ timeoutMs: 100 });
      }
    });

    it("a broadcast whose filterArg makes a header the other nodes would drop is refused (ERR_MESSAGE_TOO_LARGE), not lost", async () => {
      // A header over 64 KiB is malformed on every other node: a filterArg of 100 KB (say a list of session
      // ids) resolved, reached this node's sessions, and no session of any other node.
      const before = clusters[1].stats().malformed;
      // What an earlier test sent still queued would make a session a slow reader, skipped by the broadcast.
      await until(() => servers.every((s) => [...s.sessions].every((x) => x.bufferedAmount === 0)), 5000);
      const long = "x".repeat(100_000);
      await assert.rejects(servers[0].broadcast("long arg", { filter: "all", filterArg: long }), {
        code: "ERR_MESSAGE_TOO_LARGE",
      });
      const r = await servers[0].broadcast("shorter arg", { filter: "all", filterArg: "y".repeat(50_000) });
      assert.deepEqual(r.failed, []);
      await until(() => got[0].includes("shorter arg") && got[1].includes("shorter arg"), 5000);
      assert.ok(!got[0].includes("long arg") && !got[1].includes("long arg"));
      assert.equal(clusters[1].stats().malformed, before);
    });

    it("a broadcast's highWaterMark: Infinity holds on every node: a remote session with much queued still gets it", async () => {
      // Infinity crossed the bus as JSON null, and the other nodes used the default mark (1 MiB): a session
      // there with more queued was skipped, where the sender's own were not.
      const y = make("y2");
      const ys = createServer({ cluster: y, sendToHighWaterMark: Number.POSITIVE_INFINITY });
      const [url] = await ys.listen("tcp://127.0.0.1:0");
      let peer: Peer | undefined;
      try {
        await until(() => clusters[0].nodes().some((n) => n.id === "y2"), 5000);
        peer = await connectPeer({ port: Number(new URL(url).port), read: "paused" });
        await until(() => ys.sessions.size === 1, 5000);
        const session = [...ys.sessions][0];
        const chunk = new Uint8Array(256 * 1024).fill(1);
        // Past what the kernel's socket buffers take: the session's own queue stays over 4 MiB.
        for (let i = 0; i < 800 && session.bufferedAmount <= 4 * 1024 * 1024; i++) {
          ys.sendTo(session.id, chunk).catch(() => {});
          await sleep(5);
        }
        await sleep(100);
        assert.ok(session.bufferedAmount > 4 * 1024 * 1024, `${session.bufferedAmount} bytes queued`);
        const small = () => session.stats().sent.small.messages;
        const before = small();
        await servers[0].broadcast(new Uint8Array(64 * 1024), { highWaterMark: Number.POSITIVE_INFINITY });
        await until(() => y.stats().broadcastsReceived > 0, 5000);
        assert.equal(small(), before + 1, "handed to the session on the other node, not skipped");
      } finally {
        peer?.destroy();
        await ys.close({ timeoutMs: 100 });
      }
    });

    it("a sendTo from another node to a session that does not read is refused by the session's node (its sendToHighWaterMark)", async () => {
      const y = make("y");
      const ys = createServer({ cluster: y, sendToHighWaterMark: 256 * 1024 });
      const [url] = await ys.listen("tcp://127.0.0.1:0");
      let peer: Peer | undefined;
      try {
        await until(() => clusters[0].nodes().some((n) => n.id === "y"), 5000);
        peer = await connectPeer({ port: Number(new URL(url).port), read: "paused" });
        await until(() => ys.sessions.size === 1, 5000);
        const id = [...ys.sessions][0].id;
        const chunk = new Uint8Array(64 * 1024).fill(1);
        const codes: string[] = [];
        const sends: Promise<number>[] = [];
        let unsettled = 0;
        const send = () => {
          unsettled++;
          sends.push(
            servers[0].sendTo(id, chunk).then(
              () => codes.push("ok"),
              (err: PointSubError) => codes.push(err.code),
            ),
          );
          void sends[sends.length - 1].finally(() => unsettled--);
        };
        // In waves of 1 MiB across the bus, each once the one before settled but for what y holds
        // for its reader (a send resolves once written): what y queued stays near the mark, the rest
        // is refused. (All 12.5 MiB at once made a loaded machine's bus fall behind: its acks timed
        // out, and NATS once dropped a slow consumer.)
        const slow = () => codes.filter((c) => c === "ERR_SLOW_PEER").length;
        const stopAt = Date.now() + 20_000;
        while (slow() < 50 && sends.length < 400 && Date.now() < stopAt) {
          for (let i = 0; i < 16; i++) send();
          await until(() => unsettled <= 8, 10_000);
          assert.ok(([...ys.sessions][0]?.bufferedAmount ?? 0) <= 256 * 1024 + chunk.length);
        }
        assert.ok(slow() >= 50, `${slow()} of ${sends.length} refused with ERR_SLOW_PEER`);
        // Gone: what y queued fails, what was still on the bus finds no session.
        peer.destroy();
        await Promise.all(sends);
        const after = ["ERR_SLOW_PEER", "ok", "ERR_CONNECTION_CLOSED", "ERR_NOT_FOUND"];
        assert.deepEqual(
          [...new Set(codes)].filter((c) => !after.includes(c)),
          [],
        );
      } finally {
        peer?.destroy();
        await ys.close({ timeoutMs: 100 });
      }
    });

    it("sessionsInfo({ cluster: true }) gets every session of a node whose list is over the bus limit (paged by bytes)", async () => {
      // 30 principals of 40 KB: 1.2 MB of infos in one page was over NATS's 1 MiB; the asker got none of them.
      const big = "p".repeat(40_000);
      const x = make("x");
      const xs = createServer({ cluster: x, authenticate: () => big });
      await xs.listen("tcp://127.0.0.1:0");
      const conns: Connection[] = [];
      try {
        await until(() => clusters[0].nodes().some((n) => n.id === "x"), 5000);
        for (let i = 0; i < 30; i++) conns.push(await connect(xs.urls[0], { credentials: "x" }));
        // A client's connect can settle before its server has the session (24 of 30 once, on a loaded machine).
        await until(() => xs.sessions.size === 30, 10_000);
        const all = await servers[0].sessionsInfo({ cluster: true });
        const fromX = all.filter((s) => (s as { node?: string }).node === "x");
        assert.equal(fromX.length, 30);
        assert.ok(fromX.every((s) => s.principal === big));
      } finally {
        await Promise.all(conns.map((c) => c.close({ timeoutMs: 100 })));
        await xs.close({ timeoutMs: 100 });
        await until(() => !clusters[0].nodes().some((n) => n.id === "x"), 5000);
      }
    });

    it("the shared store: one of many concurrent claims across nodes wins; a node that leaves answers the claims it still runs", async () => {
      const [sp, sq] = clusters.map((c) => c.idempotencyStore as IdempotencyStore);
      const key = `k-${kind}-${Date.now()}`;
      const claims = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? sp : sq).begin(key, `t${i}`, 60_000)),
      );
      assert.equal(claims.filter((c) => c === undefined).length, 1, "exactly one claim");
      const winner = claims.indexOf(undefined);
      assert.ok(claims.every((c, i) => i === winner || (c?.state === "running" && c.token === `t${winner}`)));
      await (winner % 2 === 0 ? sp : sq).complete(key, `t${winner}`, { ok: true, data: new Uint8Array([7]) });
      const done = await sq.get(key);
      assert.equal(done?.state, "done");
      assert.deepEqual(done?.state === "done" && done.outcome.ok ? [...done.outcome.data] : [], [7]);
      // A third node claims a key, then leaves while the claim's handler still runs: it answers the key with
      // ERR_HANDLER (outcome unknown) first, so no other node takes it over and runs it again (a node that
      // crashes leaves its claims to the others: cluster.test.ts, restart.test.ts).
      const r = make("r");
      const rs = createServer({ cluster: r });
      await rs.listen("tcp://127.0.0.1:0");
      await until(() => clusters[0].nodes().some((n) => n.id === "r"), 5000);
      const rstore = r.idempotencyStore as IdempotencyStore;
      const k2 = `${key}-r`;
      assert.equal(await rstore.begin(k2, "tr", 60_000), undefined);
      assert.equal((await sp.begin(k2, "tp", 60_000))?.state, "running", "r's claim holds while r is a member");
      await rs.close();
      // Before: the node that left still listed itself and the others, their lastSeen frozen.
      assert.deepEqual(r.nodes(), []);
      await until(() => !clusters[0].nodes().some((n) => n.id === "r"), 5000);
      await sleep(300);
      const left = await sp.begin(k2, "tp", 60_000);
      assert.equal(left?.state, "done", "answered, not taken over");
      assert.ok(left?.state === "done" && !left.outcome.ok && left.outcome.code === "ERR_HANDLER");
    });
  });
}

describe("cluster engine unreachable", () => {
  it("the first listen rejects with ERR_CONNECT (no port is bound), and a later listen tries again", async () => {
    for (const cluster of [
      redisCluster({ url: "redis://127.0.0.1:1", connectTimeoutMs: 300 }),
      natsCluster({ servers: "127.0.0.1:1", connectTimeoutMs: 300 }),
    ]) {
      const server = createServer({ cluster });
      for (let attempt = 0; attempt < 2; attempt++) {
        await assert.rejects(server.listen("tcp://127.0.0.1:0"), { code: "ERR_CONNECT" });
        assert.deepEqual(server.urls, []);
      }
      await server.close();
    }
  });

  it("a server closed while its first listen joins Redis leaves no connection open to Redis", async () => {
    // node-redis cannot drop a client whose connect() has not reached its socket yet: the engine's close
    // (the server's) did nothing to them, they connected anyway, owned by nobody — 2 per server, for ever.
    const redis = await startEngine("redis");
    const { createClient } = await import("redis");
    const admin = createClient({ url: redis.url });
    await admin.connect();
    const clients = async () =>
      String(await admin.sendCommand(["CLIENT", "LIST"]))
        .trim()
        .split("\n").length - 1;
    const outcomes: string[] = [];
    try {
      for (const delay of [0, 1, 5, 20]) {
        const server = createServer({ cluster: redisCluster({ url: redis.url, name: "closing" }) });
        const listening = server.listen("tcp://127.0.0.1:0").then(
          () => "listening",
          (e: PointSubError) => e.code,
        );
        await sleep(delay);
        await server.close({ timeoutMs: 100 });
        outcomes.push(await listening);
        assert.deepEqual(server.urls, []);
      }
      let left = await clients();
      for (let i = 0; i < 30 && left !== 0; i++) {
        await sleep(100);
        left = await clients();
      }
      assert.equal(left, 0, `${left} connections of closed servers still open to Redis`);
      // The listen settles as for any engine closed under it (before: "not connected to Redis", unwrapped).
      assert.deepEqual(
        outcomes.filter((o) => !["listening", "ERR_CONNECT", "ERR_GOING_AWAY"].includes(o)),
        [],
      );
    } finally {
      await admin.close();
      await redis.stop();
    }
  });

  it("natsCluster without servers (or an empty list), redisCluster with an empty url: ERR_INVALID_ARGUMENT, not the client's default server", () => {
    // Left out, nats.js connected to its default server: whatever NATS runs on this machine's port 4222
    // (and an empty Redis url, node-redis's default, 127.0.0.1:6379).
    for (const servers of [undefined, [], "", [""], [4222]]) {
      assert.throws(() => natsCluster({ servers } as unknown as Parameters<typeof natsCluster>[0]), {
        code: "ERR_INVALID_ARGUMENT",
      });
      assert.throws(() => redisCluster({ url: servers } as unknown as Parameters<typeof redisCluster>[0]), {
        code: "ERR_INVALID_ARGUMENT",
      });
    }
  });

  it("maxReconnectDelayMs that is not a number ≥ 1 is ERR_INVALID_ARGUMENT (it retried every millisecond)", async () => {
    // NaN, 0 or -1 made each reconnection delay a 1 ms timer: ~1,000 connection attempts a second to a
    // Redis that is down (10 with the default).
    for (const d of [Number.NaN, 0, -1]) {
      assert.throws(() => redisCluster({ url: "redis://127.0.0.1:1", maxReconnectDelayMs: d }), {
        code: "ERR_INVALID_ARGUMENT",
      });
    }
    let attempts = 0;
    const down = createNetServer((s) => {
      attempts++;
      s.destroy();
    });
    await new Promise<void>((r) => down.listen(0, "127.0.0.1", () => r()));
    try {
      const port = (down.address() as { port: number }).port;
      const cluster = redisCluster({
        url: `redis://127.0.0.1:${port}`,
        maxReconnectDelayMs: 50,
        connectTimeoutMs: 500,
      });
      const server = createServer({ cluster });
      await assert.rejects(server.listen("tcp://127.0.0.1:0"), { code: "ERR_CONNECT" });
      await server.close();
      assert.ok(attempts <= 40, `${attempts} connection attempts in 500 ms with maxReconnectDelayMs 50`);
    } finally {
      down.close();
    }
  });

  it("connectTimeoutMs counts reaching the engine, not loading its client library", async () => {
    const redis = await startEngine("redis");
    try {
      // The redis engine whose library takes longer to load than connectTimeoutMs (a loaded machine).
      const real = redisEngine({ url: redis.url });
      const slow: ClusterEngine = Object.create(real);
      let loaded = false;
      slow.load = async () => {
        if (!loaded) await sleep(3000);
        await real.load?.();
        loaded = true;
      };
      const server = createServer({ cluster: new Cluster(slow, { nodeId: "slow", connectTimeoutMs: 2500 }) });
      await server.listen("tcp://127.0.0.1:0");
      assert.ok(loaded);
      assert.equal(server.urls.length, 1);
      await server.close();
    } finally {
      await redis.stop();
    }
  });

  it("an engine that stops answering once connected (its subscriptions never confirmed): the listen rejects ERR_CONNECT after connectTimeoutMs", async () => {
    // Only the connect had the deadline: a Redis frozen just after it held the listen for ever.
    const redis = await startEngine("redis");
    try {
      const real = redisEngine({ url: redis.url });
      const frozen: ClusterEngine = Object.create(real);
      let subscribes = 0;
      const subscribe = real.subscribe.bind(frozen); // on frozen's connections (connect made them there)
      frozen.subscribe = (subject, onMessage) =>
        ++subscribes === 2 ? new Promise<void>(() => {}) : subscribe(subject, onMessage);
      const server = createServer({ cluster: new Cluster(frozen, { nodeId: "frozen", connectTimeoutMs: 500 }) });
      const outcome = await Promise.race([
        server.listen("tcp://127.0.0.1:0").then(
          () => "listening",
          (e: PointSubError) => e.code,
        ),
        sleep(10_000).then(() => "still waiting after 10 s"),
      ]);
      assert.equal(outcome, "ERR_CONNECT");
      assert.deepEqual(server.urls, []);
      await server.close();
    } finally {
      await redis.stop();
    }
  });

  it("a listen retried after a join that failed midway subscribes once: each bus message is read once", async () => {
    // The Redis engine kept the subscriptions of the failed join: the next connect made them again and the
    // join added its own, so every message of the bus was handled twice (a broadcast counted a duplicate).
    const redis = await startEngine("redis");
    const servers: Server[] = [];
    try {
      const real = redisEngine({ url: redis.url });
      const flaky: ClusterEngine = Object.create(real);
      let subscribes = 0;
      const subscribe = real.subscribe.bind(flaky);
      // The third subscription fails (the first two, "members" and "bc", are made): a rejection rather than a
      // hang, so the retried join has the default connectTimeoutMs (a loaded CI machine took over 500 ms).
      flaky.subscribe = (subject, onMessage) =>
        ++subscribes === 3
          ? Promise.reject(new Error("the engine refused this subscription"))
          : subscribe(subject, onMessage);
      const retried = new Cluster(flaky, { nodeId: "retried", name: "retry", heartbeatMs: 100 });
      const rs = createServer({ cluster: retried });
      servers.push(rs);
      await assert.rejects(rs.listen("tcp://127.0.0.1:0"), { code: "ERR_CONNECT" });
      await rs.listen("tcp://127.0.0.1:0"); // the engine answers again
      const other = createServer({
        cluster: redisCluster({ url: redis.url, nodeId: "other", name: "retry", heartbeatMs: 100 }),
      });
      servers.push(other);
      await other.listen("tcp://127.0.0.1:0");
      await until(() => retried.nodes().some((n) => n.id === "other"), 5000);
      const before = retried.stats();
      for (let i = 0; i < 5; i++) await other.broadcast(`once ${i}`);
      await until(() => retried.stats().broadcastsReceived >= before.broadcastsReceived + 5, 5000);
      await sleep(200);
      assert.equal(retried.stats().duplicates - before.duplicates, 0, "broadcasts read twice");
    } finally {
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await redis.stop();
    }
  });

  it("a NATS server without JetStream: ERR_CONNECT naming -js, unless jetstream: false (no shared store)", async () => {
    const nats = await startEngine("nats", { jetstream: false });
    try {
      const refused = createServer({ cluster: natsCluster({ servers: nats.url }), idempotency: true });
      await assert.rejects(refused.listen("tcp://127.0.0.1:0"), (e: PointSubError) => {
        assert.equal(e.code, "ERR_CONNECT");
        assert.match(e.message, /-js/);
        return true;
      });
      await refused.close();
      const clusters = ["x", "y"].map((nodeId) => natsCluster({ servers: nats.url, nodeId, jetstream: false }));
      assert.ok(clusters.every((c) => c.idempotencyStore === undefined));
      const servers = clusters.map((cluster) => createServer({ cluster, idempotency: true }));
      for (const s of servers) await s.listen("tcp://127.0.0.1:0");
      const c = await connect(servers[1].urls[0]);
      const got: string[] = [];
      c.on("message", (m) => got.push(m.text()));
      await until(() => clusters.every((x) => x.nodes().length === 2) && servers[1].sessions.size === 1, 5000);
      await servers[0].broadcast("no jetstream needed for the bus");
      await until(() => got.includes("no jetstream needed for the bus"), 5000);
      await c.close();
      await Promise.all(servers.map((s) => s.close()));
    } finally {
      await nats.stop();
    }
  });
});

describe("cluster timer options", () => {
  it("a timeout or heartbeat period past a timer's range (24.8 days) waits that long, not 1 ms", async () => {
    // Node fires a timer of more than 2^31 - 1 ms at once: connectTimeoutMs 3e9 failed every listen at once
    // ("not connected within 3000000000 ms"), requestTimeoutMs and engineTimeoutMs as long timed out sendTo
    // and engine calls after 1 ms, and heartbeatMs as long sent a heartbeat every millisecond.
    const redis = await startEngine("redis");
    const long = 3e9;
    const servers: Server[] = [];
    const raw = redisEngine({ url: redis.url });
    try {
      await raw.connect();
      const beats: string[] = [];
      await raw.subscribe("pointsub.timers.members", (d) => {
        const text = new TextDecoder().decode(d);
        if (text.includes('"n":"slow"')) beats.push(text);
      });
      const node = async (nodeId: string, o: Record<string, number>) => {
        const s = createServer({ cluster: redisCluster({ url: redis.url, name: "timers", nodeId, ...o }) });
        servers.push(s);
        await s.listen("tcp://127.0.0.1:0");
        return s;
      };
      const a = await node("a", { connectTimeoutMs: long, requestTimeoutMs: long, engineTimeoutMs: long });
      const b = await node("b", { heartbeatMs: 100 });
      const c = await connect(b.urls[0]);
      const got: string[] = [];
      c.on("message", (m) => got.push(m.text()));
      await until(() => b.sessions.size === 1 && a.urls.length === 1, 5000);
      await sleep(300); // a hears b's heartbeats
      await a.sendTo([...b.sessions][0].id, "across, with long timeouts");
      await until(() => got.includes("across, with long timeouts"), 5000);
      await c.close();
      await node("slow", { heartbeatMs: long });
      await sleep(500);
      // Its hello, and maybe an answer to another's: not one a millisecond.
      assert.ok(beats.length <= 3, `${beats.length} heartbeats of "slow" in 500 ms`);
    } finally {
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await raw.close();
      await redis.stop();
    }
  });
});

describe("cluster idempotencyTtlMs", () => {
  it("is checked with or without a shared store (ERR_INVALID_ARGUMENT), and a huge one is the longest the engines take", async () => {
    // natsCluster makes its bucket with it either way: -5 with idempotency: false failed the listen with
    // "no JetStream key-value store … start it with -js"; 1e300 did too on NATS, and Redis refused the
    // answer's PX (the key ran its handler again).
    for (const o of [{ idempotency: false }, { jetstream: false }, {}]) {
      assert.throws(() => natsCluster({ servers: "127.0.0.1:1", idempotencyTtlMs: -5, ...o }), {
        code: "ERR_INVALID_ARGUMENT",
      });
    }
    assert.throws(() => redisCluster({ url: "redis://127.0.0.1:1", idempotency: false, idempotencyTtlMs: -5 }), {
      code: "ERR_INVALID_ARGUMENT",
    });
    for (const kind of ["redis", "nats"] as const) {
      const engine = await startEngine(kind);
      const o = { name: "ttl", idempotencyTtlMs: 1e300 };
      const cluster =
        kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      const server = createServer({ cluster, idempotency: true });
      let runs = 0;
      server.handle("/once", () => `run ${++runs}`);
      try {
        await server.listen("tcp://127.0.0.1:0");
        const c = await connect(server.urls[0] as string);
        const answers: string[] = [];
        for (let i = 0; i < 2; i++) {
          answers.push(new TextDecoder().decode(await c.request("/once", "x", { idempotencyKey: "k" })));
        }
        await c.close();
        assert.deepEqual(answers, ["run 1", "run 1"], kind);
      } finally {
        await server.close({ timeoutMs: 100 });
        await engine.stop();
      }
    }
  });
});
