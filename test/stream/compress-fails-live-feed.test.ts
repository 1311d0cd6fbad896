/**
 * A compressed stream from a live feed (an async generator waiting for its
 * next event) whose compression job fails meanwhile: the job's failure
 * stopped the stream, but the producer still waited for the feed's next
 * chunk (an async generator's return() waits for the pending next(), unlike
 * a Readable's destroy), so the send settled only when the feed spoke again,
 * or never. It now fails with ERR_COMPRESSION at once and the feed is closed.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import type { CompressionCodec } from "../../src/codec/compression.ts";
import { connect, createNodeRuntime, createServer, type PointSubError } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

it("a compression job that fails while a live feed waits for its next event fails the send at once", async () => {
  const runtime = createNodeRuntime();
  const gzip = runtime.codecs.byName("gzip") as CompressionCodec;
  // A codec of one's own that fails: gzip's id, so the peer accepts it.
  runtime.codecs.add({
    ...gzip,
    compress: async () => {
      throw new TypeError("out of memory");
    },
  });
  const server = createServer();
  server.handleStream("/in", async (stream) => String((await stream.bytes()).length));
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url, { runtime });
  // The feed's next event: only once the test is over (before the fix, the send waited for it).
  const later = Promise.withResolvers<void>();
  let closed = false;
  try {
    async function* feed(): AsyncGenerator<Uint8Array> {
      try {
        yield new TextEncoder().encode("event 1, compressible; ".repeat(1000));
        await later.promise;
        yield new TextEncoder().encode("event 2, compressible; ".repeat(1000));
      } finally {
        closed = true;
      }
    }
    const outcome = await Promise.race([
      conn.sendStream("/in", feed(), { compress: "gzip" }).done.then(
        () => "answered",
        (err: PointSubError) => `${err.code}: ${err.message}`,
      ),
      new Promise<string>((r) => setTimeout(() => r("not settled in 10 s"), 10_000).unref()),
    ]);
    assert.match(outcome, /^ERR_COMPRESSION: gzip compression failed: .*out of memory/);
    later.resolve();
    // Closed (its return() ran once the pending next() settled): the feed does not go on for nothing.
    await until(() => closed, 10_000);
  } finally {
    later.resolve();
    await conn.close();
    await server.close();
  }
});
