/**
 * A call waiting for a slot in a full pool (`maxTotal`) while a connection's
 * last call is answered: after a stall of this process, the wait's timer
 * (`acquireTimeoutMs`) ran before the answer that arrived meanwhile was
 * read, and the call failed with ERR_POOL_EXHAUSTED, the slot free in the
 * socket. The wait now looks again after that turn's I/O. The nodes are two
 * servers in another process; node A answers 500 ms after the call.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { Client } from "../../src/index.ts";
import { INDEX, peerProcess, stallSoon } from "../helpers/stall.ts";

it("a call waiting for a pool slot that a call's answer freed while this process stalled is answered", async () => {
  const peer = await peerProcess(`
    import { createServer } from ${INDEX};
    const urls = [];
    for (let i = 0; i < 2; i++) {
      const server = createServer();
      server.handle("/echo", (r) => r.data);
      server.handle("/late", async (r) => { await new Promise((res) => setTimeout(res, 500)); return r.data; });
      urls.push((await server.listen("tcp://127.0.0.1:0"))[0]);
    }
    process.stdout.write(urls.join(" ") + "\\n");
  `);
  const [a, b] = peer.line.split(" ");
  const client = new Client({ pool: { maxTotal: 1, acquireTimeoutMs: 1500 }, rttProbeMs: 0 });
  try {
    await client.request(a, "/echo", "open");
    // A's only connection busy until its answer (500 ms in); B's call waits for its slot 1.5 s (1 s of room
    // for a slow child); then 4 s of stall.
    const first = client.request(a, "/late", "a");
    const second = client.request(b, "/echo", "b");
    stallSoon(4000);
    assert.equal(Buffer.from(await first).toString(), "a");
    assert.equal(Buffer.from(await second).toString(), "b");
  } finally {
    await client.close();
    peer.stop();
  }
});
