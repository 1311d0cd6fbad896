/**
 * Keyed requests under the idempotency middleware hold more than a plain
 * call: the middleware's frame, key and claim (first attempts), its wait —
 * an AbortController, a timer, listeners, two frames — for duplicates of a
 * key still running, and each answer the store keeps. Measured over
 * loopback with `--expose-gc` (server heap only, the client in another
 * process; session 53): a claim ~2.0 KB, a waiting duplicate ~4.1 KB, a
 * done entry with a small answer ~0.6 KB. Before, the memory budget was
 * charged 1 KiB per call (CALL_OVERHEAD) and the store counted 128 bytes
 * plus key and answer per entry (~226 in all): a peer holding 10,000 claims
 * kept ~2× what the budget saw, waiting duplicates ~4.7×, and a store at
 * its `maxBytes` held ~2.7× its bound. Now a keyed call through middleware
 * is charged KEYED_OVERHEAD (3.5 KiB) more, and the store counts 768 bytes
 * per entry. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { type Connection, connect, createServer, memoryIdempotencyStore, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

/** Heap measured per call (server side, session 53; see above): what the charge must cover at least. */
const CLAIM_HEAP = 2000;
const WAITER_HEAP = 4000;
const DONE_HEAP = 600;
const N = 400;

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

async function setUp(): Promise<{
  server: Server;
  conn: Connection;
  gate: PromiseWithResolvers<void>;
  started: () => number;
  store: ReturnType<typeof memoryIdempotencyStore>;
}> {
  const store = memoryIdempotencyStore({ maxEntriesPerScope: 10_000, maxBytesPerScope: 32 * 1024 * 1024 });
  const server = createServer({ keepAliveMs: 0, idempotency: { store, waitMs: 60_000 } });
  cleanup.push(() => server.close({ timeoutMs: 200 }));
  const gate = Promise.withResolvers<void>();
  cleanup.push(() => gate.resolve());
  let started = 0;
  server.handle("/slow", async () => {
    started++;
    await gate.promise;
    return "ok";
  });
  server.handle("/fast", () => "ok");
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url);
  cleanup.push(() => conn.close({ timeoutMs: 100 }).catch(() => {}));
  return { server, conn, gate, started: () => started, store };
}

describe("keyed requests are charged what the idempotency middleware holds for them", { timeout: 60_000 }, () => {
  it("claims (distinct keys, handlers that do not finish) and their connection closing", async () => {
    const { server, conn, gate, started, store } = await setUp();
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < N; i++) {
      calls.push(conn.request("/slow", "x", { idempotencyKey: `claim-${i}`, timeoutMs: 60_000 }).catch(() => {}));
    }
    await until(() => started() === N);
    assert.equal(store.stats().running, N);
    // Before: 1,025 bytes per claim (CALL_OVERHEAD and the body) for ~2.0 KB of heap.
    const used = server.memory.used;
    assert.ok(used >= N * CLAIM_HEAP, `${N} running claims charged ${used} bytes (${used / N} each)`);
    // The connection closes: the handlers run on (a retry elsewhere wants their answer), still charged.
    await conn.close({ timeoutMs: 100 }).catch(() => {});
    await until(() => server.sessions.size === 0);
    assert.ok(server.memory.used >= N * CLAIM_HEAP, `after the close: ${server.memory.used} bytes for ${N} claims`);
    gate.resolve();
    await Promise.all(calls);
    await until(() => server.memory.used === 0 && store.stats().running === 0);
    assert.equal(store.stats().entries, N);
  });

  it("duplicates waiting for a key that still runs", async () => {
    const { server, conn, gate, started } = await setUp();
    const first = conn.request("/slow", "x", { idempotencyKey: "one", timeoutMs: 60_000 });
    await until(() => started() === 1);
    const base = server.memory.used;
    const dups: Promise<Uint8Array>[] = [];
    for (let i = 0; i < N; i++) dups.push(conn.request("/slow", "x", { idempotencyKey: "one", timeoutMs: 60_000 }));
    // Each duplicate is charged once its call starts (it then waits): all of them charged, or the budget refused some.
    await until(() => server.memory.used - base >= N * 1024);
    const used = server.memory.used - base;
    // Before: 1,025 bytes per waiting duplicate for ~4.1 KB of heap.
    assert.ok(used >= N * WAITER_HEAP, `${N} waiting duplicates charged ${used} bytes (${used / N} each)`);
    gate.resolve();
    assert.equal(new TextDecoder().decode(await first), "ok");
    for (const d of await Promise.all(dups)) assert.equal(new TextDecoder().decode(d), "ok");
    assert.equal(started(), 1);
    await until(() => server.memory.used === 0);
  });

  it("the memory store counts at least what a done entry holds (distinct keys, small answers)", async () => {
    const { conn, store } = await setUp();
    for (let i = 0; i < N; i++) await conn.request("/fast", "x", { idempotencyKey: `done-${i}` });
    assert.equal(store.size, N);
    // Before: ~226 bytes per entry (128 + key + fingerprint + answer) for ~0.6 KB of heap.
    assert.ok(store.bytes >= N * DONE_HEAP, `${N} done entries counted ${store.bytes} bytes (${store.bytes / N} each)`);
  });
});
