/**
 * A ws:// server that refuses the upgrade with an HTTP status: a 4xx says
 * the request is wrong (a path the server does not serve, a refused
 * origin), which trying again cannot cure — not retryable (ERR_PROTOCOL,
 * ERR_UNAUTHORIZED for 401/403) — while 408, 429 and 5xx are the server's
 * passing state and stay retryable. Before, every status but 401 and 503
 * was ERR_CONNECT (retryable): a resilient client pointed at a wrong path
 * retried for ever. A 3xx redirect, not followed, is ERR_PROTOCOL too (it
 * was ERR_CONNECT: the same URL redirected again, for ever). So is an answer
 * that does not switch to pointsub's WebSocket — a 2xx (a web page there),
 * a 101 without the pointsub.v1 subprotocol (another WebSocket service), no
 * HTTP at all (a pointsub tcp:// port), or one breaking RFC 6455 (its Sec-WebSocket-Accept, an extension not asked
 * for): they were ERR_CONNECT, retried for ever.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import http from "node:http";
import net, { type AddressInfo, type Socket } from "node:net";
import { describe, it } from "node:test";
import tls from "node:tls";
import { Client, connect, connectResilient, createServer, type PointSubError } from "../../src/index.ts";
import { testCerts } from "../helpers/certs.ts";

/** An HTTP server answering every upgrade request with the status its path names (`/404` → 404). */
async function refusingServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = http.createServer((_req, res) => {
    res.writeHead(400);
    res.end();
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("upgrade", (req, socket: Socket) => {
    const status = Number(req.url?.slice(1));
    const text = http.STATUS_CODES[status] ?? "Refused";
    const location = status >= 300 && status < 400 ? "Location: ws://127.0.0.1:1/elsewhere\r\n" : "";
    socket.end(`HTTP/1.1 ${status} ${text}\r\n${location}Connection: close\r\nContent-Length: 0\r\n\r\n`);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

describe("ws:// upgrade refused with an HTTP status", () => {
  it("3xx and 4xx (but 408 and 429) are not retryable; 408, 429 and 5xx are", async () => {
    const server = await refusingServer();
    try {
      const expected: [number, string, boolean][] = [
        // A redirect was a retryable ERR_CONNECT: the same URL redirected again, for ever.
        [301, "ERR_PROTOCOL", false],
        [307, "ERR_PROTOCOL", false],
        [400, "ERR_PROTOCOL", false],
        [401, "ERR_UNAUTHORIZED", false],
        [403, "ERR_UNAUTHORIZED", false],
        [404, "ERR_PROTOCOL", false],
        [410, "ERR_PROTOCOL", false],
        [408, "ERR_CONNECT", true],
        [429, "ERR_CONNECT", true],
        [500, "ERR_CONNECT", true],
        [502, "ERR_CONNECT", true],
        [503, "ERR_OVERLOADED", true],
      ];
      for (const [status, code, retryable] of expected) {
        await assert.rejects(connect(`ws://127.0.0.1:${server.port}/${status}`), (e: PointSubError) => {
          assert.equal(e.code, code, `HTTP ${status}: ${e.message}`);
          assert.equal(e.retryable, retryable, `HTTP ${status}`);
          assert.match(e.message, new RegExp(`HTTP ${status}\\b`));
          if (status < 400) assert.match(e.message, /redirected to "ws:\/\/127\.0\.0\.1:1\/elsewhere"/);
          return true;
        });
      }
    } finally {
      await server.close();
    }
  });

  it("a pointsub server's 404 for a path it does not serve: ERR_PROTOCOL: a resilient client gives up, a Client fails over", async () => {
    const server = createServer();
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const wrong = url.replace(/\/pointsub$/, "/elsewhere");
    assert.notEqual(wrong, url);
    try {
      await assert.rejects(connect(wrong), (e: PointSubError) => {
        assert.equal(e.code, "ERR_PROTOCOL", e.message);
        assert.equal(e.retryable, false);
        assert.match(e.suggestion, /path/);
        return true;
      });
      // Before, it retried for ever (the test's timeout ended it).
      await assert.rejects(
        connectResilient(wrong, { reconnect: { initialDelayMs: 1, maxDelayMs: 5 } }),
        (e: PointSubError) => e.code === "ERR_PROTOCOL",
      );
      // A Client goes on to the next node (the call was never sent), as it did while this was ERR_CONNECT.
      const client = new Client();
      try {
        client.addNode("/echo", wrong).addNode("/echo", url);
        assert.equal(new TextDecoder().decode(await client.requestClosest("/echo", "hi")), "hi");
      } finally {
        await client.close();
      }
    } finally {
      await server.close();
    }
  });

  it("an answer that does not switch to pointsub's WebSocket (2xx, a 101 without pointsub.v1 or against RFC 6455, no HTTP) is ERR_PROTOCOL", async () => {
    const answers: Record<string, (accept: string) => string> = {
      "a 200 page": () => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
      "no HTTP (a pointsub tcp:// port's preface)": () => "PSUB\x01\x01",
      "no subprotocol": (a) => `${SWITCH}Sec-WebSocket-Accept: ${a}\r\n\r\n`,
      "another subprotocol": (a) => `${SWITCH}Sec-WebSocket-Accept: ${a}\r\nSec-WebSocket-Protocol: chat\r\n\r\n`,
      "a wrong Sec-WebSocket-Accept": (a) =>
        `${SWITCH}Sec-WebSocket-Accept: x${a.slice(1)}\r\nSec-WebSocket-Protocol: pointsub.v1\r\n\r\n`,
      "an extension not asked for": (a) =>
        `${SWITCH}Sec-WebSocket-Accept: ${a}\r\nSec-WebSocket-Protocol: pointsub.v1\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n`,
    };
    const sockets = new Set<Socket>();
    let answer = answers["a 200 page"];
    const server = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      let request = "";
      s.on("data", (c: Buffer) => {
        request += c.toString("latin1");
        const key = /sec-websocket-key: *(\S+)/i.exec(request);
        if (!request.includes("\r\n\r\n") || key === null) return;
        s.write(answer(createHash("sha1").update(`${key[1]}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64")));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    try {
      for (const [what, make] of Object.entries(answers)) {
        answer = make;
        await assert.rejects(connect(url), (e: PointSubError) => {
          assert.equal(e.code, "ERR_PROTOCOL", `${what}: ${e.message}`);
          assert.equal(e.retryable, false, what);
          return true;
        });
      }
      // Before, ERR_CONNECT: a resilient client asked again for ever (the test's timeout ended it).
      await assert.rejects(
        connectResilient(url, { reconnect: { initialDelayMs: 1, maxDelayMs: 5 } }),
        (e: PointSubError) => e.code === "ERR_PROTOCOL",
      );
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });
  it("an HTTP answer Node's strict parser refuses (a proxy's 502/503 with bare LF line ends, headers over its limit) stays retryable, over ws:// and wss://", async () => {
    // A load balancer's error page while its backend restarts: HTTP, though not as strict as Node's parser
    // takes it. Only an answer that does not start as HTTP says no HTTP server is there (ERR_PROTOCOL).
    const answers: Record<string, [answer: string, code: string]> = {
      "a 503 with bare LF line ends": ["HTTP/1.1 503 Service Unavailable\nContent-Length: 0\n\n", "ERR_CONNECT"],
      "a 502 with a bare LF after a header": ["HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\n\r\n", "ERR_CONNECT"],
      "a 502 with headers over Node's limit": [
        `HTTP/1.1 502 Bad Gateway\r\nSet-Cookie: ${"a".repeat(20_000)}\r\nContent-Length: 0\r\n\r\n`,
        "ERR_CONNECT",
      ],
      "no HTTP (a pointsub tcp:// port's preface)": ["PSUB\x01\x01", "ERR_PROTOCOL"],
    };
    const c = await testCerts();
    let answer = "";
    const sockets = new Set<Socket>();
    const onSocket = (s: Socket) => {
      sockets.add(s);
      s.on("error", () => {});
      let request = "";
      s.on("data", (d: Buffer) => {
        request += d.toString("latin1");
        if (request.includes("\r\n\r\n")) s.end(answer);
      });
    };
    const plain = net.createServer(onSocket);
    // A TLS-terminating proxy in front of a wss:// service.
    const terminating = tls.createServer({ cert: c.serverCert, key: c.serverKey }, onSocket);
    for (const srv of [plain, terminating]) await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const urls = [
      `ws://127.0.0.1:${(plain.address() as AddressInfo).port}/`,
      `wss://127.0.0.1:${(terminating.address() as AddressInfo).port}/`,
    ];
    try {
      for (const url of urls) {
        for (const [what, [text, code]] of Object.entries(answers)) {
          answer = text;
          await assert.rejects(connect(url, { tls: { ca: c.ca } }), (e: PointSubError) => {
            assert.equal(e.code, code, `${url} ${what}: ${e.message}`);
            assert.equal(e.retryable, code === "ERR_CONNECT", `${url} ${what}`);
            return true;
          });
        }
      }
    } finally {
      for (const s of sockets) s.destroy();
      for (const srv of [plain, terminating]) await new Promise((r) => srv.close(r));
    }
  });
});

const SWITCH = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
