import { createHash } from "node:crypto";
import { open, stat } from "node:fs/promises";
import { basename, resolve } from "node:path";
import type { Connection } from "../connection/connection.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import { Transfer } from "../stream/transfer.ts";
import type { SendStreamOptions } from "../stream/types.ts";
import { Progress } from "../transfer/progress.ts";
import { FILE_ROUTE, fileCrc32c } from "./file-sink.ts";

/** Options of {@link sendFile}. */
export interface SendFileOptions
  extends Pick<SendStreamOptions, "compress" | "signal" | "onProgress" | "progressIntervalMs"> {
  /** Stream route of the receiver's file sink. Default `/pointsub/file/1.0.0`. */
  route?: string;
  /** Name the receiver stores the file under. Default: the file's base name. */
  name?: string;
  /** More metadata for the receiver. */
  meta?: Record<string, unknown>;
  /**
   * Stable id of this transfer. Default: derived from the absolute path,
   * size and modification time, so re-running the same send resumes it.
   */
  transferId?: string;
  /** Ask the receiver how far a previous attempt got and continue from there. Default true. */
  resume?: boolean;
  /** With a connect function: attempts after a dropped connection. Default 10. */
  retries?: number;
  /** Delay before the first retry, doubled each time up to 5 s. Default 200 ms. */
  retryDelayMs?: number;
  /** Called for each attempt with the offset it starts from. */
  onAttempt?: (attempt: number, offset: number) => void;
}

/** Errors after which a new connection may succeed. */
const RETRYABLE = new Set([
  "ERR_CONNECTION_CLOSED",
  "ERR_CONNECT",
  "ERR_KEEPALIVE",
  "ERR_TIMEOUT",
  "ERR_GOING_AWAY",
  "ERR_RESUME",
]);

const READ_CHUNK = 1 << 20;

/**
 * The content of `path` from `start` on, in 1 MiB buffers, with one read
 * ahead. Reads straight into fresh buffers: unlike a ReadStream's async
 * iterator, it never concatenates buffered chunks.
 */
export async function* readFileFrom(path: string, start = 0): AsyncGenerator<Uint8Array> {
  const fh = await open(path, "r");
  const read = (pos: number) => fh.read(Buffer.allocUnsafeSlow(READ_CHUNK), 0, READ_CHUNK, pos);
  let next = read(start);
  try {
    let pos = start;
    for (;;) {
      const { bytesRead, buffer } = await next;
      if (bytesRead === 0) return;
      pos += bytesRead;
      next = read(pos);
      yield buffer.subarray(0, bytesRead);
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
  const route = options.route ?? FILE_ROUTE;
  let cancelled: PointSubError | undefined;
  let current: Transfer | undefined;
  const ready = (async () => {
    const st = await stat(path);
    if (!st.isFile()) throw new PointSubError("ERR_INVALID_ARGUMENT", `${path} is not a file`);
    return { size: st.size, transferId: options.transferId ?? (await fileTransferId(path)) };
  })();
  // Progress needs the id; until stat finished, use a placeholder created below.
  const progress = new Progress(options.transferId ?? "pending", undefined, options.progressIntervalMs ?? 100);
  if (options.onProgress !== undefined) progress.on("progress", options.onProgress);

  const run = async (): Promise<Uint8Array> => {
    const { size, transferId } = await ready;
    progress.transferId = transferId;
    progress.total = size;
    const retries = options.retries ?? 10;
    let delay = options.retryDelayMs ?? 200;
    for (let attempt = 0; ; attempt++) {
      if (cancelled !== undefined) throw cancelled;
      let conn: Connection | undefined;
      try {
        conn = typeof target === "function" ? await target() : target;
        let offset = 0;
        let prefixCrc = 0;
        if (options.resume !== false) {
          const point = await conn.queryResume(route, transferId);
          if (point.offset > 0 && point.offset <= size && (await fileCrc32c(path, point.offset)) === point.crc) {
            offset = point.offset;
            prefixCrc = point.crc;
          }
        }
        options.onAttempt?.(attempt, offset);
        if (offset > 0 || attempt > 0) progress.setStatus("resuming");
        progress.setBase(offset);
        if (cancelled !== undefined) throw cancelled;
        const t = conn.sendStream(route, readFileFrom(path, offset), {
          total: size,
          offset,
          prefixCrc,
          transferId,
          meta: { ...options.meta, name: options.name ?? basename(path) },
          compress: options.compress,
          signal: options.signal,
          progressIntervalMs: options.progressIntervalMs,
        });
        current = t;
        const forward = (s: { bytes: number; status: string }) => {
          if (s.status === "transferring" && progress.status !== "transferring") progress.setStatus("transferring");
          if (s.bytes > progress.bytes) progress.add(s.bytes - progress.bytes);
        };
        t.progress.on("progress", forward);
        try {
          const answer = await t;
          progress.setStatus("completed");
          if (typeof target === "function") await conn.close();
          return answer;
        } finally {
          t.progress.off("progress", forward);
          current = undefined;
        }
      } catch (err) {
        const e = toPointSubError(err, "ERR_SOURCE");
        const canRetry = typeof target === "function" && RETRYABLE.has(e.code) && cancelled === undefined;
        if (!canRetry || attempt >= retries) throw e;
        progress.setStatus("paused", e);
        if (typeof target === "function" && conn !== undefined && conn.state !== "closed") conn.destroy();
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5000);
      }
    }
  };
  const done = run().then(
    (v) => v,
    (err: unknown) => {
      const e = toPointSubError(err, "ERR_SOURCE");
      progress.setStatus(e.code === "ERR_CANCELLED" ? "cancelled" : "failed", e);
      throw e;
    },
  );
  return new Transfer(progress, done, (reason) => {
    cancelled = new PointSubError("ERR_CANCELLED", reason);
    current?.cancel(reason);
  });
}
