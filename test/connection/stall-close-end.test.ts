/**
 * A graceful close whose peer closed its side in time while this process
 * stalled: after the stall, the close's deadline ran before the peer's end
 * that arrived meanwhile was read, and the close was cut as unclean
 * (ERR_CONNECTION_CLOSED "before the peer closed its side: what was sent
 * last may not have arrived"). The deadline now acts after that turn's I/O,
 * as the wait for work in flight does. The peer is a raw pointsub peer in
 * another process that ends its side 500 ms after this one's; the stall
 * starts as this side ends its byte stream.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect } from "../../src/index.ts";
import { ATTACKER, peerProcess, stallSoon } from "../helpers/stall.ts";
import { closeOutcome, until } from "../helpers/wait.ts";

it("a close whose peer hung up before its deadline while this process stalled is a clean one", async () => {
  const peer = await peerProcess(`
    import net from "node:net";
    import { handshake } from ${ATTACKER};
    const srv = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on("error", () => {});
      s.on("data", () => {});
      s.on("end", () => setTimeout(() => s.end(), 500));
      s.write(handshake());
    });
    srv.listen(0, "127.0.0.1", () => process.stdout.write(srv.address().port + "\\n"));
  `);
  try {
    const conn = await connect(`tcp://127.0.0.1:${peer.line}`);
    const outcome = closeOutcome(conn);
    // 4 s of stall from the turn this side ends its byte stream.
    const end = conn.endTransport.bind(conn);
    conn.endTransport = () => {
      end();
      stallSoon(4000);
    };
    // Its deadline 3 s: this side ends ~250 ms in (the peer sends no GOAWAY), the peer 500 ms after that.
    await conn.close({ timeoutMs: 3000 });
    await until(() => outcome.closed, 10_000);
    assert.equal(outcome.error, undefined);
  } finally {
    peer.stop();
  }
});
