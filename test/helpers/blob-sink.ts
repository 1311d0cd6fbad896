/** A resumable in-memory sink route for stream tests: what it stored per transfer id, and how far. */
import { crc32c } from "../../src/codec/crc32c.ts";
import { createServer, type Server } from "../../src/index.ts";

export interface StoredBlob {
  bytes: Uint8Array;
  length: number;
  crc: number;
}

/**
 * A server whose route `/blob/1.0.0` keeps each transfer in memory (up to
 * `size` bytes) and answers resume queries with what it stored (a database,
 * an object store would do the same).
 */
export function blobServer(size: number): { server: Server; stored: Map<string, StoredBlob> } {
  const stored = new Map<string, StoredBlob>();
  const server = createServer();
  server.handleStream(
    "/blob/1.0.0",
    async (stream) => {
      const id = stream.transferId as string;
      const slot = stored.get(id) ?? { bytes: new Uint8Array(size), length: 0, crc: 0 };
      stored.set(id, slot);
      slot.length = stream.offset;
      slot.crc = stream.prefixCrc;
      for await (const chunk of stream) {
        slot.bytes.set(chunk, slot.length);
        slot.length += chunk.length;
        slot.crc = crc32c(chunk, slot.crc);
      }
      return "stored";
    },
    { resume: (id) => ({ offset: stored.get(id)?.length ?? 0, crc: stored.get(id)?.crc ?? 0 }) },
  );
  return { server, stored };
}
