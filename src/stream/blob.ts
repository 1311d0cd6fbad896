/** Blobs as stream sources (a browser's `File` is one). */

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
