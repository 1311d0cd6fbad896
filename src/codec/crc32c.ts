/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum on every
 * frame. The pure-JS implementation below is slicing-by-8; the Node entry point
 * swaps in a native implementation (`@node-rs/crc32`) when it is installed, via
 * {@link setCrc32cImplementation}. Both must return identical values.
 */

/** Computes CRC32C of `data`, continuing from `initial` (the CRC of earlier bytes). */
export type Crc32cFunction = (data: Uint8Array, initial?: number) => number;

export const POLY = 0x82f63b78;
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
  return crc32cJsRange(data, 0, data.length, initial);
}

/** Pure-JS CRC32C of `data[start..end)`. */
function crc32cJsRange(data: Uint8Array, start: number, end: number, initial: number): number {
  let crc = ~initial;
  let i = start;
  const end8 = end - ((end - start) & 7);
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
  while (i < end) crc = T[(crc ^ data[i++]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}

/**
 * One CRC32C implementation as a runtime chooses it: `native` for inputs of
 * at least `minLength` bytes (where it beats a table lookup despite the cost
 * of the call), the pure-JS one below that or when there is none. The
 * decoder, writer and streams of a connection use their runtime's.
 */
export class Crc32c {
  /** `"js"` or the native implementation's name. */
  declare readonly name: string;
  declare private readonly native: Crc32cFunction | undefined;
  declare private readonly min: number;

  constructor(native?: Crc32cFunction, name = "js", minLength = 0) {
    this.native = native;
    this.name = native === undefined ? "js" : name;
    this.min = native === undefined ? Infinity : minLength;
  }

  /** CRC32C of `data`, continuing from `initial`. */
  compute(data: Uint8Array, initial = 0): number {
    if (data.length >= this.min) return (this.native as Crc32cFunction)(data, initial);
    return crc32cJsRange(data, 0, data.length, initial);
  }

  /** CRC32C of `data[start..end)` (no view is created for short ranges). */
  range(data: Uint8Array, start: number, end: number, initial = 0): number {
    if (end - start >= this.min) return (this.native as Crc32cFunction)(data.subarray(start, end), initial);
    return crc32cJsRange(data, start, end, initial);
  }
}

/** The pure-JS implementation: the default where no runtime chose another. */
export const JS_CRC32C_IMPL: Crc32c = new Crc32c();

let native: Crc32cFunction | undefined;
let nativeMin = 0;
let implName = "js";

/** CRC32C with the fastest implementation registered. */
export function crc32c(data: Uint8Array, initial = 0): number {
  if (native !== undefined && data.length >= nativeMin) return native(data, initial);
  return crc32cJsRange(data, 0, data.length, initial);
}

/** CRC32C of `data[start..end)`, without creating a view for short ranges (the hot path for small frames). */
export function crc32cRange(data: Uint8Array, start: number, end: number, initial = 0): number {
  if (native !== undefined && end - start >= nativeMin) return native(data.subarray(start, end), initial);
  return crc32cJsRange(data, start, end, initial);
}

/**
 * Registers a faster CRC32C implementation (it must agree with
 * {@link crc32cJs}), used for inputs of at least `minLength` bytes; shorter
 * ones stay in JS, where a table lookup beats the cost of a native call.
 */
export function setCrc32cImplementation(fn: Crc32cFunction, name: string, minLength = 0): void {
  native = fn;
  nativeMin = minLength;
  implName = name;
}

/** Name of the CRC32C implementation in use: `"js"` or the registered one. */
export function crc32cImplementation(): string {
  return implName;
}

/**
 * The CRC32C of A‖B from CRC(A), CRC(B) and B's length (`crc32cCombine`,
 * `crc32c-combine.ts`), once code that has it is loaded: the stream engine
 * installs it (`connection/stream-engine.ts`). A browser page's first load
 * has no combine: its decoder and writer compute over the bytes instead.
 */
export let combineCrcs: ((crcA: number, crcB: number, lengthB: number) => number) | undefined;

/** Installs {@link combineCrcs} (the first one stays). */
export function useCombine(combine: (crcA: number, crcB: number, lengthB: number) => number): void {
  combineCrcs ??= combine;
}

/** A CRC32C as receipts and quick checks write it: 8 lowercase hex digits. */
export function crc32cHex(crc: number): string {
  return (crc >>> 0).toString(16).padStart(8, "0");
}
