/**
 * docs/PROTOCOL.md §3.1: a route is UTF-8, and two different routes never
 * name one. A route string with an unpaired UTF-16 surrogate is not Unicode
 * text: encoded, it went out as U+FFFD, so `request("/a\ud800")` and
 * `request("/a\udfff")` both reached the handler of "/a\ufffd", and
 * `handle("/a\ud800")` registered a route no peer could ever name. Such a
 * route is now refused locally with ERR_INVALID_ARGUMENT, nothing sent.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";

describe("a route that is not Unicode text (an unpaired surrogate)", () => {
  it("is refused by request, sendStream, handle and handleStream with ERR_INVALID_ARGUMENT; U+FFFD's handler is not reached", async () => {
    const server = createServer();
    const reached: string[] = [];
    server.handle("/a\ufffd", () => {
      reached.push("request");
      return "wrong route";
    });
    server.handleStream("/a\ufffd", async () => {
      reached.push("stream");
      return "wrong route";
    });
    assert.throws(() => server.handle("/b\ud800", () => "x"), { code: "ERR_INVALID_ARGUMENT" });
    assert.throws(() => server.handleStream("/b\udfff", async () => "x"), { code: "ERR_INVALID_ARGUMENT" });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      await assert.rejects(conn.request("/a\ud800", "x"), { code: "ERR_INVALID_ARGUMENT" });
      await assert.rejects(conn.request("/a\udfff", "x"), { code: "ERR_INVALID_ARGUMENT" });
      await assert.rejects(async () => await conn.sendStream("/a\ud800", [new Uint8Array(1)]), {
        code: "ERR_INVALID_ARGUMENT",
      });
      assert.throws(() => conn.handle("/c\ud800", () => "x"), { code: "ERR_INVALID_ARGUMENT" });
      // Well-formed text, surrogate pairs included, is a route as before.
      server.handle("/😀", () => "ok");
      assert.equal(Buffer.from(await conn.request("/😀", "x")).toString(), "ok");
      assert.deepEqual(reached, []);
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
