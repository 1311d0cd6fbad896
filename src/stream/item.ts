/**
 * The unit a stream producer hands to the connection's writer: one STREAM
 * frame's flags, prefix and data (docs/PROTOCOL.md §3.10).
 */
import { F_COMPRESSED } from "../codec/frame.ts";

/** One STREAM frame ready to send: `head` then `data`, under `flags`. */
export interface StreamItem {
  flags: number;
  head: Uint8Array;
  data: Uint8Array;
  /** Content bytes this frame carries (before compression). */
  content: number;
  /** CRC32C of `data` when the producer computed it (saves a pass), else -1. */
  crc: number;
  /**
   * Called once the transport no longer needs `data` (it drained after the
   * frame was written), so the producer may reuse the buffer. Not called if
   * the connection closes first.
   */
  release?: () => void;
}

/**
 * What a STREAM frame costs on its stream's window (docs/PROTOCOL.md §3.10):
 * its payload length, or for a COMPRESSED frame the larger of that and its
 * decompressed length — the receiver may hold the inflated bytes.
 */
export function streamCost(item: StreamItem): number {
  const size = item.head.length + item.data.length;
  return (item.flags & F_COMPRESSED) !== 0 && item.content > size ? item.content : size;
}
