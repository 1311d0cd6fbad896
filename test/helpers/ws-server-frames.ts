/**
 * Reading what a ws:// server writes, for tests that speak raw WebSocket
 * frames (RFC 6455 §5.2) over a plain socket.
 */

import { randomBytes } from "node:crypto";
import { WS_SUBPROTOCOL } from "../../src/index.ts";

/** The HTTP upgrade request a pointsub WebSocket client sends to `url` (with `extraHeaders`, each ending in CRLF). */
export function upgradeRequest(url: URL, extraHeaders = ""): string {
  return (
    `GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n` +
    `Sec-WebSocket-Protocol: ${WS_SUBPROTOCOL}\r\n${extraHeaders}\r\n`
  );
}

/** One frame the server wrote. */
export interface ServerFrame {
  opcode: number;
  fin: boolean;
  /** Servers must never mask (a test asserts it). */
  masked: boolean;
  payload: Buffer;
}

/**
 * Moves the whole frames at the start of `buf` to `out` and returns the
 * bytes left (the start of a frame not yet read whole).
 */
export function takeServerFrames(buf: Buffer, out: ServerFrame[]): Buffer {
  for (;;) {
    if (buf.length < 2) return buf;
    let len = buf[1] & 0x7f;
    let at = 2;
    if (len === 126) {
      if (buf.length < 4) return buf;
      len = buf.readUInt16BE(2);
      at = 4;
    } else if (len === 127) {
      if (buf.length < 10) return buf;
      len = Number(buf.readBigUInt64BE(2));
      at = 10;
    }
    const masked = (buf[1] & 0x80) !== 0;
    if (masked) at += 4;
    if (buf.length < at + len) return buf;
    out.push({ opcode: buf[0] & 0x0f, fin: (buf[0] & 0x80) !== 0, masked, payload: buf.subarray(at, at + len) });
    buf = buf.subarray(at + len);
  }
}
