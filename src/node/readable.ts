import { Readable } from "node:stream";
import type { IncomingStream } from "../stream/incoming.ts";

/**
 * A received stream as a Node `Readable` (object mode off, Buffers out).
 * Backpressure is kept: the sender gets credit only as the Readable is read.
 */
export function toNodeReadable(stream: IncomingStream): Readable {
  return Readable.from(stream, { objectMode: false });
}
