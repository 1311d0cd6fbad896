/**
 * A handler that leaves its stream's `for await` early and works on before
 * it answers (a header read, then a database write): what the stream held
 * was dropped, and nothing more is buffered for it, but the memory budget
 * stayed charged for those bytes and for every frame that still arrived (up
 * to the stream window each) until the answer: ~768 KiB per such handler
 * with a 1 MiB window, refusing other peers' data with ERR_OVERLOADED while
 * nothing was held.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect, createServer, type IncomingStream } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

it("a reader that left its stream early holds none of the memory budget while its handler works on", async () => {
  const server = createServer({ streamWindow: 1 << 20 });
  const left = Promise.withResolvers<void>();
  const answer = Promise.withResolvers<void>();
  server.handleStream("/head", async (stream: IncomingStream) => {
    for await (const _ of stream) break; // the header is all it needs
    left.resolve();
    await answer.promise;
    return "ok";
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url);
  try {
    async function* source(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < 64; i++) {
        yield new Uint8Array(64 * 1024);
      }
    }
    const t = conn.sendStream("/head", source());
    await left.promise;
    // The sender runs into the window (no credit comes back for what is dropped): 15 frames of 64 KiB arrive.
    const session = [...server.sessions.values()][0];
    await until(() => session.stats().streams.bytesReceived >= 15 * 64 * 1024, 10_000);
    // Only the stream's head (its state and metadata, while the handler may hold them), none of the dropped data.
    assert.ok(server.memory.used < 16 * 1024, `budget charged ${server.memory.used} bytes while only the head is held`);
    answer.resolve();
    assert.equal(new TextDecoder().decode(await t), "ok");
  } finally {
    answer.resolve();
    await conn.close();
    await server.close();
  }
});
