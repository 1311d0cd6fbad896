/**
 * Requests node:http answered itself on a ws:// (wss://) listener's own
 * server, unseen by the listener (attack review, session 57): an HTTP/1.1
 * request without a Host header got node:http's 400 and the server heard
 * nothing (every other refused request is a `reject`); one with an
 * `Expect` other than 100-continue got a 417 that kept the connection
 * alive, the socket held, unused, until the upgrade deadline (10 s by
 * default) and told as a timeout then. Now both are answered by the
 * listener with `Connection: close`, the socket closed, and the server
 * hears each as a refused request (ERR_PROTOCOL). Real loopback sockets.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { afterEach, describe, it } from "node:test";
import tls from "node:tls";
import { createServer, type PointSubError, type Server } from "../../src/index.ts";
import { testCerts } from "../helpers/certs.ts";
import { until } from "../helpers/wait.ts";

const servers: Server[] = [];
const sockets: net.Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => s.close({ timeoutMs: 1000 })));
});

/** A server listening on `scheme`; its refusals. The upgrade deadline is long: a socket kept till then shows. */
async function listen(scheme: "ws" | "wss") {
  const c = await testCerts();
  const server = createServer({
    handshakeTimeoutMs: 120_000,
    tls: scheme === "wss" ? { cert: c.serverCert, key: c.serverKey } : undefined,
  });
  servers.push(server);
  const rejects: PointSubError[] = [];
  server.on("reject", (err) => rejects.push(err));
  server.on("error", () => {});
  const [url] = await server.listen(`${scheme}://127.0.0.1:0/pointsub`);
  return { url: new URL(url), rejects, ca: c.ca };
}

/** Sends `request` on a new connection; resolves with what the server answered once it closed the connection. */
async function ask(url: URL, ca: string | Buffer, request: string): Promise<string> {
  const port = Number(url.port);
  const s =
    url.protocol === "wss:"
      ? tls.connect({ host: "127.0.0.1", port, ca, servername: "localhost" })
      : net.connect({ host: "127.0.0.1", port });
  sockets.push(s);
  s.on("error", () => {});
  let text = "";
  let closed = false;
  s.on("data", (d: Buffer) => {
    text += d.toString("latin1");
  });
  s.on("close", () => {
    closed = true;
  });
  s.write(request);
  // The server closes it (with the deadline two minutes away: before, the 417's socket stayed open till then).
  await until(() => closed, 30_000);
  return text;
}

for (const scheme of ["ws", "wss"] as const) {
  describe(`attack: requests node:http answered itself, on a ${scheme}:// listener`, () => {
    it("an HTTP/1.1 request without a Host header: 400, the socket closed, and a reject", async () => {
      const { url, rejects, ca } = await listen(scheme);
      const answer = await ask(url, ca, "GET /pointsub HTTP/1.1\r\n\r\n");
      assert.match(answer, /^HTTP\/1\.1 400 /);
      await until(() => rejects.length !== 0, 5_000).catch(() => {});
      assert.equal(rejects.length, 1, "the server heard of it");
      assert.equal(rejects[0].code, "ERR_PROTOCOL");
      assert.match(rejects[0].message, /Host/);
    });

    it("a request with an Expect other than 100-continue: 417, the socket closed at once, and a reject", async () => {
      const { url, rejects, ca } = await listen(scheme);
      const answer = await ask(url, ca, "GET /pointsub HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: foo\r\n\r\n");
      assert.match(answer, /^HTTP\/1\.1 417 /);
      assert.match(answer, /connection: close/i);
      await until(() => rejects.length !== 0, 5_000).catch(() => {});
      assert.equal(rejects.length, 1, "the server heard of it");
      assert.equal(rejects[0].code, "ERR_PROTOCOL");
      assert.match(rejects[0].message, /Expect/);
    });
  });
}
