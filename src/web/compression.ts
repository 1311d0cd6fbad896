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

/**
 * Compressed bytes handed to a `DecompressionStream` at a time. The platform
 * inflates each written chunk at once, whatever reads it (Chromium: a 1 MB
 * deflate block declaring 1 MiB inflated to 1 GiB, 11 s of a frozen page,
 * before the reader saw its second chunk), so a block goes in slices, each
 * once the reader took the last one's output: at most ~1,032 × this (4 MiB,
 * deflate's largest ratio) is inflated past `maxLength` before the check
 * below cancels the stream (docs/PROTOCOL.md §6: bounded output). Honest
 * blocks pay ~8 % (64 MiB in 1 MiB blocks at ~2:1, Chromium: 788 → 853 ms).
 */
const SLICE = 4096;

/**
 * Runs `data` through a (de)compression stream, `slice` bytes at a time;
 * fails once the output exceeds `maxLength` (ERR_PROTOCOL), cancelling the
 * stream, so nothing more is written into it.
 */
async function run(
  data: Uint8Array,
  t: TransformStream<Uint8Array, Uint8Array>,
  maxLength: number,
  slice: number,
): Promise<Uint8Array> {
  feed(t.writable.getWriter(), data, slice);
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

/**
 * Queues `data` on `writer` in slices of `slice` bytes, then its close. A
 * `TransformStream` transforms the next queued chunk only once its reader
 * asked for more (what the last one produced was read), so queueing them all
 * at once inflates no more ahead than writing each after the last (and costs
 * a block of 1 MiB ~8 % less time than 4 KiB slices written one by one,
 * against ~20 %). A failed write — the reader cancelled, or the stream
 * errored — fails those after it; errors surface on the reading side.
 */
function feed(writer: WritableStreamDefaultWriter<Uint8Array>, data: Uint8Array, slice: number): void {
  const ignore = () => {};
  for (let off = 0; off < data.length; off += slice) {
    writer.write(data.subarray(off, off + slice) as Uint8Array<ArrayBuffer>).catch(ignore);
  }
  writer.close().catch(ignore);
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

/**
 * `data`, or a copy where the platform's streams refuse it: a view of a
 * resizable or shared buffer (a TypeError, and the stream failed with
 * ERR_COMPRESSION, though the transport sends such views uncompressed).
 */
function writable(data: Uint8Array): Uint8Array {
  const b = data.buffer;
  return b instanceof ArrayBuffer && !b.resizable ? data : data.slice();
}

function webCodec(id: number, name: CodecName & Format): CompressionCodec {
  return {
    id,
    name,
    compress: (data) =>
      run(
        writable(data),
        new CompressionStream(name) as TransformStream<Uint8Array, Uint8Array>,
        Number.POSITIVE_INFINITY,
        Number.POSITIVE_INFINITY,
      ),
    decompress: async (data, maxLength) => {
      try {
        return await run(
          data,
          new DecompressionStream(name) as TransformStream<Uint8Array, Uint8Array>,
          maxLength,
          SLICE,
        );
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
