/**
 * A stall of a tls:// or wss:// server's process past handshakeTimeoutMs
 * while a client's TLS handshake (its last flight) arrived in time and sat
 * in the socket: node:tls's handshakeTimeout ran before the socket was
 * read, and the client was cut. It now looks again after the turn's I/O.
 * A relay in this process holds the client's last flight, lets it through,
 * and stalls this process (the server's) past the deadline.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import tls from "node:tls";
import { createServer } from "../../src/index.ts";
import { testCerts } from "../helpers/certs.ts";
import { until } from "../helpers/wait.ts";

/** How many encrypted records (0x17: TLS 1.3's Finished, then data) `bytes` hold; -1 unless they are whole TLS records. */
function encryptedRecords(bytes: Buffer): number {
  let at = 0;
  let n = 0;
  while (at + 5 <= bytes.length) {
    if (bytes[at] === 0x17) n++;
    at += 5 + bytes.readUInt16BE(at + 3);
  }
  return at === bytes.length ? n : -1;
}

describe("TLS handshake deadline: a stall of the server's process", () => {
  for (const kind of ["tls", "wss"] as const) {
    it(`${kind}://: a client whose TLS handshake completed in time while the server's process stalled past handshakeTimeoutMs is served (node:tls's timeout cut it)`, async () => {
      const certs = await testCerts();
      const server = createServer({
        handshakeTimeoutMs: 1000,
        tls: { cert: certs.serverCert, key: certs.serverKey },
      });
      const [url] = await server.listen(`${kind}://127.0.0.1:0`);
      // A relay passes the ClientHello and the server's flight, and holds what the client sends after.
      const held: Buffer[] = [];
      let through = false;
      let up: net.Socket | undefined;
      const sockets: net.Socket[] = [];
      const relay = net.createServer((c) => {
        const u = net.connect({ host: "127.0.0.1", port: Number(new URL(url).port) });
        up = u;
        for (const s of [c, u]) {
          sockets.push(s);
          s.on("error", () => {});
        }
        u.pipe(c);
        u.on("close", () => c.destroy());
        c.on("close", () => u.destroy());
        let first = true;
        c.on("data", (d: Buffer) => {
          if (first || through) u.write(d);
          else held.push(d);
          first = false;
        });
      });
      await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
      const port = (relay.address() as net.AddressInfo).port;
      const client = tls.connect({ host: "127.0.0.1", port, ca: certs.ca, servername: "localhost" });
      sockets.push(client);
      client.on("error", () => {});
      let closed = false;
      client.once("close", () => {
        closed = true;
      });
      let got = "";
      client.on("data", (d: Buffer) => {
        got += d.toString("latin1");
      });
      try {
        await new Promise<void>((r) => client.once("secureConnect", () => r()));
        if (kind === "wss") {
          client.write(
            `GET ${new URL(url).pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: pointsub.v1\r\n\r\n",
          );
        }
        // The client's Finished (and its upgrade request) held, whole.
        await until(() => encryptedRecords(Buffer.concat(held)) >= (kind === "tls" ? 1 : 2));
        await new Promise<void>((resolve) =>
          setImmediate(() => {
            // They reach the server's socket in time; the server stalls past its deadline before reading them.
            through = true;
            for (const b of held.splice(0)) up?.write(b);
            const end = Date.now() + 1500;
            while (Date.now() < end) {}
            resolve();
          }),
        );
        // tls://: the server's pointsub greeting; wss://: its 101.
        await until(() => closed || (kind === "tls" ? got.length > 0 : got.includes("\r\n\r\n")));
        assert.equal(closed, false, "the server cut the client");
        if (kind === "wss") assert.match(got, /^HTTP\/1\.1 101/);
      } finally {
        for (const s of sockets) s.destroy();
        relay.close();
        await server.close({ timeoutMs: 100 });
      }
    });
  }
});
