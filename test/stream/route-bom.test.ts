/**
 * A stream's route with a leading U+FEFF is that route, code point for code
 * point (docs/PROTOCOL.md §3.1: two different byte strings never name one
 * route), as the resume query's route is since it is decoded strictly
 * (§3.11): the START prefix's decoder dropped the U+FEFF, so a stream to
 * "\uFEFF/x" reached the handler of "/x" while its resume query asked
 * "\uFEFF/x"'s, and a route registered as "\uFEFF/y" took no stream at all.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeStreamHead, encodeStreamHead } from "../../src/codec/stream-prefix.ts";
import { connect, createServer } from "../../src/index.ts";

describe("a stream route's leading U+FEFF", () => {
  it("is kept by the START prefix's decoder", () => {
    const head = encodeStreamHead({
      total: 3,
      offset: 0,
      prefixCrc: 0,
      route: "\uFEFF/x",
      codec: 0,
      meta: new Uint8Array(0),
    });
    assert.equal(decodeStreamHead(head, 0, head.length).head.route, "\uFEFF/x");
  });

  it("names another route than the one without it, for the stream and its resume query alike", async () => {
    const server = createServer();
    const resumeAsked: string[] = [];
    server.handleStream("/x", async (s) => `x:${s.route}:${(await s.bytes()).length}`, {
      resume: () => {
        resumeAsked.push("/x");
        return { offset: 0, crc: 0 };
      },
    });
    server.handleStream("\uFEFF/y", async (s) => `y:${(await s.bytes()).length}`);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url as string);
    try {
      await assert.rejects(conn.sendStream("\uFEFF/x", [new Uint8Array(3)], { total: 3 }).done, {
        code: "ERR_NO_ROUTE",
      });
      assert.deepEqual(await conn.queryResume("\uFEFF/x", "t".repeat(32)), { offset: 0, crc: 0 });
      assert.deepEqual(resumeAsked, [], "not /x's resume either");
      const answer = await conn.sendStream("\uFEFF/y", [new Uint8Array(3)], { total: 3 }).done;
      assert.equal(new TextDecoder().decode(answer), "y:3");
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it('names another request route too (the request decoder dropped it: a request to "\uFEFF/x" reached /x)', async () => {
    const server = createServer();
    server.handle("/x", () => "x");
    server.handle("\uFEFF/y", () => "y");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url as string);
    try {
      await assert.rejects(conn.request("\uFEFF/x", "hi"), { code: "ERR_NO_ROUTE" });
      assert.equal(new TextDecoder().decode(await conn.request("\uFEFF/y", "hi")), "y");
      assert.equal(new TextDecoder().decode(await conn.request("/x", "hi")), "x");
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
