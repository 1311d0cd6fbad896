import { randomBytes } from "node:crypto";

/** A client's WebSocket frame (RFC 6455 §5.2) of `opcode`, masked with a random key; `fin` false: a fragment. */
export function wsClientFrame(opcode: number, payload: Uint8Array, fin = true): Buffer {
  const n = payload.length;
  const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const h = Buffer.alloc(2 + ext + 4);
  h[0] = (fin ? 0x80 : 0) | opcode;
  h[1] = 0x80 | (ext === 0 ? n : ext === 2 ? 126 : 127);
  if (ext === 2) h.writeUInt16BE(n, 2);
  if (ext === 8) h.writeBigUInt64BE(BigInt(n), 2);
  const key = randomBytes(4);
  key.copy(h, 2 + ext);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= key[i & 3];
  return Buffer.concat([h, body]);
}
