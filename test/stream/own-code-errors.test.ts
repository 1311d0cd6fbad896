/**
 * A stream failing with a PointSubError given a code of the application's own
 * (assigned to `code` after construction: no CANCEL can carry it) — thrown by
 * a receiver's custom codec, or by a source's `[Symbol.asyncIterator]()` —
 * ends the stream for both sides with a typed error naming that code. Before,
 * sending the CANCEL looked the code up and threw: the receiver's handler got
 * a raw TypeError and the sender, told nothing, waited for its answer; a
 * sender's was an unhandled rejection (the process ends), its transfer
 * unsettled. Over real loopback sockets.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type CompressionCodec, connect, createNodeRuntime, createServer, PointSubError } from "../../src/index.ts";

const ownCode = () => Object.assign(new PointSubError("ERR_PROTOCOL", "says no"), { code: "MY_CODEC" });

describe("a stream failing with a PointSubError of the application's own code", () => {
  it("from the receiver's custom codec: the handler gets ERR_PROTOCOL naming it, the sender is told", async () => {
    const runtime = createNodeRuntime();
    const deflate = runtime.codecs.get(1) as CompressionCodec;
    runtime.codecs.add({
      id: deflate.id,
      name: deflate.name,
      compress: (d) => deflate.compress(d),
      probe: (s) => deflate.probe(s),
      decompress: () => Promise.reject(ownCode()),
    });
    const server = createServer({ runtime });
    const { promise: seen, resolve: saw } = Promise.withResolvers<unknown>();
    server.handleStream("/up/1", async (stream) => {
      try {
        for await (const _ of stream);
      } catch (e) {
        saw(e);
        throw e;
      }
      saw(undefined);
      return "read";
    });
    server.handle("/ok/1", () => "fine");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    try {
      const t = client.sendStream("/up/1", [new Uint8Array(256 * 1024).fill(65)], { compress: "deflate-raw" });
      const e = await seen;
      assert.ok(e instanceof PointSubError, String(e));
      assert.equal(e.code, "ERR_PROTOCOL");
      assert.match(e.message, /MY_CODEC: says no/);
      // Told by the receiver's CANCEL (before: no CANCEL went out, the transfer waited for an answer).
      await assert.rejects(t.done, (x: unknown) => x instanceof PointSubError);
      assert.equal(new TextDecoder().decode(await client.request("/ok/1")), "fine");
    } finally {
      client.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("from a source's [Symbol.asyncIterator](): the transfer fails with ERR_SOURCE naming it, no unhandled rejection", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    const server = createServer();
    server.handleStream("/up/1", async (stream) => {
      for await (const _ of stream);
      return "read";
    });
    server.handle("/ok/1", () => "fine");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    try {
      const source = {
        [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
          throw ownCode();
        },
      };
      await assert.rejects(client.sendStream("/up/1", source).done, (e: unknown) => {
        assert.ok(e instanceof PointSubError, String(e));
        assert.equal(e.code, "ERR_SOURCE");
        assert.match(e.message, /MY_CODEC: says no/);
        return true;
      });
      assert.equal(new TextDecoder().decode(await client.request("/ok/1")), "fine");
      assert.deepEqual(unhandled.map(String), []);
    } finally {
      process.off("unhandledRejection", onUnhandled);
      client.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });
});
