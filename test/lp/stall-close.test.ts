/**
 * An lp connection's graceful close whose peer closed its side in time
 * while this process stalled: after the stall, the close's deadline ran
 * before the peer's end that arrived meanwhile was read, and the close was
 * cut as unclean (ERR_CONNECTION_CLOSED "before the peer closed its side:
 * what was sent last may not have arrived"). The deadline now waits for
 * that turn's I/O, as a pointsub connection's graceful close. The peer is a
 * raw TCP server in another process that ends its side 500 ms after this
 * one's.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect } from "../../src/index.ts";
import { peerProcess, stallSoon } from "../helpers/stall.ts";
import { closeOutcome, until } from "../helpers/wait.ts";

it("lp: a close whose peer hung up before its deadline while this process stalled is a clean one", async () => {
  const peer = await peerProcess(`
    import net from "node:net";
    const srv = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on("error", () => {});
      s.on("data", () => {});
      s.on("end", () => setTimeout(() => s.end(), 500));
    });
    srv.listen(0, "127.0.0.1", () => process.stdout.write(srv.address().port + "\\n"));
  `);
  try {
    const conn = await connect(`lp+tcp://127.0.0.1:${peer.line}`);
    const outcome = closeOutcome(conn);
    await conn.send("last words");
    // Its deadline 1.5 s (the peer hangs up 500 ms in: 1 s of room for a slow child); then 4 s of stall.
    const closing = conn.close({ timeoutMs: 1500 });
    stallSoon(4000);
    await closing;
    await until(() => outcome.closed, 10_000);
    assert.equal(outcome.error, undefined);
  } finally {
    peer.stop();
  }
});
