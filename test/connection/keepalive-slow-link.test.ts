/**
 * Keepalive on a slow link (bench/lib/shaper.ts: a rate-limited loopback
 * proxy with a router queue): a healthy connection moving a message slower
 * than one keepalive interval must not be cut with ERR_KEEPALIVE.
 * - The uploader: its own keepalive PING waits behind its upload in the
 *   link's queue, and the receiver's CREDIT is due only once a quarter of
 *   the window arrived, so it heard nothing. The receiver now sends a PING
 *   of its own after half an interval without output while the peer sends
 *   (housekeeping.ts).
 * - A ws:// client downloading: `ws` hands up only whole WebSocket
 *   messages, and the server sent up to 1 MiB in one. Messages are now cut
 *   at 16 KiB (transport/ws-mapping.ts).
 * Each takes about 3 s of link time.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startShaper } from "../../bench/lib/shaper.ts";
import { connect, createServer } from "../../src/index.ts";
import { sendAsMessages } from "../../src/transport/ws-mapping.ts";

const SLOW = { rate: 20_000, delayMs: 5 };
const FAST = { rate: 10_000_000, delayMs: 5 };

describe("keepalive on a slow link", () => {
  it("an upload slower than the keepalive interval completes (60 KB at 20 KB/s, keepAliveMs 300 on both sides)", async () => {
    const server = createServer({ keepAliveMs: 300 });
    let got = 0;
    server.handle("/sink/1.0.0", (req) => {
      got = req.data.length;
      return undefined;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const shaper = await startShaper(Number(new URL(url).port), SLOW, FAST);
    const conn = await connect(`tcp://127.0.0.1:${shaper.port}`, { keepAliveMs: 300 });
    try {
      const t0 = Date.now();
      await conn.request("/sink/1.0.0", new Uint8Array(60_000), { timeoutMs: 0 });
      assert.equal(got, 60_000);
      // The link, not a shortcut, carried it: well over one keepalive interval.
      assert.ok(Date.now() - t0 >= 1_500, `took ${Date.now() - t0} ms`);
      assert.equal(conn.state, "open");
    } finally {
      await conn.close();
      await server.close();
      await shaper.close();
    }
  });

  it("a ws:// client receiving one large message slower than the keepalive interval keeps its connection (60 KB at 20 KB/s, keepAliveMs 1000)", async () => {
    const server = createServer({ keepAliveMs: 1000 });
    server.handle("/big/1.0.0", () => new Uint8Array(60_000).fill(9));
    const [url] = await server.listen("ws://127.0.0.1:0");
    const shaper = await startShaper(Number(new URL(url).port), FAST, SLOW);
    const conn = await connect(`ws://127.0.0.1:${shaper.port}`, { keepAliveMs: 1000 });
    try {
      const t0 = Date.now();
      const answer = await conn.request("/big/1.0.0", undefined, { timeoutMs: 0 });
      assert.equal(answer.length, 60_000);
      assert.ok(Date.now() - t0 >= 1_500, `took ${Date.now() - t0} ms`);
      assert.equal(conn.state, "open");
    } finally {
      await conn.close();
      await server.close();
      await shaper.close();
    }
  });

  it("a WebSocket write is sent in messages of at most 16 KiB; small chunks of one write share one", () => {
    const sizes: number[] = [];
    const lasts: boolean[] = [];
    const send = (m: Uint8Array, last: boolean) => {
      sizes.push(m.length);
      lasts.push(last);
    };
    assert.equal(sendAsMessages([new Uint8Array(40_000)], send), 40_000);
    assert.deepEqual(sizes, [16_384, 16_384, 7_232]);
    assert.deepEqual(lasts, [false, false, true]);
    sizes.length = 0;
    lasts.length = 0;
    assert.equal(sendAsMessages([new Uint8Array(100), new Uint8Array(200), new Uint8Array(300)], send), 600);
    assert.deepEqual(sizes, [600]);
    assert.deepEqual(lasts, [true]);
  });
});
