/**
 * Buffers a stream source may get back once sent: a source registers a
 * release function for a chunk it yields; the outgoing stream passes it to
 * the writer, which calls it when the transport has drained past that chunk.
 * Lets a file reader reuse a few buffers instead of leaving one garbage
 * buffer per chunk for the garbage collector (which the runtime collects
 * only after tens of MiB accumulated).
 */
const releases = new WeakMap<Uint8Array, () => void>();

/** Registers `release` for `chunk` (called at most once: when the transport has written it, or at the connection's close). */
export function onChunkSent(chunk: Uint8Array, release: () => void): void {
  releases.set(chunk, release);
}

/** @internal The release registered for `chunk`, if any. */
export function takeRelease(chunk: Uint8Array): (() => void) | undefined {
  const r = releases.get(chunk);
  if (r !== undefined) releases.delete(chunk);
  return r;
}
