/**
 * A client pipelining plain HTTP requests at a ws:// listener's own http
 * server (attack review, session 56): node:http parses a whole read before
 * it sees the socket close, and made every request of it an
 * IncomingMessage, a ServerResponse and a queued answer — 64 KiB of
 * 29-byte GETs made ~2,260 of them in one turn (~15 MB of heap, ~300 ms of
 * the turn, for one connection; without a Host header node:http answered
 * each 400 itself). The first request is served (426 or node:http's 400,
 * each with `Connection: close`); those pipelined behind it are no longer
 * made requests at all. node:http's `http.server.request.start` channel
 * counts the requests it made.
 */
import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import net from "node:net";
import { describe, it } from "node:test";
import tls from "node:tls";
import { connect, createServer } from "../../src/index.ts";
import { testCerts } from "../helpers/certs.ts";

const cases = [
  { name: "ws://, 2 requests", scheme: "ws", count: 2, host: true, status: 426 },
  { name: "ws://, 2,000 requests", scheme: "ws", count: 2000, host: true, status: 426 },
  { name: "ws://, 2,000 requests without a Host header", scheme: "ws", count: 2000, host: false, status: 400 },
  { name: "wss://, 2,000 requests", scheme: "wss", count: 2000, host: true, status: 426 },
] as const;

describe("attack: plain HTTP requests pipelined at a ws:// listener", () => {
  for (const c of cases) {
    it(`${c.name} in one write: the first is answered ${c.status}, the socket closed; none behind it becomes a request`, async () => {
      const certs = c.scheme === "wss" ? await testCerts() : undefined;
      const server = createServer(certs === undefined ? {} : { tls: { cert: certs.serverCert, key: certs.serverKey } });
      server.handle("/echo/1.0.0", (req) => req.data);
      const [url] = await server.listen(`${c.scheme}://127.0.0.1:0/pointsub`);
      let started = 0;
      const onStart = () => {
        started++;
      };
      diagnostics.subscribe("http.server.request.start", onStart);
      try {
        const port = Number(new URL(url).port);
        const s =
          certs === undefined
            ? net.connect(port, "127.0.0.1")
            : tls.connect({ port, host: "127.0.0.1", ca: certs.ca, servername: "localhost" });
        s.on("error", () => {});
        s.setEncoding("latin1");
        let text = "";
        s.on("data", (d: string) => {
          text += d;
        });
        const closed = new Promise((r) => s.once("close", r));
        await new Promise((r) => s.once(certs === undefined ? "connect" : "secureConnect", r));
        const request = `GET /pointsub HTTP/1.1\r\n${c.host ? "Host: 127.0.0.1\r\n" : ""}\r\n`;
        s.write(request.repeat(c.count));
        await closed;
        assert.match(text, new RegExp(`^HTTP/1\\.1 ${c.status} `));
        assert.equal(text.split("HTTP/1.1 ").length - 1, 1, "one answer");
        assert.ok(started <= 1, `${started} requests made by node:http`);
        // The server serves on.
        const conn = await connect(url, certs === undefined ? {} : { tls: { ca: certs.ca, servername: "localhost" } });
        assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "hi")), "hi");
        await conn.close();
      } finally {
        diagnostics.unsubscribe("http.server.request.start", onStart);
        await server.close({ timeoutMs: 1000 });
      }
    });
  }
});
