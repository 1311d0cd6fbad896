/**
 * Keepalive must close a connection to a peer that went silent whatever the
 * application's own `ping()` calls do. Before, keepalive sent no PING while
 * 8 were in flight, counting the application's: a client with 8 `ping()`s
 * outstanding to a dead peer (a health check every few seconds with the
 * default 30 s timeout has more) never sent its keepalive PING, so it never
 * timed out with ERR_KEEPALIVE — the connection stayed open for ever.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, type PointSubError } from "../../src/index.ts";
import { handshake, rawServer } from "../helpers/raw-peer.ts";

const KEEPALIVE_MS = 300;

describe("keepalive with the application's pings in flight", () => {
  it("8 unanswered ping()s to a silent peer: keepalive still closes with ERR_KEEPALIVE", async () => {
    const rs = await rawServer();
    const pending = connect(rs.url, { keepAliveMs: KEEPALIVE_MS });
    const peer = await rs.peer;
    // A handshake, then silence: the peer reads but never answers a PING.
    peer.socket.write(handshake());
    const conn = await pending;
    try {
      const closed = new Promise<PointSubError | undefined>((resolve) => conn.once("close", resolve));
      const pings = Array.from({ length: 8 }, () => conn.ping({ timeoutMs: 0 }).catch((e: PointSubError) => e));
      // Twice keepAliveMs of silence and a housekeeping tick, many times over.
      const cap = new Promise<"still open">((resolve) => setTimeout(resolve, KEEPALIVE_MS * 12, "still open").unref());
      const outcome = await Promise.race([closed, cap]);
      assert.notEqual(outcome, "still open", "keepalive closed the connection");
      assert.equal((outcome as PointSubError | undefined)?.code, "ERR_KEEPALIVE");
      for (const p of await Promise.all(pings)) assert.equal((p as PointSubError).code, "ERR_KEEPALIVE");
    } finally {
      peer.socket.destroy();
      await conn.close({ timeoutMs: 10 }).catch(() => {});
      await rs.close();
    }
  });
});
