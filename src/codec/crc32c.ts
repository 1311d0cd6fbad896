/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum on every
 * frame. The pure-JS implementation below is slicing-by-8; the Node entry point
 * swaps in a native implementation (`@node-rs/crc32`) when it is installed, via
 * {@link setCrc32cImplementation}. Both must return identical values.
 */

/** Computes CRC32C of `data`, continuing from `initial` (the CRC of earlier bytes). */
export type Crc32cFunction = (data: Uint8Array, initial?: number) => number;

const POLY = 0x82f63b78;
const T = new Int32Array(8 * 256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
  T[n] = c;
}
for (let n = 0; n < 256; n++) {
  let c = T[n];
  for (let k = 1; k < 8; k++) {
    c = T[c & 0xff] ^ (c >>> 8);
    T[k * 256 + n] = c;
  }
}

/** Pure-JS CRC32C, slicing-by-8. Works everywhere. */
export function crc32cJs(data: Uint8Array, initial = 0): number {
  let crc = ~initial;
  let i = 0;
  const n = data.length;
  const end8 = n - (n & 7);
  while (i < end8) {
    const a = (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)) ^ crc;
    crc =
      T[1792 + (a & 0xff)] ^
      T[1536 + ((a >>> 8) & 0xff)] ^
      T[1280 + ((a >>> 16) & 0xff)] ^
      T[1024 + (a >>> 24)] ^
      T[768 + data[i + 4]] ^
      T[512 + data[i + 5]] ^
      T[256 + data[i + 6]] ^
      T[data[i + 7]];
    i += 8;
  }
  while (i < n) crc = T[(crc ^ data[i++]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}

let impl: Crc32cFunction = crc32cJs;
let implName = "js";

/** CRC32C with the fastest implementation registered. */
export function crc32c(data: Uint8Array, initial = 0): number {
  return impl(data, initial);
}

/** Registers a faster CRC32C implementation (it must agree with {@link crc32cJs}). */
export function setCrc32cImplementation(fn: Crc32cFunction, name: string): void {
  impl = fn;
  implName = name;
}

/** Name of the CRC32C implementation in use: `"js"` or the registered one. */
export function crc32cImplementation(): string {
  return implName;
}
