/**
 * close({ timeoutMs: long }), then close({ timeoutMs: short }) once the
 * first already ended its transport and only waits for the peer to close
 * its side (a peer that stopped reading: it never sees our end, nor says
 * GOAWAY). The second close set the deadline forward, but the timer of
 * that last wait had been armed from the first's deadline: the close
 * resolved only then (10 minutes here), not by the second's deadline.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { startProxy } from "../helpers/proxy.ts";
import { sleep } from "../helpers/wait.ts";

it("a second, shorter close() ends the wait for a silent peer's end by its own deadline", async () => {
  const server = createServer();
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const proxy = await startProxy(url);
  const conn = await connect(proxy.url);
  try {
    // The peer hears nothing from now on, and says nothing.
    proxy.hold("up");
    proxy.hold("down");
    const first = conn.close({ timeoutMs: 600_000 });
    let closed = false;
    void first.then(() => {
      closed = true;
    });
    // Past the wait for the peer's GOAWAY (250 ms of quiet): the transport is ended, its close awaited.
    await sleep(600);
    assert.equal(closed, false);
    const second = conn.close({ timeoutMs: 0 });
    assert.equal(second, first, "the same close");
    const outcome = await Promise.race([second.then(() => "closed"), sleep(5_000).then(() => "still waiting")]);
    assert.equal(outcome, "closed");
    assert.equal(conn.state, "closed");
  } finally {
    conn.destroy();
    await proxy.close();
    await server.close({ timeoutMs: 100 });
  }
});
