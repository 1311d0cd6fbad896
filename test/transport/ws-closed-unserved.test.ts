/**
 * A ws:// server that accepts the upgrade and then drops the connection
 * without a byte of pointsub's handshake (a server refusing it past its
 * bound of lingering refusals, whose GOAWAY a reset lost; a proxy with
 * nothing behind it): the client's connect fails ERR_CONNECT naming the
 * URL, as tcp:// and tls:// say it. Before: ERR_CONNECTION_CLOSED
 * "connection to ws://unknown:0 closed" (the reset socket had no address
 * left), which says calls under way may have been lost.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, type PointSubError } from "../../src/index.ts";
import { hostileWsServer } from "../helpers/hostile-ws-server.ts";

describe("ws:// closed after the upgrade, before any byte of the server's handshake", () => {
  for (const [how, upgraded] of [
    ["reset at once", (s) => s.resetAndDestroy()],
    ["reset once the client's HELLO came", (s) => s.once("data", () => s.resetAndDestroy())],
    ["ended without a close frame", (s) => s.once("data", () => s.end())],
  ] as const satisfies readonly (readonly [string, (s: import("node:net").Socket) => void])[]) {
    it(`${how}: ERR_CONNECT naming the URL, retryable`, async () => {
      const url = await hostileWsServer(upgraded);
      const port = new URL(url).port;
      await assert.rejects(connect(url, { connectTimeoutMs: 5000 }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_CONNECT", String(e));
        assert.equal(e.retryable, true);
        assert.equal(
          e.message,
          `cannot connect to ws://127.0.0.1:${port}: closed before any byte of the server's handshake (a server closing, or a tunnel or proxy with nothing behind it)`,
        );
        return true;
      });
    });
  }
});
