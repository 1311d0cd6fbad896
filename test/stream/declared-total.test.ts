/**
 * A stream's declared `total` is checked where the bytes come from: a
 * source that ends short of it (a file truncated while it is sent) or
 * yields more fails the send with ERR_SOURCE on the sender's side. Before,
 * the receiver refused it with ERR_PROTOCOL ("stream declared … and
 * carried …"), which blames the peer and names no file.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";

describe("a stream's declared total", () => {
  let server: Server;
  let conn: Connection;
  let handled = 0;
  before(async () => {
    server = createServer();
    server.handleStream("/up", async (stream) => {
      handled++;
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

  it("a total START cannot carry (2^53 - 1: the field holds total + 1) is refused before anything is sent", async () => {
    const before = handled;
    for (const total of [Number.MAX_SAFE_INTEGER, 2 ** 53, -1, 1.5]) {
      await assert.rejects(conn.sendStream("/up", [new Uint8Array(10)], { total }).done, {
        code: "ERR_INVALID_ARGUMENT",
        message: /total must be an integer from 0 to 2\^53 - 2/,
      });
    }
    assert.equal(new TextDecoder().decode(await conn.sendStream("/up", [new Uint8Array(10)], { total: 10 })), "10");
    assert.equal(handled, before + 1);
  });

  for (const [what, chunks, message] of [
    [
      "ends short of it",
      [new Uint8Array(40_000), new Uint8Array(10_000)],
      /ended after 50000 of its declared 100000 bytes/,
    ],
    ["yields more", [new Uint8Array(90_000), new Uint8Array(20_000)], /more than its declared 100000 bytes/],
  ] as const) {
    it(`a source that ${what}: ERR_SOURCE on the sender's side, and the connection serves on`, async () => {
      await assert.rejects(conn.sendStream("/up", chunks, { total: 100_000 }).done, (err: PointSubError) => {
        assert.equal(err.code, "ERR_SOURCE");
        assert.match(err.message, message);
        return true;
      });
      const whole = new TextDecoder().decode(
        await conn.sendStream("/up", [new Uint8Array(100_000)], { total: 100_000 }),
      );
      assert.equal(whole, "100000");
      assert.ok(handled >= 1);
    });
  }
});
