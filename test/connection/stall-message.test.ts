/**
 * A receiver holding the peer's unfinished message, whose process stalled
 * while the message's next frames came: after the stall, timers run before
 * the input that arrived meanwhile is read, so the progress check saw
 * nothing for progressTimeoutMs and cancelled the message with ERR_TIMEOUT
 * ("received nothing") — lp's failed the connection — its frames still in
 * the socket. The checks now look again after that turn's I/O, as the
 * streams' and the keepalive's. The sender is a raw server in another
 * process writing the message's first part with its handshake, the rest
 * 1 s later. The receiver is a client connection (its housekeeping ticks on
 * an interval of its own, which runs first after a stall).
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect } from "../../src/index.ts";
import { ATTACKER, peerProcess, stallSoon } from "../helpers/stall.ts";
import { until } from "../helpers/wait.ts";

it("a chunked message whose next frames came while its receiver's process stalled is delivered", async () => {
  const peer = await peerProcess(`
    import net from "node:net";
    import { T, chunk, chunkStart, concat, handshake } from ${ATTACKER};
    const part = new Uint8Array(1000).fill(7);
    const srv = net.createServer((s) => {
      s.on("error", () => {});
      s.on("data", () => {});
      s.write(concat(handshake(), chunkStart(T.MSG, 2, 2000, part)));
      setTimeout(() => s.write(chunk(T.MSG, 2, part, true)), 1000);
    });
    srv.listen(0, "127.0.0.1", () => process.stdout.write(srv.address().port + "\\n"));
  `);
  try {
    const conn = await connect(`tcp://127.0.0.1:${peer.line}`, { progressTimeoutMs: 1000 });
    const got: number[] = [];
    conn.on("message", (m) => got.push(m.data.length));
    // The first frame is in (it came with the handshake); the rest comes 1 s later, during 4 s of stall.
    stallSoon(4000);
    await until(() => got.length > 0 || conn.state === "closed", 10_000);
    assert.deepEqual(got, [2000]);
    conn.destroy();
  } finally {
    peer.stop();
  }
});

it("lp: a message whose rest came while its receiver's process stalled is delivered", async () => {
  const peer = await peerProcess(`
    import net from "node:net";
    const head = Buffer.alloc(4);
    head.writeUInt32BE(2000);
    const part = Buffer.alloc(1000, 7);
    const srv = net.createServer((s) => {
      s.on("error", () => {});
      s.on("data", () => {});
      s.write(Buffer.concat([head, part]));
      setTimeout(() => s.write(part), 1000);
    });
    srv.listen(0, "127.0.0.1", () => process.stdout.write(srv.address().port + "\\n"));
  `);
  try {
    const conn = await connect(`lp+tcp://127.0.0.1:${peer.line}`, { progressTimeoutMs: 1000 });
    const got: number[] = [];
    conn.on("message", (m) => got.push(m.data.length));
    // Its first part is in once a turn read it; then 4 s of stall.
    setTimeout(() => stallSoon(4000), 200);
    await until(() => got.length > 0 || conn.state === "closed", 10_000);
    assert.deepEqual(got, [2000]);
    conn.destroy();
  } finally {
    peer.stop();
  }
});
