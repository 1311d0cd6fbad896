/**
 * `idempotencyStoreKey(scope, route, key)` takes the key's bytes. Before, a
 * string key was read character by character as bytes (`HEX["a"]`,
 * undefined): every string key of one length became the same store key, so
 * code looking up or evicting a store's entries with string keys mixed up
 * different calls. Now anything but a `Uint8Array` (and string scope and
 * route) is ERR_INVALID_ARGUMENT; the middleware's keys are as before.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type Connection,
  connect,
  createServer,
  idempotencyStoreKey,
  isPointSubError,
  memoryIdempotencyStore,
} from "../../src/index.ts";

const te = new TextEncoder();

describe("idempotencyStoreKey", () => {
  it("a string key (or a scope or route that is no string) is ERR_INVALID_ARGUMENT naming the bytes it needs", () => {
    for (const args of [
      ["s", "/r/1", "abc"],
      ["s", "/r/1", [1, 2, 3]],
      ["s", "/r/1", undefined],
      [undefined, "/r/1", te.encode("abc")],
      ["s", 7, te.encode("abc")],
    ]) {
      assert.throws(
        () => (idempotencyStoreKey as (...a: unknown[]) => string)(...args),
        (err: unknown) =>
          isPointSubError(err, "ERR_INVALID_ARGUMENT") &&
          /Uint8Array/.test(err.message) &&
          /TextEncoder/.test(err.message),
        JSON.stringify(args),
      );
    }
  });

  it("bytes give the key the middleware stores a keyed request under (lengths first, the key in hex)", async () => {
    assert.equal(idempotencyStoreKey("alice", "/r/1", te.encode("ab")), "5:alice4:/r/16162");
    assert.notEqual(idempotencyStoreKey("", "/r/1", te.encode("ab")), idempotencyStoreKey("", "/r/1", te.encode("cd")));
    // The store a server's middleware fills holds a request under the same key.
    const seen: string[] = [];
    const store = memoryIdempotencyStore();
    const begin = store.begin.bind(store);
    store.begin = (key, ...rest) => {
      seen.push(key);
      return begin(key, ...rest);
    };
    const server = createServer({ idempotency: { store } });
    server.handle("/r/1", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    let conn: Connection | undefined;
    try {
      conn = await connect(url);
      await conn.request("/r/1", "x", { idempotencyKey: "ab" });
      assert.deepEqual(seen, [idempotencyStoreKey("", "/r/1", te.encode("ab"))]);
    } finally {
      await conn?.close();
      await server.close();
    }
  });
});
