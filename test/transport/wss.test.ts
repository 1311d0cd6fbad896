import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { wsTransport } from "../../src/node/ws-adapter.ts";
import { testCerts } from "../helpers/certs.ts";
import { runCompliance } from "./compliance.ts";

runCompliance({
  name: "wss",
  adapter: wsTransport,
  listenUrl: () => "wss://127.0.0.1:0/pointsub",
  async transportOptions() {
    const c = await testCerts();
    return { server: { tls: { cert: c.serverCert, key: c.serverKey } }, client: { tls: { ca: c.ca } } };
  },
});

describe("wss:// mutual TLS", () => {
  it("a client certificate reaches the session (peerCertificate) and authenticate; a client without one is refused", async () => {
    const c = await testCerts();
    const server = createServer({
      tls: { cert: c.serverCert, key: c.serverKey, ca: c.ca, requestCert: true },
      authenticate: (_credentials, info) => `cert:${info.peerCertificate?.subject.CN}`,
    });
    server.handle("/whoami/1.0.0", (_req, ctx) => String(ctx.session.principal));
    const [url] = await server.listen("wss://127.0.0.1:0/pointsub");
    try {
      const conn = await connect(url, { tls: { ca: c.ca, cert: c.clientCert, key: c.clientKey } });
      assert.equal(new TextDecoder().decode(await conn.request("/whoami/1.0.0", "")), "cert:pointsub test client");
      const [info] = server.sessionsInfo();
      assert.equal(info.transport, "wss");
      assert.equal(info.peerCertificate?.authorized, true);
      await conn.close();
      await assert.rejects(connect(url, { tls: { ca: c.ca }, connectTimeoutMs: 5000 }));
    } finally {
      await server.close();
    }
  });
});
