/**
 * connectResilient: a request in flight when its connection is closed with a
 * PointSubError given a code of the application's own (`terminate(error)`:
 * the code is not one of ERROR_CODES) fails with a PointSubError — that
 * error — or, keyed to a server that deduplicates, is sent again. Before, the
 * client looked the code up in the codes' table to decide on a retry and got
 * a raw TypeError ("reading 'retryable'"), which every such request rejected
 * with; a keyed one to a server without the idempotency store got
 * ERR_INVALID_ARGUMENT ("invalid code …") from rebuilding it as "not retried".
 * Over real loopback sockets.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connectResilient, createServer, isPointSubError, PointSubError } from "../../src/index.ts";

/** A retryable close error whose code the application changed to its own. */
const ownCode = () =>
  Object.assign(new PointSubError("ERR_CONNECTION_CLOSED", "maintenance"), { code: "MY_MAINTENANCE" });

describe("connectResilient: a drop with a code of the application's own", () => {
  for (const [name, options, idempotency] of [
    ["an unkeyed request", {}, false],
    ["a keyed request to a server that does not deduplicate", { retry: true }, false],
  ] as const) {
    it(`${name} fails with that error, a PointSubError`, async () => {
      const server = createServer({ idempotency });
      let entered!: () => void;
      const started = new Promise<void>((r) => {
        entered = r;
      });
      server.handle("/slow/1", () => {
        entered();
        return new Promise<never>(() => {});
      });
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const client = await connectResilient(url, { reconnect: { initialDelayMs: 1, maxDelayMs: 10 } });
      try {
        const call = client.request("/slow/1", "x", { timeoutMs: 10_000, ...options });
        await started;
        client.connection?.terminate(ownCode());
        await assert.rejects(call, (e: unknown) => {
          assert.ok(isPointSubError(e), String(e));
          assert.equal((e as { code: string }).code, "MY_MAINTENANCE");
          return true;
        });
      } finally {
        await client.close();
        await server.close({ timeoutMs: 100 });
      }
    });
  }

  it("a keyed request to a server that deduplicates is sent again and answered", async () => {
    const server = createServer({ idempotency: true });
    let runs = 0;
    let entered!: () => void;
    const started = new Promise<void>((r) => {
      entered = r;
    });
    let open!: () => void;
    const gate = new Promise<void>((r) => {
      open = r;
    });
    server.handle("/pay/1", async () => {
      runs++;
      entered();
      await gate;
      return `paid ${runs}`;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 1, maxDelayMs: 10 } });
    try {
      const call = client.request("/pay/1", "x", { timeoutMs: 30_000, idempotencyKey: "order-1" });
      await started;
      client.connection?.terminate(ownCode());
      open();
      assert.equal(new TextDecoder().decode(await call), "paid 1");
      assert.equal(runs, 1);
    } finally {
      open();
      await client.close();
      await server.close({ timeoutMs: 1000 });
    }
  });
});
