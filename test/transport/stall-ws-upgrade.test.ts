/**
 * A stall of a ws:// server's process past handshakeTimeoutMs while a
 * client's upgrade request arrived in time and sat in the socket: the
 * listener's pending-upgrade deadline ran before the socket was read, and
 * the client was cut. It now looks again after the turn's I/O (wss://, with
 * its TLS handshake: stall-tls-handshake.test.ts).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { createServer } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

describe("WebSocket upgrade deadline: a stall of the server's process", () => {
  it("ws://: a client whose upgrade request arrived in time while the server's process stalled past handshakeTimeoutMs is upgraded (the pending-upgrade deadline cut it)", async () => {
    const server = createServer({ handshakeTimeoutMs: 1000 });
    const [url] = await server.listen("ws://127.0.0.1:0/");
    const client = net.connect({ host: "127.0.0.1", port: Number(new URL(url).port) });
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
      // Accepted: its upgrade is pending.
      await until(() => (server as unknown as { pending: number }).pending === 1);
      await new Promise<void>((resolve) =>
        setImmediate(() => {
          // The request reaches the server's socket in time; the server stalls past its deadline before reading it.
          client.write(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: pointsub.v1\r\n\r\n",
          );
          const end = Date.now() + 1500;
          while (Date.now() < end) {}
          resolve();
        }),
      );
      await until(() => closed || got.includes("\r\n\r\n"));
      assert.equal(closed, false, "the server cut the client");
      assert.match(got, /^HTTP\/1\.1 101/);
    } finally {
      client.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });
});
