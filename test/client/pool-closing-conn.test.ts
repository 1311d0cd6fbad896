/**
 * A pooled connection that this side is closing (its connection option
 * `idleTimeoutMs` closes it gracefully once idle; the pool is not told, as
 * it is of the server's GOAWAY) takes no new call: the call goes to another
 * connection (opened for it), and the node's breaker stays closed. Before,
 * the pool handed the closing connection out until its close ended: the
 * call failed with ERR_GOING_AWAY, and through `requestClosest` that counted
 * as the node's failure (its breaker opened: with one node, the call failed
 * with ERR_CONNECT "every node failed").
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client, type Connection, createServer } from "../../src/index.ts";

/** The connections the client's pool holds for `node` (private state, read for the test). */
function pooled(client: Client, node: string): Connection[] {
  const pool = (client as unknown as { pool: { connections(n: string): { conn: Connection }[] } }).pool;
  return pool.connections(node).map((p) => p.conn);
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("Client: a pooled connection closing on this side", () => {
  it("takes no new call: the call is answered on another connection, the node's breaker stays closed", async () => {
    const server = createServer();
    server.handle("/x/1", () => "ok");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = new Client();
    try {
      client.addNode("/x/1", url);
      assert.equal(text(await client.requestClosest("/x/1", "a")), "ok");
      const [first] = pooled(client, url);
      assert.equal(first.state, "open");
      // What idleTimeoutMs does once the connection is idle (housekeeping's idle(): a graceful close).
      const closing = first.close({ reason: "idle" });
      assert.equal(first.state, "closing");
      assert.equal(text(await client.requestClosest("/x/1", "b")), "ok");
      assert.deepEqual(
        client.nodes("/x/1").map((n) => [n.breaker, n.failures]),
        [["closed", 0]],
      );
      await closing;
      // An explicit address likewise.
      const [second] = pooled(client, url);
      assert.notEqual(second, first);
      const closing2 = second.close({ reason: "idle" });
      assert.equal(text(await client.request(url, "/x/1", "c")), "ok");
      await closing2;
      assert.equal(pooled(client, url).length, 1);
      assert.equal(pooled(client, url)[0].state, "open");
    } finally {
      await client.close();
      await server.close();
    }
  });
});
