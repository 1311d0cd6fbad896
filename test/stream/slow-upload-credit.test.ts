/**
 * A stream upload over a slow link (bench/lib/shaper.ts) and its sender's
 * progress rule (progressTimeoutMs: credit of an eighth of the receiver's
 * stream window since the last): the receiver returned credit only in
 * quarter-window steps, so an upload slower than a quarter window per
 * progressTimeoutMs (1 MiB per 60 s, 17.5 KB/s, at the defaults) failed
 * ERR_TIMEOUT while it moved ("returned no credit for stream 1"). The
 * receiver now also returns what was read, once it is an eighth of the
 * window, at its housekeeping check. Scaled down: a 256 KiB window (64 KiB
 * steps), progressTimeoutMs 3 s on both sides, 15 KB/s (a step per 4.4 s).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startShaper } from "../../bench/lib/shaper.ts";
import { connect, createServer } from "../../src/index.ts";

describe("a stream upload slower than a quarter window per progressTimeoutMs", () => {
  it("completes (330 KB at 15 KB/s, 256 KiB window, progressTimeoutMs 3 s)", async () => {
    const server = createServer({ streamWindow: 256 * 1024, progressTimeoutMs: 3_000 });
    let got = 0;
    server.handleStream("/up/1.0.0", async (stream) => {
      for await (const c of stream) got += c.length;
      return Uint8Array.of(1);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const rate = 15_000;
    const shaper = await startShaper(
      Number(new URL(url).port),
      { rate, delayMs: 100, queueBytes: rate / 2 },
      { rate: 10_000_000, delayMs: 100 },
    );
    const conn = await connect(`tcp://127.0.0.1:${shaper.port}`, { progressTimeoutMs: 3_000 });
    try {
      const t0 = Date.now();
      const chunks = function* () {
        for (let i = 0; i < 330_000 / 10_000; i++) yield new Uint8Array(10_000);
      };
      const answer = await conn.sendStream("/up/1.0.0", chunks());
      assert.deepEqual([...answer], [1]);
      assert.equal(got, 330_000);
      assert.ok(Date.now() - t0 >= 15_000, `took ${Date.now() - t0} ms`);
    } finally {
      await conn.close({ timeoutMs: 100 }).catch(() => {});
      await server.close({ timeoutMs: 100 });
      await shaper.close();
    }
  });
});
