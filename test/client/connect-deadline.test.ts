/**
 * `connectTimeoutMs` bounds the transport's connect and the pointsub
 * handshake together (its documentation: "gives up on transport +
 * handshake"). Before, the handshake got the whole `connectTimeoutMs` again
 * once the transport was up: a slow link (a WebSocket upgrade, a TLS
 * handshake) answered just in time, then a silent peer held `connect` for
 * up to twice the deadline.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as net from "node:net";
import { describe, it } from "node:test";
import { connect, type PointSubError } from "../../src/index.ts";

const T = 2000;
const UPGRADE_DELAY = 1400;

describe("connectTimeoutMs: one deadline for transport and handshake", () => {
  it("a ws:// upgrade answered late, then no HELLO: connect fails within connectTimeoutMs of its start", async () => {
    const sockets = new Set<net.Socket>();
    const timers = new Set<ReturnType<typeof setTimeout>>();
    // Answers the upgrade (pointsub.v1) after UPGRADE_DELAY ms, then says nothing.
    const server = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
      let head = "";
      let answered = false;
      s.on("data", (d) => {
        // What follows the upgrade (the client's frames) is left unread.
        if (answered) return;
        head += d.toString("latin1");
        if (!head.includes("\r\n\r\n")) return;
        answered = true;
        const key = /sec-websocket-key: *(\S+)/i.exec(head)?.[1] ?? "";
        const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
        const t = setTimeout(() => {
          timers.delete(t);
          s.write(
            `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: pointsub.v1\r\n\r\n`,
          );
        }, UPGRADE_DELAY);
        timers.add(t);
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as net.AddressInfo;
    try {
      const start = Date.now();
      await assert.rejects(connect(`ws://127.0.0.1:${port}/`, { connectTimeoutMs: T }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_TIMEOUT", e.message);
        assert.equal(e.phase, "handshake", e.message);
        return true;
      });
      const took = Date.now() - start;
      // The transport took UPGRADE_DELAY of it: a handshake given the whole T again ends at or after
      // UPGRADE_DELAY + T (timers never fire early); one deadline ends near T.
      assert.ok(took < UPGRADE_DELAY + T, `connect took ${took} ms, past its ${T} ms deadline`);
    } finally {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });
});
