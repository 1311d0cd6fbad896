/**
 * Connections a server's transport refused or lost in its own handshake
 * reach the server's `reject` event and `pointsub:handshake:error` (and so
 * the metrics' handshake failures), as a failed pointsub handshake does.
 * Before, none of these were reported: a failed or timed-out TLS handshake,
 * a plaintext client at a tls:// port, a refused client certificate (tls://
 * and wss://), one over `maxPendingHandshakes`, a WebSocket upgrade refused
 * for its origin or subprotocol, and a connection that never upgraded. Nor,
 * until later, a ws:// request refused before any upgrade: plain HTTP (426),
 * a path not served (404), an upgrade `ws` found invalid (its method,
 * Sec-WebSocket-Key or -Version), a CONNECT, or bytes that are not HTTP (a
 * tcp:// client at a ws:// port).
 */
import assert from "node:assert/strict";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import http from "node:http";
import net from "node:net";
import { afterEach, describe, it } from "node:test";
import tls from "node:tls";
import { WebSocket } from "ws";
import { connect, createServer, type PointSubError, type Server, WS_SUBPROTOCOL } from "../../src/index.ts";
import { testCerts } from "../helpers/certs.ts";
import { until } from "../helpers/wait.ts";

const servers: Server[] = [];
const sockets: net.Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => s.close({ timeoutMs: 500 })));
});

interface HandshakeError {
  role: string;
  remoteUrl?: string;
  error: PointSubError;
}

/** A server listening on `scheme`, with what its `reject` event and `pointsub:handshake:error` saw. */
async function watched(scheme: string, options: object) {
  const server = createServer(options);
  servers.push(server);
  const rejects: PointSubError[] = [];
  server.on("reject", (e) => rejects.push(e));
  server.on("error", () => {});
  const published: HandshakeError[] = [];
  // This process's clients publish theirs too (role "client"): the server's only.
  const onError = (m: unknown) => {
    if ((m as HandshakeError).role === "server") published.push(m as HandshakeError);
  };
  subscribe("pointsub:handshake:error", onError);
  const [url] = await server.listen(`${scheme}://127.0.0.1:0${scheme.startsWith("ws") ? "/p" : ""}`);
  const port = Number(new URL(url).port);
  const stop = () => unsubscribe("pointsub:handshake:error", onError);
  return { server, url, port, rejects, published, stop };
}

/** A raw TCP socket to `port` (destroyed after the test). */
function raw(port: number, send?: string): net.Socket {
  const s = net.connect(port, "127.0.0.1");
  s.on("error", () => {});
  if (send !== undefined) s.write(send);
  sockets.push(s);
  return s;
}

describe("refusals in a transport's own handshake reach the server", () => {
  it("tls://: a plaintext client, a TLS handshake that times out, and one over maxPendingHandshakes", async () => {
    const c = await testCerts();
    const w = await watched("tls", {
      tls: { cert: c.serverCert, key: c.serverKey },
      handshakeTimeoutMs: 400,
      maxPendingHandshakes: 2,
    });
    try {
      raw(w.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      await until(() => w.rejects.length === 1);
      assert.equal(w.rejects[0].code, "ERR_PROTOCOL");
      assert.match(w.rejects[0].message, /plaintext to a TLS port/);
      // Two that never start their handshake, then a third over the limit: refused at once, then both time out.
      const quiet = [raw(w.port), raw(w.port)];
      await Promise.all(quiet.map((s) => new Promise((r) => s.once("connect", r))));
      await new Promise((r) => setTimeout(r, 50));
      raw(w.port);
      await until(() => w.rejects.length === 4, 5000);
      const codes = w.rejects.slice(1).map((e) => e.code);
      assert.deepEqual(codes.toSorted(), ["ERR_OVERLOADED", "ERR_TIMEOUT", "ERR_TIMEOUT"]);
      assert.match(w.rejects.find((e) => e.code === "ERR_OVERLOADED")?.message ?? "", /maxPendingHandshakes/);
      assert.equal(w.published.length, 4);
      for (const m of w.published) {
        assert.equal(m.role, "server");
        assert.match(m.remoteUrl ?? "", /^tls:\/\/127\.0\.0\.1:\d+$/);
      }
      assert.equal(w.server.sessions.size, 0);
    } finally {
      w.stop();
    }
  });

  for (const scheme of ["tls", "wss"]) {
    it(`${scheme}://: a client certificate the server does not trust is a reject with ERR_UNAUTHORIZED`, async () => {
      const c = await testCerts();
      const w = await watched(scheme, { tls: { cert: c.serverCert, key: c.serverKey, ca: c.ca, requestCert: true } });
      try {
        await assert.rejects(
          connect(w.url, { tls: { ca: c.ca, cert: c.otherClientCert, key: c.otherClientKey }, connectTimeoutMs: 5000 }),
          { code: "ERR_UNAUTHORIZED" },
        );
        await until(() => w.rejects.length === 1);
        assert.equal(w.rejects[0].code, "ERR_UNAUTHORIZED");
        assert.match(w.rejects[0].message, /unable to verify/);
        assert.equal(w.published.length, 1);
        // A TLS client that gives up in the middle of its handshake is reported too (not as the refusal above).
        const s = tls.connect({ port: w.port, host: "127.0.0.1", ca: c.otherCa, rejectUnauthorized: true });
        s.on("error", () => {});
        await until(() => w.rejects.length === 2, 5000);
        s.destroy();
        assert.equal(w.rejects[1].code, "ERR_CONNECT");
        assert.match(w.rejects[1].message, /TLS handshake of \w+:\/\/127\.0\.0\.1:\d+ failed/);
      } finally {
        w.stop();
      }
    });
  }

  it("wss://: a TLS record that does not decrypt before any upgrade is no 'request that is not HTTP'", async () => {
    // node:http reports the TLS socket's error as a clientError too: it was answered with an HTTP 400 (after
    // TLS's fatal alert) and reported as "a request that is not HTTP (…bad record mac)", ERR_PROTOCOL.
    const c = await testCerts();
    const w = await watched("wss", { tls: { cert: c.serverCert, key: c.serverKey } });
    try {
      const under = raw(w.port);
      const s = tls.connect({ socket: under, ca: c.ca, servername: "localhost" });
      s.on("error", () => {});
      // TLS 1.3: the server's session ticket comes once it has the client's Finished (its handshake is done).
      await new Promise((r) => s.once("session", r));
      s.write("GET /p HTTP/1.1\r\nHost: x\r\n");
      // An application-data record of garbage, written under TLS.
      under.write(Buffer.from([0x17, 0x03, 0x03, 0x00, 0x20, ...Buffer.alloc(32, 7)]));
      await new Promise((r) => under.once("close", r));
      // The server destroyed the socket after its clientError, where a reject would have been emitted.
      assert.deepEqual(
        w.rejects.map((r) => r.message),
        [],
      );
    } finally {
      w.stop();
    }
  });

  it("ws://: an upgrade refused for its origin or subprotocol, and a connection that never upgrades", async () => {
    const w = await watched("ws", { ws: { origins: ["https://app.example"] }, handshakeTimeoutMs: 400 });
    try {
      const statusOf = (ws: WebSocket) =>
        new Promise<number | undefined>((resolve) => {
          ws.once("unexpected-response", (_req, res) => resolve(res.statusCode));
          ws.once("open", () => resolve(undefined));
          ws.on("error", () => {});
        });
      const evil = new WebSocket(w.url, [WS_SUBPROTOCOL], { origin: "https://evil.example" });
      assert.equal(await statusOf(evil), 403);
      const bare = new WebSocket(w.url, { origin: "https://app.example" });
      assert.equal(await statusOf(bare), 400);
      raw(w.port);
      await until(() => w.rejects.length === 3, 5000);
      assert.deepEqual(
        w.rejects.map((e) => e.code),
        ["ERR_UNAUTHORIZED", "ERR_PROTOCOL", "ERR_TIMEOUT"],
      );
      assert.match(w.rejects[0].message, /pages from https:\/\/evil\.example may not connect/);
      assert.match(w.rejects[1].message, /subprotocol/);
      assert.match(w.rejects[2].message, /did not upgrade to a WebSocket within 400 ms/);
      assert.equal(w.published.length, 3);
    } finally {
      w.stop();
    }
  });

  it("ws://: a request refused before any upgrade (plain HTTP, a path not served, an invalid upgrade, not HTTP) is a reject with ERR_PROTOCOL", async () => {
    const w = await watched("ws", { handshakeTimeoutMs: 60_000 });
    try {
      const upgrade = (path: string, headers: string, method = "GET") =>
        `${method} ${path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Protocol: ${WS_SUBPROTOCOL}\r\n${headers}\r\n`;
      const key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
      const cases: [request: string, status: number, why: RegExp][] = [
        ["GET /p HTTP/1.1\r\nHost: x\r\n\r\n", 426, /plain HTTP request/],
        [upgrade("/elsewhere", `${key}Sec-WebSocket-Version: 13\r\n`), 404, /\/elsewhere/],
        [upgrade("/p", `${key}Sec-WebSocket-Version: 7\r\n`), 400, /Sec-WebSocket-Version/],
        [upgrade("/p", "Sec-WebSocket-Version: 13\r\n"), 400, /Sec-WebSocket-Key/],
        [upgrade("/p", `${key}Sec-WebSocket-Version: 13\r\n`, "POST"), 405, /method/],
        // A proxy's request (node:http closed it without a word while nobody listened for it).
        ["CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, /CONNECT/],
        // A tcp:// client at this port: its preface.
        ["PSUB\x01\x01", 400, /not HTTP/],
      ];
      for (const [i, [request, status, why]] of cases.entries()) {
        const s = raw(w.port, request);
        let answer = "";
        s.on("data", (d: Buffer) => {
          answer += d.toString("latin1");
        });
        await new Promise((r) => s.once("close", r));
        assert.match(answer, new RegExp(`^HTTP/1\\.1 ${status} `), request);
        // RFC 6455 §4.4: a version the server does not speak is answered with those it does.
        if (/Version: 7/.test(request)) assert.match(answer, /\r\nSec-WebSocket-Version: 13, 8\r\n/);
        await until(() => w.rejects.length === i + 1, 5000);
        assert.equal(w.rejects[i].code, "ERR_PROTOCOL", w.rejects[i].message);
        assert.match(w.rejects[i].message, why);
        assert.match(w.rejects[i].message, /^refused ws:\/\/127\.0\.0\.1:\d+: /);
      }
      assert.equal(w.published.length, cases.length);
    } finally {
      w.stop();
    }
  });

  it("ws:// on a shared ws.httpServer: an upgrade to a path not served is a reject naming the peer", async () => {
    // Such a request is not counted as pending (a shared server's other listeners may serve it): the
    // reject said "refused a connection", and pointsub:handshake:error had no remoteUrl.
    const web = http.createServer();
    await new Promise<void>((r) => web.listen(0, "127.0.0.1", r));
    const port = (web.address() as net.AddressInfo).port;
    const w = await watched("ws", { ws: { httpServer: web } });
    try {
      const s = raw(
        port,
        "GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ${WS_SUBPROTOCOL}\r\n\r\n`,
      );
      let from = "";
      s.once("connect", () => {
        from = `ws://127.0.0.1:${s.localPort}`;
      });
      let answer = "";
      s.on("data", (d: Buffer) => {
        answer += d.toString("latin1");
      });
      await new Promise((r) => s.once("close", r));
      assert.match(answer, /^HTTP\/1\.1 404 /);
      await until(() => w.rejects.length === 1, 5000);
      assert.equal(w.rejects[0].code, "ERR_PROTOCOL");
      assert.equal(w.rejects[0].message, `refused ${from}: an upgrade to /elsewhere, a path not served here`);
      assert.equal(w.published.length, 1);
      assert.equal(w.published[0].remoteUrl, from);
    } finally {
      w.stop();
      await w.server.close({ timeoutMs: 500 });
      await new Promise((r) => web.close(r));
    }
  });
});
