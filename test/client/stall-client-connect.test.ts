/**
 * A Client's call made while its connection to the node opens, without a
 * `timeoutMs` of its own: it waits for the connection at most the
 * connections' `requestTimeoutMs`. After a stall of this process, that
 * deadline's timer ran before the input that arrived meanwhile was read, and
 * the call failed with ERR_TIMEOUT ("waiting for a connection"), the node's
 * handshake in the socket. The deadline now waits for that turn's I/O. The
 * node is a server in another process behind a proxy that holds its HELLO
 * 500 ms.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { Client } from "../../src/index.ts";
import { lateHelloServer, peerProcess, stallSoon } from "../helpers/stall.ts";

it("a Client's call whose connection's handshake came before requestTimeoutMs while this process stalled is answered", async () => {
  const peer = await peerProcess(lateHelloServer(500));
  const client = new Client({ requestTimeoutMs: 1500, rttProbeMs: 0 });
  try {
    // The wait for the connection: 1.5 s (1 s of room for a slow child); 100 ms in (connected), 4 s of stall.
    const answer = client.request(peer.line, "/echo", "in time");
    setTimeout(() => stallSoon(4000), 100);
    assert.equal(Buffer.from(await answer).toString(), "in time");
  } finally {
    await client.close();
    peer.stop();
  }
});
