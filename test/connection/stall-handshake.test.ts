/**
 * A handshake that came in time while the connecting process stalled: after
 * the stall, the handshake's timer ran before the input that arrived
 * meanwhile was read, and `connect` failed with ERR_TIMEOUT ("no pointsub
 * handshake"), the server's HELLO in the socket. The timer now waits for
 * that turn's I/O. The server is a raw peer in another process answering
 * 500 ms after the connect.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect } from "../../src/index.ts";
import { ATTACKER, peerProcess, stallSoon } from "../helpers/stall.ts";

it("a server's handshake that came before the deadline while the client's process stalled opens the connection", async () => {
  const peer = await peerProcess(`
    import net from "node:net";
    import { handshake } from ${ATTACKER};
    const srv = net.createServer((s) => {
      s.on("error", () => {});
      s.on("data", () => {});
      setTimeout(() => s.write(handshake()), 500);
    });
    srv.listen(0, "127.0.0.1", () => process.stdout.write(srv.address().port + "\\n"));
  `);
  try {
    // Its deadline 1.5 s (1 s of room for a slow child); 100 ms in (connected), 4 s of stall.
    const opening = connect(`tcp://127.0.0.1:${peer.line}`, { handshakeTimeoutMs: 1500 });
    setTimeout(() => stallSoon(4000), 100);
    const conn = await opening;
    assert.equal(conn.state, "open");
    conn.destroy();
  } finally {
    peer.stop();
  }
});
