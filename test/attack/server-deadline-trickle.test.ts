/**
 * The server-side deadlines made to act after the turn's I/O (so a stall of
 * the server's process does not cut a peer whose bytes came in time) must
 * still cut a hostile peer when the server is not stalled: a tls:// or
 * wss:// client that stops halfway through its ClientHello or trickles it,
 * a wss:// client whose TLS is done and which trickles its upgrade request,
 * a ws:// one that trickles its request, a byte every millisecond (each of
 * the server's turns reads bytes: the one turn more it earns must not
 * repeat), many at once. Each is closed before it could finish, the
 * pending count returns to 0, and no socket is left open. Real loopback
 * sockets; the trickle outlasts the deadline many times over.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { before, describe, it } from "node:test";
import tls from "node:tls";
import { createServer } from "../../src/index.ts";
import { type TestCerts, testCerts } from "../helpers/certs.ts";
import { captureClientHello } from "../helpers/client-hello.ts";
import { until } from "../helpers/wait.ts";

const UPGRADE =
  "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: pointsub.v1\r\n" +
  `X-Pad: ${"p".repeat(2000)}\r\n\r\n`;

let certs: TestCerts;
let clientHello: Buffer;

before(async () => {
  certs = await testCerts();
  clientHello = await captureClientHello();
});

/** Open sockets of this process (TCP and TLS wraps). */
function sockets(): number {
  return process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap" || r === "TLSWrap").length;
}

/**
 * Writes `bytes` one at a time, a byte each `everyMs` (0: each turn) on `s`; resolves with how many were left
 * unsent when `s` closed (0 if it sent them all and the server did not close it within a generous wait).
 */
function trickle(s: net.Socket | tls.TLSSocket, bytes: Buffer, everyMs: number): Promise<number> {
  return new Promise((resolve) => {
    let at = 0;
    const timer = setInterval(() => {
      if (s.destroyed) return;
      if (at < bytes.length) s.write(bytes.subarray(at, ++at));
    }, everyMs);
    const giveUp = setTimeout(() => s.destroy(), 10_000);
    s.once("close", () => {
      clearInterval(timer);
      clearTimeout(giveUp);
      resolve(bytes.length - at);
    });
  });
}

function connectRaw(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1");
    s.on("error", () => {});
    s.resume();
    s.once("connect", () => resolve(s));
    s.once("close", () => reject(new Error("closed before connecting")));
  });
}

function connectTls(port: number): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: "127.0.0.1", port, ca: certs.ca as string, servername: "localhost" });
    s.on("error", () => {});
    s.resume();
    s.once("secureConnect", () => resolve(s));
    s.once("close", () => reject(new Error("closed before its handshake")));
  });
}

const pendingOf = (server: unknown) => (server as { pending: number }).pending;
const baseline = { sockets: 0 };

describe("server deadlines against trickling peers (no stall of the server)", () => {
  const N = 20;
  const cases: { name: string; scheme: "tls" | "wss" | "ws"; attack(port: number): Promise<number> }[] = [
    {
      name: "tls://: half a ClientHello, then nothing",
      scheme: "tls",
      attack: async (port) => {
        const s = await connectRaw(port);
        s.write(clientHello.subarray(0, clientHello.length >> 1));
        // Nothing more: "left" is the other half, still unsent when the server closed it.
        return trickle(s, clientHello.subarray(clientHello.length >> 1), 3_600_000);
      },
    },
    {
      name: "tls://: a ClientHello a byte each 4 ms",
      scheme: "tls",
      attack: async (port) => trickle(await connectRaw(port), clientHello, 4),
    },
    {
      name: "wss://: a ClientHello a byte each 4 ms",
      scheme: "wss",
      attack: async (port) => trickle(await connectRaw(port), clientHello, 4),
    },
    {
      name: "wss://: TLS done, the upgrade request a byte each millisecond",
      scheme: "wss",
      attack: async (port) => trickle(await connectTls(port), Buffer.from(UPGRADE), 1),
    },
    {
      name: "ws://: the upgrade request a byte each millisecond",
      scheme: "ws",
      attack: async (port) => trickle(await connectRaw(port), Buffer.from(UPGRADE), 1),
    },
    {
      name: "ws://: the upgrade request a byte each 100 ms",
      scheme: "ws",
      attack: async (port) => trickle(await connectRaw(port), Buffer.from(UPGRADE), 100),
    },
  ];
  for (const c of cases) {
    it(`${c.name}: ${N} such clients are each cut before finishing, pending returns to 0, no socket left open`, async () => {
      baseline.sockets = sockets();
      const server = createServer({
        handshakeTimeoutMs: 300,
        maxPendingHandshakes: 1000,
        ws: { maxPendingUpgrades: 1000 },
        tls: { cert: certs.serverCert, key: certs.serverKey },
      });
      const [url] = await server.listen(`${c.scheme}://127.0.0.1:0/`);
      const port = Number(new URL(url).port);
      try {
        const left = await Promise.all(Array.from({ length: N }, () => c.attack(port)));
        for (const l of left) assert.ok(l > 0, "a trickling client was not cut before it finished");
        await until(() => pendingOf(server) === 0);
        assert.equal(pendingOf(server), 0);
      } finally {
        await server.close({ timeoutMs: 100 });
      }
      await until(() => sockets() <= baseline.sockets);
      assert.ok(sockets() <= baseline.sockets, `sockets left open: ${sockets()} > ${baseline.sockets}`);
    });
  }
});

describe("server close against trickling peers", () => {
  for (const scheme of ["tls", "wss", "ws"] as const) {
    it(`${scheme}://: close({ timeoutMs: 200 }) while clients trickle their handshake resolves, and closes them`, async () => {
      const before = sockets();
      const server = createServer({
        handshakeTimeoutMs: 30_000,
        tls: { cert: certs.serverCert, key: certs.serverKey },
      });
      const [url] = await server.listen(`${scheme}://127.0.0.1:0/`);
      const port = Number(new URL(url).port);
      const bytes = scheme === "ws" ? Buffer.from(UPGRADE) : clientHello;
      const socks = await Promise.all(Array.from({ length: 10 }, () => connectRaw(port)));
      const lefts = Promise.all(socks.map((s) => trickle(s, bytes, 5)));
      await until(() => pendingOf(server) === 10);
      let guard: ReturnType<typeof setTimeout> | undefined;
      const outcome = await Promise.race([
        server.close({ timeoutMs: 200 }).then(() => "closed"),
        new Promise<string>((r) => {
          guard = setTimeout(() => r("still open"), 8000);
        }),
      ]);
      clearTimeout(guard);
      assert.equal(outcome, "closed");
      for (const l of await lefts) assert.ok(l > 0, "a trickling client was not closed");
      await until(() => sockets() <= before);
      assert.ok(sockets() <= before, `sockets left open: ${sockets()} > ${before}`);
    });
  }
});

describe("wss:// handshake deadline: told once", () => {
  it("a wss:// client that stops halfway through its ClientHello is one reject event, not two (its upgrade deadline and node:tls's handshake timeout, due together, both told it)", async () => {
    const server = createServer({ handshakeTimeoutMs: 300, tls: { cert: certs.serverCert, key: certs.serverKey } });
    const rejects: string[] = [];
    server.on("reject", (e) => {
      rejects.push(e.message);
    });
    const [url] = await server.listen("wss://127.0.0.1:0/");
    const port = Number(new URL(url).port);
    try {
      const socks = await Promise.all(Array.from({ length: 5 }, () => connectRaw(port)));
      for (const s of socks) s.write(clientHello.subarray(0, clientHello.length >> 1));
      await until(() => socks.every((s) => s.closed) && pendingOf(server) === 0);
      // Both deadlines are due in the same turn: a few turns more for a second report.
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(rejects.length, 5, rejects.join("\n"));
    } finally {
      await server.close({ timeoutMs: 100 });
    }
  });
});
