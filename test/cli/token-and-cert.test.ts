/**
 * `serve --token … --require-client-cert` (auth mode "token+certificate")
 * on a tls:// and a plaintext tcp:// listener at once: every client needs
 * both. Before, the token alone was checked: a tcp:// client without any
 * certificate was served (in plaintext) while every listening line said
 * `"auth":"token+certificate"`. Real loopback sockets, certificates made at
 * test time.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { serveSecurity } from "../../src/cli/auth.ts";
import { connect, createServer } from "../../src/index.ts";
import { type TestCerts, testCerts } from "../helpers/certs.ts";

let certs: TestCerts;
let dir: string;
before(async () => {
  certs = await testCerts();
  dir = await mkdtemp(join(tmpdir(), "pointsub-token-cert-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function pem(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

describe("serve: a token and --require-client-cert", () => {
  it("a tcp:// client with the token and no certificate is refused; a tls:// one with both is served", async () => {
    const listen = ["tls://127.0.0.1:0", "tcp://127.0.0.1:0"];
    const security = await serveSecurity(
      listen,
      {
        token: "s3cret",
        requireClientCert: true,
        tlsCa: await pem("ca.pem", certs.ca),
        tlsCert: await pem("cert.pem", certs.serverCert),
        tlsKey: await pem("key.pem", certs.serverKey),
      },
      {},
    );
    assert.equal(security.mode, "token+certificate");
    const server = createServer({ authenticate: security.authenticate, tls: security.tls });
    server.handle("/who/1", (_req, ctx) => String(ctx.session.principal));
    const [tlsUrl, tcpUrl] = await server.listen(...listen);
    try {
      await assert.rejects(connect(tcpUrl, { credentials: "s3cret", connectTimeoutMs: 3000 }), {
        code: "ERR_UNAUTHORIZED",
      });
      const c = await connect(tlsUrl, {
        credentials: "s3cret",
        tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey },
      });
      assert.equal(new TextDecoder().decode(await c.request("/who/1")), "token:0");
      await c.close();
      await assert.rejects(
        connect(tlsUrl, {
          credentials: "wrong",
          tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey },
          connectTimeoutMs: 3000,
        }),
        { code: "ERR_UNAUTHORIZED" },
      );
    } finally {
      await server.close();
    }
  });
});
