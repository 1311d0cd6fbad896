/**
 * The multi-node Client over real loopback sockets: pooling limits,
 * requestClosest by measured RTT (links delayed by proxies), failover and
 * the circuit breaker's probe, content-addressed routing by key, fan-out.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { Client, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { type DelayProxy, startDelayProxy } from "../helpers/delay-proxy.ts";
import { sleep, until } from "../helpers/wait.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

interface Node {
  name: string;
  server: Server;
  url: string;
  served: number;
}

async function startNode(name: string, url = "tcp://127.0.0.1:0"): Promise<Node> {
  const server = createServer();
  const node: Node = { name, server, url: "", served: 0 };
  server.handle("/who/1", () => {
    node.served++;
    return name;
  });
  server.handle("/slow/1", async () => {
    await sleep(300);
    return name;
  });
  [node.url] = await server.listen(url);
  return node;
}

/** Calls in flight on the pool's first connection to `node` (undefined: none open). */
function inFlight(client: Client, node: string): number | undefined {
  const pool = (client as unknown as { pool: { connections(n: string): readonly { conn: { inFlight: number } }[] } })
    .pool;
  return pool.connections(node)[0]?.conn.inFlight;
}

describe("Client: closest node, failover, breaker", () => {
  const nodes: Node[] = [];
  const proxies: DelayProxy[] = [];
  let client: Client;

  before(async () => {
    // Delays far apart: a loaded machine's scheduling stalls (tens of ms) must not reorder them.
    for (const [name, delay] of [
      ["slow", 150],
      ["fast", 0],
      ["medium", 60],
    ] as const) {
      const n = await startNode(name);
      nodes.push(n);
      proxies.push(await startDelayProxy(n.url, delay));
    }
    client = new Client({ breaker: { cooldownMs: 200 }, rttProbeMs: 100 });
    for (const p of proxies) client.addNode("/who/1", p.url);
  });

  after(async () => {
    await client.close();
    for (const p of proxies) await p.close();
    for (const n of nodes) await n.server.close();
  });

  it("no nodes for a route is ERR_NO_ROUTE", async () => {
    await assert.rejects(client.requestClosest("/nobody/1", "x"), { code: "ERR_NO_ROUTE" });
  });

  it("measures every node, then picks the one with the lowest RTT", async () => {
    await client.requestClosest("/who/1", "x"); // connects in the background to measure the others
    await until(() => client.nodes("/who/1").every((n) => n.rtt !== undefined));
    const rtts = Object.fromEntries(client.nodes("/who/1").map((n, i) => [nodes[i].name, n.rtt as number]));
    assert.ok(rtts.fast < rtts.medium && rtts.medium < rtts.slow, JSON.stringify(rtts));
    for (let i = 0; i < 5; i++) assert.equal(text(await client.requestClosest("/who/1", "x")), "fast");
  });

  it("fails over within one request when the closest dies, and uses it again after its probe", async () => {
    const fast = nodes[1];
    const port = new URL(fast.url).port;
    await fast.server.close();
    assert.equal(text(await client.requestClosest("/who/1", "x")), "medium");
    assert.equal(client.nodes("/who/1")[1].breaker, "open");
    // Back on the same port: after the cooldown one call probes it, and it is the closest again.
    nodes[1] = await startNode("fast", `tcp://127.0.0.1:${port}`);
    await sleep(250);
    // The probe call goes to it (half-open); it answers, so it is closed again and the closest.
    let got = "";
    for (let i = 0; i < 20 && got !== "fast"; i++) got = text(await client.requestClosest("/who/1", "x"));
    assert.equal(got, "fast");
    assert.equal(text(await client.requestClosest("/who/1", "x")), "fast");
    assert.equal(client.nodes("/who/1")[1].breaker, "closed");
  });

  it("by key: the same key always lands on the same node; a dead node's keys move to the next closest", async () => {
    const keyed = new Client({ breaker: { cooldownMs: 60_000 } });
    const ns = [await startNode("a"), await startNode("b"), await startNode("c")];
    try {
      for (const n of ns) keyed.addNode("/who/1", n.url);
      const home = new Map<string, string>();
      for (let k = 0; k < 12; k++) {
        const owner = text(await keyed.requestClosest("/who/1", "x", { key: `user-${k}` }));
        assert.equal(text(await keyed.requestClosest("/who/1", "x", { key: `user-${k}` })), owner);
        home.set(`user-${k}`, owner);
      }
      assert.ok(new Set(home.values()).size >= 2, "keys spread over the nodes");
      const victim = ns.find((n) => [...home.values()].includes(n.name)) as Node;
      await victim.server.close();
      for (const [k, owner] of home) {
        const now = text(await keyed.requestClosest("/who/1", "x", { key: k }));
        if (owner !== victim.name) assert.equal(now, owner, `${k} stays on ${owner}`);
        else assert.notEqual(now, victim.name);
      }
      // Fan-out: the three closest at once, the first answer wins.
      assert.ok(["a", "b", "c"].includes(text(await keyed.requestClosest("/who/1", "x", { key: "k", fanout: 3 }))));
    } finally {
      await keyed.close();
      for (const n of ns) await n.server.close();
    }
  });
});

describe("Client: routing by key without crypto.subtle", () => {
  it("is ERR_INVALID_ARGUMENT, not a TypeError, where crypto.subtle is missing (a browser page served over plain http)", async () => {
    // A browser gives crypto.subtle to secure contexts only; key routing hashes with it (a weaker hash
    // elsewhere would send one key to different nodes from different pages). Before: a TypeError.
    const keyed = new Client();
    const node = await startNode("a");
    const proto = Object.getPrototypeOf(globalThis.crypto) as { subtle?: unknown };
    const subtle = Object.getOwnPropertyDescriptor(proto, "subtle");
    assert.ok(subtle !== undefined, "Node's Crypto has subtle on its prototype");
    try {
      keyed.addNode("/who/1", node.url);
      delete proto.subtle;
      await assert.rejects(keyed.requestClosest("/who/1", "x", { key: "user-1" }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_INVALID_ARGUMENT");
        assert.match(e.message, /crypto\.subtle/);
        return true;
      });
      Object.defineProperty(proto, "subtle", subtle);
      assert.equal(text(await keyed.requestClosest("/who/1", "x", { key: "user-1" })), "a");
    } finally {
      Object.defineProperty(proto, "subtle", subtle);
      await keyed.close();
      await node.server.close();
    }
  });
});

describe("Client: pool", () => {
  it("reuses connections, opens another only past maxInFlight, never past maxPerNode", async () => {
    const n = await startNode("n");
    let sessions = 0;
    n.server.on("session", () => sessions++);
    const client = new Client({ pool: { maxPerNode: 2, maxInFlight: 1 } });
    try {
      for (let i = 0; i < 5; i++) await client.request(n.url, "/who/1", "x");
      assert.equal(sessions, 1, "sequential calls share one connection");
      await Promise.all([1, 2, 3, 4].map(() => client.request(n.url, "/slow/1", "x")));
      assert.equal(sessions, 2, "concurrent calls opened one more, not more than maxPerNode");
    } finally {
      await client.close();
      await n.server.close();
    }
  });

  it("a burst of calls to a fresh node waits for its connections to open, within maxPerNode", async () => {
    const n = await startNode("n");
    let sessions = 0;
    n.server.on("session", () => sessions++);
    const client = new Client({ pool: { maxPerNode: 2, maxInFlight: 4, acquireTimeoutMs: 2000 } });
    try {
      const answers = await Promise.all(Array.from({ length: 50 }, () => client.request(n.url, "/who/1", "x")));
      assert.equal(answers.length, 50);
      assert.ok(sessions >= 1 && sessions <= 2, `${sessions} connections`);
    } finally {
      await client.close();
      await n.server.close();
    }
  });

  it("calls waiting for a connection being opened wait for its handshake, past acquireTimeoutMs (not ERR_POOL_EXHAUSTED)", async () => {
    const n = await startNode("n");
    // A link of 300 ms round trip: the handshake takes longer than acquireTimeoutMs.
    const proxy = await startDelayProxy(n.url, 150);
    try {
      for (const acquireTimeoutMs of [0, 50]) {
        const client = new Client({ pool: { acquireTimeoutMs } });
        try {
          // Before: the first call (which opened the connection) was answered, the others failed with
          // ERR_POOL_EXHAUSTED after acquireTimeoutMs, though no pool limit was reached.
          const answers = await Promise.all(
            [0, 1, 2].map(() => client.request(proxy.url, "/who/1", "x").then(text, (e: PointSubError) => e.code)),
          );
          assert.deepEqual(answers, ["n", "n", "n"], `acquireTimeoutMs ${acquireTimeoutMs}`);
        } finally {
          await client.close();
        }
      }
    } finally {
      await proxy.close();
      await n.server.close();
    }
  });

  it("a burst past maxPerNode × maxInFlight while the node's handshake is slow waits for it, over-subscribed", async () => {
    const n = await startNode("n");
    const proxy = await startDelayProxy(n.url, 150);
    const client = new Client({ pool: { maxPerNode: 1, maxInFlight: 2, acquireTimeoutMs: 50 } });
    try {
      // Before: calls 4 and 5 (past the one connection's 2 calls, plus its opener) failed with ERR_POOL_EXHAUSTED.
      const answers = await Promise.all(
        [1, 2, 3, 4, 5].map(() => client.request(proxy.url, "/who/1", "x").then(text, (e: PointSubError) => e.code)),
      );
      assert.deepEqual(answers, ["n", "n", "n", "n", "n"]);
    } finally {
      await client.close();
      await proxy.close();
      await n.server.close();
    }
  });

  it("calls waiting for a connect that fails share its failure: one connect to a node that never answers, not one per call", async () => {
    // Accepts and never answers the handshake.
    const sockets = new Set<net.Socket>();
    let accepted = 0;
    const silent = net.createServer((s) => {
      accepted++;
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
      s.resume();
    });
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const url = `tcp://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    const client = new Client({ connectTimeoutMs: 200, pool: { acquireTimeoutMs: 60_000 } });
    try {
      // Before: each waiting call, woken by the failed connect, opened its own: 10 connects one after
      // another (10 × connectTimeoutMs for the last call).
      const codes = await Promise.all(
        Array.from({ length: 10 }, () => client.request(url, "/who/1", "x").then(text, (e: PointSubError) => e.code)),
      );
      assert.deepEqual(codes, Array(10).fill("ERR_TIMEOUT"));
      assert.equal(accepted, 1, "one connect for the ten calls");
    } finally {
      await client.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  it("a call's signal and timeoutMs end its wait for a connection (the pool's connect, a slot)", async () => {
    // Accepts and never answers the handshake: the pool's connect to it stays under way.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
      s.resume();
    });
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const url = `tcp://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    const a = await startNode("a");
    const b = await startNode("b");
    const client = new Client({ connectTimeoutMs: 3000 });
    const full = new Client({ pool: { maxTotal: 1, acquireTimeoutMs: 8000 } });
    try {
      const ac = new AbortController();
      const outcome = (c: Promise<Uint8Array>) => c.then(text, (e: PointSubError) => `${e.code} ${e.phase ?? ""}`);
      const calls = [
        outcome(client.request(url, "/who/1", "x", { signal: ac.signal })),
        outcome(client.request(url, "/who/1", "x", { signal: AbortSignal.abort() })),
        outcome(client.request(url, "/who/1", "x", { timeoutMs: 100 })),
      ];
      ac.abort();
      // Before: all three waited for the connect's deadline and failed with its ERR_TIMEOUT (phase handshake).
      assert.deepEqual(await Promise.all(calls), ["ERR_CANCELLED ", "ERR_CANCELLED ", "ERR_TIMEOUT request"]);
      // The only slot is b's, busy for 300 ms: a's call, due in 100 ms, does not wait for it (before: answered).
      const busy = full.request(b.url, "/slow/1", "x");
      await until(() => inFlight(full, b.url) === 1);
      assert.equal(await outcome(full.request(a.url, "/who/1", "x", { timeoutMs: 100 })), "ERR_TIMEOUT request");
      assert.equal(text(await busy), "b");
      assert.equal(a.served, 0);
    } finally {
      await client.close();
      await full.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
      await a.server.close();
      await b.server.close();
    }
  });

  it("a node that refuses another connection (its connection limit) shares the open one: no call fails ERR_OVERLOADED", async () => {
    const server = createServer({ maxConnections: 1 });
    server.handle("/slow/1", async () => {
      await sleep(200);
      return "n";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    let sessions = 0;
    server.on("session", () => sessions++);
    const client = new Client({ pool: { maxInFlight: 1 } });
    try {
      assert.equal(text(await client.request(url, "/slow/1", "x")), "n");
      // Past maxInFlight the pool opens another connection, which the server refuses. Before: each of those
      // calls failed with ERR_OVERLOADED, the open connection at hand.
      const answers = await Promise.all(
        [1, 2, 3, 4].map(() => client.request(url, "/slow/1", "x").then(text, (e: PointSubError) => e.code)),
      );
      assert.deepEqual(answers, ["n", "n", "n", "n"]);
      assert.equal(sessions, 1);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("maxTotal: a node waits for a slot, closes another node's idle connection, or fails with ERR_POOL_EXHAUSTED", async () => {
    const a = await startNode("a");
    const b = await startNode("b");
    const client = new Client({ pool: { maxTotal: 1, acquireTimeoutMs: 100 } });
    try {
      assert.equal(text(await client.request(a.url, "/who/1", "x")), "a");
      // a's connection is idle: b takes its slot.
      assert.equal(text(await client.request(b.url, "/who/1", "x")), "b");
      // b's connection is busy: a cannot get a slot in time.
      const busy = client.request(b.url, "/slow/1", "x");
      await assert.rejects(client.request(a.url, "/who/1", "x"), { code: "ERR_POOL_EXHAUSTED" });
      assert.equal(text(await busy), "b");
    } finally {
      await client.close();
      await a.server.close();
      await b.server.close();
    }
  });

  it("maxTotal: a node waiting for a slot gets the one another node's call frees when it ends (it got ERR_POOL_EXHAUSTED)", async () => {
    const a = await startNode("a");
    const b = await startNode("b");
    try {
      // 2^31 ms: longer than a timer takes (it fired after 1 ms: ERR_POOL_EXHAUSTED at once).
      for (const acquireTimeoutMs of [8000, 2 ** 31]) {
        const client = new Client({ pool: { maxTotal: 1, acquireTimeoutMs } });
        try {
          const busy = client.request(b.url, "/slow/1", "x");
          await until(() => inFlight(client, b.url) === 1);
          // b's only call ends after 300 ms: its connection, idle, is closed to make room for a's.
          // Before: a waited for a connection to close or open, which none did, until acquireTimeoutMs.
          const waiting = client.request(a.url, "/who/1", "x");
          assert.equal(text(await busy), "b");
          assert.equal(text(await waiting), "a");
          assert.equal(inFlight(client, a.url), 0);
          assert.equal(inFlight(client, b.url), undefined, "b's idle connection made room");
        } finally {
          await client.close();
        }
      }
    } finally {
      await a.server.close();
      await b.server.close();
    }
  });

  it("maxTotal: a call waiting for a slot does not close the connection just opened for another node's call", async () => {
    const a = await startNode("a");
    const b = await startNode("b");
    const client = new Client({ pool: { maxTotal: 1, acquireTimeoutMs: 8000 } });
    try {
      // b's call opens the only connection; a's waits. Before: woken by the open, a's call found that
      // connection idle (b's call not started on it yet) and closed it: b's failed unsent, ERR_GOING_AWAY.
      const answers = [client.request(b.url, "/who/1", "x"), client.request(a.url, "/who/1", "x")].map((c) =>
        c.then(text, (e: PointSubError) => e.code),
      );
      assert.deepEqual(await Promise.all(answers), ["b", "a"]);
      assert.equal(b.served, 1);
      assert.equal(a.served, 1);
    } finally {
      await client.close();
      await a.server.close();
      await b.server.close();
    }
  });

  it("close() ends the connects under way: their calls reject with ERR_CONNECTION_CLOSED, nothing is left open", async () => {
    // A node that accepts and never answers the handshake: the client's connect to it stays under way.
    const sockets: net.Socket[] = [];
    const ended = new Set<net.Socket>();
    const silent = net.createServer((s) => {
      s.on("error", () => {});
      s.on("close", () => ended.add(s));
      s.resume();
      sockets.push(s);
    });
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const url = `tcp://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    const client = new Client({ connectTimeoutMs: 60_000 });
    try {
      // The first call opens the connection, the second waits for it.
      const calls = [client.request(url, "/who/1", "x"), client.request(url, "/who/1", "y")].map((c) =>
        c.then(
          () => "answered",
          (e: PointSubError) => e.code,
        ),
      );
      await until(() => sockets.length === 1);
      await client.close();
      // Before: the connect went on until its timeout (60 s), then the pool counted -1 connections.
      const outcome = await Promise.race([Promise.all(calls), sleep(3000).then(() => "still pending")]);
      assert.deepEqual(outcome, ["ERR_CONNECTION_CLOSED", "ERR_CONNECTION_CLOSED"]);
      await until(() => ended.size === 1, 3000);
      assert.equal((client as unknown as { pool: { size: number } }).pool.size, 0);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  it("a second close() resolves with the first, once the calls in flight are done", async () => {
    const n = await startNode("n");
    const client = new Client();
    try {
      await client.request(n.url, "/who/1", "x");
      const slow = client.request(n.url, "/slow/1", "x");
      let firstDone = false;
      const first = client.close().then(() => {
        firstDone = true;
      });
      // Before: the second found the pool already emptied by the first and resolved at once.
      await client.close();
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(firstDone, true, "the first close had resolved when the second did");
      assert.equal(text(await slow), "n", "the call in flight finished");
      await first;
    } finally {
      await n.server.close();
    }
  });

  it("invalid options throw ERR_INVALID_ARGUMENT naming the field", () => {
    assert.throws(() => new Client({ pool: { maxPerNode: 0 } }), /pool.maxPerNode/);
    assert.throws(() => new Client({ pool: { acquireTimeoutMs: Number.NaN } }), /pool.acquireTimeoutMs/);
    assert.throws(() => new Client({ breaker: { cooldownMs: -1 } }), /breaker.cooldownMs/);
  });
});
