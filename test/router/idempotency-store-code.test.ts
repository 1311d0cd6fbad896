/**
 * The idempotency middleware over a store of the application's whose entry
 * holds an error code this version does not know (a newer pointsub sharing
 * the store, as in a rolling upgrade): a duplicate gets ERR_HANDLER naming
 * that code, as the cluster store reads one. Before, rebuilding the error
 * threw ERR_INVALID_ARGUMENT ("invalid code …"), which the caller got, blamed
 * for a request that was fine. Over real loopback sockets.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  connect,
  createServer,
  type ErrorCode,
  type IdempotencyStore,
  idempotency,
  isPointSubError,
  memoryIdempotencyStore,
} from "../../src/index.ts";

describe("idempotency: a stored error whose code this version does not know", () => {
  it("a duplicate gets ERR_HANDLER naming the code", async () => {
    const inner = memoryIdempotencyStore();
    // As a newer version would have stored it: the entry's code is one this version lacks.
    const store: IdempotencyStore = {
      begin: (key, token, leaseMs, print) => inner.begin(key, token, leaseMs, print),
      get: (key) => inner.get(key),
      fail: (key, token) => inner.fail(key, token),
      wait: (key, signal) => inner.wait(key, signal),
      complete: (key, token, outcome, print) =>
        inner.complete(
          key,
          token,
          outcome.ok ? outcome : { ...outcome, code: "ERR_FROM_THE_FUTURE" as ErrorCode },
          print,
        ),
    };
    const server = createServer();
    server.use(idempotency({ store }));
    let runs = 0;
    server.handle("/pay/1", () => {
      runs++;
      throw new Error("card declined");
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    try {
      const options = { idempotencyKey: "order-1", timeoutMs: 5000 };
      await assert.rejects(client.request("/pay/1", "x", options), { code: "ERR_HANDLER" });
      await assert.rejects(client.request("/pay/1", "x", options), (e: unknown) => {
        assert.ok(isPointSubError(e), String(e));
        assert.equal(e.code, "ERR_HANDLER", e.message);
        assert.match(e.message, /ERR_FROM_THE_FUTURE: handler for \/pay\/1 failed: card declined/);
        return true;
      });
      assert.equal(runs, 1);
    } finally {
      await client.close();
      await server.close({ timeoutMs: 1000 });
    }
  });
});
