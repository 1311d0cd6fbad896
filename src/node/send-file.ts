import { open, stat } from "node:fs/promises";
import { basename, resolve } from "node:path";
import { type ResumableSource, type SendResumableOptions, sendResumable } from "../client/resumable.ts";
import type { Connection } from "../connection/connection.ts";
import { PointSubError } from "../errors/error.ts";
import { onChunkSent } from "../stream/release.ts";
import type { Transfer } from "../stream/transfer.ts";
import { FILE_ROUTE, fileCrc32c } from "./file-sink.ts";

/** Options of {@link sendFile}. */
export interface SendFileOptions extends SendResumableOptions {
  /** Stream route of the receiver's file sink. Default `/pointsub/file/1.0.0`. */
  route?: string;
  /** Name the receiver stores the file under. Default: the file's base name. */
  name?: string;
  /**
   * Stable id of this transfer. Default: derived from the absolute path,
   * size and modification time, so re-running the same send resumes it.
   */
  transferId?: string;
}

const READ_CHUNK = 1 << 20;
/** Buffers a file reader keeps for reuse. */
const POOL = 8;

/**
 * The content of `path` from `start` on, in 1 MiB buffers, with one read
 * ahead. Reads straight into its buffers (unlike a ReadStream's async
 * iterator, it never concatenates buffered chunks) and, when sent with
 * `sendStream`, gets each buffer back once the transport is done with it,
 * so a transfer of any size cycles through a few buffers.
 */
export async function* readFileFrom(path: string, start = 0): AsyncGenerator<Uint8Array> {
  const fh = await open(path, "r");
  const pool: Buffer[] = [];
  const read = (pos: number) => fh.read(pool.pop() ?? Buffer.allocUnsafeSlow(READ_CHUNK), 0, READ_CHUNK, pos);
  let next = read(start);
  try {
    let pos = start;
    for (;;) {
      const { bytesRead, buffer } = await next;
      if (bytesRead === 0) return;
      pos += bytesRead;
      next = read(pos);
      const chunk = buffer.subarray(0, bytesRead);
      onChunkSent(chunk, () => {
        if (pool.length < POOL) pool.push(buffer);
      });
      yield chunk;
    }
  } finally {
    await next.catch(() => {});
    await fh.close();
  }
}

/** A transfer id from a file's identity: same file, same id. */
export async function fileTransferId(path: string): Promise<string> {
  const abs = resolve(path);
  const st = await stat(abs);
  // node:crypto is loaded on first use (it costs a process a few MB of RSS).
  const { createHash } = await import("node:crypto");
  return createHash("sha256").update(`${abs}\0${st.size}\0${st.mtimeMs}`).digest("hex").slice(0, 32);
}

/**
 * Sends a file to a peer's file sink (see `fileSink`), resuming where the
 * receiver stopped if an earlier attempt was interrupted. Pass a connection,
 * or a function that opens one: then a dropped connection is retried with a
 * new one and the transfer continues from the receiver's last stored byte.
 * Resolves (the returned Transfer) to the receiver's receipt (JSON bytes).
 */
export function sendFile(
  target: Connection | (() => Promise<Connection>),
  path: string,
  options: SendFileOptions = {},
): Transfer {
  const source = (async (): Promise<ResumableSource> => {
    const st = await stat(path).catch(() => undefined);
    if (st === undefined || !st.isFile()) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `${path} is not a readable file`);
    }
    return {
      size: st.size,
      transferId: options.transferId ?? (await fileTransferId(path)),
      open: (offset) => readFileFrom(path, offset),
      prefixCrc: (length) => fileCrc32c(path, length),
    };
  })();
  return sendResumable(target, options.route ?? FILE_ROUTE, source, {
    ...options,
    meta: { ...options.meta, name: options.name ?? basename(path) },
  });
}
