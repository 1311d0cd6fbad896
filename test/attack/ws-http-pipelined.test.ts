/**
 * A client pipelining plain HTTP requests at a ws:// listener's own http
 * server (attack review, session 56): node:http parses a whole read before
 * it sees the socket close, and made every request of it an
 * IncomingMessage, a ServerResponse and a queued answer — 64 KiB of
 * 29-byte GETs made ~2,260 of them in one turn (~15 MB of heap, ~300 ms of
 * the turn, for one connection; without a Host header node:http answered
 * each 400 itself). The first request is served (426, or 400 without Host,
 * each with `Connection: close`); those pipelined behind it are no longer
 * made requests at all. node:http's `http.server.request.start` channel
 * counts the requests it made. Second review: the requests skipped were
 * still each parsed into an IncomingMessage, every one of every read until
 * the socket closed (~5,600 for 1 MiB written); the parser now stops at
 * the first skipped one of a read.
 */
import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import http from "node:http";
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

/**
 * Counts the messages node:http's parser makes an IncomingMessage of (each
 * gets its header lines), whether served or not, while `body` runs.
 */
async function messagesMade(body: () => Promise<void>): Promise<number> {
  const proto = http.IncomingMessage.prototype as unknown as { _addHeaderLines: (...a: unknown[]) => unknown };
  const original = proto._addHeaderLines;
  let made = 0;
  proto._addHeaderLines = function (this: unknown, ...a: unknown[]) {
    made++;
    return original.apply(this, a);
  };
  try {
    await body();
  } finally {
    proto._addHeaderLines = original;
  }
  return made;
}

describe("attack: plain HTTP requests pipelined at a ws:// listener", () => {
  for (const scheme of ["ws", "wss"] as const) {
    it(`${scheme}://, 1 MiB of them in one write: at most one skipped request is parsed per read, not every request of each read until the close`, async () => {
      const certs = scheme === "wss" ? await testCerts() : undefined;
      const server = createServer(certs === undefined ? {} : { tls: { cert: certs.serverCert, key: certs.serverKey } });
      const [url] = await server.listen(`${scheme}://127.0.0.1:0/pointsub`);
      try {
        const port = Number(new URL(url).port);
        const request = "GET /pointsub HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        const count = Math.ceil((1024 * 1024) / request.length);
        let text = "";
        const made = await messagesMade(async () => {
          const s =
            certs === undefined
              ? net.connect(port, "127.0.0.1")
              : tls.connect({ port, host: "127.0.0.1", ca: certs.ca, servername: "localhost" });
          s.on("error", () => {});
          s.setEncoding("latin1");
          s.on("data", (d: string) => {
            text += d;
          });
          const closed = new Promise((r) => s.once("close", r));
          await new Promise((r) => s.once(certs === undefined ? "connect" : "secureConnect", r));
          s.write(request.repeat(count));
          await closed;
        });
        assert.match(text, /^HTTP\/1\.1 426 /);
        // A read is at most 64 KiB (16 KiB records on wss://): 1 MiB is at least 16 of them. Before, each
        // request of every read until the socket closed was parsed into an IncomingMessage (~5,600 on ws://).
        assert.ok(made <= 100, `${made} of ${count} pipelined requests parsed into an IncomingMessage`);
      } finally {
        await server.close({ timeoutMs: 1000 });
      }
    });
  }

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
