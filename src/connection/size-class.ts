/**
 * Size classes: each message is counted in one, and the class picks the
 * sending strategy (see docs/PROTOCOL.md, "Chunking").
 */

export const SIZE_CLASSES = ["tiny", "small", "medium", "large", "huge"] as const;
/** `tiny` < 1 KiB, `small` <= 64 KiB, `medium` <= 1 MiB, `large` <= 100 MiB, `huge` above. */
export type SizeClass = (typeof SIZE_CLASSES)[number];

const KIB = 1024;
const MIB = 1024 * KIB;

/** Largest message sent as one frame (when the peer's limits allow). */
export const SINGLE_FRAME_MAX = 64 * KIB;

/** Index into SIZE_CLASSES for a message of `size` data bytes. */
export function sizeClassIndex(size: number): number {
  if (size < KIB) return 0;
  if (size <= 64 * KIB) return 1;
  if (size <= MIB) return 2;
  if (size <= 100 * MIB) return 3;
  return 4;
}

/** Chunk (frame payload) size used for a chunked message of `size` bytes. */
export function chunkSizeFor(size: number): number {
  if (size <= MIB) return 64 * KIB;
  if (size <= 100 * MIB) return 256 * KIB;
  return MIB;
}
