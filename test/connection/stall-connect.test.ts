/**
 * A connect whose TCP connection and the server's HELLO came in time while
 * the connecting process stalled: after the stall, the transport's
 * `connectTimeoutMs` timer ran before the connect that completed meanwhile
 * was read, and `connect` (a resilient connection's attempt too) failed with
 * ERR_TIMEOUT (phase "connect"). The deadline now waits for that turn's I/O.
 * The server is in another process (it accepts and sends its HELLO during
 * the stall).
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect } from "../../src/index.ts";
import { INDEX, peerProcess, stallSoon } from "../helpers/stall.ts";

it("a TCP connect and handshake that completed before connectTimeoutMs while this process stalled opens the connection", async () => {
  const peer = await peerProcess(`
    import { createServer } from ${INDEX};
    const server = createServer();
    server.handle("/echo", (r) => r.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    process.stdout.write(url + "\\n");
  `);
  try {
    // The connect's deadline 1.5 s; the SYN goes out in this turn, then 4 s of stall.
    const opening = connect(peer.line, { connectTimeoutMs: 1500 });
    stallSoon(4000);
    const conn = await opening;
    assert.equal(Buffer.from(await conn.request("/echo", "open")).toString(), "open");
    conn.destroy();
  } finally {
    peer.stop();
  }
});
