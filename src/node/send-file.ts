import { constants } from "node:fs";
import { link, mkdir, open, readFile, rm, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import {
  type Recover,
  type ResumableSource,
  type SendResumableOptions,
  type SharedConnection,
  sendResumableWith,
} from "../client/resumable.ts";
import { crc32cHex } from "../codec/crc32c.ts";
import { crc32cCombine } from "../codec/crc32c-combine.ts";
import type { Connection } from "../connection/connection.ts";
import { PointSubError } from "../errors/error.ts";
import { checkOptions } from "../errors/options.ts";
import { onChunkCrc } from "../stream/chunk-crc.ts";
import { onChunkSent, takeRelease } from "../stream/release.ts";
import type { Transfer } from "../stream/transfer.ts";
import type { StreamSource } from "../stream/types.ts";
import { nodeCrc32c } from "./crc32c-native.ts";
import {
  FILE_CHECK_ROUTE,
  FILE_ROUTE,
  type FileCheckAnswer,
  type FileCheckQuery,
  type FileReceipt,
  fileCrc32c,
  safeFileName,
} from "./file-sink.ts";

/** Options of {@link sendFile}. */
export interface SendFileOptions extends SendResumableOptions {
  /** Stream route of the receiver's file sink. Default `/pointsub/file/1.0.0`. */
  route?: string;
  /** Name the receiver stores the file under. Default: the file's base name. */
  name?: string;
  /**
   * Relative path the receiver stores the file under, `/`-separated (e.g.
   * `photos/2024/a.jpg`: the receiver makes the directories). Sent as
   * `meta.path`; the receiver refuses `..`, absolute paths, backslashes and
   * control characters (`ERR_INVALID_ARGUMENT`). Takes precedence over `name`.
   */
  relativePath?: string;
  /**
   * Stable id of this transfer: 32..128 characters of `[A-Za-z0-9_-]`.
   * It is the capability to query and resume the transfer on the receiver,
   * so it must be unguessable. Default: {@link fileTransferId}, an HMAC of
   * the file's absolute path, size, modification time and the route, keyed
   * by this user's resume key, so re-running the same send resumes it and
   * nobody else can compute the id.
   */
  transferId?: string;
  /**
   * Secret key of the default transfer id (bytes, or a string used as UTF-8
   * bytes; not empty: ERR_INVALID_ARGUMENT — 32 random bytes as the default
   * key is). Default: this user's key from {@link resumeKeyPath}, created on
   * first use.
   */
  resumeKey?: Uint8Array | string;
}

/** The progress of a transfer and its snapshots (node/ names transfer/'s types through stream/). */
type Progress = Transfer["progress"];
type ProgressSnapshot = ReturnType<Transfer["snapshot"]>;

/**
 * The receiver's receipt of a file of `size` bytes (docs/PROTOCOL.md
 * §3.12): a JSON object whose `name` and `path` are strings, `size` is the
 * size sent (when known), `crc32c` 8 hex digits and `resumedFrom` at most the size; else
 * `ERR_PROTOCOL` (a receiver's answer is shown to users and added up: a
 * string where a number belongs printed the receiver's text as a size).
 */
export function decodeFileReceipt(answer: Uint8Array, size: number | undefined): FileReceipt {
  let o: unknown;
  try {
    o = JSON.parse(new TextDecoder().decode(answer));
  } catch (err) {
    throw new PointSubError("ERR_PROTOCOL", "the receiver's receipt is not JSON", { cause: err });
  }
  const r = (typeof o === "object" && o !== null ? o : {}) as Record<string, unknown>;
  const uint = (v: unknown) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
  if (
    typeof r.name !== "string" ||
    typeof r.path !== "string" ||
    !uint(r.size) ||
    (size !== undefined && r.size !== size) ||
    typeof r.crc32c !== "string" ||
    !/^[0-9a-f]{8}$/.test(r.crc32c) ||
    !uint(r.resumedFrom) ||
    (r.resumedFrom as number) > (r.size as number)
  ) {
    throw new PointSubError(
      "ERR_PROTOCOL",
      `the receiver's receipt is not one of the ${size ?? "?"} bytes sent (name, path, size, crc32c, resumedFrom)`,
    );
  }
  return { name: r.name, path: r.path, size: r.size as number, crc32c: r.crc32c, resumedFrom: r.resumedFrom as number };
}

/**
 * A quick check's answer (docs/PROTOCOL.md §3.12.1) to `count` queries: `{"files": [...]}`, at most
 * one answer per query, each `null` or `{"size": n}` with `crc32c` (8 lowercase hex digits) when the
 * size is the one asked about; else the server's `ERR_PROTOCOL` (before, a TypeError of whatever it
 * was, taken for a connection failure: retried, then reported as ERR_CONNECT).
 */
export function decodeCheckAnswer(answer: Uint8Array, count: number): FileCheckAnswer[] {
  const fail = (why: string) => new PointSubError("ERR_PROTOCOL", `malformed quick-check answer: ${why}`);
  let o: unknown;
  try {
    o = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(answer));
  } catch {
    throw fail("not UTF-8 JSON");
  }
  const files = (typeof o === "object" && o !== null ? o : {}) as { files?: unknown };
  if (!Array.isArray(files.files) || files.files.length > count) {
    throw fail(`files must be a list of at most ${count} answers`);
  }
  return files.files.map((a: unknown): FileCheckAnswer => {
    if (a === null) return null;
    const r = (typeof a === "object" ? a : {}) as Record<string, unknown>;
    if (typeof r.size !== "number" || !Number.isSafeInteger(r.size) || r.size < 0)
      throw fail("an answer without a size");
    if (r.crc32c === undefined) return { size: r.size };
    if (typeof r.crc32c !== "string" || !/^[0-9a-f]{8}$/.test(r.crc32c)) {
      throw fail("crc32c must be 8 lowercase hex digits");
    }
    return { size: r.size, crc32c: r.crc32c };
  });
}

/**
 * The receipt's CRC32C against the content's as this side sent it (`sent`:
 * the transfer's `contentCrc`, undefined when the receiver answered before
 * the END): a receiver that stored other bytes, or answered OK before it had
 * the whole file, fails the transfer (`ERR_CHECKSUM`, `ERR_PROTOCOL`) instead
 * of being reported as holding it (docs/PROTOCOL.md §3.10: an early OK
 * verified nothing it did not read).
 */
export function checkReceiptCrc(receipt: FileReceipt, sent: number | undefined): void {
  if (sent === undefined) {
    throw new PointSubError(
      "ERR_PROTOCOL",
      `the receiver answered before the whole of ${receipt.name} was sent: its receipt verifies nothing`,
    );
  }
  if (receipt.crc32c !== crc32cHex(sent)) {
    throw new PointSubError(
      "ERR_CHECKSUM",
      `the receiver's receipt names CRC32C ${receipt.crc32c} for ${receipt.name}, not the ${crc32cHex(sent)} sent`,
    );
  }
}

/** What {@link sendFile} resolves to: the receiver's receipt, and what this call sent. */
export interface SentFileReceipt extends FileReceipt {
  /** The transfer id (the capability to resume it). */
  transferId: string;
  /**
   * Content bytes this call transferred, over all its attempts: the size
   * minus what the receiver already held, plus what a dropped connection
   * lost. Divide by the elapsed time for the rate of this run.
   */
  bytesSent: number;
  /** Connections this call used (1 unless it reconnected). */
  attempts: number;
}

/**
 * A file being sent: awaitable (`await transfer` or `transfer.done`) for
 * the {@link SentFileReceipt}, with progress and a way to cancel it.
 */
export class FileTransfer implements PromiseLike<SentFileReceipt> {
  /** Progress across all attempts: `transfer.progress.on("progress", fn)` or `for await`. */
  readonly progress: Progress;
  /** Resolves to the receipt once the receiver verified and stored the whole file; rejects with a PointSubError. */
  readonly done: Promise<SentFileReceipt>;
  private readonly inner: Transfer;

  /** @internal Created by {@link sendFile}. */
  constructor(inner: Transfer, done: Promise<SentFileReceipt>) {
    this.inner = inner;
    this.progress = inner.progress;
    this.done = done;
    done.catch(() => {});
  }

  /** The transfer id (stable across attempts and re-runs). */
  get id(): string {
    return this.inner.id;
  }

  /** The latest progress. */
  snapshot(): ProgressSnapshot {
    return this.inner.snapshot();
  }

  /** Cancels: the receiver sees ERR_CANCELLED and drops the partial file; `done` rejects with ERR_CANCELLED. */
  cancel(reason = "cancelled by the sender"): void {
    this.inner.cancel(reason);
  }

  // biome-ignore lint/suspicious/noThenProperty: a FileTransfer is deliberately awaitable.
  then<A = SentFileReceipt, B = never>(
    onfulfilled?: ((value: SentFileReceipt) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.done.then(onfulfilled, onrejected);
  }
}

const READ_CHUNK = 1 << 20;
/** Buffers a file reader keeps for reuse. */
const POOL = 8;

/**
 * The content of `path` from `start` on, in 1 MiB buffers, with one read
 * ahead. Reads straight into its buffers (unlike a ReadStream's async
 * iterator, it never concatenates buffered chunks) and, when sent with
 * `sendStream`, gets each buffer back once the transport is done with it,
 * so a transfer of any size cycles through a few buffers. Given the file's
 * `size`, it reads no further (and a small file costs one buffer of its
 * size, not 1 MiB).
 */
export async function* readFileFrom(
  path: string,
  start = 0,
  size?: number,
  flags: string | number = "r",
): AsyncGenerator<Uint8Array> {
  const fh = await open(path, flags);
  const pool: Buffer[] = [];
  const chunk = size === undefined ? READ_CHUNK : Math.max(1, Math.min(READ_CHUNK, size - start));
  const done = { bytesRead: 0, buffer: Buffer.alloc(0) };
  // Never past `size`: a file appended to meanwhile ends there (the caller's look at it afterwards
  // tells it changed), not with a last chunk longer than the stream declared.
  const read = (pos: number) =>
    size !== undefined && pos >= size
      ? Promise.resolve(done)
      : fh.read(
          pool.pop() ?? Buffer.allocUnsafeSlow(chunk),
          0,
          size === undefined ? chunk : Math.min(chunk, size - pos),
          pos,
        );
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

/**
 * Where this user's resume key lives: `$POINTSUB_STATE_DIR/resume.key`,
 * else `$XDG_STATE_HOME/pointsub/resume.key` (when absolute), else
 * `~/.local/state/pointsub/resume.key`.
 */
export function resumeKeyPath(env: Record<string, string | undefined> = process.env): string {
  if (env.POINTSUB_STATE_DIR) return join(resolve(env.POINTSUB_STATE_DIR), "resume.key");
  const xdg = env.XDG_STATE_HOME;
  return join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), ".local", "state"), "pointsub", "resume.key");
}

const keys = new Map<string, Promise<Uint8Array>>();
/** Used when no key file can be created (read-only home) or read: resume then works within this process only. */
let processKey: Uint8Array | undefined;

/** A key from a key file's content: 64 hex digits, or at least 32 raw bytes. */
function parseKey(content: Buffer, path: string): Uint8Array {
  const text = content.toString("latin1").trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, "hex");
  if (content.length >= 32) return new Uint8Array(content);
  throw new PointSubError(
    "ERR_INVALID_ARGUMENT",
    `the resume key ${path} is corrupt (expected 64 hex digits); remove it to create a new one`,
  );
}

/**
 * Why a key file cannot be read that a key for this process answers, as a home where none can be made:
 * one this user may not read (made by a `sudo` run that kept their HOME), or a path that is no file.
 * Before, each of them failed every `sendFile` (the CLI's `send` of any file) with its raw error.
 */
const UNREADABLE_KEY = new Set(["EACCES", "EPERM", "EISDIR", "ENOTDIR"]);

async function readOrCreateKey(path: string): Promise<Uint8Array> {
  let unreadable = false;
  try {
    return parseKey(await readFile(path), path);
  } catch (err) {
    const code = String((err as { code?: unknown }).code);
    if (code !== "ENOENT" && !UNREADABLE_KEY.has(code)) throw err;
    unreadable = code !== "ENOENT";
  }
  const { randomBytes } = await import("node:crypto");
  if (unreadable) {
    processKey ??= new Uint8Array(randomBytes(32));
    return processKey;
  }
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    // Written whole to a private temporary file, then linked into place: a
    // concurrent first use never sees a half-written key, and the first link wins.
    const tmp = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
    const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      await fh.writeFile(`${randomBytes(32).toString("hex")}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(tmp, path);
    } catch (err) {
      if ((err as { code?: unknown }).code !== "EEXIST") {
        // No hard links here: exclusive create instead.
        const content = await readFile(tmp);
        await open(path, "wx", 0o600).then(async (out) => {
          try {
            await out.writeFile(content);
          } finally {
            await out.close();
          }
        });
      }
    } finally {
      await rm(tmp, { force: true });
    }
    return parseKey(await readFile(path), path);
  } catch (err) {
    if (err instanceof PointSubError) throw err;
    processKey ??= new Uint8Array(randomBytes(32));
    return processKey;
  }
}

/**
 * This user's secret resume key (32 random bytes), read from
 * {@link resumeKeyPath} or created there on first use (file mode 0600,
 * directory 0700). If it cannot be created (read-only home) or read (not
 * this user's, not a file), a key for
 * this process is used: resume then works across reconnections but not
 * across re-runs. A corrupt key file is an `ERR_INVALID_ARGUMENT`.
 */
export function loadResumeKey(path: string = resumeKeyPath()): Promise<Uint8Array> {
  let key = keys.get(path);
  if (key === undefined) {
    key = readOrCreateKey(path);
    keys.set(path, key);
    key.catch(() => keys.delete(path));
  }
  return key;
}

/**
 * Whether the key {@link loadResumeKey} gives for `path` is the one for this process only (none could be
 * read or made there): transfer ids then differ in the next process, and a re-run resumes nothing.
 */
export async function resumeKeyForProcessOnly(path: string = resumeKeyPath()): Promise<boolean> {
  return (await loadResumeKey(path)) === processKey;
}

/** Options of {@link fileTransferId}. */
export interface FileTransferIdOptions {
  /** The HMAC key. Default: {@link loadResumeKey}. */
  key?: Uint8Array | string;
  /** The receiver's route (part of the id). Default `/pointsub/file/1.0.0`. */
  route?: string;
}

/**
 * A transfer id from a file's identity: HMAC-SHA256 (64 hex digits) keyed
 * by this user's resume key over the absolute path, size, modification
 * time and route. Same file, same key: same id (a re-run resumes); without
 * the key nobody can compute it, so it can serve as the capability to
 * resume the transfer.
 */
export async function fileTransferId(path: string, options: FileTransferIdOptions = {}): Promise<string> {
  // A path of another type threw path.resolve's raw TypeError, a missing file fs's raw ENOENT error.
  if (typeof path !== "string" || path === "") {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "fileTransferId path must be a non-empty string");
  }
  checkOptions(options, "fileTransferId");
  const abs = resolve(path);
  const st = await stat(abs).catch((err: unknown) => {
    const code = (err as { code?: unknown }).code;
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${path} is not a readable file (${String(code)})`, {
      cause: err,
    });
  });
  return transferIdOf(abs, st, options);
}

let crypto: Promise<typeof import("node:crypto")> | undefined;

/** {@link fileTransferId} of `abs` given its stat (no second stat per file). */
async function transferIdOf(
  abs: string,
  st: { size: number; mtimeMs: number },
  options: FileTransferIdOptions,
): Promise<string> {
  // Anything else threw createHmac's raw TypeError (a key), or went into the id as its JSON (a route).
  if (options.key !== undefined && typeof options.key !== "string" && !(options.key instanceof Uint8Array)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "resume key must be a string or a Uint8Array");
  }
  // Empty (an unset variable's ""), the id is anyone's to compute from the file's path, size and time: any
  // peer of the same principal (every anonymous one) could resume, and append to, this transfer.
  if (options.key !== undefined && options.key.length === 0) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "resume key must not be empty (use 32 random bytes)");
  }
  if (options.route !== undefined && typeof options.route !== "string") {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "route must be a string");
  }
  const key = options.key ?? (await loadResumeKey());
  // node:crypto is loaded on first use (it costs a process a few MB of RSS).
  crypto ??= import("node:crypto");
  const { createHmac } = await crypto;
  return createHmac("sha256", typeof key === "string" ? Buffer.from(key, "utf8") : key)
    .update(JSON.stringify(["pointsub-file", abs, st.size, st.mtimeMs, options.route ?? FILE_ROUTE]))
    .digest("hex");
}

/**
 * Sends a file to a peer's file sink (see `fileSink`), resuming where the
 * receiver stopped if an earlier attempt was interrupted. Pass a connection,
 * a function that opens one, or a `SharedConnection` (many files over one
 * connection): with the last two a dropped connection is retried with a
 * new one and the transfer continues from the receiver's last stored byte.
 * Resolves (the returned {@link FileTransfer}) to the receipt, an object:
 * `{ name, path, size, crc32c, resumedFrom, transferId, bytesSent, attempts }`.
 * The receiver refuses to replace an existing file (`ERR_EXISTS`) unless
 * its sink allows it, and may refuse a file over its quota (`ERR_QUOTA`);
 * a retry refused `ERR_EXISTS` (an earlier attempt stored the file, its
 * receipt lost with its connection) resolves when the receiver's quick
 * check (`FILE_CHECK_ROUTE`) finds the file whole at this size and CRC32C
 * (`resumedFrom` is then the size).
 * An error no new connection can cure ends it at once (see `sendResumable`);
 * a connection it opened is closed whenever it ends.
 */
export function sendFile(
  target: Connection | (() => Promise<Connection>) | SharedConnection,
  path: string,
  options: SendFileOptions = {},
): FileTransfer {
  return sendFileVia(ASYNC_FILES, target, path, options);
}

/**
 * @internal How {@link sendFileVia} looks at and reads a file: `sendFile`
 * asynchronously; the CLI reads small files synchronously (one process, one
 * job: three thread-pool round trips per file cost more than the file).
 */
export interface FileAccess {
  stat(path: string): Promise<FileStat | undefined>;
  /** The content from `offset` to `size` (also the prefix check's reads). */
  open(path: string, offset: number, size: number): StreamSource;
}

/** What {@link FileAccess.stat} tells of a file (an fs.Stats has it all). */
export interface FileStat {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  dev: number;
  isFile(): boolean;
}

/** The asynchronous file access of {@link sendFile}. */
const ASYNC_FILES: FileAccess = {
  stat: (path) => stat(path).catch(() => undefined),
  open: (path, offset, size) => readFileFrom(path, offset, size),
};

/**
 * The content of `path` from `offset`, after checking that the file is still
 * the one the transfer's stat found (size and mtime): a file that grew or was
 * rewritten since (between attempts, or before the first one opened it)
 * fails with ERR_SOURCE instead of being stored as a mix of both, or cut to
 * its old size and reported whole; and checked again once read to its end
 * (before the END goes out): one written to while it was read fails alike.
 */
async function* unchanged(
  files: FileAccess,
  path: string,
  was: FileStat,
  offset: number,
  marks: CrcMarks,
): AsyncGenerator<Uint8Array> {
  const now = await stillTheFile(files, path, was);
  marks.dropAfter(offset);
  // Each chunk's end, once the stream checksummed it, is a checkpoint for a later attempt's prefix check —
  // only from the file the transfer's stat found, at the path before and after the open: one of the same size
  // and mtime there meanwhile (a link or a directory swapped, and back by the resume) recorded its CRCs, and
  // the check, combining them with that file's bytes, took the receiver's prefix of the other one as this one's.
  let record = was.size < MARK_SPACING || !sameIdentity(now, was) ? false : undefined;
  for await (const chunk of files.open(path, offset, was.size) as AsyncIterable<Uint8Array>) {
    record ??= sameIdentity(await files.stat(path), was);
    if (record) onChunkCrc(chunk, marks.add);
    yield chunk;
  }
  // Read to its end: a file written meanwhile (in place, or appended to) was read torn — what the
  // END's CRC would vouch for is neither version. Said as tar says "file changed as we read it".
  const end = await files.stat(path);
  if (end === undefined || end.size !== was.size || end.mtimeMs !== was.mtimeMs) {
    throw new PointSubError("ERR_SOURCE", `${path} changed while it was sent (written to meanwhile); send it again`);
  }
}

/**
 * Throws ERR_SOURCE, saying how, unless `path` is still the file the transfer's stat found (`was`: same
 * size and modification time) — before an attempt reads it (its resume check, its content).
 */
async function stillTheFile(
  files: FileAccess,
  path: string,
  was: { size: number; mtimeMs: number },
): Promise<FileStat> {
  const now = await files.stat(path);
  if (now !== undefined && now.size === was.size && now.mtimeMs === was.mtimeMs) return now;
  const how =
    now === undefined
      ? `${was.size} bytes then, gone now`
      : now.size !== was.size
        ? `${was.size} bytes then, ${now.size} now`
        : `modified at ${new Date(was.mtimeMs).toISOString()} then, ${new Date(now.mtimeMs).toISOString()} now`;
  throw new PointSubError("ERR_SOURCE", `${path} changed since its transfer began (${how}); send it again`);
}

/** Whether `now` is the file `was` found (same size and modification time). */
function sameFile(
  now: { size: number; mtimeMs: number } | undefined,
  was: { size: number; mtimeMs: number } | undefined,
): boolean {
  return now !== undefined && was !== undefined && now.size === was.size && now.mtimeMs === was.mtimeMs;
}

/** Checkpoints kept at least this far apart (a resume's prefix check reads at most this much plus a chunk). */
const MARK_SPACING = 4 * 1024 * 1024;
/** Most checkpoints kept: past it every other one is dropped and the spacing doubles (64 KiB of numbers). */
const MARKS_MAX = 4096;

/**
 * The CRC32C of a file's content up to points an attempt sent, as its
 * stream computed them ({@link onChunkCrc}): a later attempt's prefix check
 * reads only the bytes from the last one before the receiver's offset
 * (before, it read the whole prefix again at each resume, which waited for
 * it). Trusted only while the file is the one the transfer's stat found
 * (inode, device, size, mtime, ctime: a write changes the ctime, which
 * cannot be set back), else forgotten and the prefix read whole as before.
 * In memory, per `sendFile` call.
 */
class CrcMarks {
  private readonly at: number[] = [];
  private readonly crc: number[] = [];
  private spacing = MARK_SPACING;

  /** Records that the first `length` bytes' CRC32C is `crc` (a point closer than the spacing to the last is skipped). */
  readonly add = (length: number, crc: number): void => {
    const n = this.at.length;
    if (length < (n === 0 ? 0 : this.at[n - 1]) + this.spacing) return;
    this.at.push(length);
    this.crc.push(crc >>> 0);
    if (n + 1 > MARKS_MAX) {
      let k = 0;
      for (let i = 1; i < this.at.length; i += 2, k++) {
        this.at[k] = this.at[i];
        this.crc[k] = this.crc[i];
      }
      this.at.length = k;
      this.crc.length = k;
      this.spacing *= 2;
    }
  };

  /** The last point at or before `length`, if any. */
  before(length: number): { at: number; crc: number } | undefined {
    let lo = 0;
    let hi = this.at.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.at[mid] <= length) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? undefined : { at: this.at[lo - 1], crc: this.crc[lo - 1] };
  }

  /** Forgets the points past `offset` (an attempt from there records its own, in order). */
  dropAfter(offset: number): void {
    let n = this.at.length;
    while (n > 0 && this.at[n - 1] > offset) n--;
    this.at.length = n;
    this.crc.length = n;
  }

  clear(): void {
    this.dropAfter(-1);
  }
}

/** Whether `now` is the file `was` is (inode, device, size, mtime and ctime unchanged). */
function sameIdentity(now: FileStat | undefined, was: FileStat): boolean {
  return (
    now !== undefined &&
    now.ino === was.ino &&
    now.dev === was.dev &&
    now.size === was.size &&
    now.mtimeMs === was.mtimeMs &&
    now.ctimeMs === was.ctimeMs
  );
}

/** CRC32C of the content `files.open` reads from `path` between `from` and `to`, from `crc` on, and how many bytes it read. */
async function crcOfRange(
  files: FileAccess,
  path: string,
  from: number,
  to: number,
  crc: number,
): Promise<{ crc: number; read: number }> {
  let read = 0;
  if (to <= from) return { crc, read };
  for await (const chunk of files.open(path, from, to) as AsyncIterable<Uint8Array>) {
    crc = nodeCrc32c().compute(chunk, crc);
    read += chunk.length;
    // The reader's buffer back to its pool (never sent).
    takeRelease(chunk)?.();
  }
  return { crc: crc >>> 0, read };
}

/**
 * CRC32C of the first `length` bytes of the file at `path` (a resume's prefix check), read through
 * `files`: from the last checkpoint before `length` ({@link CrcMarks}) when the file is still `was`
 * before and after the read, so only the bytes after it are read; else the whole prefix, as before.
 */
async function prefixCrcOf(
  files: FileAccess,
  path: string,
  was: FileStat,
  length: number,
  marks: CrcMarks,
): Promise<number> {
  if (length === 0) return 0;
  const mark = marks.before(length);
  if (mark !== undefined && sameIdentity(await files.stat(path), was)) {
    const tail = await crcOfRange(files, path, mark.at, length, 0);
    if (tail.read === length - mark.at && sameIdentity(await files.stat(path), was)) {
      return crc32cCombine(mark.crc, tail.crc, tail.read);
    }
  }
  // Changed since (a chmod too: its ctime): what was recorded is not trusted again.
  if (mark !== undefined) marks.clear();
  return (await crcOfRange(files, path, 0, length, 0)).crc;
}

/** @internal {@link sendFile} with its file access given (the CLI's reads small files synchronously). */
export function sendFileVia(
  files: FileAccess,
  target: Connection | (() => Promise<Connection>) | SharedConnection,
  path: string,
  options: SendFileOptions = {},
): FileTransfer {
  // Checked before anything starts: a path of another type threw a raw TypeError (from basename) after
  // the file's stat had started, whose rejection then went unhandled; null options threw a TypeError.
  checkOptions(options, "sendFile");
  if (typeof path !== "string" || path === "") {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "sendFile path must be a non-empty string");
  }
  const route = options.route ?? FILE_ROUTE;
  /** What the transfer's stat found (every attempt sends that file). */
  let stated: { size: number; mtimeMs: number } | undefined;
  /** The content's CRC32C at points the attempts sent (see {@link CrcMarks}). */
  const marks = new CrcMarks();
  const source = (async (): Promise<ResumableSource> => {
    if (options.transferId !== undefined && !/^[A-Za-z0-9_-]{32,128}$/.test(options.transferId)) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        "transferId must be 32 to 128 characters [A-Za-z0-9_-] (an unguessable capability)",
      );
    }
    const st = await files.stat(path);
    if (st === undefined || !st.isFile()) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `${path} is not a readable file`);
    }
    stated = st;
    return {
      size: st.size,
      transferId: options.transferId ?? (await transferIdOf(resolve(path), st, { key: options.resumeKey, route })),
      // Every attempt sends the file this stat found, the first one too: it opens the file only after the
      // receiver answered its resume query (a round trip the receiver times), and a file replaced meanwhile
      // was read cut to the old size and stored as whole (neither version).
      open: (offset) => unchanged(files, path, st, offset, marks),
      // Checked first, as its content is: a file deleted or replaced since fails saying so, not with the open's error.
      prefixCrc: async (length) => {
        await stillTheFile(files, path, st);
        return prefixCrcOf(files, path, st, length, marks);
      },
    };
  })();
  // Its failure reaches `done` through the transfer; a transfer that failed before awaiting it (a target
  // that is no connection) left it unhandled: a missing file then crashed the process (unhandledRejection).
  source.catch(() => {});
  // Bytes sent: what each attempt moved past the offset it started from.
  let sent = 0;
  let base = 0;
  let attempts = 0;
  // `sent` and `base` before the last attempt began: a recovered outcome is the attempt before it's.
  let sentBefore = 0;
  let baseBefore = 0;
  /** Whether the outcome is the one {@link recover} found (the attempt before the last stored the file). */
  let recovered = false;
  /**
   * Whether the last attempt was refused ERR_EXISTS and looked at (its check cut short: retried): the attempt
   * that stored the file is still the one before it, whose `sentBefore` and `baseBefore` are kept.
   */
  let refusedExists = false;
  /** Whether an attempt of this call began at `base` (one refused before that, at its resume query, did not). */
  let began = false;
  /** Whether the receiver refused the stream of the attempt that began at `base` (ERR_RESUME). */
  let refused = false;
  /** Whether the last attempt got as far as its stream (a retry after that is this attempt's failure). */
  let streaming = false;
  const name = options.name ?? basename(path);
  /**
   * A retry refused ERR_EXISTS: the attempt before it may have stored the file, its receipt lost with
   * its connection (the receiver died, or the link was cut, between naming the file and answering).
   * Asked with the quick check (docs/PROTOCOL.md §3.12.1): a file held whole under the name, at this
   * size and CRC32C, is this content (the file unchanged here since the transfer's stat) — the
   * transfer's outcome, as `pointsub send` reports such a file. Undefined otherwise (the refusal stands).
   */
  const recover: Recover = async (err, conn, signal) => {
    if (err.code !== "ERR_EXISTS") return undefined;
    refusedExists = true;
    const src = await source;
    const size = src.size as number;
    const query: FileCheckQuery =
      options.relativePath === undefined ? { name, size } : { path: options.relativePath, size };
    const res = await conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files: [query] }), { signal });
    const [held] = decodeCheckAnswer(res, 1);
    if (held?.crc32c === undefined || held.size !== size) return undefined;
    const before = await files.stat(path);
    const crc = (await fileCrc32c(path, size)) >>> 0;
    const after = await files.stat(path);
    if (crc32cHex(crc) !== held.crc32c || !sameFile(before, stated) || !sameFile(after, stated)) return undefined;
    // As the sink names it in its receipt: a relative path as sent (it refuses one it would change), a name cleaned.
    const stored = options.relativePath ?? safeFileName(name);
    const receipt: FileReceipt = { name: stored, path: stored, size, crc32c: held.crc32c, resumedFrom: size };
    recovered = true;
    return { answer: new TextEncoder().encode(JSON.stringify(receipt)), contentCrc: crc };
  };
  const inner: Transfer = sendResumableWith(
    target,
    route,
    source,
    {
      ...options,
      meta: {
        ...options.meta,
        name,
        ...(options.relativePath === undefined ? {} : { path: options.relativePath }),
      },
      // A non-function is passed on as given: the transfer's checks refuse it.
      onRetry:
        options.onRetry !== undefined && typeof options.onRetry !== "function"
          ? options.onRetry
          : (e, n, delayMs) => {
              // Its stream refused; not its resume query (the receiver still winding down its cut stream).
              if (streaming && e.code === "ERR_RESUME") refused = true;
              streaming = false;
              options.onRetry?.(e, n, delayMs);
            },
      // Not a function: passed on as it is, for sendResumable to refuse (ERR_INVALID_ARGUMENT); called from the
      // wrapper, it failed the first attempt as ERR_SOURCE "options.onAttempt is not a function".
      onAttempt: (options.onAttempt !== undefined && typeof options.onAttempt !== "function"
        ? options.onAttempt
        : (n, offset) => {
            // Called before the attempt resets the progress: it still holds where the last one stopped. Counted
            // as acknowledged, or up to what the receiver now holds: an attempt cut before the receiver's
            // acknowledgements came back moved that much all the same (before: none of it counted). Not when no
            // attempt of this call streamed from `base`, or the receiver refused it: then another stream (an
            // earlier run's, still winding down) stored what it holds past it.
            if (!refusedExists) {
              sentBefore = sent;
              baseBefore = base;
            }
            refusedExists = false;
            if (began)
              sent += Math.max(0, (refused ? inner.progress.bytes : Math.max(inner.progress.bytes, offset)) - base);
            began = true;
            refused = false;
            streaming = true;
            base = offset;
            attempts = n + 1;
            options.onAttempt?.(n, offset);
          }) as SendFileOptions["onAttempt"],
    },
    recover,
  );
  // The checkpoints serve this call's attempts only: not kept for as long as the caller holds the transfer.
  const forget = () => marks.clear();
  inner.done.then(forget, forget);
  const done = inner.done.then(async (answer): Promise<SentFileReceipt> => {
    const receipt = decodeFileReceipt(answer, (await source).size);
    checkReceiptCrc(receipt, inner.contentCrc);
    // Recovered: the attempt before the refused one sent the rest of the file from its offset (the
    // receiver stored it whole; its last acknowledgements may have been lost with the connection), the
    // refused one nothing (counted as the whole file again, 3,000,000 + 2,097,152 reported for a 3 MB file).
    const bytesSent = recovered
      ? sentBefore + Math.max(0, receipt.size - baseBefore)
      : sent + Math.max(0, receipt.size - base);
    return { ...receipt, transferId: inner.id, bytesSent, attempts };
  });
  return new FileTransfer(inner, done);
}
