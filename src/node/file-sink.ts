import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { crc32c } from "../codec/crc32c.ts";
import type { ResumeLookup, ResumePoint } from "../connection/connection.ts";
import type { RequestContext } from "../connection/types.ts";
import { PointSubError } from "../errors/error.ts";
import type { IncomingStream } from "../stream/incoming.ts";
import type { StreamHandler } from "../stream/types.ts";

/** The route files are sent to by default. */
export const FILE_ROUTE = "/pointsub/file/1.0.0";

/** What the file sink answers for a stored file (JSON in the response). */
export interface FileReceipt {
  /** File name within the directory (sanitized). */
  name: string;
  /** Absolute path of the stored file. */
  path: string;
  size: number;
  /** CRC32C of the content, hex. */
  crc32c: string;
  /** Content offset this transfer resumed from (0 when it started fresh). */
  resumedFrom: number;
}

/** Options of {@link fileSink}. */
export interface FileSinkOptions {
  /** Called when a file is complete. */
  onFile?: (receipt: FileReceipt, stream: IncomingStream, ctx: RequestContext) => void;
  /** Called when a transfer starts (progress is on `stream.progress`). */
  onStream?: (stream: IncomingStream, ctx: RequestContext) => void;
}

/** A stream handler that stores files in a directory, and its resume lookup. */
export interface FileSink {
  handler: StreamHandler;
  resume: ResumeLookup;
  dir: string;
}

const TRANSFER_ID = /^[A-Za-z0-9_-]{1,128}$/;
/** Bytes handed to one writev: large enough to amortize the call, small enough to keep little in flight. */
const BATCH = 1024 * 1024;

/**
 * A safe file name from what a peer sent: the last path segment only, no
 * control characters, no leading dots, at most 200 bytes; never "." or
 * "..", never a path.
 */
export function safeFileName(name: unknown): string {
  let s = typeof name === "string" ? name : "";
  s = s.replace(/\\/g, "/");
  s = basename(s);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping control characters is the point.
  s = s.replace(/[\u0000-\u001f\u007f/:*?"<>|]/g, "_");
  s = s.replace(/^[.\s]+/, "").trim();
  while (Buffer.byteLength(s) > 200) s = s.slice(0, -1);
  return s.length === 0 ? "file" : s;
}

/** CRC32C of the first `length` bytes of a file. */
export async function fileCrc32c(path: string, length: number): Promise<number> {
  if (length === 0) return 0;
  let crc = 0;
  const rs = createReadStream(path, { start: 0, end: length - 1, highWaterMark: 1 << 20 });
  for await (const chunk of rs) crc = crc32c(chunk as Buffer, crc);
  return crc;
}

/**
 * Receives files into `dir`: each transfer is written to
 * `dir/.<transferId>.partial` and renamed atomically to its (sanitized)
 * name once the whole content was verified. An interrupted transfer keeps
 * its partial file, and `resume` reports how much of it is stored, so the
 * sender continues from there. A cancelled or corrupt transfer's partial
 * file is removed.
 *
 * ```ts
 * const sink = fileSink("/srv/inbox");
 * server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
 * ```
 */
export function fileSink(dir: string, options: FileSinkOptions = {}): FileSink {
  const active = new Set<string>();
  /** CRCs computed for resume answers, reused when the stream arrives. */
  const known = new Map<string, ResumePoint>();
  const partialPath = (tid: string) => join(dir, `.${tid}.partial`);

  const resume: ResumeLookup = async (transferId) => {
    if (!TRANSFER_ID.test(transferId)) return { offset: 0, crc: 0 };
    if (active.has(transferId)) {
      throw new PointSubError("ERR_RESUME", `transfer ${transferId} is still being received; retry shortly`);
    }
    let size: number;
    try {
      size = (await stat(partialPath(transferId))).size;
    } catch {
      return { offset: 0, crc: 0 };
    }
    const point = { offset: size, crc: await fileCrc32c(partialPath(transferId), size) };
    known.set(transferId, point);
    return point;
  };

  const handler: StreamHandler = async (stream, ctx) => {
    const tid = stream.transferId;
    if (tid === undefined || !TRANSFER_ID.test(tid)) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "file transfers need a transferId of [A-Za-z0-9_-]{1,128}");
    }
    if (active.has(tid)) throw new PointSubError("ERR_RESUME", `transfer ${tid} is already being received`);
    active.add(tid);
    const name = safeFileName(stream.meta.name);
    const partial = partialPath(tid);
    const finalPath = join(dir, name);
    options.onStream?.(stream, ctx);
    try {
      await mkdir(dir, { recursive: true });
      const offset = stream.offset;
      if (offset > 0) {
        let have = known.get(tid);
        known.delete(tid);
        if (have === undefined || have.offset !== offset) {
          const size = await stat(partial).then(
            (s) => s.size,
            () => 0,
          );
          have = size >= offset ? { offset, crc: await fileCrc32c(partial, offset) } : undefined;
        }
        if (have === undefined || have.crc !== stream.prefixCrc) {
          throw new PointSubError(
            "ERR_RESUME",
            `stored prefix of ${tid} does not match the sender's (offset ${offset})`,
          );
        }
      }
      const fh = await open(partial, offset > 0 ? "r+" : "w");
      let size = offset;
      try {
        if (offset > 0) await fh.truncate(offset);
        // Everything available goes to one writev; one write in flight while
        // the next batch arrives. Writes stay in order: the partial file
        // never has holes.
        let writing: Promise<unknown> = Promise.resolve();
        try {
          for (let batch = await stream.readBatch(BATCH); batch !== null; batch = await stream.readBatch(BATCH)) {
            await writing;
            // Written: the stream may receive later frames into these buffers.
            writing = fh.writev(batch, size).then(() => stream.release(batch));
            for (const b of batch) size += b.length;
          }
        } finally {
          await writing.catch(() => {});
        }
        await writing;
        await fh.close();
        await rename(partial, finalPath);
        const receipt: FileReceipt = {
          name,
          path: finalPath,
          size,
          crc32c: stream.contentCrc.toString(16).padStart(8, "0"),
          resumedFrom: offset,
        };
        options.onFile?.(receipt, stream, ctx);
        return JSON.stringify(receipt);
      } finally {
        await fh.close().catch(() => {});
      }
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      // Keep what was stored for a resume unless the transfer was cancelled or is corrupt.
      if (code === "ERR_CANCELLED" || code === "ERR_CHECKSUM" || code === "ERR_RESUME" || code === "ERR_PROTOCOL") {
        await rm(partial, { force: true });
      }
      throw err;
    } finally {
      active.delete(tid);
    }
  };
  return { handler, resume, dir };
}
