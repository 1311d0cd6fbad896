/**
 * A libp2p connect with a connectTimeoutMs over a timer's range (2^31 - 1
 * ms): "no limit" written as a large number (Infinity is refused) must
 * neither fire at once nor throw.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/p2p/index.ts";

describe("pointsub/libp2p connectTimeoutMs over 2^31 - 1 ms", () => {
  it("3e9 ms, 2^32 ms and Number.MAX_SAFE_INTEGER connect and answer (the adapter's own dialer node)", async () => {
    const server = createServer();
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("/ip4/127.0.0.1/tcp/0");
    try {
      for (const connectTimeoutMs of [3e9, 2 ** 32, Number.MAX_SAFE_INTEGER]) {
        const conn = await connect(url, { connectTimeoutMs }).catch((e: Error & { code?: string }) => {
          throw new Error(`connectTimeoutMs ${connectTimeoutMs}: ${e.code} ${e.message}`);
        });
        assert.equal(new TextDecoder().decode(await conn.request("/echo", "hi")), "hi");
        await conn.close();
      }
    } finally {
      await server.close();
    }
  });
});
