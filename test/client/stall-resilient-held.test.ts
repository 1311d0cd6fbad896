/**
 * A resilient connection's call held while it reconnects (offline policy
 * "queue"): after a stall of this process, the held call's timers — its
 * age (`offline.maxAgeMs`) and its default deadline (`requestTimeoutMs`) —
 * ran before the new connection's handshake that arrived meanwhile was read,
 * and the call failed with ERR_OFFLINE or ERR_TIMEOUT ("timed out while not
 * connected"), its connection open in the socket. Both now wait for that
 * turn's I/O. The server is in another process behind a proxy that holds
 * the HELLO of every connection but the first 500 ms.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connectResilient, type ResilientOptions } from "../../src/index.ts";
import { lateHelloServer, peerProcess, stallSoon } from "../helpers/stall.ts";

for (const [name, options] of [
  ["offline.maxAgeMs", { offline: { maxAgeMs: 1500 } }],
  ["requestTimeoutMs (its default deadline)", { requestTimeoutMs: 1500 }],
] as const) {
  it(`a call held while reconnecting, whose connection's handshake came within ${name} while this process stalled, is answered`, async () => {
    const peer = await peerProcess(lateHelloServer(500, 1));
    const rc = await connectResilient(peer.line, {
      reconnect: { initialDelayMs: 1, maxDelayMs: 10 },
      ...(options as ResilientOptions),
    });
    try {
      const reconnecting = new Promise((resolve) => rc.once("state", resolve));
      rc.connection?.destroy();
      assert.equal(await reconnecting, "reconnecting");
      // Held 1.5 s at most (1 s of room for a slow child); the new connection's HELLO 500 ms in; 100 ms in
      // (connected), 4 s of stall.
      const answer = rc.request("/echo", "in time");
      setTimeout(() => stallSoon(4000), 100);
      assert.equal(Buffer.from(await answer).toString(), "in time");
    } finally {
      await rc.close();
      peer.stop();
    }
  });
}
