/**
 * An lp connection whose peer read what the socket held while this process
 * stalled: after the stall, the slow-peer check (`slowPeerTimeoutMs`) ran
 * before the socket's turn to write on was taken, saw none of its bytes
 * taken for the whole stall, and dropped a peer that was reading with
 * ERR_SLOW_PEER. The check now looks again after that turn's I/O, as a
 * pointsub connection's. The peer is a raw TCP server in another process
 * that reads nothing for its first 1.5 s.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect } from "../../src/index.ts";
import { peerProcess, stallSoon } from "../helpers/stall.ts";
import { closeOutcome, until } from "../helpers/wait.ts";

const turn = () => new Promise<void>((r) => setImmediate(r));

it("lp: a peer that read the socket's bytes while this process stalled is not dropped as slow", async () => {
  const peer = await peerProcess(`
    import net from "node:net";
    const srv = net.createServer((s) => {
      s.on("error", () => {});
      s.pause();
      setTimeout(() => s.resume(), 1500);
    });
    srv.listen(0, "127.0.0.1", () => process.stdout.write(srv.address().port + "\\n"));
  `);
  try {
    const conn = await connect(`lp+tcp://127.0.0.1:${peer.line}`, { slowPeerTimeoutMs: 1000 });
    const outcome = closeOutcome(conn);
    // Fill the kernel's buffers, then some of the socket's own; 4 s of stall 400 ms later (the peer reads 1.5 s in).
    const chunk = new Uint8Array(64 * 1024).fill(5);
    for (let i = 0; i < 4000 && conn.owedBytes < 128 * 1024 && conn.state === "open"; i++) {
      void conn.send(chunk);
      await turn();
    }
    assert.ok(conn.owedBytes > 0, "the socket holds bytes for the peer");
    // A check (each quarter of slowPeerTimeoutMs) sees what the socket took so far: stuck from then on.
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(conn.state, "open");
    stallSoon(4000);
    await until(() => conn.owedBytes === 0 || outcome.closed, 20_000);
    assert.equal(outcome.error?.code, undefined);
    assert.equal(conn.state, "open");
    conn.destroy();
  } finally {
    peer.stop();
  }
});
