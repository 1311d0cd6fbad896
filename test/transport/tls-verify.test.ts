import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import tls from "node:tls";
import { connect, connectResilient, createServer, PointSubError } from "../../src/index.ts";
import { rotatedServerCert, testCerts } from "../helpers/certs.ts";

describe("TLS verification", () => {
  it("the client verifies the server: right CA connects, another CA or none is refused", async () => {
    const c = await testCerts();
    const server = createServer({ tls: { cert: c.serverCert, key: c.serverKey } });
    server.handle("/who/1.0.0", () => "server");
    const [url] = await server.listen("tls://127.0.0.1:0");
    const ok = await connect(url, { tls: { ca: c.ca } });
    assert.equal(new TextDecoder().decode(await ok.request("/who/1.0.0")), "server");
    await ok.close();
    await assert.rejects(connect(url, { tls: { ca: c.otherCa } }), { code: "ERR_UNAUTHORIZED" });
    await assert.rejects(connect(url), { code: "ERR_UNAUTHORIZED" });
    // By host name too: the certificate names localhost.
    const byName = await connect(url.replace("127.0.0.1", "localhost"), { tls: { ca: c.ca } });
    await byName.close();
    await server.close();
  });

  for (const scheme of ["tls", "wss"]) {
    it(`a server certificate this side refuses over ${scheme}:// (another CA's, no CA given, another name) is ERR_UNAUTHORIZED, not retried (before: ERR_CONNECT, a reconnecting client tried again for ever)`, async () => {
      const c = await testCerts();
      const server = createServer({ tls: { cert: c.serverCert, key: c.serverKey } });
      const [url] = await server.listen(`${scheme}://127.0.0.1:0`);
      try {
        for (const [tlsOptions, why] of [
          [{ ca: c.otherCa }, /unable to verify the first certificate/],
          [{}, /unable to verify the first certificate/],
          [{ ca: c.ca, servername: "example.com" }, /Host: example\.com\. is not in the cert's altnames/],
        ] as const) {
          await assert.rejects(connect(url, { tls: tlsOptions, connectTimeoutMs: 5000 }), (e: PointSubError) => {
            assert.equal(e.code, "ERR_UNAUTHORIZED", String(e));
            assert.equal(e.retryable, false);
            assert.match(e.message, /certificate is not trusted here: /);
            assert.match(e.message, why);
            assert.match(e.suggestion, /tls\.ca/);
            return true;
          });
        }
        // A reconnecting client gives up at once (it stops on an error that is not retryable).
        await assert.rejects(
          connectResilient(url, {
            tls: { ca: c.otherCa },
            reconnect: { initialDelayMs: 10, maxDelayMs: 50, maxAttempts: Number.POSITIVE_INFINITY },
            signal: AbortSignal.timeout(20_000),
          }),
          { code: "ERR_UNAUTHORIZED" },
        );
      } finally {
        await server.close();
      }
    });
  }

  for (const scheme of ["tls", "wss"]) {
    it(`a resilient client over ${scheme}:// reconnects through a restart whose certificate of the same CA is not valid yet on this side's clock (before: ERR_UNAUTHORIZED, it gave up)`, async () => {
      const c = await testCerts();
      const first = createServer({ tls: { cert: c.serverCert, key: c.serverKey } });
      first.handle("/who/1.0.0", () => "first");
      const [url] = await first.listen(`${scheme}://127.0.0.1:0`);
      const client = await connectResilient(url, {
        tls: { ca: c.ca },
        connectTimeoutMs: 5000,
        reconnect: { initialDelayMs: 50, maxDelayMs: 200, maxAttempts: Number.POSITIVE_INFINITY },
      });
      const failures: PointSubError[] = [];
      client.on("attemptFailed", (_n, e) => failures.push(e));
      let second: ReturnType<typeof createServer> | undefined;
      try {
        assert.equal(new TextDecoder().decode(await client.request("/who/1.0.0")), "first");
        // The restart rotates to a certificate just issued by the same CA: valid in 2 s by this side's clock
        // (a client whose clock is behind the CA's; X.509 times count whole seconds).
        await first.close();
        const rotated = await rotatedServerCert(new Date(Date.now() + 2000));
        second = createServer({ tls: { cert: rotated.cert, key: rotated.key } });
        second.handle("/who/1.0.0", () => "second");
        await second.listen(url);
        // Answered by the restarted server once its certificate is valid here: no attempt was given up on.
        assert.equal(
          new TextDecoder().decode(await client.request("/who/1.0.0", undefined, { timeoutMs: 20_000 })),
          "second",
        );
        const early = failures.find((e) => /not valid yet/.test(e.message));
        assert.ok(early !== undefined, failures.map(String).join("\n"));
        assert.equal(early.code, "ERR_CONNECT");
        assert.equal(early.retryable, true);
        assert.match(early.message, /certificate is not valid yet/);
      } finally {
        await client.close();
        await first.close();
        await second?.close();
      }
    });
  }

  it("a TLS server for other application protocols (ALPN without pointsub/1: an HTTPS or HTTP/2 port) is ERR_PROTOCOL, not retried, said plainly (before: ERR_CONNECT with OpenSSL's text, retried for ever)", async () => {
    const c = await testCerts();
    const other = tls.createServer({ cert: c.serverCert, key: c.serverKey, ALPNProtocols: ["h2", "http/1.1"] }, (s) =>
      s.destroy(),
    );
    other.on("tlsClientError", () => {});
    await new Promise<void>((r) => other.listen(0, "127.0.0.1", r));
    const url = `tls://127.0.0.1:${(other.address() as net.AddressInfo).port}`;
    try {
      await assert.rejects(connect(url, { tls: { ca: c.ca }, connectTimeoutMs: 5000 }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_PROTOCOL", String(e));
        assert.equal(e.retryable, false);
        assert.equal(
          e.message,
          `${url} does not speak pointsub: its TLS server refused the application protocol pointsub/1 (ALPN)`,
        );
        return true;
      });
      await assert.rejects(
        connectResilient(url, {
          tls: { ca: c.ca },
          reconnect: { initialDelayMs: 10, maxDelayMs: 50, maxAttempts: Number.POSITIVE_INFINITY },
          signal: AbortSignal.timeout(20_000),
        }),
        { code: "ERR_PROTOCOL" },
      );
    } finally {
      await new Promise<void>((r) => other.close(() => r()));
    }
  });

  it("a TLS 1.2 front requiring client certificates (its answer to none: a handshake failure alert) is ERR_UNAUTHORIZED, as TLS 1.3's certificate-required alert (before: ERR_CONNECT with OpenSSL's text, retried for ever)", async () => {
    const c = await testCerts();
    const front = tls.createServer(
      {
        cert: c.serverCert,
        key: c.serverKey,
        ca: c.ca,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: "TLSv1.2",
        maxVersion: "TLSv1.2",
      },
      (s) => s.destroy(),
    );
    front.on("tlsClientError", () => {});
    await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
    const frontUrl = `tls://127.0.0.1:${(front.address() as net.AddressInfo).port}`;
    try {
      await assert.rejects(connect(frontUrl, { tls: { ca: c.ca }, connectTimeoutMs: 5000 }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_UNAUTHORIZED", String(e));
        assert.equal(e.retryable, false);
        assert.equal(e.message, `${frontUrl} requires a client certificate (mutual TLS)`);
        return true;
      });
      // A server that fails the handshake without asking for a certificate (a handshake failure alert in
      // answer to the ClientHello: no version or cipher in common) is not taken for one.
      const bare = net.createServer((s) => {
        s.on("error", () => {});
        s.once("data", () => s.end(Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])));
      });
      await new Promise<void>((r) => bare.listen(0, "127.0.0.1", r));
      try {
        const bareUrl = `tls://127.0.0.1:${(bare.address() as net.AddressInfo).port}`;
        await assert.rejects(connect(bareUrl, { tls: { ca: c.ca }, connectTimeoutMs: 5000 }), (e: PointSubError) => {
          assert.equal(e.code, "ERR_CONNECT", String(e));
          assert.match((e.cause as { code?: string }).code ?? "", /HANDSHAKE_FAILURE/);
          return true;
        });
      } finally {
        await new Promise<void>((r) => bare.close(() => r()));
      }
    } finally {
      await new Promise<void>((r) => front.close(() => r()));
    }
  });

  it("mutual TLS: the server refuses clients without a certificate from its CA", async () => {
    const c = await testCerts();
    const server = createServer({ tls: { cert: c.serverCert, key: c.serverKey, ca: c.ca, requestCert: true } });
    server.handle("/who/1.0.0", () => "hello, verified client");
    const [url] = await server.listen("tls://127.0.0.1:0");
    const good = await connect(url, { tls: { ca: c.ca, cert: c.clientCert, key: c.clientKey } });
    assert.equal(new TextDecoder().decode(await good.request("/who/1.0.0")), "hello, verified client");
    await good.close();
    // Without a client certificate the server ends the TLS session; the client
    // sees the connect or the handshake fail, never a working connection.
    // It says why (before: ERR_CONNECTION_CLOSED "connection … closed", the alert only in its cause).
    await assert.rejects(
      (async () => {
        const conn = await connect(url, { tls: { ca: c.ca }, connectTimeoutMs: 3000 });
        await conn.request("/who/1.0.0");
      })(),
      (e: PointSubError) => {
        assert.equal(e.code, "ERR_UNAUTHORIZED");
        assert.match(e.message, /requires a client certificate/);
        return true;
      },
    );
    assert.equal(server.sessions.size, 0);
    // A key that is not the certificate's (before: "cannot connect to …" and nothing more).
    await assert.rejects(connect(url, { tls: { ca: c.ca, cert: c.clientCert, key: c.serverKey } }), {
      code: "ERR_INVALID_ARGUMENT",
      message: "the TLS key does not match the certificate",
    });
    await server.close();
  });

  it("a TLS front requiring client certificates (its alert comes after the client's handshake, before any byte) is ERR_UNAUTHORIZED, not ERR_CONNECT (retried for ever)", async () => {
    const c = await testCerts();
    const server = createServer();
    server.handle("/who/1.0.0", () => "behind the front");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // stunnel or nginx with ssl_verify_client on, in front of a tcp:// listener.
    const front = tls.createServer(
      { cert: c.serverCert, key: c.serverKey, ca: c.ca, requestCert: true, rejectUnauthorized: true },
      (s) => {
        const up = net.connect({ host: "127.0.0.1", port: Number(new URL(url).port) });
        s.on("error", () => {});
        up.on("error", () => {});
        s.pipe(up).pipe(s);
      },
    );
    front.on("tlsClientError", () => {});
    await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
    const frontUrl = `tls://127.0.0.1:${(front.address() as net.AddressInfo).port}`;
    try {
      const good = await connect(frontUrl, { tls: { ca: c.ca, cert: c.clientCert, key: c.clientKey } });
      assert.equal(new TextDecoder().decode(await good.request("/who/1.0.0")), "behind the front");
      await good.close();
      await assert.rejects(connect(frontUrl, { tls: { ca: c.ca }, connectTimeoutMs: 3000 }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_UNAUTHORIZED", String(e));
        assert.equal(e.retryable, false);
        assert.match(e.message, /requires a client certificate/);
        return true;
      });
      // A certificate of another CA: node:tls closes after the handshake without an alert, as a server closing
      // does (retryable); the error says that the server asked for a client certificate.
      await assert.rejects(
        (async () => {
          const conn = await connect(frontUrl, {
            tls: { ca: c.ca, cert: c.otherClientCert, key: c.otherClientKey },
            connectTimeoutMs: 5000,
          });
          await conn.request("/who/1.0.0");
        })(),
        (e: PointSubError) => {
          assert.equal(e.code, "ERR_CONNECT", String(e));
          assert.match(e.message, /closed before any byte .*it asked for a client certificate/);
          return true;
        },
      );
    } finally {
      await new Promise<void>((r) => front.close(() => r()));
      await server.close();
    }
  });

  for (const scheme of ["tls", "wss"]) {
    it(`mutual TLS over ${scheme}://: a client certificate of another CA is refused with ERR_UNAUTHORIZED saying why (before: ${scheme === "tls" ? "ERR_CONNECTION_CLOSED, no reason" : "ERR_CONNECT socket hang up"})`, async () => {
      const c = await testCerts();
      const server = createServer({ tls: { cert: c.serverCert, key: c.serverKey, ca: c.ca, requestCert: true } });
      let served = 0;
      server.handle("/who/1.0.0", () => {
        served++;
        return "hello";
      });
      const [url] = await server.listen(`${scheme}://127.0.0.1:0`);
      try {
        // Same CN as the trusted client's: only the CA differs.
        await assert.rejects(
          (async () => {
            const conn = await connect(url, {
              tls: { ca: c.ca, cert: c.otherClientCert, key: c.otherClientKey },
              connectTimeoutMs: 5000,
            });
            await conn.request("/who/1.0.0");
          })(),
          (e: PointSubError) => {
            assert.equal(e.code, "ERR_UNAUTHORIZED", String(e));
            assert.match(e.message, /refused the client certificate \(unable to verify leaf signature\)/);
            return true;
          },
        );
        assert.equal(served, 0);
        assert.equal(server.sessions.size, 0);
        // The trusted client is still served.
        const good = await connect(url, { tls: { ca: c.ca, cert: c.clientCert, key: c.clientKey } });
        assert.equal(new TextDecoder().decode(await good.request("/who/1.0.0")), "hello");
        await good.close();
      } finally {
        await server.close();
      }
    });
  }

  for (const scheme of ["tls", "wss"]) {
    it(`a server's tls.rejectUnauthorized: false over ${scheme}:// admits a certificate of another CA, marked authorized: false`, async () => {
      const c = await testCerts();
      const server = createServer({
        tls: { cert: c.serverCert, key: c.serverKey, ca: c.ca, requestCert: true, rejectUnauthorized: false },
      });
      server.handle("/who/1.0.0", (_req, ctx) => {
        const cert = ctx.session.peerCertificate;
        return JSON.stringify({ cn: cert?.subject.CN ?? null, authorized: cert?.authorized ?? null });
      });
      const [url] = await server.listen(`${scheme}://127.0.0.1:0`);
      try {
        const who = async (tls: { ca: string; cert?: string; key?: string }) => {
          const conn = await connect(url, { tls, connectTimeoutMs: 5000 });
          try {
            return JSON.parse(new TextDecoder().decode(await conn.request("/who/1.0.0")));
          } finally {
            await conn.close();
          }
        };
        // The application decides: the session is open and says the certificate did not verify.
        assert.deepEqual(await who({ ca: c.ca, cert: c.otherClientCert, key: c.otherClientKey }), {
          cn: "pointsub test client",
          authorized: false,
        });
        assert.deepEqual(await who({ ca: c.ca, cert: c.clientCert, key: c.clientKey }), {
          cn: "pointsub test client",
          authorized: true,
        });
        assert.deepEqual(await who({ ca: c.ca }), { cn: null, authorized: null });
      } finally {
        await server.close();
      }
    });
  }

  it("a plaintext client at a tls:// or wss:// port is told to use TLS, as a non-retryable ERR_PROTOCOL (before: ERR_CONNECTION_CLOSED, ERR_CONNECT socket hang up; then a retryable ERR_CONNECT)", async () => {
    const c = await testCerts();
    const server = createServer({ tls: { cert: c.serverCert, key: c.serverKey } });
    server.handle("/who/1.0.0", () => "server");
    try {
      const [tlsUrl, wssUrl] = await server.listen("tls://127.0.0.1:0", "wss://127.0.0.1:0");
      await assert.rejects(connect(tlsUrl.replace("tls:", "tcp:"), { connectTimeoutMs: 5000 }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_PROTOCOL", String(e));
        assert.equal(e.retryable, false);
        assert.match(e.message, /this port speaks TLS: connect with tls:\/\//);
        return true;
      });
      // A reconnecting client gives up at once: no retry of that URL can succeed.
      const resilient = connectResilient(tlsUrl.replace("tls:", "tcp:"), {
        reconnect: { initialDelayMs: 10, maxDelayMs: 50, maxAttempts: Number.POSITIVE_INFINITY },
        signal: AbortSignal.timeout(20_000),
      });
      await assert.rejects(resilient, (e: PointSubError) => {
        assert.equal(e.code, "ERR_PROTOCOL", String(e));
        return true;
      });
      // HTTP 400 to the upgrade: the request is wrong, not retryable (ws-upgrade-refused.test.ts).
      await assert.rejects(connect(wssUrl.replace("wss:", "ws:"), { connectTimeoutMs: 5000 }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_PROTOCOL", String(e));
        assert.match(e.message, /HTTP 400 pointsub: this port speaks TLS: connect with wss:\/\//);
        return true;
      });
      assert.equal(server.sessions.size, 0);
      // TLS clients are still served.
      for (const url of [tlsUrl, wssUrl]) {
        const ok = await connect(url, { tls: { ca: c.ca } });
        assert.equal(new TextDecoder().decode(await ok.request("/who/1.0.0")), "server");
        await ok.close();
      }
    } finally {
      await server.close();
    }
  });

  it("tls:// to a plaintext port says so (before: OpenSSL's text, its source file and line)", async () => {
    const plain = createServer();
    const [url] = await plain.listen("tcp://127.0.0.1:0");
    try {
      await assert.rejects(connect(url.replace("tcp:", "tls:"), { connectTimeoutMs: 3000 }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_CONNECT");
        assert.match(e.message, /does not speak TLS \(a plaintext port\?\)$/);
        return true;
      });
    } finally {
      await plain.close();
    }
  });

  it("wss:// says the same as tls:// (before: ERR_CONNECT with OpenSSL's text, its source file and line)", async () => {
    const c = await testCerts();
    const server = createServer({ tls: { cert: c.serverCert, key: c.serverKey, ca: c.ca, requestCert: true } });
    server.handle("/who/1.0.0", () => "hello, verified client");
    const [url] = await server.listen("wss://127.0.0.1:0");
    const plain = createServer();
    const [plainUrl] = await plain.listen("ws://127.0.0.1:0");
    try {
      const good = await connect(url, { tls: { ca: c.ca, cert: c.clientCert, key: c.clientKey } });
      assert.equal(new TextDecoder().decode(await good.request("/who/1.0.0")), "hello, verified client");
      await good.close();
      await assert.rejects(connect(url, { tls: { ca: c.ca }, connectTimeoutMs: 3000 }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_UNAUTHORIZED");
        assert.match(e.message, /requires a client certificate \(mutual TLS\)$/);
        return true;
      });
      await assert.rejects(connect(url, { tls: { ca: c.ca, cert: c.clientCert, key: c.serverKey } }), {
        code: "ERR_INVALID_ARGUMENT",
        message: "the TLS key does not match the certificate",
      });
      await assert.rejects(connect(plainUrl.replace("ws:", "wss:"), { connectTimeoutMs: 3000 }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_CONNECT");
        assert.match(e.message, /does not speak TLS \(a plaintext port\?\)$/);
        return true;
      });
      assert.equal(server.sessions.size, 0);
    } finally {
      await plain.close();
      await server.close();
    }
  });

  it("listening on tls:// without a certificate, or with garbage, is a clear typed error", async () => {
    await assert.rejects(createServer().listen("tls://127.0.0.1:0"), { code: "ERR_INVALID_ARGUMENT" });
    const bad = createServer({ tls: { cert: "not a certificate", key: "not a key" } });
    await assert.rejects(bad.listen("tls://127.0.0.1:0"), { code: "ERR_INVALID_ARGUMENT" });
    await assert.rejects(
      connect("tls://127.0.0.1:1", { tls: { ca: "not a CA" } }),
      (e: unknown) => e instanceof PointSubError,
    );
  });

  it("listening with a key that is not the certificate's says so, as connect does (before: OpenSSL's 'error:05800074:x509 certificate routines::key values mismatch')", async () => {
    const c = await testCerts();
    const server = createServer({ tls: { cert: c.serverCert, key: c.clientKey } });
    try {
      for (const scheme of ["tls", "wss"]) {
        await assert.rejects(server.listen(`${scheme}://127.0.0.1:0`), {
          code: "ERR_INVALID_ARGUMENT",
          message: "the TLS key does not match the certificate",
        });
      }
    } finally {
      await server.close();
    }
  });
});
