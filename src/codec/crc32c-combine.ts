/**
 * CRC32C of concatenated data from the parts' CRCs (zlib's crc32_combine
 * over GF(2)): apart from `crc32c.ts` so a browser's first load, which never
 * combines before its stream engine is loaded, holds none of it.
 */
import { POLY } from "./crc32c.ts";

/** a(x) · b(x) modulo the polynomial, both in reflected bit order. */
function multModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  let bb = b >>> 0;
  for (;;) {
    if ((a & m) !== 0) {
      p ^= bb;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    bb = bb & 1 ? (bb >>> 1) ^ POLY : bb >>> 1;
  }
  return p >>> 0;
}

/** X2N[k] = x^(2^k) modulo the polynomial. */
const X2N = new Uint32Array(32);
{
  let p = 0x40000000; // x^1
  X2N[0] = p;
  for (let k = 1; k < 32; k++) {
    p = multModP(p, p);
    X2N[k] = p;
  }
}

/** x^(n · 2^k) modulo the polynomial. */
function x2nModP(n: number, k: number): number {
  let p = 0x80000000; // x^0
  let nn = n;
  let kk = k;
  while (nn > 0) {
    if (nn % 2 === 1) p = multModP(X2N[kk & 31], p);
    nn = Math.floor(nn / 2);
    kk++;
  }
  return p;
}

/**
 * CRC32C of the concatenation A‖B from crc(A), crc(B) and B's length, in
 * O(log length) without touching the bytes (zlib's crc32_combine method).
 * Lets a frame checksum and an end-to-end checksum share one pass over data.
 */
export function crc32cCombine(crcA: number, crcB: number, lengthB: number): number {
  if (lengthB === 0) return crcA >>> 0;
  return (multModP(x2nModP(lengthB, 3), crcA >>> 0) ^ crcB) >>> 0;
}
