/**
 * A stream source that throws fails the send with ERR_SOURCE naming what it
 * threw — also when that is a value `String` cannot convert
 * (`Object.create(null)`, a throwing `toString`): before, building the
 * message threw a TypeError in its place, and the send failed with that
 * instead of a PointSubError. The same for a source whose iterator cannot
 * even be made (its [Symbol.asyncIterator](), getReader() or
 * [Symbol.iterator]() throws such a value): before, an unhandled rejection
 * and a send that never settled.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Connection, connect, createServer, PointSubError, type Server } from "../../src/index.ts";

describe("a stream source that throws", () => {
  let server: Server;
  let conn: Connection;
  before(async () => {
    server = createServer();
    server.handleStream("/up", async (stream) => {
      let n = 0;
      for await (const c of stream) n += c.length;
      return String(n);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    conn = await connect(url);
  });
  after(async () => {
    await conn.close();
    await server.close();
  });

  const unprintable = [
    ["an object without a prototype", () => Object.create(null) as unknown],
    [
      "an object whose toString throws",
      () => ({
        toString() {
          throw new Error("no");
        },
      }),
    ],
    ["an Error", () => new Error("disk gone")],
  ] as const;
  for (const [what, make] of unprintable) {
    it(`${what}: ERR_SOURCE, and the connection serves on`, async () => {
      async function* source(): AsyncGenerator<Uint8Array> {
        yield new Uint8Array(1000);
        throw make();
      }
      await assert.rejects(conn.sendStream("/up", source()).done, (err: unknown) => {
        assert.ok(err instanceof PointSubError, `a PointSubError: ${String(err)}`);
        assert.equal(err.code, "ERR_SOURCE");
        assert.match(err.message, /^stream source failed: /);
        if (what === "an Error") assert.match(err.message, /disk gone/);
        return true;
      });
      const answer = await conn.sendStream("/up", [new Uint8Array(5000)]);
      assert.equal(new TextDecoder().decode(answer), "5000");
    });
  }

  // Before: the iterator was made outside the send's error handling. An Error became ERR_SOURCE by luck (the
  // caller's toPointSubError), a value String cannot convert threw from that conversion: an unhandled
  // rejection (which ends a Node process) and a send that never settled.
  const throwingSources = [
    [
      "[Symbol.asyncIterator]()",
      () => ({
        [Symbol.asyncIterator]() {
          throw Object.create(null);
        },
      }),
    ],
    [
      "getReader()",
      () => ({
        getReader() {
          throw Object.create(null);
        },
      }),
    ],
    [
      "[Symbol.iterator]()",
      () => ({
        [Symbol.iterator]() {
          throw Object.create(null);
        },
      }),
    ],
    [
      "a result's done getter",
      () => ({
        [Symbol.asyncIterator]() {
          return {
            next: async () => ({
              get done(): boolean {
                throw Object.create(null);
              },
              value: undefined,
            }),
          };
        },
      }),
    ],
  ] as const;
  for (const [what, make] of throwingSources) {
    it(`a source whose ${what} throws a value String cannot convert: ERR_SOURCE, and the connection serves on`, async () => {
      await assert.rejects(conn.sendStream("/up", make() as unknown as Iterable<Uint8Array>).done, (err: unknown) => {
        assert.ok(err instanceof PointSubError, `a PointSubError: ${Object.prototype.toString.call(err)}`);
        assert.equal(err.code, "ERR_SOURCE");
        assert.match(err.message, /cannot be shown as text/);
        return true;
      });
      const answer = await conn.sendStream("/up", [new Uint8Array(5000)]);
      assert.equal(new TextDecoder().decode(answer), "5000");
    });
  }
});
