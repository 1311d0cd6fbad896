/**
 * The multi-node Client's failover never runs an un-keyed handler twice,
 * and its pool gives no new call to a connection whose server said GOAWAY
 * (client review, session 29).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer as createTcpServer, type Socket } from "node:net";
import { describe, it } from "node:test";
import {
  Client,
  connect,
  createServer,
  idempotency,
  memoryIdempotencyStore,
  type PointSubError,
  type Server,
} from "../../src/index.ts";
import { startProxy } from "../helpers/proxy.ts";
import { sleep, until } from "../helpers/wait.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** A tcp:// URL on 127.0.0.1 where nothing listens (a port just bound and closed): connects to it are refused. */
async function refusedUrl(): Promise<string> {
  const probe = createTcpServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
  const url = `tcp://127.0.0.1:${(probe.address() as { port: number }).port}`;
  await new Promise<void>((r) => probe.close(() => r()));
  return url;
}

/** A promise `wait` that stays pending until `release()` (a handler held open). */
function gate(): { wait: Promise<void>; release: () => void } {
  let release = () => {};
  const wait = new Promise<void>((r) => {
    release = r;
  });
  return { wait, release };
}

/** A key whose XOR distance puts `first` before `second` (requestClosest's key order). */
function keyFavouring(first: string, second: string): string {
  const h = (s: string) => createHash("sha256").update(s).digest();
  const a = h(first);
  const b = h(second);
  for (let key = 0; ; key++) {
    const k = h(String(key));
    let cmp = 0;
    for (let i = 0; i < 32 && cmp === 0; i++) cmp = (a[i] ^ k[i]) - (b[i] ^ k[i]);
    if (cmp < 0) return String(key);
  }
}

/** A key whose XOR distance puts `last` after both others (requestClosest's key order). */
function keyWithLast(others: string[], last: string): string {
  const h = (s: string) => createHash("sha256").update(s).digest();
  const z = h(last);
  for (let key = 0; ; key++) {
    const k = h(String(key));
    const closer = (a: Buffer) => {
      for (let i = 0; i < 32; i++) {
        const d = (a[i] ^ k[i]) - (z[i] ^ k[i]);
        if (d !== 0) return d < 0;
      }
      return false;
    };
    if (others.every((o) => closer(h(o)))) return String(key);
  }
}

describe("Client failover and GOAWAY", () => {
  it("a call lost after it reached a node's handler goes to the next node only when keyed and the nodes deduplicate", async () => {
    const runs: string[] = [];
    const servers: Server[] = [];
    // Nodes that share one idempotency store (as a cluster's nodes do), or none.
    const store = memoryIdempotencyStore();
    const node = async (name: string, dedup: boolean) => {
      const s = createServer();
      if (dedup) s.use(idempotency({ store }));
      s.handle("/pay/1", async () => {
        runs.push(name);
        await sleep(200);
        return `paid on ${name}`;
      });
      servers.push(s);
      return (await s.listen("tcp://127.0.0.1:0"))[0];
    };
    const a = await startProxy(await node("A", false));
    const b = await node("B", false);
    const a2 = await startProxy(await node("A", true));
    const b2 = await node("B", true);
    const fresh = (x: string, y: string) => new Client().addNode("/pay/1", x).addNode("/pay/1", y);
    // A client per call: its breakers fresh (one skips A after its failure).
    const clients = [fresh(a.url, b), fresh(a.url, b), fresh(a2.url, b2), fresh(a2.url, b)];
    const key = keyFavouring(a.url, b);
    const key2 = keyFavouring(a2.url, b2);
    const key3 = keyFavouring(a2.url, b);
    try {
      const plain = clients[0].requestClosest("/pay/1", "100", { key, timeoutMs: 5000 });
      await until(() => runs.length === 1);
      a.cutAll();
      // Before: sent on to B, and paid twice.
      await assert.rejects(plain, { code: "ERR_CONNECTION_CLOSED" });
      assert.deepEqual(runs, ["A"]);
      runs.length = 0;
      // Keyed, but the nodes do not deduplicate (no idempotency middleware, HELLO without bit 16):
      // before, it went on to B and was paid twice as well.
      const keyed = clients[1].requestClosest("/pay/1", "100", { key, idempotencyKey: "order-1", timeoutMs: 5000 });
      await until(() => runs.length === 1);
      a.cutAll();
      await assert.rejects(keyed, { code: "ERR_CONNECTION_CLOSED" });
      await sleep(300);
      assert.deepEqual(runs, ["A"]);
      runs.length = 0;
      // Keyed on nodes sharing a store: B waits for A's run (it goes on after the drop) and answers with it.
      const guarded = clients[2].requestClosest("/pay/1", "100", {
        key: key2,
        idempotencyKey: "order-2",
        timeoutMs: 5000,
      });
      await until(() => runs.length === 1);
      a2.cutAll();
      assert.equal(text(await guarded), "paid on A");
      assert.deepEqual(runs, ["A"]);
      runs.length = 0;
      // Lost on a deduplicating node, the next one does not deduplicate: not sent on (before: run there too).
      const mixed = clients[3].requestClosest("/pay/1", "100", {
        key: key3,
        idempotencyKey: "order-3",
        timeoutMs: 5000,
      });
      await until(() => runs.length === 1);
      a2.cutAll();
      await assert.rejects(mixed, (e: PointSubError) => {
        assert.match(e.message, /not sent on to .*: it does not deduplicate keyed requests/);
        return true;
      });
      await sleep(300);
      assert.deepEqual(runs, ["A"]);
    } finally {
      for (const c of clients) await c.close();
      await a.close();
      await a2.close();
      for (const s of servers) await s.close();
    }
  });

  it("the pool gives no new call to a connection whose server said GOAWAY", async () => {
    const s1 = createServer();
    s1.handle("/slow/1", async () => {
      await sleep(1000);
      return "slow";
    });
    const [url] = await s1.listen("tcp://127.0.0.1:0");
    const s2 = createServer();
    s2.handle("/who/1", () => "s2");
    const client = new Client();
    try {
      const slow = client.request(url, "/slow/1", "x", { timeoutMs: 5000 });
      await sleep(100);
      const closing = s1.close({ timeoutMs: 5000 });
      await s2.listen(url);
      await sleep(50);
      // Before: ERR_GOING_AWAY at once, on the draining connection.
      assert.equal(text(await client.request(url, "/who/1", "y", { timeoutMs: 5000 })), "s2");
      // close() waits for the draining connection's call (it was out of the pool: close() resolved at once).
      let answered = false;
      slow.then(() => {
        answered = true;
      });
      await client.close();
      assert.equal(answered, true);
      assert.equal(text(await slow), "slow");
      await closing;
    } finally {
      await client.close();
      await s2.close();
    }
  });

  it("fanout: an un-keyed batch whose calls were sent and lost does not go on to the next batch", async () => {
    const runs: string[] = [];
    const servers: Server[] = [];
    const proxies = new Map<string, Awaited<ReturnType<typeof startProxy>>>();
    const client = new Client();
    try {
      for (const name of ["A", "B", "C"]) {
        const s = createServer();
        s.handle("/pay/1", async () => {
          runs.push(name);
          await sleep(300);
          return `paid on ${name}`;
        });
        servers.push(s);
        const p = await startProxy((await s.listen("tcp://127.0.0.1:0"))[0]);
        proxies.set(name, p);
        client.addNode("/pay/1", p.url);
      }
      const call = client.requestClosest("/pay/1", "100", { fanout: 2, timeoutMs: 5000 });
      await until(() => runs.length === 2);
      for (const name of runs) proxies.get(name)?.cutAll();
      // Before: on to the third node (three runs for a fanout of 2).
      await assert.rejects(call, { code: "ERR_CONNECTION_CLOSED" });
      await sleep(100);
      assert.equal(runs.length, 2);
    } finally {
      await client.close();
      for (const p of proxies.values()) await p.close();
      for (const s of servers) await s.close();
    }
  });

  it("a node that refuses or never answers the connect (at its connection limit, silent) is failed over: the call was never sent", async () => {
    // Before: the connect's ERR_OVERLOADED or ERR_TIMEOUT was taken for the call's own error, so every key
    // closest to that node failed (4 of 6 keys with one node full) and its breaker never opened.
    const full = createServer({ maxConnections: 1 });
    full.handle("/who/1", () => "full");
    const [fullUrl] = await full.listen("tcp://127.0.0.1:0");
    const holder = await connect(fullUrl); // takes its only slot
    const sockets: Socket[] = [];
    const silent = createTcpServer((s) => sockets.push(s)); // accepts, never says HELLO
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const silentUrl = `tcp://127.0.0.1:${(silent.address() as { port: number }).port}`;
    const good = createServer();
    good.handle("/who/1", () => "good");
    const [goodUrl] = await good.listen("tcp://127.0.0.1:0");
    const client = new Client({ connectTimeoutMs: 300 });
    client.addNode("/who/1", fullUrl).addNode("/who/1", silentUrl).addNode("/who/1", goodUrl);
    try {
      for (const first of [fullUrl, silentUrl]) {
        const key = keyWithLast([first], goodUrl);
        assert.equal(text(await client.requestClosest("/who/1", "x", { key, timeoutMs: 5000 })), "good");
      }
    } finally {
      await client.close();
      await holder.close();
      for (const s of sockets) s.destroy();
      silent.close();
      await full.close();
      await good.close();
    }
  });

  it("fanout: a handler's own error in a batch is the answer (not failed over because another node was down)", async () => {
    const runs: string[] = [];
    const a = createServer();
    a.handle("/pay/1", () => {
      runs.push("A");
      throw new Error("card declined");
    });
    const c = createServer();
    c.handle("/pay/1", () => {
      runs.push("C");
      return "paid on C";
    });
    const [aUrl] = await a.listen("tcp://127.0.0.1:0");
    const [cUrl] = await c.listen("tcp://127.0.0.1:0");
    const gone = createServer();
    const [bUrl] = await gone.listen("tcp://127.0.0.1:0");
    await gone.close(); // B: nothing listens there
    const client = new Client();
    client.addNode("/pay/1", aUrl).addNode("/pay/1", bUrl).addNode("/pay/1", cUrl);
    try {
      const key = keyWithLast([aUrl, bUrl], cUrl);
      // Before: B's failure (the batch's last error) sent the call on to C, and A's error was lost.
      await assert.rejects(client.requestClosest("/pay/1", "100", { key, fanout: 2, timeoutMs: 5000 }), {
        code: "ERR_HANDLER",
      });
      assert.deepEqual(runs, ["A"]);
    } finally {
      await client.close();
      await a.close();
      await c.close();
    }
  });

  it("one failed connect shared by many calls counts once against the node's breaker (and its cooldown)", async () => {
    const dead = await refusedUrl(); // nothing listens there: its connect is refused
    const server = createServer();
    server.handle("/x/1", () => "ok");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    for (const failureThreshold of [2, 1]) {
      const client = new Client({ breaker: { failureThreshold, cooldownMs: 200, maxCooldownMs: 60_000 } });
      client.addNode("/x/1", dead).addNode("/x/1", url);
      try {
        // Eight calls at once: all wait for the one connect to `dead`, fail over to `url` together.
        const answers = await Promise.all(Array.from({ length: 8 }, () => client.requestClosest("/x/1", "a")));
        assert.deepEqual(answers.map(text), Array(8).fill("ok"));
        const node = () => client.nodes("/x/1").find((n) => n.address === dead);
        // Before: 9 failures (each call's and the measure's), the breaker open below its threshold of 2 ...
        assert.equal(node()?.failures, 1);
        if (failureThreshold === 2) assert.equal(node()?.breaker, "closed");
        // ... and, at a threshold of 1, the cooldown doubled for each (200 ms became the 60 s maximum).
        else await until(() => node()?.breaker === "half-open", 10_000);
      } finally {
        await client.close();
      }
    }
    await server.close();
  });

  it("a half-open node is probed by one call: the calls made meanwhile go to the healthy node, not wait for its connect", async () => {
    const silent = await refusedUrl(); // refused at first: the breaker opens at once
    const server = createServer();
    server.handle("/x/1", () => "ok");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const key = keyFavouring(silent, url); // `silent` first
    const client = new Client({ connectTimeoutMs: 60_000, breaker: { cooldownMs: 100, maxCooldownMs: 100 } });
    client.addNode("/x/1", silent).addNode("/x/1", url);
    const sockets: Socket[] = [];
    const hole = createTcpServer((s) => {
      s.on("error", () => {});
      s.resume();
      sockets.push(s);
    });
    try {
      assert.equal(text(await client.requestClosest("/x/1", "a", { key })), "ok");
      // Now it takes the connection and never answers the handshake.
      await new Promise<void>((r) => hole.listen(Number(new URL(silent).port), "127.0.0.1", r));
      await until(() => client.nodes("/x/1")[0].breaker === "half-open");
      let answered = 0;
      const calls = Array.from({ length: 4 }, () =>
        client.requestClosest("/x/1", "a", { key }).then((b) => {
          answered++;
          return text(b);
        }),
      );
      // Before: all four waited for the one connect to `silent` (connectTimeoutMs).
      await until(() => answered === 3, 10_000);
      await until(() => sockets.length === 1);
      for (const s of sockets) s.destroy(); // the probe's connect fails: it goes on to `url` too
      assert.deepEqual(await Promise.all(calls), Array(4).fill("ok"));
    } finally {
      for (const s of sockets) s.destroy();
      await client.close();
      await new Promise<void>((r) => hole.close(() => r()));
      await server.close();
    }
  });

  it("a call that claimed a half-open node's probe but is served by another node (a slow handler) does not keep it from being probed", async () => {
    const x = await refusedUrl(); // refused at first: its breaker opens
    const { wait: gated, release } = gate();
    let held = 0;
    const ys = createServer();
    ys.handle("/x/1", async (req) => {
      if (text(req.data) !== "slow") return "y";
      held++;
      await gated;
      return "y";
    });
    const [y] = await ys.listen("tcp://127.0.0.1:0");
    const xs = createServer();
    xs.handle("/x/1", () => "x");
    const client = new Client({ breaker: { cooldownMs: 100, maxCooldownMs: 100 } });
    client.addNode("/x/1", x).addNode("/x/1", y);
    const node = () => client.nodes("/x/1").find((n) => n.address === x);
    let slow: Promise<Uint8Array> | undefined;
    try {
      assert.equal(text(await client.requestClosest("/x/1", "a", { key: keyFavouring(x, y) })), "y");
      await xs.listen(x); // back: its next probe succeeds
      await until(() => node()?.breaker === "half-open", 10_000);
      // `y` first: it never reaches `x`, and its handler holds it.
      slow = client.requestClosest("/x/1", "slow", { key: keyFavouring(y, x) });
      await until(() => held === 1, 10_000);
      // Before: the slow call held `x`'s probe till it ended, every call skipped `x` (half-open all along).
      assert.equal(text(await client.requestClosest("/x/1", "b", { key: keyFavouring(x, y) })), "x");
      assert.equal(node()?.breaker, "closed");
    } finally {
      release();
      if (slow !== undefined) assert.equal(text(await slow), "y");
      await client.close();
      await xs.close();
      await ys.close();
    }
  });

  it("a call whose nodes fail goes on to a half-open node another call is probing, not ERR_CONNECT", async () => {
    const [x, y] = [await refusedUrl(), await refusedUrl()]; // refused: both breakers open
    const { wait: gated, release } = gate();
    let held = 0;
    const xs = createServer();
    xs.handle("/x/1", async (req) => {
      if (text(req.data) !== "slow") return "x";
      held++;
      await gated;
      return "x";
    });
    const client = new Client({ breaker: { cooldownMs: 100, maxCooldownMs: 100 } });
    client.addNode("/x/1", x).addNode("/x/1", y);
    const breakers = () => client.nodes("/x/1").map((n) => n.breaker);
    let slow: Promise<Uint8Array> | undefined;
    try {
      await assert.rejects(client.requestClosest("/x/1", "a"), { code: "ERR_CONNECT" });
      await xs.listen(x); // `x` is back, `y` is still down
      await until(() => breakers().every((b) => b === "half-open"), 10_000);
      slow = client.requestClosest("/x/1", "slow", { key: keyFavouring(x, y) }); // probes `x`, held there
      await until(() => held === 1, 10_000);
      // Probes `y` (refused). Before: then ERR_CONNECT "every node failed", `x` (answering) skipped.
      assert.equal(text(await client.requestClosest("/x/1", "b", { key: keyFavouring(y, x) })), "x");
    } finally {
      release();
      if (slow !== undefined) assert.equal(text(await slow), "x");
      await client.close();
      await xs.close();
    }
  });

  it("a half-open node whose probe is answered with the handler's error is healthy again (not half-open for ever)", async () => {
    const x = await refusedUrl(); // refused at first: its breaker opens
    const ys = createServer();
    ys.handle("/x/1", () => "y");
    const [y] = await ys.listen("tcp://127.0.0.1:0");
    const xs = createServer();
    xs.handle("/x/1", () => {
      throw new Error("no such order");
    });
    const client = new Client({ breaker: { cooldownMs: 100, maxCooldownMs: 100 } });
    client.addNode("/x/1", x).addNode("/x/1", y);
    const key = keyFavouring(x, y);
    const node = () => client.nodes("/x/1").find((n) => n.address === x);
    try {
      assert.equal(text(await client.requestClosest("/x/1", "a", { key })), "y");
      await xs.listen(x);
      await until(() => node()?.breaker === "half-open", 10_000);
      // `x` answered (its handler's error is the call's answer): the node works.
      await assert.rejects(client.requestClosest("/x/1", "a", { key }), { code: "ERR_HANDLER" });
      // Before: half-open still, for as long as its answers were errors; calls made together skipped it.
      assert.equal(node()?.breaker, "closed");
      const both = await Promise.allSettled([1, 2].map(() => client.requestClosest("/x/1", "a", { key })));
      assert.deepEqual(
        both.map((s) => (s.status === "rejected" ? (s.reason as PointSubError).code : text(s.value))),
        ["ERR_HANDLER", "ERR_HANDLER"],
      );
    } finally {
      await client.close();
      await xs.close();
      await ys.close();
    }
  });

  it("calls that found the client's pool full (ERR_POOL_EXHAUSTED) fail over without counting against the node's breaker", async () => {
    const { wait: gated, release } = gate();
    let held = 0;
    const ys = createServer();
    ys.handle("/x/1", async (req) => {
      if (text(req.data) === "slow") {
        held++;
        await gated;
      }
      return "y";
    });
    const [y] = await ys.listen("tcp://127.0.0.1:0");
    const xs = createServer();
    xs.handle("/x/1", () => "x");
    const [x] = await xs.listen("tcp://127.0.0.1:0");
    // One connection in all: the one to `y`, busy, leaves none for `x`.
    const client = new Client({ pool: { maxTotal: 1, acquireTimeoutMs: 100 } });
    client.addNode("/x/1", x).addNode("/x/1", y);
    const node = () => client.nodes("/x/1").find((n) => n.address === x);
    let slow: Promise<Uint8Array> | undefined;
    try {
      slow = client.requestClosest("/x/1", "slow", { key: keyFavouring(y, x) });
      await until(() => held === 1, 10_000);
      const key = keyFavouring(x, y);
      const answers = await Promise.all([1, 2, 3].map(() => client.requestClosest("/x/1", "a", { key })));
      assert.deepEqual(answers.map(text), ["y", "y", "y"]);
      // Before: 3 failures, its breaker open (its cooldown doubled twice) though `x` never failed.
      assert.equal(node()?.failures, 0);
      assert.equal(node()?.breaker, "closed");
    } finally {
      release();
      if (slow !== undefined) assert.equal(text(await slow), "y");
      await client.close();
      await xs.close();
      await ys.close();
    }
  });

  it("a connect refused for the caller's reason (its credentials) is not a node failure for the RTT measure either", async () => {
    const xs = createServer({
      authenticate: () => {
        throw new Error("not you");
      },
    });
    xs.handle("/x/1", () => "x");
    const [x] = await xs.listen("tcp://127.0.0.1:0");
    const ys = createServer();
    ys.handle("/x/1", () => "y");
    const [y] = await ys.listen("tcp://127.0.0.1:0");
    const client = new Client({ credentials: "token" });
    client.addNode("/x/1", x).addNode("/x/1", y);
    const node = () => client.nodes("/x/1").find((n) => n.address === x);
    try {
      // Not measured yet: list order, `x` first; the call shares the measure's connect and gets its refusal.
      await assert.rejects(client.requestClosest("/x/1", "a"), { code: "ERR_UNAUTHORIZED" });
      await sleep(50);
      // Before: the measure counted it (the call did not): `x`'s breaker open, later calls sent elsewhere.
      assert.equal(node()?.failures, 0);
      assert.equal(node()?.breaker, "closed");
    } finally {
      await client.close();
      await xs.close();
      await ys.close();
    }
  });
});
