/**
 * Every keyed request through the idempotency middleware is charged its
 * body, CALL_OVERHEAD and KEYED_OVERHEAD; whatever way it ends, the charge
 * comes back exactly once. A mixed workload over real loopback sockets —
 * answered, handler throws, the store failing, duplicates waiting for a key
 * still running until their wait times out, calls the caller cancels,
 * connections destroyed while their handlers run (orphans, aborted after
 * the middleware's waitMs, or running on to the end), refusals of the
 * memory budget and of the store's per-principal quota, keyed bodies of
 * several frames (charged while they arrive, then refused) — leaves
 * `server.memory.used` at 0 once every handler settled; so do duplicates
 * waiting on a cluster's shared store (Redis) for a key another node runs
 * (session 53 review of 2766f40a).
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { redisCluster } from "../../src/cluster/index.ts";
import {
  connect,
  createServer,
  type IdempotencyStore,
  memoryIdempotencyStore,
  type PointSubError,
} from "../../src/index.ts";
import { startEngine } from "../cluster/engines.ts";
import { until } from "../helpers/wait.ts";

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

/** Outcomes by code ("ok" for an answer): `count(p)` records how `p` settles. */
function tally(): { codes: Map<string, number>; count: (p: Promise<unknown>) => Promise<void> } {
  const codes = new Map<string, number>();
  const count = (p: Promise<unknown>): Promise<void> =>
    p
      .then(
        () => "ok",
        (e: PointSubError) => e.code ?? "?",
      )
      .then((c) => {
        codes.set(c, (codes.get(c) ?? 0) + 1);
      });
  return { codes, count };
}

describe("keyed requests return their whole charge however they end", { timeout: 60_000 }, () => {
  it("mixed workload: answered, thrown, store down, waits timed out, cancelled, connections destroyed, refused", async () => {
    const inner = memoryIdempotencyStore({ maxEntriesPerScope: 150 });
    // A store whose engine is down for one route (a cluster's shared store that does not answer).
    const store: IdempotencyStore = {
      begin: (key, token, leaseMs, print) =>
        key.includes("/down") ? Promise.reject(new Error("engine down")) : inner.begin(key, token, leaseMs, print),
      get: (key) => inner.get(key),
      complete: (key, token, outcome, print) => inner.complete(key, token, outcome, print),
      fail: (key, token) => inner.fail(key, token),
      wait: (key, signal) => inner.wait(key, signal),
    };
    // ~110 keyed calls of 4.6 KiB fit: the floods below are refused in part.
    const server = createServer({
      keepAliveMs: 0,
      memoryBudget: 512 * 1024,
      maxFrameSize: 16 * 1024,
      idempotency: { store, waitMs: 300 },
    });
    cleanup.push(() => server.close({ timeoutMs: 200 }));
    const gate = Promise.withResolvers<void>();
    cleanup.push(() => gate.resolve());
    let stubborn = 0;
    let held = 0;
    let heldSettled = 0;
    server.handle("/stubborn", async () => {
      stubborn++;
      await gate.promise; // ignores its signal
      return "ok";
    });
    server.handle("/hold", async (_req, ctx) => {
      held++;
      try {
        await new Promise((resolve, reject) => {
          gate.promise.then(resolve);
          ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
        });
      } finally {
        heldSettled++;
      }
      return "ok";
    });
    server.handle("/throw", async () => {
      await Promise.resolve();
      throw new Error("boom");
    });
    server.handle("/fast", () => "ok");
    server.handle("/down", () => "never");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const { codes, count } = tally();
    const all: Promise<void>[] = [];
    const opts = (key: string, signal?: AbortSignal) => ({ idempotencyKey: key, timeoutMs: 30_000, signal });

    const a = await connect(url);
    cleanup.push(() => a.close({ timeoutMs: 100 }).catch(() => {}));
    // Claims whose handlers run until the end.
    for (let i = 0; i < 30; i++) all.push(count(a.request("/stubborn", "x", opts(`s-${i}`))));
    await until(() => stubborn === 30);
    const claims = server.memory.used;
    assert.ok(claims >= 30 * 4608, `30 running claims charged ${claims} bytes`);
    // Duplicates of a key still running: their wait (waitMs) runs out, ERR_TIMEOUT.
    const dups: Promise<void>[] = [];
    for (let i = 0; i < 20; i++) dups.push(count(a.request("/stubborn", "x", opts("s-0"))));
    await Promise.all(dups);
    assert.equal(codes.get("ERR_TIMEOUT"), 20);
    // Calls the caller cancels while their handler waits.
    const acs = Array.from({ length: 20 }, () => new AbortController());
    for (let i = 0; i < 20; i++) all.push(count(a.request("/hold", "x", opts(`h-${i}`, acs[i].signal))));
    await until(() => held === 20);
    for (const ac of acs) ac.abort();
    await until(() => heldSettled === 20);
    // Answered, thrown, the store down.
    for (let i = 0; i < 10; i++) {
      await count(a.request("/fast", "x", opts(`f-${i}`)));
      await count(a.request("/throw", "x", opts(`t-${i}`)));
      await count(a.request("/down", "x", opts(`d-${i}`)));
    }
    assert.equal(codes.get("ERR_HANDLER"), 20);

    // A connection destroyed while its keyed handlers run: orphans, aborted waitMs later (/hold) or running on.
    const b = await connect(url);
    for (let i = 0; i < 20; i++) all.push(count(b.request("/hold", "x", opts(`bh-${i}`))));
    for (let i = 0; i < 10; i++) all.push(count(b.request("/stubborn", "x", opts(`bs-${i}`))));
    await until(() => held === 40 && stubborn === 40);
    b.destroy();
    await until(() => heldSettled === 40);

    // A keyed body of several frames (16 KiB each: the server's maxFrameSize), charged as it arrives, that
    // fits the budget but for KEYED_OVERHEAD: refused, its body's charge returned.
    await until(() => server.memory.used === claims + 10 * 4609 + 10 * 1024); // B's claims (orphaned)
    const before = server.memory.used;
    const d = await connect(url);
    cleanup.push(() => d.close({ timeoutMs: 100 }).catch(() => {}));
    const fits = new Uint8Array(server.memory.limit - before - 1024 - 2048);
    await assert.rejects(d.request("/stubborn", fits, opts("big")), (e: PointSubError) => {
      assert.equal(e.code, "ERR_OVERLOADED");
      assert.match(e.message, /no memory budget for 3584 more bytes/);
      return true;
    });
    await until(() => server.memory.used === before);
    await d.close({ timeoutMs: 100 });

    // A flood: the memory budget and the principal's store quota refuse part of it.
    const c = await connect(url);
    cleanup.push(() => c.close({ timeoutMs: 100 }).catch(() => {}));
    const flood: Promise<void>[] = [];
    for (let i = 0; i < 150; i++) flood.push(count(c.request("/stubborn", "x", opts(`c-${i}`))));
    // Every call of the flood has started its handler or been refused.
    await until(() => stubborn + (codes.get("ERR_OVERLOADED") ?? 0) === 40 + 150);
    assert.ok((codes.get("ERR_OVERLOADED") ?? 0) > 0, `refused: ${JSON.stringify([...codes])}`);
    assert.ok(stubborn > 40, "some of the flood ran");

    gate.resolve();
    await Promise.all([...all, ...flood]);
    await until(() => inner.stats().running === 0 && server.memory.used === 0);
    assert.equal(stubborn + (codes.get("ERR_OVERLOADED") ?? 0), 40 + 150);
    assert.equal(codes.get("ok"), 10 + 30 + stubborn - 40);
    assert.equal(server.memory.used, 0);
    // The caller's cancels and the destroyed connection were seen as such.
    assert.equal(codes.get("ERR_CANCELLED"), 20);
    assert.ok((codes.get("ERR_CONNECTION_CLOSED") ?? 0) >= 30, JSON.stringify([...codes]));
    // The server still serves keyed calls, and returns their charge.
    assert.equal(new TextDecoder().decode(await a.request("/fast", "x", opts("after"))), "ok");
    await until(() => server.memory.used === 0);
  });

  it("a cluster's shared store: duplicates on another node wait, time out, are cancelled or lose their connection", async () => {
    const engine = await startEngine("redis");
    cleanup.push(() => engine.stop());
    const gate = Promise.withResolvers<void>();
    cleanup.push(() => gate.resolve());
    let started = 0;
    const servers = [];
    for (const nodeId of ["a", "b"]) {
      const cluster = redisCluster({ nodeId, name: "charge", heartbeatMs: 200, url: engine.url });
      const server = createServer({ keepAliveMs: 0, cluster, idempotency: { waitMs: 1500 } });
      cleanup.push(() => server.close({ timeoutMs: 200 }));
      server.handle("/slow", async () => {
        started++;
        await gate.promise;
        return "ok";
      });
      await server.listen("tcp://127.0.0.1:0");
      servers.push(server);
    }
    const [a, b] = servers;
    const ca = await connect(a.urls[0]);
    cleanup.push(() => ca.close({ timeoutMs: 100 }).catch(() => {}));
    const { codes, count } = tally();
    const opts = (key: string, signal?: AbortSignal) => ({ idempotencyKey: key, timeoutMs: 30_000, signal });
    const all: Promise<void>[] = [];
    for (let i = 0; i < 10; i++) all.push(count(ca.request("/slow", "x", opts(`k-${i}`))));
    await until(() => started === 10);
    // On b: duplicates of a's keys wait (the shared store), some cancelled, some on a connection destroyed.
    const cb1 = await connect(b.urls[0]);
    cleanup.push(() => cb1.close({ timeoutMs: 100 }).catch(() => {}));
    const cb2 = await connect(b.urls[0]);
    const acs = Array.from({ length: 10 }, () => new AbortController());
    const waits: Promise<void>[] = [];
    for (let i = 0; i < 10; i++) waits.push(count(cb1.request("/slow", "x", opts(`k-${i}`, acs[i].signal))));
    for (let i = 0; i < 10; i++) waits.push(count(cb1.request("/slow", "x", opts(`k-${i}`))));
    for (let i = 0; i < 10; i++) waits.push(count(cb2.request("/slow", "x", opts(`k-${i}`))));
    await until(() => b.memory.used >= 30 * 4609);
    for (const ac of acs) ac.abort();
    cb2.destroy();
    // The rest wait until waitMs runs out: ERR_TIMEOUT.
    await Promise.all(waits);
    assert.equal(started, 10);
    assert.equal(codes.get("ERR_CANCELLED"), 10);
    assert.equal(codes.get("ERR_TIMEOUT"), 10);
    assert.equal(codes.get("ERR_CONNECTION_CLOSED"), 10);
    await until(() => b.memory.used === 0);
    gate.resolve();
    await Promise.all(all);
    assert.equal(codes.get("ok"), 10);
    await until(() => a.memory.used === 0);
    assert.equal(a.memory.used + b.memory.used, 0);
  });
});
