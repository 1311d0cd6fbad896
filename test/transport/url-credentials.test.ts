/**
 * URLs with credentials (`user:password@`): pointsub authenticates with
 * `options.credentials` and took none from a URL, yet the URL was kept
 * whole in error messages and node names (so in logs), and over ws:// the
 * `ws` package sent them as HTTP Basic auth, in the clear. Now they are
 * refused before anything is sent, with ERR_INVALID_ARGUMENT saying why and
 * showing the URL without them (as fetch refuses such a request URL).
 */
import assert from "node:assert/strict";
import http from "node:http";
import type * as net from "node:net";
import { describe, it } from "node:test";
import {
  Client,
  connect,
  connectLp,
  connectResilient,
  createLpServer,
  createServer,
  type PointSubError,
} from "../../src/index.ts";

const SECRET = "s3cr3t-pw";

/** A refusal of a URL with credentials that does not repeat them. */
function refused(e: PointSubError): boolean {
  assert.equal(e.code, "ERR_INVALID_ARGUMENT", e.message);
  assert.equal(e.retryable, false);
  assert.match(e.message, /credentials/);
  assert.doesNotMatch(e.message, new RegExp(SECRET));
  assert.doesNotMatch(e.message, /alice/);
  return true;
}

describe("URLs with credentials", () => {
  it("ws:// sends no Authorization header: connect is refused before the upgrade request", async () => {
    const seen: (string | undefined)[] = [];
    const web = http.createServer((_req, res) => res.end());
    web.on("upgrade", (req, socket) => {
      seen.push(req.headers.authorization);
      socket.end("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    });
    await new Promise<void>((r) => web.listen(0, "127.0.0.1", r));
    const { port } = web.address() as net.AddressInfo;
    try {
      await assert.rejects(connect(`ws://alice:${SECRET}@127.0.0.1:${port}/`), refused);
      assert.deepEqual(seen, []);
    } finally {
      web.closeAllConnections();
      await new Promise((r) => web.close(r));
    }
  });

  it("tcp:// and tls:// connect, listen, connectResilient and Client.addNode refuse them, naming no secret", async () => {
    const server = createServer();
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const withCreds = url.replace("tcp://", `tcp://alice:${SECRET}@`);
    const client = new Client();
    try {
      await assert.rejects(connect(withCreds), refused);
      await assert.rejects(connect(withCreds.replace("tcp:", "tls:")), refused);
      await assert.rejects(connectResilient(withCreds, { reconnect: { initialDelayMs: 1, maxDelayMs: 5 } }), refused);
      await assert.rejects(createServer().listen(`tcp://alice:${SECRET}@127.0.0.1:0`), refused);
      assert.throws(() => client.addNode("/echo", withCreds), refused);
      assert.throws(() => client.addNode("/echo", `ws://alice:${SECRET}@127.0.0.1:1/`), refused);
      assert.deepEqual(client.nodes("/echo"), []);
      // The same URL without them works.
      const conn = await connect(url);
      assert.equal(new TextDecoder().decode(await conn.request("/echo", "hi")), "hi");
      await conn.close();
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("a URL given to the wrong kind (lp+ to pointsub, tcp:// to the lp API) is refused without showing its credentials", async () => {
    const server = createLpServer();
    try {
      await assert.rejects(connect(`lp+tcp://alice:${SECRET}@127.0.0.1:1`), refused);
      await assert.rejects(createServer().listen(`lp+tcp://alice:${SECRET}@127.0.0.1:0`), refused);
      await assert.rejects(connectLp(`tcp://alice:${SECRET}@127.0.0.1:1`), refused);
      await assert.rejects(connectLp(new URL(`ws://alice:${SECRET}@127.0.0.1:1/`)), refused);
      await assert.rejects(server.listen(`tcp://alice:${SECRET}@127.0.0.1:0`), refused);
      // Without credentials, the kind is what is wrong.
      await assert.rejects(createServer().listen("lp+tcp://127.0.0.1:0"), { code: "ERR_UNSUPPORTED_URL" });
      await assert.rejects(connectLp("tcp://127.0.0.1:1"), { code: "ERR_UNSUPPORTED_URL" });
    } finally {
      await server.close();
    }
  });
});
