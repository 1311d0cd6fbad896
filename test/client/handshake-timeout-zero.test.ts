/**
 * A client's explicit `handshakeTimeoutMs: 0` is no handshake deadline, as
 * `connectTimeoutMs: 0` is no connect deadline (docs/OPTIONS.md; a server
 * refuses 0). The handshake's timer took it as 0 ms: every connect failed at
 * once with ERR_TIMEOUT ("no pointsub handshake … within 0 ms"), even to a
 * server that answered at once.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { handshake, rawServer } from "../helpers/raw-peer.ts";
import { sleep } from "../helpers/wait.ts";

it("handshakeTimeoutMs 0 on a client: connect waits for the handshake, however long it takes", async () => {
  const server = createServer();
  server.handle("/echo/1.0.0", (req) => req.data);
  const [url] = await server.listen("tcp://127.0.0.1:0");
  try {
    const conn = await connect(url, { handshakeTimeoutMs: 0 });
    assert.equal(conn.state, "open");
    assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "hi")), "hi");
    await conn.close();
  } finally {
    await server.close();
  }
  // A server that answers its handshake late.
  const raw = await rawServer();
  try {
    const pending = connect(raw.url, { handshakeTimeoutMs: 0 });
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
