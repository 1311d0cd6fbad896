/**
 * A hostile ws:// or wss:// server against a Node client's connect: one that
 * trickles its HTTP 101 answer a byte at a time. `connectTimeoutMs` is a
 * deadline from the start of the connect, as on tcp:// and tls:// (before:
 * it was `ws`'s handshakeTimeout, the socket's idle timeout, so a server
 * sending a byte more often than that held the connect for up to
 * 16 KiB × the timeout — ~45 hours at the default 10 s — and `pointsub send
 * --timeout` with it). Real loopback sockets, certificates made at test time.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { connect, type PointSubError } from "../../src/index.ts";
import { type TestCerts, testCerts } from "../helpers/certs.ts";

let certs: TestCerts;
before(async () => {
  certs = await testCerts();
});

const timers = new Set<ReturnType<typeof setInterval>>();
const servers: net.Server[] = [];
after(() => {
  for (const t of timers) clearInterval(t);
  for (const s of servers) s.close();
});

/** Answers the upgrade request with a 101 whose headers never end, one byte every `everyMs`. */
function trickle(socket: net.Socket, everyMs: number): void {
  socket.on("error", () => {});
  socket.once("data", () => {
    const answer = Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nX-Slow: ${"a".repeat(16_000)}`);
    let i = 0;
    const t = setInterval(() => {
      if (socket.destroyed || i >= answer.length) {
        clearInterval(t);
        timers.delete(t);
        return;
      }
      socket.write(answer.subarray(i, i + 1));
      i++;
    }, everyMs);
    timers.add(t);
  });
}

async function hostile(scheme: "ws" | "wss"): Promise<string> {
  const onSocket = (s: net.Socket) => trickle(s, 100);
  const server =
    scheme === "wss"
      ? tls.createServer({ cert: certs.serverCert, key: certs.serverKey }, onSocket)
      : net.createServer(onSocket);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `${scheme}://127.0.0.1:${(server.address() as net.AddressInfo).port}/`;
}

describe("attack: a ws/wss server that trickles its upgrade answer", () => {
  for (const scheme of ["ws", "wss"] as const) {
    it(`${scheme}://: connect rejects with ERR_TIMEOUT at connectTimeoutMs`, async () => {
      const url = await hostile(scheme);
      const t0 = Date.now();
      const outcome = await Promise.race([
        connect(url, { tls: { ca: certs.ca }, connectTimeoutMs: 600 }).then(
          (c) => {
            c.destroy();
            return "connected";
          },
          (e: PointSubError) => e,
        ),
        new Promise<string>((resolve) => setTimeout(() => resolve("still pending after 4 s"), 4000)),
      ]);
      assert.equal(typeof outcome, "object", String(outcome));
      assert.equal((outcome as PointSubError).code, "ERR_TIMEOUT");
      assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
    });
  }
});
