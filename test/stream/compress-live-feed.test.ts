/**
 * A compressed stream from a live feed (a log tail, events): each chunk's
 * frame was queued only once the next chunk came (the producer kept two
 * compression jobs in flight and collected the first behind the second),
 * so the receiver got every chunk one source interval late, and the last
 * one before a pause not at all until the source went on. A frame now goes
 * out as soon as it is compressed.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer, type IncomingStream } from "../../src/index.ts";
import { sleep } from "../helpers/wait.ts";

describe("compressed streams from a live feed", () => {
  for (const compress of ["gzip", "auto"] as const) {
    it(`compress ${compress}: a chunk reaches the reader while the source waits for its next one`, async () => {
      const server = createServer();
      const seen = Promise.withResolvers<void>();
      server.handleStream("/feed", async (stream: IncomingStream) => {
        let n = 0;
        for await (const c of stream) {
          n += c.length;
          seen.resolve();
        }
        return String(n);
      });
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const conn = await connect(url);
      try {
        let early = false;
        async function* feed(): AsyncGenerator<Uint8Array> {
          yield new TextEncoder().encode("event 1, compressible; ".repeat(1000));
          // The next event comes only once the receiver got this one (or, before the fix, after 5 s).
          early = await Promise.race([seen.promise.then(() => true), sleep(5000).then(() => false)]);
          yield new TextEncoder().encode("event 2, compressible; ".repeat(1000));
        }
        const t = conn.sendStream("/feed", feed(), { compress });
        assert.equal(new TextDecoder().decode(await t), "46000");
        assert.equal(early, true, "the first event reached the receiver only after the source's next one");
        const frames = Object.values(conn.stats().compression ?? {}).reduce((n, c) => n + c.compressed, 0);
        assert.equal(frames, 2, "both events went compressed");
      } finally {
        await conn.close();
        await server.close();
      }
    });
  }
});
