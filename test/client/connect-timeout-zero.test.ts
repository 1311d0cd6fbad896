/**
 * `connectTimeoutMs: 0` is no deadline, as for every transport's connect
 * (`connectDeadline`, the browser's WebSocket: "0: none") and as 0 is for
 * a request's or a ping's timeout. The handshake, which connectTimeoutMs
 * covers too, took it as a deadline of 0 ms: every connect failed with
 * ERR_TIMEOUT ("no pointsub handshake … within 0 ms") before the server's
 * HELLO could arrive.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { handshake, rawServer } from "../helpers/raw-peer.ts";
import { sleep } from "../helpers/wait.ts";

it("connectTimeoutMs 0: connect waits for the handshake, however long it takes", async () => {
  const server = createServer();
  const [url] = await server.listen("tcp://127.0.0.1:0");
  try {
    const conn = await connect(url, { connectTimeoutMs: 0 });
    assert.equal(conn.state, "open");
    await conn.close();
  } finally {
    await server.close();
  }
  // A server that answers its handshake late.
  const raw = await rawServer();
  try {
    const pending = connect(raw.url, { connectTimeoutMs: 0 });
    const peer = await raw.peer;
    await sleep(300);
    peer.socket.write(handshake());
    const conn = await pending;
    assert.equal(conn.state, "open");
    conn.destroy();
    peer.socket.destroy();
  } finally {
    await raw.close();
  }
});
