/**
 * Compression codecs by wire id (docs/PROTOCOL.md §4, setting `compression`).
 * The core only knows ids and this interface; implementations are registered
 * by the runtime edge (node:zlib in `src/node/zlib-codecs.ts`).
 */

/** Codec ids as they appear in a STREAM START prefix; bit `1 << (id - 1)` in HELLO. */
export const CodecId = {
  NONE: 0,
  DEFLATE_RAW: 1,
  GZIP: 2,
  ZSTD: 3,
  BROTLI: 4,
} as const;

/** Names accepted by `compress` options and shown in stats. */
export type CodecName = "deflate-raw" | "gzip" | "zstd" | "brotli";

/** Each codec's name by its wire id (docs/PROTOCOL.md: the HELLO's `compression` bits are 1 << (id - 1)). */
export const CODEC_NAMES: Readonly<Record<number, CodecName>> = {
  1: "deflate-raw",
  2: "gzip",
  3: "zstd",
  4: "brotli",
};

/** What a queued inflation asks before it starts. */
export interface InflateOwner {
  /** Nothing the inflation would produce will be read. */
  readonly abandoned: boolean;
}

/** One compression algorithm. Async methods must not block the event loop for large inputs. */
export interface CompressionCodec {
  readonly id: number;
  readonly name: CodecName;
  compress(data: Uint8Array): Promise<Uint8Array>;
  /**
   * Rejects (with ERR_PROTOCOL) if the output would exceed `maxLength` or the input is corrupt.
   * With `owner`, a block whose owner is `abandoned` by the time its turn
   * comes is not inflated (the promise rejects with ERR_CANCELLED): work
   * queued for a stream nobody will read does not outlive it. Blocks of
   * one `group` (a connection's) share their turns: a codec that queues
   * work serves the group that used it least lately first.
   */
  decompress(data: Uint8Array, maxLength: number, owner?: InflateOwner, group?: object): Promise<Uint8Array>;
  /** Compressed size of a small sample, computed synchronously (cheap probe). */
  probe(sample: Uint8Array): number;
}
