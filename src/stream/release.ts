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

/**
 * Notices that a chunk was written, apart from its buffer's release: a
 * compressed chunk's buffer is released as soon as it was compressed (its
 * frame carries the compressed copy), but it was not sent until that frame
 * was written — an answer deadline counted from the last byte sent
 * (`answerWithin`) started before, while up to a queue's worth of
 * compressed frames still waited for the receiver's credit.
 */
const writtenHooks = new WeakMap<Uint8Array, () => void>();

/** Registers `written` for `chunk`: called once the transport has written all of it (not at the connection's close). */
export function onChunkWritten(chunk: Uint8Array, written: () => void): void {
  writtenHooks.set(chunk, written);
}

/** @internal The written notice registered for `chunk`, if any. */
export function takeWritten(chunk: Uint8Array): (() => void) | undefined {
  const r = writtenHooks.get(chunk);
  if (r !== undefined) writtenHooks.delete(chunk);
  return r;
}
