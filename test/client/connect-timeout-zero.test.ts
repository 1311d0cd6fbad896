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
import { Client, connect, createServer, type PointSubError } from "../../src/index.ts";
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

/**
 * A Client with `connectTimeoutMs: 0` and a node that accepts TCP and never
 * answers the handshake: a call without a `timeoutMs` of its own waited for
 * that connect for ever (only connectTimeoutMs bounded the wait). Its
 * default deadline, `requestTimeoutMs`, now bounds the wait: ERR_TIMEOUT,
 * and `requestClosest` goes on to the next node.
 */
it("a Client with connectTimeoutMs 0: a call to a node that never answers the handshake fails at requestTimeoutMs, requestClosest goes on to the next node", async () => {
  const silent = await rawServer();
  const server = createServer();
  server.handle("/echo/1.0.0", (req) => req.data);
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const client = new Client({ connectTimeoutMs: 0, requestTimeoutMs: 300 });
  /** A hang guard, not a timing assertion: before the fix the calls below never settled. */
  const settled = async <T>(p: Promise<T>) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const guard = new Promise<{ pending: true }>((resolve) => {
      timer = setTimeout(() => resolve({ pending: true }), 20_000);
    });
    try {
      return await Promise.race([
        p.then(
          (v) => ({ v }),
          (e: unknown) => ({ e }),
        ),
        guard,
      ]);
    } finally {
      clearTimeout(timer);
    }
  };
  try {
    const own = await settled(client.request(silent.url, "/echo/1.0.0", "a"));
    assert.ok("e" in own, `settled with an error: ${JSON.stringify(own)}`);
    assert.equal((own.e as PointSubError).code, "ERR_TIMEOUT");
    assert.match((own.e as PointSubError).message, /requestTimeoutMs/);
    // Its own timeoutMs bounds it as before.
    await assert.rejects(client.request(silent.url, "/echo/1.0.0", "b", { timeoutMs: 200 }), { code: "ERR_TIMEOUT" });
    // Listed first (no RTT known yet: list order), the silent node is tried first, then the next one answers.
    client.addNode("/echo/1.0.0", silent.url).addNode("/echo/1.0.0", url);
    const closest = await settled(client.requestClosest("/echo/1.0.0", "c"));
    assert.ok("v" in closest, `answered: ${JSON.stringify(closest)}`);
    assert.equal(new TextDecoder().decode(closest.v as Uint8Array), "c");
    assert.equal(client.nodes("/echo/1.0.0")[0].breaker, "open", "the silent node counts as failed");
  } finally {
    await client.close();
    (await silent.peer).socket.destroy();
    await silent.close();
    await server.close();
  }
});
