/**
 * The codecs registered process-wide (the Node entry's zlib codecs) and the
 * order `compress: "auto"` tries them in: apart from `compression.ts`, whose
 * names a browser bundle takes up front, as only streams use them.
 */
import type { CodecId, CompressionCodec } from "./compression.ts";

const codecs = new Map<number, CompressionCodec>();

/** Makes a codec available to every connection created afterwards. */
export function registerCodec(codec: CompressionCodec): void {
  codecs.set(codec.id, codec);
}

export function codecById(id: number): CompressionCodec | undefined {
  return codecs.get(id);
}

export function codecByName(name: string): CompressionCodec | undefined {
  for (const c of codecs.values()) if (c.name === name) return c;
  return undefined;
}

/** HELLO `compression` mask of the registered codecs. */
export function localCodecMask(): number {
  let m = 0;
  for (const id of codecs.keys()) m |= 1 << (id - 1);
  return m;
}

/**
 * Preference order for `compress: "auto"`, fast first: zstd, deflate-raw,
 * gzip, brotli (`CodecId`s written out: its object is not in a page's first load).
 */
export const AUTO_ORDER: readonly number[] = [3, 1, 2, 4] satisfies (typeof CodecId)[keyof typeof CodecId][];
