/**
 * deflate-raw and gzip for runtimes without node:zlib (browsers, workers,
 * Deno, Bun), on the platform's `CompressionStream` /
 * `DecompressionStream`: the bytes on the wire are the same as the Node
 * codecs' (docs/PROTOCOL.md §4), so a browser and a Node server compress
 * streams for each other. Opt in, so a page that does not compress does not
 * carry them: `createBrowserRuntime({ codecs: webCompressionCodecs() })`.
 *
 * The platform compresses off the page's main work (it streams the block
 * through native code); the probe `compress: "auto"` asks for synchronously
 * is an estimate — the order-0 entropy of the sample — since the platform
 * offers no synchronous compression.
 */
import { CodecId, type CodecName, type CompressionCodec } from "../codec/compression.ts";
import { PointSubError } from "../errors/error.ts";

type Format = "deflate-raw" | "gzip";

/** Runs `data` through a (de)compression stream; fails once the output exceeds `maxLength`. */
async function run(
  data: Uint8Array,
  t: TransformStream<Uint8Array, Uint8Array>,
  maxLength: number,
): Promise<Uint8Array> {
  const writer = t.writable.getWriter();
  // Errors surface on the reading side; these promises only settle.
  writer.write(data as Uint8Array<ArrayBuffer>).catch(() => {});
  writer.close().catch(() => {});
  const reader = t.readable.getReader();
  const parts: Uint8Array[] = [];
  let length = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    length += value.length;
    if (length > maxLength) {
      reader.cancel().catch(() => {});
      throw new PointSubError("ERR_PROTOCOL", `compressed block inflates past its declared ${maxLength} bytes`);
    }
    parts.push(value);
  }
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(length);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Estimated compressed size of `sample`: its order-0 entropy, in bytes. */
function entropyBytes(sample: Uint8Array): number {
  const counts = new Uint32Array(256);
  for (let i = 0; i < sample.length; i++) counts[sample[i]]++;
  let bits = 0;
  const n = sample.length;
  for (let b = 0; b < 256; b++) {
    const c = counts[b];
    if (c !== 0) bits -= c * Math.log2(c / n);
  }
  return Math.ceil(bits / 8);
}

function webCodec(id: number, name: CodecName & Format): CompressionCodec {
  return {
    id,
    name,
    compress: (data) =>
      run(data, new CompressionStream(name) as TransformStream<Uint8Array, Uint8Array>, Number.POSITIVE_INFINITY),
    decompress: async (data, maxLength) => {
      try {
        return await run(data, new DecompressionStream(name) as TransformStream<Uint8Array, Uint8Array>, maxLength);
      } catch (err) {
        if (err instanceof PointSubError) throw err;
        throw new PointSubError("ERR_PROTOCOL", `corrupt ${name} block: ${(err as Error).message}`, { cause: err });
      }
    },
    probe: entropyBytes,
  };
}

/**
 * deflate-raw and gzip on `CompressionStream` (ERR_INVALID_ARGUMENT where
 * the runtime has none), to give a runtime as `codecs`: offered to peers in
 * the handshake, used for streams sent with `compress`, and to inflate
 * streams a peer compressed.
 */
export function webCompressionCodecs(): CompressionCodec[] {
  if (typeof CompressionStream !== "function" || typeof DecompressionStream !== "function") {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "this runtime has no CompressionStream");
  }
  return [webCodec(CodecId.DEFLATE_RAW, "deflate-raw"), webCodec(CodecId.GZIP, "gzip")];
}
