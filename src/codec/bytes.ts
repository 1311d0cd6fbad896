/** Big-endian fixed-width integers, as every fixed field on the wire is (docs/PROTOCOL.md §1). */

/** Writes `n` as 2 big-endian bytes at `p`; returns the offset after it. */
export function writeU16(out: Uint8Array, p: number, n: number): number {
  out[p] = (n >>> 8) & 0xff;
  out[p + 1] = n & 0xff;
  return p + 2;
}

/** Reads 2 big-endian bytes at `p` (the caller checked they exist). */
export function readU16(buf: Uint8Array, p: number): number {
  return (buf[p] << 8) | buf[p + 1];
}

/** Writes `n` as 4 big-endian bytes at `p`; returns the offset after it. */
export function writeU32(out: Uint8Array, p: number, n: number): number {
  out[p] = n >>> 24;
  out[p + 1] = (n >>> 16) & 0xff;
  out[p + 2] = (n >>> 8) & 0xff;
  out[p + 3] = n & 0xff;
  return p + 4;
}

/** Reads 4 big-endian bytes at `p` as an unsigned number (the caller checked they exist). */
export function readU32(buf: Uint8Array, p: number): number {
  return ((buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]) >>> 0;
}
