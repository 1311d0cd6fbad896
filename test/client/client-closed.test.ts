/**
 * A Client's calls after `close()` fail with ERR_CONNECTION_CLOSED "client
 * closed", as its `close` says, by address and by route alike. Before,
 * `requestClosest` took the closed client's refusal for a node failure,
 * tried every node and failed with ERR_CONNECT "every node of <route>
 * failed", as if the servers were down.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client, createServer, type PointSubError } from "../../src/index.ts";

describe("Client after close()", () => {
  it("requestClosest and request fail with ERR_CONNECTION_CLOSED, not ERR_CONNECT", async () => {
    const a = createServer();
    const b = createServer();
    a.handle("/echo", (req) => req.data);
    b.handle("/echo", (req) => req.data);
    const [urlA] = await a.listen("tcp://127.0.0.1:0");
    const [urlB] = await b.listen("tcp://127.0.0.1:0");
    const client = new Client();
    try {
      client.addNode("/echo", urlA).addNode("/echo", urlB);
      assert.equal(new TextDecoder().decode(await client.requestClosest("/echo", "hi")), "hi");
      await client.close();
      const closed = (e: PointSubError): boolean =>
        e.code === "ERR_CONNECTION_CLOSED" && /client closed/.test(e.message);
      await assert.rejects(client.requestClosest("/echo", "hi"), closed);
      await assert.rejects(client.requestClosest("/echo", "hi", { fanout: 2 }), closed);
      await assert.rejects(client.request(urlA, "/echo", "hi"), closed);
    } finally {
      await client.close();
      await a.close();
      await b.close();
    }
  });
});
