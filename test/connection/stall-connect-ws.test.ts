/**
 * A ws:// connect whose upgrade answer and the server's HELLO came within
 * connectTimeoutMs while the connecting process stalled: after the stall,
 * `ws`'s own handshakeTimeout (the socket's idle timeout, given the same
 * time) ran before the answer that arrived meanwhile was read and aborted
 * the upgrade — the transport's deadline, which waits for that turn's I/O,
 * never got to look. The server is in another process behind a proxy that
 * holds what the server sends (the 101 answer first) for 500 ms.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect } from "../../src/index.ts";
import { lateHelloServer, peerProcess, stallSoon } from "../helpers/stall.ts";

it("a ws:// connect whose upgrade answer came before connectTimeoutMs while this process stalled opens the connection", async () => {
  const peer = await peerProcess(lateHelloServer(500, 0, "ws"));
  try {
    // The connect's deadline 1.5 s; the upgrade request goes out at once, its answer 500 ms in; 100 ms in, 4 s of stall.
    const opening = connect(peer.line, { connectTimeoutMs: 1500 });
    setTimeout(() => stallSoon(4000), 100);
    const conn = await opening;
    assert.equal(Buffer.from(await conn.request("/echo", "open")).toString(), "open");
    conn.destroy();
  } finally {
    peer.stop();
  }
});
