/** Blobs as stream sources (a browser's `File` is one). */
import { crc32c } from "../codec/crc32c.ts";

/**
 * A `Blob` (a `File` too), by its shape (one from another realm is one as well): read as
 * `blob.stream()`, its size known before the first byte.
 */
export function isBlob(source: unknown): source is Blob {
  const b = source as Partial<Blob> | null;
  return (
    typeof b === "object" &&
    b !== null &&
    typeof b.stream === "function" &&
    typeof b.size === "number" &&
    typeof b.slice === "function"
  );
}

/** CRC32C of the first `length` bytes of `blob`, read back from it (a resumed upload's prefix check). */
export async function blobPrefixCrc(blob: Blob, length: number): Promise<number> {
  const reader = blob.slice(0, length).stream().getReader();
  let crc = 0;
  for (let r = await reader.read(); !r.done; r = await reader.read()) crc = crc32c(r.value, crc);
  return crc;
}
