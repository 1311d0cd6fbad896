/**
 * Timeouts longer than a timer takes (2^31 - 1 ms, ~24.8 days): `Infinity`
 * is refused, so "no limit" is written as a large number, and such a
 * deadline must not fire at once (Node runs a longer timer after 1 ms).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { testCerts } from "../helpers/certs.ts";
import { startDelayProxy } from "../helpers/delay-proxy.ts";

describe("connectTimeoutMs and handshakeTimeoutMs over 2^31 - 1 ms", () => {
  it("tcp://, tls:// and ws:// over a 20 ms link connect and answer with Number.MAX_SAFE_INTEGER and 2^32 ms", async () => {
    const certs = await testCerts();
    const server = createServer({ tls: { cert: certs.serverCert, key: certs.serverKey } });
    server.handle("/echo", (req) => req.data);
    const urls = await server.listen("tcp://127.0.0.1:0", "tls://127.0.0.1:0", "ws://127.0.0.1:0/p");
    const proxies = await Promise.all(urls.map((u) => startDelayProxy(`tcp://127.0.0.1:${new URL(u).port}`, 20)));
    try {
      for (let i = 0; i < urls.length; i++) {
        const u = new URL(urls[i]);
        u.port = new URL(proxies[i].url).port;
        for (const options of [
          { connectTimeoutMs: Number.MAX_SAFE_INTEGER },
          { connectTimeoutMs: 2 ** 32, handshakeTimeoutMs: 2 ** 32 },
        ]) {
          const conn = await connect(u.href, { ...options, tls: { ca: certs.ca } }).catch((e: Error) => {
            throw new Error(`${u.href} ${JSON.stringify(options)}: ${e.message}`);
          });
          assert.equal(new TextDecoder().decode(await conn.request("/echo", "hi")), "hi");
          await conn.close();
        }
      }
    } finally {
      for (const p of proxies) await p.close();
      await server.close();
    }
  });
});
