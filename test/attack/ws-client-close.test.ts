/**
 * A hostile ws:// server against a Node client (`ws` underneath) that ends
 * the WebSocket but never closes its TCP side (attack review, session 34):
 * - it sends a close frame (nothing more can come) and keeps the socket open;
 * - it sends a text message, which the client refuses with 1003, and never
 *   answers the client's close frame.
 * Before: the connection, and every call on it, stayed open for `ws`'s
 * close timeout — 30.2 s in both cases — while tcp:// fails at once on the
 * server's FIN (a resilient client was kept offline 30 s per connection).
 * Now: the socket goes as soon as `ws` ended its side (~200 ms here: the
 * server's frame is sent 150 ms in), and the call rejects with the typed
 * error. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import net from "node:net";
import { after, describe, it } from "node:test";
import { connect, type PointSubError } from "../../src/index.ts";
import { handshake } from "../helpers/raw-peer.ts";

const servers: net.Server[] = [];
const sockets = new Set<net.Socket>();
after(() => {
  for (const s of sockets) s.destroy();
  for (const s of servers) s.close();
});

/** An unmasked server frame (payloads under 126 bytes). */
function serverFrame(opcode: number, payload: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([0x80 | opcode, payload.length]), payload]);
}

/** A server that completes the upgrade and the pointsub handshake, then sends `then` 150 ms later and keeps its TCP side open. */
async function hostile(then: Buffer): Promise<string> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on("error", () => {});
    let request = "";
    const onData = (c: Buffer) => {
      request += c.toString("latin1");
      if (!request.includes("\r\n\r\n")) return;
      s.off("data", onData);
      const key = (/sec-websocket-key: *(\S+)/i.exec(request) as RegExpExecArray)[1];
      const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
      s.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: pointsub.v1\r\n\r\n`,
      );
      s.write(serverFrame(2, handshake()));
      // Reads (and drops) whatever comes, its close frame and FIN included; never ends its side.
      s.resume();
      setTimeout(() => s.write(then), 150);
    };
    s.on("data", onData);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/`;
}

async function callAgainst(then: Buffer): Promise<{ ms: number; err: PointSubError }> {
  const conn = await connect(await hostile(then), { requestTimeoutMs: 60_000 });
  const t0 = Date.now();
  try {
    const err = await conn.request("/x", "hi").then(
      () => assert.fail("answered"),
      (e: PointSubError) => e,
    );
    return { ms: Date.now() - t0, err };
  } finally {
    conn.destroy();
  }
}

describe("attack: a ws:// server that ends the WebSocket and keeps its TCP side open", () => {
  it("its close frame: the call fails at once (it waited 30 s)", async () => {
    const { ms, err } = await callAgainst(serverFrame(8, Uint8Array.of(0x03, 0xea))); // 1002
    assert.equal(err.code, "ERR_PROTOCOL");
    assert.ok(ms < 3000, `failed after ${ms} ms`);
  });

  it("a text message: refused with ERR_PROTOCOL at once, the peer's close frame not awaited (it waited 30 s)", async () => {
    const { ms, err } = await callAgainst(serverFrame(1, Buffer.from("hello")));
    assert.equal(err.code, "ERR_PROTOCOL");
    assert.match(err.message, /text message/);
    assert.ok(ms < 3000, `failed after ${ms} ms`);
  });
});
