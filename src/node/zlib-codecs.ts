import * as zlib from "node:zlib";
import { CodecId, type CodecName, type CompressionCodec, registerCodec } from "../codec/compression.ts";
import { PointSubError } from "../errors/error.ts";

type Cb = (err: Error | null, out: Buffer) => void;
type AsyncFn = (data: Uint8Array, opts: zlib.ZlibOptions & zlib.BrotliOptions, cb: Cb) => void;
type SyncFn = (data: Uint8Array, opts: zlib.ZlibOptions & zlib.BrotliOptions) => Buffer;

/**
 * A node:zlib algorithm as a pointsub codec. Compression and decompression
 * run on libuv's thread pool (the async zlib APIs), never on the event loop;
 * only the small probe is synchronous.
 */
function zlibCodec(
  id: number,
  name: CodecName,
  compress: AsyncFn,
  decompress: AsyncFn,
  probe: SyncFn,
  level: zlib.ZlibOptions & zlib.BrotliOptions,
): CompressionCodec {
  return {
    id,
    name,
    compress(data) {
      return new Promise((resolve, reject) => {
        compress(data, level, (err, out) => (err ? reject(err) : resolve(out)));
      });
    },
    decompress(data, maxLength) {
      return new Promise((resolve, reject) => {
        decompress(data, { maxOutputLength: Math.max(1, maxLength) }, (err, out) => {
          if (err) reject(new PointSubError("ERR_PROTOCOL", `${name} data does not decompress: ${err.message}`));
          else resolve(out);
        });
      });
    },
    probe(sample) {
      return probe(sample, level).length;
    },
  };
}

/** Registers the codecs this Node.js runtime has: deflate-raw, gzip, brotli and (Node >= 22.15) zstd. */
export function installZlibCodecs(): void {
  registerCodec(
    zlibCodec(
      CodecId.DEFLATE_RAW,
      "deflate-raw",
      zlib.deflateRaw as AsyncFn,
      zlib.inflateRaw as AsyncFn,
      zlib.deflateRawSync as SyncFn,
      { level: 1 },
    ),
  );
  registerCodec(
    zlibCodec(CodecId.GZIP, "gzip", zlib.gzip as AsyncFn, zlib.gunzip as AsyncFn, zlib.gzipSync as SyncFn, {
      level: 1,
    }),
  );
  registerCodec(
    zlibCodec(
      CodecId.BROTLI,
      "brotli",
      zlib.brotliCompress as AsyncFn,
      zlib.brotliDecompress as AsyncFn,
      zlib.brotliCompressSync as SyncFn,
      { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 1 } },
    ),
  );
  const z = zlib as unknown as Record<string, unknown>;
  if (typeof z.zstdCompress === "function" && typeof z.zstdDecompress === "function") {
    const c = zlib.constants as unknown as Record<string, number>;
    registerCodec(
      zlibCodec(
        CodecId.ZSTD,
        "zstd",
        z.zstdCompress as AsyncFn,
        z.zstdDecompress as AsyncFn,
        z.zstdCompressSync as SyncFn,
        { params: { [c.ZSTD_c_compressionLevel]: 1 } } as zlib.ZlibOptions,
      ),
    );
  }
}
