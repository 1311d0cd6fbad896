/**
 * A stream's compression job that fails while the producer waits for its
 * source's next chunk: the rejected job had no handler yet (it was awaited
 * only once a second chunk was compressed, or at the source's end), so Node
 * reported an unhandled rejection, which by default ends the process. The
 * send must fail with ERR_COMPRESSION, and nothing else.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import type { CompressionCodec } from "../../src/codec/compression.ts";
import { connect, createNodeRuntime, createServer, type PointSubError } from "../../src/index.ts";
import { sleep } from "../helpers/wait.ts";

it("a compression job that fails while the source waits for data fails the send, with no unhandled rejection", async () => {
  const runtime = createNodeRuntime();
  const gzip = runtime.codecs.byName("gzip") as CompressionCodec;
  // A codec of one's own (or a web CompressionStream) that fails: gzip's id, so the peer accepts it.
  runtime.codecs.add({
    ...gzip,
    compress: async () => {
      await sleep(10);
      throw new TypeError("out of memory");
    },
  });
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
  process.on("unhandledRejection", onUnhandled);
  const server = createServer();
  server.handleStream("/in", async (stream) => String((await stream.bytes()).length));
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url, { runtime });
  try {
    async function* source(): AsyncGenerator<Uint8Array> {
      yield new Uint8Array(8192);
      // The job fails meanwhile (a live feed with nothing to say).
      await sleep(300);
      yield new Uint8Array(8192);
    }
    await assert.rejects(conn.sendStream("/in", source(), { compress: "gzip" }).done, (err: PointSubError) => {
      assert.equal(err.code, "ERR_COMPRESSION");
      assert.match(err.message, /gzip compression failed: .*out of memory/);
      return true;
    });
    assert.deepEqual(unhandled, []);
  } finally {
    process.off("unhandledRejection", onUnhandled);
    await conn.close();
    await server.close();
  }
});
