import { writeU32 } from "./bytes.ts";
import { crc32c } from "./crc32c.ts";
import { CRC_LENGTH } from "./frame.ts";
import { varintLength, writeVarint } from "./varint.ts";

/** Bytes a frame header with this id and length takes (without the CRC trailer). */
export function headerLength(id: number, length: number): number {
  return 1 + varintLength(id) + varintLength(length);
}

/**
 * Writes a frame header at `offset`; returns the offset after it.
 * The payload and (when checksums are on) the trailer follow.
 */
export function writeHeader(
  target: Uint8Array,
  offset: number,
  type: number,
  flags: number,
  id: number,
  length: number,
): number {
  target[offset++] = (type << 4) | flags;
  offset = writeVarint(target, offset, id);
  return writeVarint(target, offset, length);
}

/** Writes `crc` as 4 big-endian bytes at `offset`; returns the offset after it. */
export function writeCrc(target: Uint8Array, offset: number, crc: number): number {
  return writeU32(target, offset, crc);
}

/**
 * Encodes one whole frame into a new buffer (header, payload, CRC trailer if
 * `checksum`). Convenient for tests and cold paths; the connection's writer
 * encodes in place instead.
 */
export function encodeFrame(type: number, flags: number, id: number, payload: Uint8Array, checksum = true): Uint8Array {
  const h = headerLength(id, payload.length);
  const out = new Uint8Array(h + payload.length + (checksum ? CRC_LENGTH : 0));
  writeHeader(out, 0, type, flags, id, payload.length);
  out.set(payload, h);
  if (checksum) writeCrc(out, h + payload.length, crc32c(out.subarray(0, h + payload.length)));
  return out;
}
