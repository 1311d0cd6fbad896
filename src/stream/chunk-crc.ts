/**
 * The content CRC32C at a chunk's end, as the outgoing stream computed it: a
 * source registers a notice for a chunk it yields; the stream calls it once
 * it has checksummed all of the chunk, with the content's length and CRC32C
 * up to the chunk's end (a resumed stream's offset and prefix included).
 * Lets `sendFile` keep checkpoints of what it sent, so that the prefix check
 * of a resume reads only the bytes after the last one instead of the whole
 * prefix again (the stream checksums every byte anyway: a second pass would
 * cost as much as the stream's own). Apart from `release.ts`: only the
 * stream engine (loaded on first use in a browser) takes them.
 */
const notices = new WeakMap<Uint8Array, (length: number, crc: number) => void>();

/** Registers `notice` for `chunk` (called at most once: when the stream has checksummed all of it). */
export function onChunkCrc(chunk: Uint8Array, notice: (length: number, crc: number) => void): void {
  notices.set(chunk, notice);
}

/** @internal The notice registered for `chunk`, if any. */
export function takeChunkCrc(chunk: Uint8Array): ((length: number, crc: number) => void) | undefined {
  const n = notices.get(chunk);
  if (n !== undefined) notices.delete(chunk);
  return n;
}
