/**
 * `Client.addNode` checks the address as `connect` would: one no transport
 * of the client's runtime serves (`ftp://`, a scheme with no adapter, text
 * that is no address) fails there with ERR_UNSUPPORTED_URL and is not
 * listed. Before, it was listed, and each call to its route failed later
 * (the node's connect) — a typo in a configuration file surfaced only
 * as failing calls.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client, createServer, type PointSubError } from "../../src/index.ts";

describe("Client.addNode with an address no transport serves", () => {
  it("fails with ERR_UNSUPPORTED_URL at addNode and lists nothing; a served address is listed", async () => {
    const server = createServer();
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = new Client();
    try {
      for (const bad of ["ftp://127.0.0.1:21", "nosuchscheme://127.0.0.1:1", "not an address"]) {
        assert.throws(
          () => client.addNode("/echo", bad),
          (e: PointSubError) => e.code === "ERR_UNSUPPORTED_URL" && e.retryable === false,
          bad,
        );
      }
      assert.deepEqual(client.nodes("/echo"), []);
      client.addNode("/echo", url);
      assert.deepEqual(
        client.nodes("/echo").map((n) => n.address),
        [url],
      );
      assert.equal(new TextDecoder().decode(await client.requestClosest("/echo", "hi")), "hi");
    } finally {
      await client.close();
      await server.close();
    }
  });
});
