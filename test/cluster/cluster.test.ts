/**
 * pointsub/cluster over real engines: a redis-server and a nats-server
 * (JetStream on) each on a free loopback port, three pointsub server
 * processes (test/cluster/node-process.ts) joined to each, 300 client
 * sessions per node. The same body runs for Redis and for NATS:
 * broadcast from any node reaches all 900 sessions once; sendTo crosses
 * nodes (ERR_NOT_FOUND, errno 4013, for a session nowhere); the session
 * list spans the nodes; a keyed request repeated on another node is
 * answered from the shared store; a node SIGKILLed in the middle of a
 * broadcast stream and of a keyed handler — the others deliver every
 * message once, the registry forgets it within deadAfterMs, its clients
 * reconnect elsewhere, the request retried on another node completes its
 * handler once; the engine killed and restarted — the nodes find each
 * other again and broadcast and sendTo work across them.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Connection, connect, Client as NodeListClient, type PointSubError } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";
import { type NodeProcess, startNode } from "./node-spawn.ts";

const PER_NODE = 300;
const utf8 = new TextDecoder();

/** A client session and every message it received, in order. */
interface Client {
  conn: Connection;
  node: string;
  got: string[];
}

async function clientsOf(node: NodeProcess, n: number): Promise<Client[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const conn = await connect(node.url);
      const c: Client = { conn, node: node.id, got: [] };
      conn.on("message", (m) => c.got.push(m.text()));
      return c;
    }),
  );
}

async function call(conn: Connection, route: string, body = "", key?: string): Promise<string> {
  return utf8.decode(await conn.request(route, body, key === undefined ? {} : { idempotencyKey: key }));
}

const count = (c: Client, text: string) => c.got.filter((g) => g === text).length;

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster on ${kind}`, { timeout: 120_000 }, () => {
    let engine: EngineServer;
    const nodes: NodeProcess[] = [];
    let clients: Client[] = [];
    const ctl = new Map<string, Connection>();

    before(async () => {
      engine = await startEngine(kind);
      // Each node is recorded as soon as it runs, so `after` ends it even when another failed to start.
      await Promise.all(
        ["a", "b", "c"].map(async (id) => nodes.push(await startNode(engine, id, id === "c" ? 10_000 : 100))),
      );
      nodes.sort((x, y) => x.id.localeCompare(y.id));
      for (const n of nodes) ctl.set(n.id, await connect(n.url));
      clients = (await Promise.all(nodes.map((n) => clientsOf(n, PER_NODE)))).flat();
      // Every node has heard the others' heartbeats.
      for (const n of nodes) {
        const c = ctl.get(n.id) as Connection;
        const deadline = Date.now() + 5000;
        while ((JSON.parse(await call(c, "/ctl/nodes")) as string[]).length !== 3) {
          assert.ok(Date.now() < deadline, `node ${n.id} does not see the others`);
          await sleep(50);
        }
      }
    });

    after(async () => {
      await Promise.all([
        ...clients.map((c) => c.conn.close({ timeoutMs: 200 })),
        ...[...ctl.values()].map((c) => c.close({ timeoutMs: 200 })),
      ]);
      await Promise.all(nodes.map((n) => n.kill()));
      await engine?.stop();
    });

    it("a broadcast from any node reaches the 900 sessions of all three, once each", async () => {
      for (const n of nodes) {
        const text = `hello from ${n.id}`;
        const local = JSON.parse(await call(ctl.get(n.id) as Connection, "/ctl/broadcast", text)) as {
          sent: number;
          queued: number;
        };
        // The result counts the node's own sessions (its 300 and the 3 control connections... of this node: 1).
        assert.equal(local.sent + local.queued, PER_NODE + 1);
        await until(() => clients.every((c) => count(c, text) >= 1), 10_000);
      }
      await sleep(100);
      for (const n of nodes)
        assert.ok(
          clients.every((c) => count(c, `hello from ${n.id}`) === 1),
          "delivered once",
        );
      // A named filter runs on every node: sessions whose id ends in "7".
      await call(ctl.get("b") as Connection, "/ctl/broadcast", "tag:7:only sevens");
      const sevens = await Promise.all(
        clients.slice(0, 60).map(async (c) => ({ c, id: await call(c.conn, "/whoami") })),
      );
      await until(() => sevens.every(({ c, id }) => !id.endsWith("7") || count(c, "tag:7:only sevens") === 1), 5000);
      await sleep(100);
      for (const { c, id } of sevens) assert.equal(count(c, "tag:7:only sevens"), id.endsWith("7") ? 1 : 0, id);
    });

    it("sendTo reaches a session on another node; a session nowhere is ERR_NOT_FOUND (4013)", async () => {
      const onB = clients.find((c) => c.node === "b") as Client;
      const onC = clients.find((c) => c.node === "c") as Client;
      const idB = await call(onB.conn, "/whoami");
      const idC = await call(onC.conn, "/whoami");
      assert.match(idB, /^b\.[0-9a-z]{6}\.\d+$/);
      const a = ctl.get("a") as Connection;
      assert.equal(await call(a, "/ctl/send-to", JSON.stringify({ id: idB, text: "direct to b" })), "sent");
      assert.equal(await call(a, "/ctl/send-to", JSON.stringify({ id: idC, text: "direct to c" })), "sent");
      await until(() => count(onB, "direct to b") === 1 && count(onC, "direct to c") === 1, 5000);
      for (const id of ["b.99999", "zz.1", "nodot"]) {
        // For deadAfterMs after a node (re)joined its engine (a flap on a loaded machine), a node it has not
        // heard is ERR_CONNECTION_CLOSED, retryable (README, Cluster): asked again until that window ends.
        let e: PointSubError | undefined;
        for (let i = 0; i < 100; i++) {
          e = await call(a, "/ctl/send-to", JSON.stringify({ id, text: "x" })).then(
            () => undefined,
            (err: PointSubError) => err,
          );
          if (e?.code !== "ERR_CONNECTION_CLOSED") break;
          await sleep(100);
        }
        assert.equal(e?.code, "ERR_NOT_FOUND", `${id}: ${e?.message}`);
        assert.equal(e?.errno, 4013);
      }
    });

    it("sessionsInfo({ cluster: true }) lists every node's sessions with their node", async () => {
      const list = JSON.parse(await call(ctl.get("c") as Connection, "/ctl/sessions")) as {
        id: string;
        node: string;
      }[];
      assert.equal(list.length, 3 * (PER_NODE + 1));
      assert.equal(new Set(list.map((s) => s.id)).size, list.length, "ids unique cluster-wide");
      for (const n of nodes) {
        const mine = list.filter((s) => s.node === n.id);
        assert.equal(mine.length, PER_NODE + 1);
        assert.ok(mine.every((s) => s.id.startsWith(`${n.id}.`)));
      }
    });

    it("a keyed request repeated on another node is answered from the shared store: its handler ran once; another payload under the key is refused", async () => {
      const key = `pay-${kind}`;
      const first = await call(ctl.get("a") as Connection, "/count", key, key);
      assert.equal(await call(ctl.get("b") as Connection, "/count", key, key), first);
      assert.equal(await call(ctl.get("c") as Connection, "/count", key, key), first);
      // The key reused for another payload on another node: refused from the shared entry, nothing runs.
      await assert.rejects(call(ctl.get("b") as Connection, "/count", "other payload", key), {
        code: "ERR_INVALID_ARGUMENT",
      });
      const ran = nodes.flatMap((n) => n.events).filter((e) => e.event === "ran" && e.key === key);
      assert.equal(ran.length, 1);
    });

    it("a node killed mid-broadcast and mid-handler: the others deliver everything once, the registry forgets it, the retried request completes once", async () => {
      const [a, b, c] = nodes;
      const key = `slow-${kind}`;
      // A stream of broadcasts from a, a keyed request whose handler runs on c; c is killed in the middle of both.
      const n = 60;
      const stream = call(
        ctl.get("a") as Connection,
        "/ctl/broadcast-many",
        JSON.stringify({ n, gapMs: 5, prefix: "m" }),
      );
      await until(() => clients.some((cl) => cl.node === "c" && cl.got.includes("m10")), 5000);
      // The keyed request goes through a Client whose node list is [c, a, b]: none measured yet, so
      // c first; c dies mid-handler, the Client fails over to the next node with the same key.
      const client = new NodeListClient({ breaker: { cooldownMs: 60_000 } });
      for (const x of [c, a, b]) client.addNode("/slow-count", x.url);
      const failover = client.requestClosest("/slow-count", key, { idempotencyKey: key, timeoutMs: 20_000 });
      await until(() => c.events.some((e) => e.event === "started" && e.key === key), 5000);
      await c.kill();
      assert.equal(await stream, "done");
      const expected = Array.from({ length: n }, (_, i) => `m${i}`);
      const live = clients.filter((cl) => cl.node !== "c");
      await until(() => live.every((cl) => cl.got.filter((g) => g.startsWith("m")).length === n), 10_000);
      for (const cl of live)
        assert.deepEqual(
          cl.got.filter((g) => /^m\d+$/.test(g)),
          expected,
        );
      for (const cl of clients.filter((x) => x.node === "c")) {
        const seen = cl.got.filter((g) => /^m\d+$/.test(g));
        assert.ok(seen.length < n, "c died before the stream ended");
        assert.deepEqual(seen, expected.slice(0, seen.length), "a prefix, nothing twice");
      }
      // The registry forgets c (deadAfterMs 700) and its sessions.
      for (const node of [a, b]) {
        const conn = ctl.get(node.id) as Connection;
        const deadline = Date.now() + 5000;
        while ((JSON.parse(await call(conn, "/ctl/nodes")) as string[]).includes("c")) {
          assert.ok(Date.now() < deadline, `${node.id} still lists c`);
          await sleep(50);
        }
      }
      // The Client retried on the next node of its list (a, or b if a's connection was not up): that
      // node waited for c's claim until the membership removed c, then ran the handler — once in all.
      const answer = utf8.decode(await failover);
      await client.close();
      assert.match(answer, /^[ab]:\d+$/);
      const ranOn = answer.slice(0, 1);
      const other = ranOn === "a" ? "b" : "a";
      assert.equal(
        await call(ctl.get(other) as Connection, "/slow-count", key, key),
        answer,
        "answered from the store",
      );
      // The Client's connections closed: a and b hold their own sessions and nothing of c's.
      let list: { node: string }[] = [];
      for (const deadline = Date.now() + 5000; ; await sleep(50)) {
        list = JSON.parse(await call(ctl.get("a") as Connection, "/ctl/sessions")) as { node: string }[];
        if (list.length === 2 * (PER_NODE + 1) || Date.now() > deadline) break;
      }
      assert.equal(list.length, 2 * (PER_NODE + 1));
      assert.ok(list.every((s) => s.node !== "c"));
      const all = nodes.flatMap((x) => x.events).filter((e) => e.key === key);
      assert.equal(all.filter((e) => e.event === "ran").length, 1, "completed once");
      assert.deepEqual(
        all
          .filter((e) => e.event === "started")
          .map((e) => e.node)
          .sort(),
        [ranOn, "c"].sort(),
        "started on c (killed before it finished), then on the node the Client failed over to",
      );
      // c's clients reconnect to a and b; a broadcast reaches all 900 again.
      const orphans = clients.filter((x) => x.node === "c");
      for (const o of orphans) await o.conn.close({ timeoutMs: 50 }).catch(() => {});
      clients = [...live, ...(await clientsOf(a, PER_NODE / 2)), ...(await clientsOf(b, PER_NODE / 2))];
      // The registry lists them on a and b (a session is registered once its server saw the handshake end).
      const deadline = Date.now() + 5000;
      for (;;) {
        const now = JSON.parse(await call(ctl.get("a") as Connection, "/ctl/sessions")) as { node: string }[];
        if (now.filter((x) => x.node === "a").length === 1.5 * PER_NODE + 1) {
          if (now.filter((x) => x.node === "b").length === 1.5 * PER_NODE + 1) break;
        }
        assert.ok(Date.now() < deadline, "the reconnected sessions are not listed");
        await sleep(50);
      }
      await call(ctl.get("b") as Connection, "/ctl/broadcast", "after failover");
      await until(() => clients.every((x) => count(x, "after failover") >= 1), 10_000).catch(() => {
        const missing = clients.filter((x) => count(x, "after failover") === 0);
        assert.fail(`${missing.length} sessions missed it: ${[...new Set(missing.map((x) => x.node))]}`);
      });
      await sleep(50);
      assert.ok(
        clients.every((x) => count(x, "after failover") === 1),
        "once each",
      );
    });

    it(`${kind} restarted: the nodes find each other again; broadcast and sendTo cross them`, async () => {
      await engine.restart();
      const a = ctl.get("a") as Connection;
      const b = ctl.get("b") as Connection;
      // At most once: a broadcast published before a node has subscribed again is lost, so a
      // broadcasts a new marker every 200 ms until one reaches every session of both nodes.
      let reached: string | undefined;
      for (let k = 0; reached === undefined; k++) {
        assert.ok(k < 75, "the cluster did not recover within 15 s");
        await call(a, "/ctl/broadcast", `after restart ${k}`).catch(() => {});
        await sleep(200);
        for (let j = 0; j <= k && reached === undefined; j++) {
          if (clients.every((x) => count(x, `after restart ${j}`) >= 1)) reached = `after restart ${j}`;
        }
      }
      const marker = reached;
      assert.ok(
        clients.every((x) => count(x, marker) === 1),
        "once each",
      );
      for (const c of [a, b]) {
        const seen = JSON.parse(await call(c, "/ctl/nodes")) as string[];
        assert.deepEqual(seen.sort(), ["a", "b"]);
      }
      const onB = clients.find((x) => x.node === "b") as Client;
      const idB = await call(onB.conn, "/whoami");
      assert.equal(await call(a, "/ctl/send-to", JSON.stringify({ id: idB, text: "after restart, direct" })), "sent");
      await until(() => count(onB, "after restart, direct") === 1, 5000);
    });
  });
}
