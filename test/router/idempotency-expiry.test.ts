/**
 * The memory idempotency store lets go of what outlived `ttlMs` (done
 * entries) or its lease (claims of handlers that never ended) without
 * being accessed again: a burst of keyed requests followed by quiet held
 * its answers for the life of the process (up to `maxBytes`, 32 MiB by
 * default), since expiry was only checked on access and when room was
 * needed. The sweep's timer never keeps the process alive. Entry and byte
 * counts, not timings (the waits are bounded, generous multiples of the ttl).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer, memoryIdempotencyStore } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;

describe("memory idempotency store: expiry without access", () => {
  it("drops done entries past ttlMs and claims past their lease, with no timer keeping the process", async () => {
    const store = memoryIdempotencyStore({ ttlMs: 100 });
    const before = timers();
    for (let i = 0; i < 50; i++) {
      assert.equal(await store.begin(`k${i}`, "t", 60_000), undefined);
      await store.complete(`k${i}`, "t", { ok: true, data: new Uint8Array(10_000) });
    }
    // Claims whose handler never ends: their 150 ms lease runs out.
    for (let i = 0; i < 5; i++) assert.equal(await store.begin(`r${i}`, "t", 150), undefined);
    assert.equal(store.size, 55);
    assert.ok(store.bytes > 500_000);
    // Unref'd: not among the resources that keep the process running.
    assert.equal(timers(), before);
    await until(() => store.size === 0, 5000).catch(() => {});
    const { entries, running, bytes, expired, scopes } = store.stats();
    // Before: { entries: 55, running: 5, bytes: 507,340, expired: 0, scopes: 1 } for as long as nobody asked.
    assert.deepEqual(
      { entries, running, bytes, expired, scopes },
      { entries: 0, running: 0, bytes: 0, expired: 55, scopes: 0 },
    );
    // Nothing held: nothing armed.
    assert.equal((store as unknown as { sweeper: unknown }).sweeper, undefined);
  });

  it("a server's keyed answers go after the ttl once requests stop (40 answers of 64 KiB)", async () => {
    // 3 s: the 41 round trips below take well under it even on a loaded machine (at 200 ms, a slow
    // loop could see its first answers go before it counted them).
    const store = memoryIdempotencyStore({ ttlMs: 3000 });
    const server = createServer({ idempotency: { store } });
    let runs = 0;
    server.handle("/work/1", () => {
      runs++;
      return new Uint8Array(64 * 1024);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      for (let i = 0; i < 40; i++) await conn.request("/work/1", "x", { idempotencyKey: `key-${i}` });
      // A duplicate within the ttl is still answered from the store.
      await conn.request("/work/1", "x", { idempotencyKey: "key-0" });
      assert.equal(runs, 40);
      assert.equal(store.size, 40);
      assert.ok(store.bytes > 40 * 64 * 1024);
      await until(() => store.size === 0, 15_000).catch(() => {});
      assert.deepEqual({ entries: store.size, bytes: store.bytes }, { entries: 0, bytes: 0 });
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
