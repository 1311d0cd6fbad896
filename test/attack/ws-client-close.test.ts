/**
 * A hostile ws:// server against a Node client (`ws` underneath) that ends
 * the WebSocket but never closes its TCP side (attack review, session 34):
 * - it sends a close frame (nothing more can come) and keeps the socket open;
 * - it sends a text message, which the client refuses with 1003, and never
 *   answers the client's close frame.
 * Before: the connection, and every call on it, stayed open for `ws`'s
 * close timeout — 30.2 s in both cases — while tcp:// fails at once on the
 * server's FIN (a resilient client was kept offline 30 s per connection).
 * Now: the socket goes as soon as `ws` ended its side (~200 ms here: the
 * server's frame is sent 150 ms in), and the call rejects with the typed
 * error. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, type PointSubError } from "../../src/index.ts";
import { hostileWsServer, serverFrame } from "../helpers/hostile-ws-server.ts";
import { handshake } from "../helpers/raw-peer.ts";

/** A server that completes the upgrade and the pointsub handshake, then sends `then` 150 ms later and keeps its TCP side open. */
function hostile(then: Buffer): Promise<string> {
  return hostileWsServer((s) => {
    s.write(serverFrame(2, handshake()));
    // Reads (and drops) whatever comes, its close frame and FIN included; never ends its side.
    s.resume();
    setTimeout(() => s.write(then), 150);
  });
}

async function callAgainst(then: Buffer): Promise<{ ms: number; err: PointSubError }> {
  const conn = await connect(await hostile(then), { requestTimeoutMs: 60_000 });
  const t0 = Date.now();
  try {
    const err = await conn.request("/x", "hi").then(
      () => assert.fail("answered"),
      (e: PointSubError) => e,
    );
    return { ms: Date.now() - t0, err };
  } finally {
    conn.destroy();
  }
}

describe("attack: a ws:// server that ends the WebSocket and keeps its TCP side open", () => {
  it("its close frame: the call fails at once (it waited 30 s)", async () => {
    const { ms, err } = await callAgainst(serverFrame(8, Uint8Array.of(0x03, 0xea))); // 1002
    assert.equal(err.code, "ERR_PROTOCOL");
    assert.ok(ms < 3000, `failed after ${ms} ms`);
  });

  it("a text message: refused with ERR_PROTOCOL at once, the peer's close frame not awaited (it waited 30 s)", async () => {
    const { ms, err } = await callAgainst(serverFrame(1, Buffer.from("hello")));
    assert.equal(err.code, "ERR_PROTOCOL");
    assert.match(err.message, /text message/);
    assert.ok(ms < 3000, `failed after ${ms} ms`);
  });
});
