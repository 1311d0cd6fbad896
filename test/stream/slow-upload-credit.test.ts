/**
 * A stream upload over a slow link (bench/lib/shaper.ts) and its sender's
 * progress rule (progressTimeoutMs: credit of an eighth of the receiver's
 * stream window since the last): the receiver returned credit only in
 * quarter-window steps, so an upload slower than a quarter window per
 * progressTimeoutMs (1 MiB per 60 s, 17.5 KB/s, at the defaults) failed
 * ERR_TIMEOUT while it moved ("returned no credit for stream 1"). The
 * receiver now also returns what was read, once it is an eighth of the
 * window, at its housekeeping check. Scaled down: a 256 KiB window (64 KiB
 * steps), progressTimeoutMs 3 s on both sides, 16 KB/s (a quarter step per
 * 4.1 s, past the sender's 3–3.75 s; an eighth per 2.05 s).
 *
 * Within the rule's promise by a margin that holds under CPU load: the
 * receiver checks every 250 ms (its idleTimeoutMs 1 s: a quarter of it; the
 * connection is in use throughout, so never idle), and the upload's chunks
 * divide an eighth (8 KiB): its eighth is read, returned and back at the
 * sender ≤ 2.05 + 0.25 + 2 × 0.05 s ≈ 2.4 s after the last, ~0.6 s inside
 * the sender's 3 s. Before, 10 KB chunks made each step 40 KB (2.7 s at
 * 15 KB/s) and the receiver's 750 ms check put the first credit at ~3.2 s:
 * it passed only while the sender's check at ~2.95 s came before 3 s, and
 * failed ERR_TIMEOUT when load made that check late.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startShaper } from "../../bench/lib/shaper.ts";
import { connect, createServer } from "../../src/index.ts";

describe("a stream upload slower than a quarter window per progressTimeoutMs", () => {
  it("completes (320 KiB at 16 KB/s, 256 KiB window, progressTimeoutMs 3 s)", async () => {
    const server = createServer({ streamWindow: 256 * 1024, progressTimeoutMs: 3_000, idleTimeoutMs: 1_000 });
    let got = 0;
    server.handleStream("/up/1.0.0", async (stream) => {
      for await (const c of stream) got += c.length;
      return Uint8Array.of(1);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const rate = 16_000;
    const shaper = await startShaper(
      Number(new URL(url).port),
      { rate, delayMs: 50, queueBytes: rate / 2 },
      { rate: 10_000_000, delayMs: 50 },
    );
    const conn = await connect(`tcp://127.0.0.1:${shaper.port}`, { progressTimeoutMs: 3_000 });
    try {
      const t0 = Date.now();
      const chunks = function* () {
        for (let i = 0; i < 40; i++) yield new Uint8Array(8192);
      };
      const answer = await conn.sendStream("/up/1.0.0", chunks());
      assert.deepEqual([...answer], [1]);
      assert.equal(got, 40 * 8192);
      assert.ok(Date.now() - t0 >= 15_000, `took ${Date.now() - t0} ms`);
    } finally {
      await conn.close({ timeoutMs: 100 }).catch(() => {});
      await server.close({ timeoutMs: 100 });
      await shaper.close();
    }
  });
});
