/**
 * Connections a server's transport refused or lost in its own handshake
 * reach the server's `reject` event and `pointsub:handshake:error` (and so
 * the metrics' handshake failures), as a failed pointsub handshake does.
 * Before, none of these were reported: a failed or timed-out TLS handshake,
 * a plaintext client at a tls:// port, a refused client certificate (tls://
 * and wss://), one over `maxPendingHandshakes`, a WebSocket upgrade refused
 * for its origin or subprotocol, and a connection that never upgraded.
 */
import assert from "node:assert/strict";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
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
});
