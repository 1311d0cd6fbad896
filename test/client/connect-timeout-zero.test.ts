/**
 * `connectTimeoutMs: 0` and a client's `handshakeTimeoutMs: 0` are no
 * deadline, as for every transport's connect (`connectDeadline`, the
 * browser's WebSocket: "0: none") and as 0 is for a request's or a ping's
 * timeout (docs/OPTIONS.md; a server refuses a handshakeTimeoutMs of 0).
 * The handshake took either as a deadline of 0 ms: every connect failed at
 * once with ERR_TIMEOUT ("no pointsub handshake … within 0 ms"), even to a
 * server that answered at once.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { handshake, rawServer } from "../helpers/raw-peer.ts";
import { sleep } from "../helpers/wait.ts";

for (const option of ["connectTimeoutMs", "handshakeTimeoutMs"] as const)
  it(`${option} 0 on a client: connect waits for the handshake, however long it takes`, async () => {
    const server = createServer();
    server.handle("/echo/1.0.0", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const conn = await connect(url, { [option]: 0 });
      assert.equal(conn.state, "open");
      assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "hi")), "hi");
      await conn.close();
    } finally {
      await server.close();
    }
    // A server that answers its handshake late.
    const raw = await rawServer();
    try {
      const pending = connect(raw.url, { [option]: 0 });
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
