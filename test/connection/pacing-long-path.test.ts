/**
 * Pacing on a long path (bench/lib/shaper.ts: 2 MB/s, 300 ms round trip,
 * a cross-continent broadband link): the pacer's queue target was a flat
 * 5 ms, so its window grew by (1 + 5 ms / min RTT) a round trip (1.7 % at
 * 300 ms), and its startup ended, and its delay guard reset the rate,
 * whenever a probe came back more than 5-15 ms above the min RTT, which
 * the first window's own queue does on such a link (256 KiB at 2 MB/s:
 * 128 ms): the rate stayed near 300 KB/s and a 20 MB upload took 61 s
 * instead of 10 s (pacing: false). The target is now an eighth of the min
 * RTT on paths longer than 40 ms (as HyStart's delay threshold), 5 ms
 * below: 16.6 s, a small request still waiting about one round trip.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startShaper } from "../../bench/lib/shaper.ts";
import { connect, createServer } from "../../src/index.ts";

const LINK = { rate: 2_000_000, delayMs: 150 };
const SIZE = 6_000_000;

describe("pacing on a long path", () => {
  it("a 6 MB upload over 2 MB/s with a 300 ms round trip runs near the link's rate, small requests still about a round trip", async () => {
    const server = createServer();
    server.handle("/sink/1.0.0", () => undefined);
    server.handle("/ping/1.0.0", () => undefined);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const shaper = await startShaper(Number(new URL(url).port), LINK);
    const conn = await connect(`tcp://127.0.0.1:${shaper.port}`);
    try {
      const t0 = performance.now();
      let done = false;
      const big = conn.request("/sink/1.0.0", new Uint8Array(SIZE), { timeoutMs: 0 }).finally(() => {
        done = true;
      });
      const pings: number[] = [];
      for (let i = 0; i < 100 && !done; i++) {
        await new Promise((r) => setTimeout(r, 300));
        const t = performance.now();
        await conn.request("/ping/1.0.0", new Uint8Array(64), { timeoutMs: 0 });
        pings.push(performance.now() - t);
      }
      await big;
      const ms = performance.now() - t0;
      // 3 s at the link's rate; 20 s and more before.
      assert.ok(ms < 9_000, `took ${ms.toFixed(0)} ms`);
      pings.sort((a, b) => a - b);
      const median = pings[Math.floor(pings.length / 2)];
      assert.ok(median < 700, `median ping ${median.toFixed(0)} ms (${pings.map((p) => p.toFixed(0)).join(",")})`);
    } finally {
      await conn.close({ timeoutMs: 100 }).catch(() => {});
      await server.close({ timeoutMs: 100 });
      await shaper.close();
    }
  });
});
