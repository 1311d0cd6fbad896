import {
  access,
  closeSync,
  constants,
  type Dirent,
  fstatSync,
  lstatSync,
  openSync,
  readdir,
  readFileSync,
  readSync,
  type Stats,
  stat,
  statSync,
} from "node:fs";
import { basename, join, resolve, sep } from "node:path";
import { answerWithin, formatMs, watchLastSent } from "../client/answer-deadline.ts";
import { SharedConnection } from "../client/resumable.ts";
import type { CodecName } from "../codec/compression.ts";
import { crc32cHex } from "../codec/crc32c.ts";
import {
  BUNDLE_FILE_MAX,
  BUNDLE_HEADER_MAX,
  decodeBundleAnswer,
  encodeBundle,
  FILE_BUNDLE_ROUTE,
} from "../codec/file-bundle.ts";
import type { Connection } from "../connection/connection.ts";
import { ERROR_CODES, type ErrorCode } from "../errors/codes.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import { loadNativeCrc32c, nodeCrc32c } from "../node/crc32c-native.ts";
import { FILE_CHECK_MAX, FILE_CHECK_ROUTE, type FileCheckQuery, safeFileName } from "../node/file-sink.ts";
import {
  decodeCheckAnswer,
  resumeKeyForProcessOnly,
  resumeKeyPath,
  type SentFileReceipt,
  sendFileVia,
} from "../node/send-file.ts";
import { type ClientAuthFlags, clientConnectOptions, FILE_ANSWER_MAX } from "./auth.ts";
import { connect } from "./connect.ts";
import { aboutName, formatBytes, formatRate } from "./format.ts";
import { cliFiles, localCrc32c, NO_FOLLOW, treeFiles } from "./local-files.ts";
import {
  jsonLine,
  type OutputMode,
  outputMode,
  ProgressView,
  printable,
  printError,
  reportOutput,
  writeOut,
} from "./output.ts";
import { RetryNotices, retryAfter, stopRetrying } from "./retry.ts";
import { type DirIdentity, TreeRecord } from "./tree-record.ts";

export interface SendOptions extends ClientAuthFlags {
  to: string;
  compress: "auto" | "off" | CodecName;
  retries: number;
  resume: boolean;
  /** Send directories, keeping their tree on the server. */
  recursive?: boolean;
  /** Send files even when the server already holds them whole. */
  force?: boolean;
  /**
   * The quick check reads every file (as rsync -c): the tree's record and the sender's records of its
   * large files' CRC32C are not trusted (written anew from what was read). Files the server holds whole
   * are still skipped.
   */
  checksum?: boolean;
  /** Files in flight at once over the connection. Default 32. */
  parallel?: number;
  /** Bytes of small files a `-r` walk reads ahead of their bundles' answers. Default {@link READ_AHEAD_BYTES}. */
  readAhead?: number;
  /**
   * How long (ms) the server may take to answer: each quick-check request,
   * and each stream (a bundle, a larger file) after its last byte was sent,
   * plus that stream's size at {@link ANSWER_BYTES_PER_SECOND}. An answer
   * that does not come in time is `ERR_TIMEOUT`, retried (`retries`) like a
   * dropped connection. 0: wait as long as the connection lives. Default
   * {@link DEFAULT_TIMEOUT_MS}.
   */
  timeout?: number;
  json?: boolean;
}

/** `send --timeout`'s default: 30 s, as `request --timeout` and a connection's `requestTimeoutMs`. */
export const DEFAULT_TIMEOUT_MS = 30_000;

/**
 * The rate at which a stream's answer deadline grows with its size: the
 * server's work after the last byte (an fsync of what it wrote) grows with
 * it — 10 MiB/s, as a request's default deadline grows with its payload
 * (`requestBytesPerSecond`). A 1 MiB bundle waits 0.1 s more, a 10 GiB file
 * ~17 min more.
 */
export const ANSWER_BYTES_PER_SECOND = 10 * 1024 * 1024;

/** How long the answer to a stream of `bytes` is awaited after its last byte (0: no deadline). */
export function answerTimeoutMs(timeout: number, bytes: number): number {
  return timeout > 0 ? timeout + Math.ceil((bytes * 1000) / ANSWER_BYTES_PER_SECOND) : 0;
}

/**
 * Files up to this size are sent from their first byte without asking the
 * server how much it holds (no resume query): resending at most 64 KiB
 * costs less than the query's round trip. A partial the server holds for
 * such a file is replaced.
 */
export const RESUME_MIN_BYTES = 64 * 1024;

/**
 * Files up to this size are sent in bundles ({@link FILE_BUNDLE_ROUTE}): up
 * to {@link BUNDLE_FILES} files or {@link BUNDLE_BYTES} bytes in one stream,
 * stored by the server as separate files. A failed bundle is sent again
 * whole (after a quick check drops the files the server already named).
 * A bundle costs the sender more than its files' bytes (its stream, its
 * answer, its turn of the walk): 2,000 files of 1 KiB in 8 bundles of 256
 * took ~8 % less of the sender's CPU than in 16 of 128 (the bundle bytes'
 * bound, not the count, limits larger files).
 */
export const BUNDLE_SMALL_MAX = Math.min(RESUME_MIN_BYTES, BUNDLE_FILE_MAX);
export const BUNDLE_FILES = 256;
export const BUNDLE_BYTES = 1024 * 1024;
/**
 * Bundles in flight at once (each read from disk only when its turn comes):
 * enough to keep the server's disk busy while one bundle is named and
 * answered and the next one read, few enough that the first bytes leave
 * after one bundle's files were read (not every file of the send), answers
 * arrive all along, and an interrupted send loses at most these bundles.
 */
export const BUNDLES_IN_FLIGHT = 4;
/**
 * Bytes of small files a `-r` walk holds read and not yet answered for in
 * the bundles it made (in flight or waiting for a turn): over it, the walk
 * waits for an answer. A slow server holds the sender's read-ahead to this,
 * plus the bundle being made (at most {@link BUNDLE_BYTES}) and the file
 * being read.
 */
export const READ_AHEAD_BYTES = 2 * BUNDLES_IN_FLIGHT * BUNDLE_BYTES;

/**
 * Groups small files into bundles as they are found, in order (up to
 * {@link BUNDLE_FILES} files or {@link BUNDLE_BYTES} bytes each): `send -r`
 * sends each bundle as soon as the walk completed it, while it goes on.
 */
export class BundlePlanner {
  private cur: SendItem[] = [];
  private bytes = 0;
  /** Bundles completed so far. */
  private made = 0;

  /** Adds a file of at most {@link BUNDLE_SMALL_MAX} bytes; returns the bundle it completed (the one before it), if any. */
  add(it: SendItem): SendItem[] | undefined {
    let done: SendItem[] | undefined;
    if (this.cur.length >= BUNDLE_FILES || this.bytes + it.size > BUNDLE_BYTES) {
      done = this.cur;
      this.made++;
      this.cur = [];
      this.bytes = 0;
    }
    this.cur.push(it);
    this.bytes += it.size;
    return done;
  }

  /**
   * The last bundle, after the last file: none when there were no small
   * files; a send's only small file goes as a file of its own (`single`: a
   * server without bundles takes it too).
   */
  end(): { bundle?: SendItem[]; single?: SendItem } {
    const last = this.cur;
    this.cur = [];
    this.bytes = 0;
    if (last.length === 0) return {};
    if (this.made === 0 && last.length === 1) return { single: last[0] };
    this.made++;
    return { bundle: last };
  }
}

/** Groups the small files of `items` into bundles, in order; the others are returned as they are. */
export function planBundles(items: readonly SendItem[]): { bundles: SendItem[][]; single: SendItem[] } {
  const planner = new BundlePlanner();
  const bundles: SendItem[][] = [];
  const single: SendItem[] = [];
  for (const it of items) {
    if (it.size > BUNDLE_SMALL_MAX) {
      single.push(it);
      continue;
    }
    const done = planner.add(it);
    if (done !== undefined) bundles.push(done);
  }
  const last = planner.end();
  if (last.bundle !== undefined) bundles.push(last.bundle);
  // One small file alone goes as a file of its own, in its place among the others.
  if (last.single !== undefined) return { bundles: [], single: items.slice() };
  return { bundles, single };
}

/** Bundles this process sent (their transfer ids). */
let bundlesSent = 0;

/**
 * `compress: "auto"` across one send's bundles, as a stream does across its
 * chunks: after a bundle that went raw (its probe found it incompressible)
 * the next bundles go without a probe — 1, then 2, 4 … up to 64 of them —
 * and a bundle that compressed resets it. Each bundle is a stream of its
 * own, and each probe compresses a sample with a new zstd context (~1 ms of
 * CPU): 12 bundles of random 60 KiB files made 48 probes, now 16.
 */
export class BundleCompression {
  private skip = 0;
  private backoff = 1;

  /** The compress option of the next bundle: "auto" (probed), or "off" while skipping. */
  next(): "auto" | "off" {
    if (this.skip === 0) return "auto";
    this.skip--;
    return "off";
  }

  /** What an "auto" bundle's frames did: some compressed, or all went raw. */
  result(compressed: boolean): void {
    if (compressed) {
      this.skip = 0;
      this.backoff = 1;
    } else {
      this.skip = this.backoff;
      this.backoff = Math.min(this.backoff * 2, 64);
    }
  }
}

/** Frames of `conn`'s outgoing streams compressed and sent raw so far (every algorithm). */
function compressionFrames(conn: Connection): { compressed: number; raw: number } {
  let compressed = 0;
  let raw = 0;
  for (const c of Object.values(conn.stats().compression)) {
    compressed += c.compressed;
    raw += c.raw;
  }
  return { compressed, raw };
}

/** What happened to each file of a bundle: the server's receipt or an error. */
/** Each file of a bundle: its outcome, and the transfer id of the bundle's last attempt ("" when none was sent). */
type BundleOutcome = {
  item: SendItem;
  size: number;
  crc32c?: string;
  error?: PointSubError;
  transferId?: string;
  /** The server held it whole before any attempt of the bundle was sent: unchanged, not sent. */
  held?: boolean;
}[];

/**
 * Sends `group` as one bundle over the shared connection, again (up to
 * `retries` times, with backoff) after a retryable failure, each time
 * without the files the server already holds whole. Undefined when the
 * server has no bundle route (an older server): send them one by one.
 */
async function sendBundle(
  shared: SharedConnection,
  group: readonly SendItem[],
  opts: {
    compress: SendOptions["compress"];
    retries: number;
    timeout: number;
    auto?: BundleCompression;
    notices?: RetryNotices;
  },
): Promise<BundleOutcome | undefined> {
  const out: BundleOutcome = [];
  let transferId = "";
  let left: SendItem[] = [];
  const contents: Uint8Array[] = [];
  /** The whole bundle, read in place (undefined: encoded from `contents`). */
  let body: Uint8Array | undefined = readBundle(group, contents);
  if (body !== undefined) left = group.slice();
  else {
    for (const it of group) {
      try {
        const content = it.content ?? readListed(it);
        if (content.length > BUNDLE_FILE_MAX) throw new Error("it grew while being sent");
        contents.push(content);
        left.push(it);
      } catch (err) {
        out.push({ item: it, size: it.size, error: toPointSubError(err, "ERR_SOURCE", `${it.file}: `) });
      }
    }
  }
  /** Whether an attempt started sending the bundle (else a file found whole on a retry was there before). */
  let tried = false;
  for (let n = 0; left.length > 0; n++) {
    let conn: Connection | undefined;
    try {
      conn = await shared.get();
      if (n > 0) {
        // Sent again: files the server named before the failure are not sent twice. Compared with the
        // bytes this bundle read (what an earlier attempt sent), not with the walk's CRC or the file now:
        // a file that changed since the walk looked at it is stored as read, and not refused as existing.
        const read = new Map(left.map((it, i) => [it, contents[i]]));
        const same = (await quickCheck(conn, left, undefined, opts.timeout, { read })) ?? new Set<SendItem>();
        for (const it of left)
          if (same.has(it)) out.push({ item: it, size: read.get(it)?.length ?? it.size, held: !tried });
        const keep = left.map((it, i) => (same.has(it) ? -1 : i)).filter((i) => i >= 0);
        left = keep.map((i) => left[i]);
        const kept = keep.map((i) => contents[i]);
        contents.length = 0;
        contents.push(...kept);
        body = undefined;
        if (left.length === 0) break;
      }
      const payload =
        body ??
        encodeBundle(
          left.map((it, i) =>
            it.tree ? { path: it.target, content: contents[i] } : { name: it.target, content: contents[i] },
          ),
        );
      body = payload;
      const compress = opts.compress === "auto" && opts.auto !== undefined ? opts.auto.next() : opts.compress;
      const before = compress === "auto" && opts.auto !== undefined ? compressionFrames(conn) : undefined;
      // Its answer is awaited --timeout after its last byte left (the server verifies, writes and fsyncs ~1 MiB).
      const watched = watchLastSent([body]);
      // An id of this process's own (a bundle is never resumed): no Web Crypto to load for it.
      transferId = `bundle-${process.pid}-${++bundlesSent}`;
      tried = true;
      const t = conn.sendStream(FILE_BUNDLE_ROUTE, watched.source, {
        transferId,
        total: body.length,
        meta: { files: left.length },
        compress,
        // Watched here (answerWithin, below): not the connection's deadline too, with its own error.
        answerTimeoutMs: 0,
      });
      const res = await answerWithin(
        t,
        watched.sent,
        answerTimeoutMs(opts.timeout, body.length),
        `the server did not answer a bundle of ${someFiles(left, formatBytes(body.length))}`,
      );
      if (before !== undefined) {
        // (Other bundles' frames of the same send may count too: the verdict is about this send's data.)
        const after = compressionFrames(conn);
        if (after.compressed > before.compressed) opts.auto?.result(true);
        else if (after.raw > before.raw) opts.auto?.result(false);
      }
      const results = decodeBundleAnswer(res, left.length);
      // An answer before the END verified nothing it did not read (docs/PROTOCOL.md §3.10): no receipt.
      const early = t.contentCrc === undefined;
      left.forEach((it, i) => {
        const r = results[i];
        if (early) {
          const error = new PointSubError(
            "ERR_PROTOCOL",
            "the server answered the bundle before it received all of it",
          );
          out.push({ item: it, size: it.size, error });
        } else if (r === undefined) {
          out.push({ item: it, size: it.size, error: new PointSubError("ERR_PROTOCOL", "no answer for this file") });
        } else if ("error" in r) {
          out.push({ item: it, size: it.size, error: peerError(r.error.code, r.error.message) });
        } else if (r.size !== contents[i].length) {
          // (What was sent: a file that changed size since the walk is sent as it is now.)
          const sent = contents[i].length;
          const error = new PointSubError("ERR_PROTOCOL", `the server stored ${r.size} bytes of the ${sent} sent`);
          out.push({ item: it, size: it.size, error });
        } else if (r.crc32c !== crc32cHex(contentCrc(it, contents[i]))) {
          // Its receipt names other bytes than those sent: not reported stored.
          const error = new PointSubError(
            "ERR_CHECKSUM",
            `the server's receipt names CRC32C ${r.crc32c}, not that of the bytes sent`,
          );
          out.push({ item: it, size: it.size, error });
        } else out.push({ item: it, size: r.size, crc32c: r.crc32c });
      });
      return withTransferId(out, transferId);
    } catch (err) {
      const e = toPointSubError(err, "ERR_CONNECT");
      if (conn !== undefined) shared.failed(conn, e);
      if (e.code === "ERR_NO_ROUTE" && out.length === 0 && n === 0) return undefined;
      if (stopRetrying(e, n, opts.retries, shared)) {
        for (const it of left) out.push({ item: it, size: it.size, error: e });
        return withTransferId(out, transferId);
      }
      await retryAfter(e, n, opts.notices);
    }
  }
  return withTransferId(out, transferId);
}

/** The error a server named for a file: its code when this side knows it, else ERR_HANDLER naming it. */
/**
 * CRC32C of the bytes of `it` a bundle sent; noted in its tree's record when they are the walk's (a
 * bundle sends them while it holds them: copied in, or as they are).
 */
function contentCrc(it: SendItem, content: Uint8Array): number {
  const crc = nodeCrc32c().compute(content, 0);
  if (it.content !== undefined && it.content.length === content.length) noted(it, crc);
  return crc;
}

/** `crc` (of the bytes the walk read of `it`), noted in its tree's record; returned. */
function noted(it: SendItem, crc: number): number {
  if (it.dir !== undefined) it.record?.noteRead(it.target, it.size, crc, it.dir);
  return crc;
}

function peerError(code: string, message: string): PointSubError {
  return (ERROR_CODES as readonly string[]).includes(code)
    ? new PointSubError(code as ErrorCode, message)
    : new PointSubError("ERR_HANDLER", `${code}: ${message}`);
}

/** `out` with `id` as the transfer id of the entries that have none. */
function withTransferId(out: BundleOutcome, id: string): BundleOutcome {
  for (const o of out) o.transferId ??= id;
  return out;
}

/** Names `items` in a message: `1 file (a.txt)`, `256 files (a.txt …, 1.0 MiB)` with `more`. */
function someFiles(items: readonly SendItem[], more = ""): string {
  const tail = more === "" ? "" : `, ${more}`;
  return items.length === 1
    ? `1 file (${items[0].target}${tail})`
    : `${items.length} files (${items[0].target} …${tail})`;
}

/**
 * The bundle of `group` (codec/file-bundle.ts's format) with every file
 * the walk read already copied in (its `content`), every other one read
 * straight into its place at the size the walk listed: one buffer for
 * the bundle, no buffer per file and no copy (`contents` gets each file's
 * view of it, for a bundle sent again without some). Undefined when a file
 * cannot be read or is no longer at its listed size (or its header is
 * too long): the caller reads them one by one, and reports each failure.
 */
export function readBundle(group: readonly SendItem[], contents: Uint8Array[]): Buffer | undefined {
  const heads = group.map((it) =>
    JSON.stringify(it.tree ? { path: it.target, size: it.size } : { name: it.target, size: it.size }),
  );
  let total = 0;
  const lengths = heads.map((h, i) => {
    const n = Buffer.byteLength(h);
    total += 2 + n + group[i].size;
    return n;
  });
  if (lengths.some((n, i) => n > BUNDLE_HEADER_MAX || group[i].size > BUNDLE_FILE_MAX)) return undefined;
  // One byte more than the bundle: each file is asked for one byte more than listed (a full read means
  // it grew), which lands where the next header is written after it. A buffer of its own (not Node's
  // shared pool): the stream holds it until the bundle is answered, and a retry sends it again.
  const body = Buffer.allocUnsafeSlow(total + 1);
  const views: Uint8Array[] = [];
  let at = 0;
  for (let i = 0; i < group.length; i++) {
    const it = group[i];
    body[at] = lengths[i] >>> 8;
    body[at + 1] = lengths[i] & 0xff;
    body.write(heads[i], at + 2, "utf8");
    at += 2 + lengths[i];
    if (it.content !== undefined) {
      body.set(it.content, at);
      views.push(body.subarray(at, at + it.size));
      at += it.size;
      continue;
    }
    let fd: number;
    try {
      fd = openSync(it.file, openFlags(it));
    } catch {
      return undefined;
    }
    try {
      if (readSync(fd, body, at, it.size + 1, 0) !== it.size) return undefined;
    } catch {
      return undefined;
    } finally {
      closeSync(fd);
    }
    views.push(body.subarray(at, at + it.size));
    at += it.size;
  }
  contents.push(...views);
  return body.subarray(0, total);
}

/**
 * A small file's content, read at the size the walk listed (one open, one
 * read of one byte more, one close: no fstat as `readFileSync` makes, no
 * read to see the end). A file that shrank since is sent as it is now; one
 * that grew is read whole again.
 */
export function readListed(it: SendItem): Uint8Array {
  const fd = openSync(it.file, openFlags(it));
  try {
    // One byte more than listed: a full read means the file grew.
    const buf = Buffer.allocUnsafe(it.size + 1);
    let n = 0;
    while (n < buf.length) {
      const want = buf.length - n;
      const r = readSync(fd, buf, n, want, n);
      n += r;
      // A short read of a regular file is its end: at the listed size, no second read to see 0.
      if (r === 0 || (r < want && n >= it.size)) break;
    }
    return n <= it.size ? buf.subarray(0, n) : readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * How a file to send is opened: a tree's file without following a link
 * (O_NOFOLLOW: the walk listed a regular file, and one replaced by a link
 * since — to a file outside the tree — fails with ELOOP, ERR_SOURCE, rather
 * than being sent under the tree's name); a file argument as named (a link
 * the user named is followed).
 */
const openFlags = (it: SendItem): number | string => (it.tree ? NO_FOLLOW : "r");

/** Exit codes after a signal, as a shell reports a process it ended (128 + the signal's number). */
const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

/**
 * Failures about one file: the others go on. Any other error (no file
 * sink, refused credentials, a compression the server lacks, a connection
 * that stayed down through every retry) would fail every file the same
 * way: the send stops taking new files.
 */
const PER_FILE = new Set([
  "ERR_EXISTS",
  "ERR_QUOTA",
  "ERR_INVALID_ARGUMENT",
  "ERR_CHECKSUM",
  "ERR_RESUME",
  "ERR_SOURCE",
]);

/** A file to send: where it is here, what the server stores it under, its size. */
export interface SendItem {
  file: string;
  /** The name shown and stored: the base name, or (from a directory with -r) the relative path. */
  target: string;
  /** True when `target` is a relative path (sent as `meta.path`, the server makes its directories). */
  tree: boolean;
  size: number;
  /**
   * Its bytes, read when the walk found it (a tree's file of at most {@link BUNDLE_SMALL_MAX} bytes,
   * with {@link ReadAhead}); dropped once its bundle was answered.
   */
  content?: Uint8Array;
  /**
   * Its CRC32C when its tree has a record ({@link TreeRecord}): of {@link content} as the walk read it,
   * or as the record knows it (unchanged since the last run read it: the walk did not read it).
   */
  crc?: number;
  /** The record of its tree, where the CRC32C of {@link content} is noted once computed (`noted`). */
  record?: TreeRecord;
  /** The directory the walk listed it in (with {@link record}: a file recorded by a read is trusted there only). */
  dir?: DirIdentity;
}

/**
 * A walk that reads each small file as it finds it (`on`), instead of an
 * lstat now and an open, read and close when its bundle is sent: one
 * open, read and close in all, no stat. `room` holds the walk while the
 * bytes read and not yet answered for are over the send's bound.
 */
export interface ReadAhead {
  on: boolean;
  /** Undefined when another file may be read now, else a promise of that. */
  room(): Promise<void> | undefined;
}

/**
 * Where {@link readTreeFile} reads: files side by side in buffers of this
 * size (each file's `content` a view of one), not a buffer per file (a
 * pooled `Buffer` per 1 KiB file cost ~2.5 µs and garbage; a view ~0.05).
 * A buffer is kept while a view of it is (until their bundles were
 * answered): the read-ahead bound plus at most 64 KiB per buffer.
 */
const READ_ARENA_BYTES = 1024 * 1024;
let arena: Buffer | undefined;
let arenaAt = 0;

/**
 * A tree's file found by the walk, read now when small: opened without
 * following a link (as {@link openFlags}: a file replaced by a link since
 * its directory was listed fails with ELOOP), read once, one byte more than
 * {@link BUNDLE_SMALL_MAX} asked (a short read of a regular file is its end:
 * its size), into the next free bytes of a shared buffer
 * ({@link READ_ARENA_BYTES}), closed. A larger one is only fstatted (its bytes
 * are read when it is sent, as a stream of its own).
 */
export function readTreeFile(file: string, target: string, record?: TreeRecord, dir?: DirIdentity): SendItem {
  if (record?.known === true && dir !== undefined) {
    // A file last run read, unchanged since: its CRC32C from the record, nothing read.
    const st = lstatSync(file, { throwIfNoEntry: false });
    if (st?.isFile() === true && st.size <= BUNDLE_SMALL_MAX) {
      const crc = record.lookup(target, st, dir);
      if (crc !== undefined) return { file, target, tree: true, size: st.size, crc };
    }
  }
  const fd = openSync(file, NO_FOLLOW);
  try {
    const want = BUNDLE_SMALL_MAX + 1;
    if (arena === undefined || arena.length - arenaAt < want) {
      arena = Buffer.allocUnsafeSlow(READ_ARENA_BYTES);
      arenaAt = 0;
    }
    const n = readSync(fd, arena, arenaAt, want, 0);
    if (n < want) {
      const content = arena.subarray(arenaAt, arenaAt + n);
      arenaAt += n;
      const it: SendItem = { file, target, tree: true, size: n, content };
      // Its CRC is recorded once computed (the quick check's, or the bundle's receipt check), as read by this run.
      if (record !== undefined && dir !== undefined) {
        it.record = record;
        it.dir = dir;
      }
      return it;
    }
    return { file, target, tree: true, size: fstatSync(fd).size };
  } finally {
    closeSync(fd);
  }
}

/**
 * The plain summary of a sent file. The rate is that of the bytes this run
 * sent (after a resume, not the whole size) over its time.
 */
export function sentLine(file: string, r: SentFileReceipt, seconds: number): string {
  const resumed = r.resumedFrom > 0 ? `, resumed at ${formatBytes(r.resumedFrom)}` : "";
  const rate = formatRate(r.bytesSent / Math.max(seconds, 1e-3));
  return `${file}: sent ${formatBytes(r.size)} in ${seconds.toFixed(2)} s (${rate})${resumed}`;
}

/**
 * Bytes of files found to send from which the send loads the native CRC32C
 * (`@node-rs/crc32`) at once, not after the first `NATIVE_LOAD_AFTER` (4 MiB)
 * bytes were checksummed in JS. Every byte sent is checksummed once (its
 * frame's CRC32C; 2,000 files of 1 KiB: 2.5 MB with the requests): the JS,
 * cold, takes 3–7 ms per MiB here, the load 4–7 ms once. A send of a few
 * small files never loads it. (At 1 MiB, a tree's bundles sent while the
 * walk went on had been checksummed in JS up to then: ~1 MB of 2,000 × 1 KiB.)
 */
export const CRC_NATIVE_FROM = 256 * 1024;

/**
 * A directory's entries with their types, and what is at a path (undefined: nothing readable): the
 * callback API as promises, so a send of small files never loads node:fs/promises (the CLI bundle
 * loads it on first use, scripts/build-cli.ts).
 */
const listDir = (dir: string) =>
  new Promise<Dirent[]>((resolve, reject) =>
    readdir(dir, { withFileTypes: true }, (err, entries) => (err === null ? resolve(entries) : reject(err))),
  );

/** A directory entry as the walk reads it: its name as a string and its type. */
type WalkEntry = Pick<Dirent, "name" | "isFile" | "isDirectory" | "isSymbolicLink">;

/** Decodes a name's bytes, throwing on bytes that are not UTF-8 (a leading U+FEFF kept: part of the name). */
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * `dir`'s entries whose names are UTF-8, read again as bytes, when a name
 * read as a string holds U+FFFD (what Node puts for bytes that are not
 * UTF-8, and a character a real name may hold): a name that is not
 * UTF-8 cannot be stored under its own name on the server, and opened by
 * its string (U+FFFD encoded) it is not found, or is another file of the
 * tree (one named with U+FFFD itself). `odd` hears of each left out.
 */
function utf8Entries(dir: string, odd: (name: string) => void): Promise<WalkEntry[]> {
  return new Promise((resolve, reject) =>
    readdir(dir, { withFileTypes: true, encoding: "buffer" }, (err, entries) => {
      if (err !== null) return reject(err);
      const out: WalkEntry[] = [];
      for (const d of entries) {
        try {
          const name = utf8.decode(d.name);
          out.push({
            name,
            isFile: () => d.isFile(),
            isDirectory: () => d.isDirectory(),
            isSymbolicLink: () => d.isSymbolicLink(),
          });
        } catch {
          odd(d.name.toString());
        }
      }
      resolve(out);
    }),
  );
}
const statOf = (path: string) =>
  new Promise<Stats | undefined>((resolve) => stat(path, (err, st) => resolve(err === null ? st : undefined)));

/** Whether this process may read `path` (its permissions; a file argument is checked before anything is sent). */
const readable = (path: string) =>
  new Promise<boolean>((resolve) => access(path, constants.R_OK, (err) => resolve(err === null)));

/** A tree's file as the walk lists it without reading it (its size now), or undefined when it is gone. */
function listed(path: string, target: string): SendItem | undefined {
  const st = lstatSync(path, { throwIfNoEntry: false });
  return st === undefined ? undefined : { file: path, target, tree: true, size: st.size };
}

/** `path` when it is a directory itself now (not a link to one, nor gone): its identity. */
const directoryNow = (path: string): Stats | undefined => {
  const st = lstatSync(path, { throwIfNoEntry: false });
  return st?.isDirectory() === true ? st : undefined;
};

/** Entries the directory walk lstats between two turns of the event loop. */
const WALK_YIELD_EVERY = 256;

/**
 * What `send` sends: each file argument under its base name; with
 * `recursive`, each directory argument's regular files under
 * `<directory's name>/<path inside it>` (as `scp -r` and `rsync -r` without a
 * trailing slash: a trailing slash changes nothing). Symbolic links and
 * special files inside a directory are skipped (reported through `skip`);
 * empty directories are not recreated. Two arguments that would be stored
 * under the same name are refused before anything is sent. `onItem` sees
 * each file as it is found, in order. `argsChecked` runs once the arguments
 * were checked, before any directory is walked; `unique` tells that the
 * walk finds every file under a name of its own (no two directory
 * arguments have the same name), so each file `onItem` sees is one of the
 * list returned (may be sent at once); otherwise two directories of one
 * name may both hold a file for one name (refused after the walk, before
 * anything is sent) or be the same directory (walked twice, its files
 * listed once), and `onItem` may see a file that is not sent. An `onItem` that returns true
 * (it handed a bundle to the connection) gives the event loop a turn before the walk goes on.
 */
export async function collectFiles(
  args: readonly string[],
  recursive: boolean,
  skip: (path: string, why: string) => void = () => {},
  argsChecked: (unique: boolean) => void = () => {},
  onItem: (it: SendItem) => boolean | undefined = () => undefined,
  readAhead?: ReadAhead,
  unlisted: (dir: string, err: PointSubError) => void = (dir, err) => skip(dir, err.message),
  record?: (dir: string) => TreeRecord | undefined,
): Promise<SendItem[]> {
  const items: SendItem[] = [];
  let sinceYield = 0;
  /** Walks `dir` (`top`: a directory argument's identity, as its stat found it: it may be a link named). */
  const walk = async (dir: string, prefix: string, sub: boolean, rec: TreeRecord | undefined, top?: Stats) => {
    let entries: WalkEntry[];
    try {
      entries = await listDir(dir);
    } catch (err) {
      const code = (err as { code?: string }).code ?? "an error";
      // A directory inside the tree that cannot be listed fails alone (`unlisted`): the rest goes.
      if (!sub) throw new PointSubError("ERR_SOURCE", `${dir}: cannot be listed (${code})`, { cause: err });
      unlisted(dir, new PointSubError("ERR_SOURCE", `cannot be listed (${code})`, { cause: err }));
      return;
    }
    if (entries.some((d) => d.name.includes("\uFFFD"))) {
      entries = await utf8Entries(dir, (name) => skip(dir + sep + name, "its name is not UTF-8"));
    }
    // readdir follows a link: a directory inside the tree that was replaced by one (to a directory
    // outside it) between its parent's listing and its own is not walked. (Its name is looked up
    // again when its files are read: a tree's file is opened without following a link, readListed.)
    const here = sub ? directoryNow(dir) : top;
    if (sub && here === undefined) {
      skip(dir, "changed while it was walked (no longer a directory)");
      return;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const d of entries) {
      // The connection opens meanwhile: its connect and handshake are answered between lstats, so
      // it is ready when the walk ends (not one round trip later).
      if (++sinceYield >= WALK_YIELD_EVERY) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
      }
      // `dir` is normalized (below): a name from readdir needs no normalizing join.
      const path = dir + sep + d.name;
      const target = `${prefix}/${d.name}`;
      if (d.isDirectory()) await walk(path, target, true, rec);
      else if (d.isFile()) {
        let it: SendItem | undefined;
        if (readAhead?.on === true) {
          const wait = readAhead.room();
          if (wait !== undefined) await wait;
          try {
            it = readTreeFile(path, target, rec, here);
          } catch {
            // Not readable now (replaced by a link since its directory was listed: ELOOP...): listed as
            // the walk lists it otherwise, and its read when its bundle is sent reports the file's failure.
            it = listed(path, target);
          }
        } else it = listed(path, target);
        if (it === undefined) {
          // Removed since its directory was listed (as rsync's "vanished" files): the others go on.
          skip(path, "gone since its directory was listed");
          continue;
        }
        items.push(it);
        // A bundle was handed over: its check or bytes leave, and an answer waiting is read, before the
        // walk reads on (it read up to 256 files more otherwise: the first bundle's check answered,
        // the bundle left a walk's stretch later).
        if (onItem(it) === true) {
          sinceYield = 0;
          await new Promise((r) => setImmediate(r));
        }
      } else skip(path, d.isSymbolicLink() ? "a symbolic link" : "not a regular file");
    }
    // Another directory put in its place meanwhile (`mv tree tree.old && mv other tree`, a link named as the
    // root pointed elsewhere) gave some of the files read or looked up above: not the ones of the directory
    // whose identity they would be recorded under (put back, its files were taken for the other's).
    if (rec !== undefined && here !== undefined) {
      const now = sub ? directoryNow(dir) : statSync(dir, { throwIfNoEntry: false });
      if (now?.dev !== here.dev || now.ino !== here.ino) rec.spoil();
    }
  };
  // Every argument is checked before any directory is walked (argsChecked: the send may begin connecting).
  const checked: ((() => Promise<void>) | SendItem)[] = [];
  /** File arguments by target: two for one name are refused here, before connecting (trees' after the walk). */
  const argTargets = new Map<string, SendItem>();
  /** Directory arguments' names (their trees' first segment). */
  const tops = new Set<string>();
  let unique = true;
  for (const arg of args) {
    const st = await statOf(arg);
    if (st?.isDirectory()) {
      if (!recursive) throw new PointSubError("ERR_INVALID_ARGUMENT", `${arg} is a directory (send it with -r)`);
      const top = basename(resolve(arg));
      if (top === "")
        throw new PointSubError("ERR_INVALID_ARGUMENT", `${arg}: the root directory has no name to send it under`);
      if (tops.has(top)) unique = false;
      tops.add(top);
      // Normalized once (a trailing separator dropped: "photos/" walks as "photos"; the root stays).
      const root = join(arg);
      checked.push(() =>
        walk(root.length > 1 && root.endsWith(sep) ? root.slice(0, -1) : root, top, false, record?.(root), st),
      );
    } else if (st?.isFile()) {
      // Before, one without read permission failed alone once sent (ERR_SOURCE: EACCES), the others sent.
      if (!(await readable(arg))) {
        throw new PointSubError("ERR_INVALID_ARGUMENT", `${arg} is not a readable file (permission denied)`);
      }
      // Its target is the name the server stores it under (a name it would clean, e.g. `a\b.txt` or
      // `.x`, is shown and checked for clashes as stored: `b.txt`, `x`).
      const it: SendItem = { file: arg, target: safeFileName(basename(arg)), tree: false, size: st.size };
      const other = argTargets.get(it.target);
      if (other !== undefined && resolve(other.file) !== resolve(arg)) throw twoForOneName(other, it);
      // The same file named twice is sent once (a file's name has no separator: no tree's file has it).
      if (other !== undefined) continue;
      argTargets.set(it.target, it);
      checked.push(it);
    } else {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `${arg} is not a readable file`);
    }
  }
  argsChecked(unique);
  for (const c of checked) {
    if (typeof c === "function") await c();
    else {
      items.push(c);
      onItem(c);
    }
  }
  // The same file named twice is sent once; two files for one name are an error, not a silent overwrite.
  const byTarget = new Map<string, SendItem>();
  const out: SendItem[] = [];
  for (const it of items) {
    const other = byTarget.get(it.target);
    if (other === undefined) {
      byTarget.set(it.target, it);
      out.push(it);
    } else if (resolve(other.file) !== resolve(it.file)) {
      throw twoForOneName(other, it);
    }
  }
  return out;
}

function twoForOneName(a: SendItem, b: SendItem): PointSubError {
  return new PointSubError(
    "ERR_INVALID_ARGUMENT",
    `${a.file} and ${b.file} would both be stored as ${b.target}; send their folders with -r, or send them separately`,
  );
}

/**
 * Quick-check requests in flight at once: within one {@link quickCheck} (each about up to
 * {@link FILE_CHECK_MAX} files), and the bundles' checks run ahead of them (one per bundle).
 */
export const CHECKS_IN_FLIGHT = 4;

/**
 * The quick check (like rsync's): asks the server which files it already
 * holds under their names, with their size and CRC32C, and returns the items
 * whose size and CRC32C equal the local file's (with `read`, those of the bytes
 * read for it: a retried bundle's files, compared as an earlier attempt sent them; with `fresh`, a large
 * file is read, not taken from the sender's records). Undefined when the server
 * has no quick-check route (an older server: nothing is skipped). `found.held`
 * counts the files the server holds under their names, whole or not.
 */
export async function quickCheck(
  conn: Connection,
  items: readonly SendItem[],
  found?: { held: number },
  timeoutMs = 0,
  { read, fresh = false }: { read?: ReadonlyMap<SendItem, Uint8Array>; fresh?: boolean } = {},
): Promise<Set<SendItem> | undefined> {
  /** The size compared: of the bytes read for it when `read` has them (a retried bundle's), else the walk's. */
  const sizeOf = (it: SendItem) => read?.get(it)?.length ?? it.size;
  const same = new Set<SendItem>();
  const batches: SendItem[][] = [];
  for (let i = 0; i < items.length; i += FILE_CHECK_MAX) batches.push(items.slice(i, i + FILE_CHECK_MAX));
  let noRoute = false;
  let nextBatch = 0;
  /** Asks about one batch after another; {@link CHECKS_IN_FLIGHT} of these run at once (their round trips overlap). */
  const asker = async () => {
    for (let b = nextBatch++; b < batches.length && !noRoute; b = nextBatch++) {
      const batch = batches[b];
      const queries: FileCheckQuery[] = batch.map((it) =>
        it.tree ? { path: it.target, size: sizeOf(it) } : { name: it.target, size: sizeOf(it) },
      );
      let res: Uint8Array;
      try {
        res = await conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files: queries }), { timeoutMs });
      } catch (err) {
        const e = toPointSubError(err, "ERR_HANDLER");
        if (e.code === "ERR_NO_ROUTE") {
          noRoute = true;
          return;
        }
        if (e.code === "ERR_TIMEOUT" && e.phase === "request") {
          throw new PointSubError(
            "ERR_TIMEOUT",
            `the server did not answer the quick check of ${someFiles(batch)} within ${formatMs(timeoutMs)}`,
            { phase: "request", cause: e },
          );
        }
        throw err;
      }
      const answers = decodeCheckAnswer(res, batch.length);
      if (found !== undefined) for (const a of answers) if (a != null) found.held++;
      // Local CRCs only of files the server holds at the same size; a few read at once.
      let next = 0;
      const worker = async () => {
        for (let k = next++; k < batch.length; k = next++) {
          const a = answers[k];
          const it = batch[k];
          if (a?.crc32c === undefined || a.size !== sizeOf(it)) continue;
          const bytes = read?.get(it);
          // A tree's small file was read by the walk: its CRC is of those bytes (what its bundle would send), not of a second read.
          // A file this side cannot read (EACCES) is not the same: it is sent, and fails alone. Before, its error failed the
          // check, retried as a lost connection (ERR_CONNECT, ~32 s) and then the whole send.
          const crc =
            bytes !== undefined
              ? nodeCrc32c().compute(bytes, 0)
              : (it.crc ??
                (it.content !== undefined
                  ? noted(it, nodeCrc32c().compute(it.content, 0))
                  : await localCrc32c(it.file, it.size, fresh).catch(() => undefined)));
          if (crc !== undefined && crc32cHex(crc >>> 0) === a.crc32c) same.add(batch[k]);
        }
      };
      await Promise.all(Array.from({ length: Math.min(8, batch.length) }, worker));
    }
  };
  await Promise.all(Array.from({ length: Math.min(CHECKS_IN_FLIGHT, batches.length) }, asker));
  return noRoute ? undefined : same;
}

/**
 * `pointsub send FILE|DIR... --to URL`: every file over one multiplexed
 * connection, `parallel` at a time, each resumable on its own (a dropped
 * connection is reopened once for all of them, and each continues from what
 * the server stored); files the server already holds whole are skipped
 * unless `force`. With `-r`, each bundle of small files is checked and sent
 * as soon as the walk completed it, while the walk goes on (the server
 * stores the first files while the sender still lists the others).
 */
export async function sendCommand(args: string[], opts: SendOptions): Promise<void> {
  const mode = outputMode(opts.json);
  // What it prints is a report: a reader that goes away ends it, not the transfers.
  reportOutput();
  const connectOptions = await clientConnectOptions(opts.to, opts);
  const say = (event: Record<string, unknown>, line: string) => {
    if (mode === "json") jsonLine(event);
    // Names are the walk's: shown as every other line shows them (a control or bidi character escaped).
    else if (mode === "plain") writeOut(`${printable(line)}\n`);
  };
  const timeout = opts.timeout ?? DEFAULT_TIMEOUT_MS;
  // Its requests (a large file's resume query) are answered within --timeout too.
  const shared = new SharedConnection((signal) =>
    connect(opts.to, { ...connectOptions, requestTimeoutMs: timeout, maxMessageSize: FILE_ANSWER_MAX, signal }),
  );
  // The connection opens while the directories are walked (its handshake off the critical path);
  // the first quick check takes it (or its error) as its first attempt.
  let first: Promise<Connection> | undefined;
  const force = opts.force === true;
  /** Every file read for the quick check (`--checksum`): no record trusted. */
  const fresh = opts.checksum === true;
  const failures: { file: string; error: PointSubError }[] = [];
  let sentFiles = 0;
  let sentBytes = 0;
  /** Ends the send with this error (no file failed: the server cannot take them at all). */
  let stopWith: PointSubError | undefined;
  /** Files the quick check found whole on the server (not sent). */
  let skipped = 0;
  let lastSkipped = "";
  /** The send stops taking new files (a failure that every file would meet). */
  let fatal = false;
  // Its totals grow as the walk finds files (bundles are sent meanwhile).
  const view = new ProgressView(mode, { files: 0, bytes: 0 });
  /** One line per round of retries (every bundle and file that failed together). */
  const notices = new RetryNotices(mode, opts.retries, shared, view);
  // Ctrl-C (or a TERM) leaves the transfers as a dropped connection would: the server keeps what it
  // stored, and the same command run again resumes. The terminal is restored first (the view's own
  // handler), then one line says so.
  const interrupted = (signal: NodeJS.Signals) => {
    view.stop();
    printError(
      new PointSubError("ERR_CANCELLED", `interrupted by ${signal}; run the same command again to resume`),
      errorMode(mode),
    );
    process.exit(SIGNAL_EXIT[signal] ?? 1);
  };
  process.on("SIGINT", interrupted);
  process.on("SIGTERM", interrupted);
  /** Says that the server holds `it` whole (it is not sent). */
  const unchanged = (it: SendItem) => {
    skipped++;
    lastSkipped = it.target;
    view.skip(1, it.size);
    say(
      { event: "skipped", file: it.file, name: it.target, size: it.size, reason: "unchanged" },
      `${it.target}: skipped, the server holds it whole (${formatBytes(it.size)}, same CRC32C)`,
    );
  };
  /** Servers without the quick-check route (older ones) have no tree storage either. */
  const noTrees = () =>
    new PointSubError("ERR_NO_ROUTE", "the server cannot store directories (an older pointsub serve)");
  /** Files (or bundles of them) for the workers: large files, and the files of bundles an older server refused. */
  const queue: (SendItem | SendItem[])[] = [];
  /** How many files were found (all of them once the walk ended). */
  let found = 0;
  const failed = (target: string, e: PointSubError) => {
    failures.push({ file: target, error: e });
    if (!PER_FILE.has(e.code)) fatal = true;
    // With several files each failure gets its line (the final error names the first one).
    if (found > 1 && mode === "plain") {
      writeOut(`${printable(`${target}: failed: ${e.code}: ${e.message}`)}\n`);
    }
    if (mode === "json") jsonLine({ event: "failed", file: target, code: e.code, errno: e.errno, message: e.message });
  };
  /**
   * The files of `group` the server does not hold whole (quick check, one request; never rejects). A check that
   * fails sends them all: the bundle's own retries deal with the connection, and a bundle never
   * replaces a file (it is refused with ERR_EXISTS, and a retried bundle checks again). A check the
   * server leaves unanswered for --timeout is asked again (--retries, with backoff), then stops the
   * send with that ERR_TIMEOUT: a server that does not answer is not sent to blind.
   */
  const toSend = async (group: SendItem[], found?: { held: number }): Promise<SendItem[]> => {
    let same: Set<SendItem> | undefined;
    for (let n = 0; ; n++) {
      try {
        same = await quickCheck(await shared.get(), group, found, timeout, { fresh });
        break;
      } catch (err) {
        const e = toPointSubError(err, "ERR_CONNECT");
        // A server's rate limit is waited out too: a check sent blind instead had a re-run's files refused as
        // existing, their own checks limited as well, and reported failed (ERR_EXISTS) rather than skipped.
        if (e.code === "ERR_RATE_LIMITED" && !fatal && !stopRetrying(e, n, opts.retries, shared)) {
          await retryAfter(e, n, notices);
          continue;
        }
        if (e.code === "ERR_TIMEOUT" && !fatal) {
          if (!stopRetrying(e, n, opts.retries, shared)) {
            await retryAfter(e, n, notices);
            continue;
          }
          stopWith ??= e;
          fatal = true;
        }
        if (fatal) return [];
        if (found !== undefined) found.held = -1;
        return group;
      }
    }
    if (same === undefined) {
      if (!group.some((it) => it.tree)) return group;
      stopWith ??= noTrees();
      fatal = true;
      return [];
    }
    if (same.size === 0) return group;
    for (const it of group) if (same.has(it)) unchanged(it);
    return group.filter((it) => !same.has(it));
  };
  /**
   * Each bundle's quick check, run ahead of the bundles ({@link CHECKS_IN_FLIGHT} at once, in the
   * order the bundles were made): a bundle waits for its own check only, and the checks of a new
   * tree mostly reach the server before its directory exists (one lstat for a request, not one per file).
   *
   * The first bundle's check runs alone. When the server holds none of its files (not even under
   * their names: a new tree, as most first sends are), the bundles after it go unchecked (`unchecked`):
   * a request and a lookup per file on the server saved for each, where the check would find nothing.
   * A file such a bundle finds on the server is refused (ERR_EXISTS, the server never replaces
   * unless `--overwrite`) and checked then ({@link settleExisting}): skipped when whole, as a check
   * ahead would have found it; and the bundles after that are checked again.
   */
  const checks = new Map<SendItem[], Promise<SendItem[]>>();
  const checkQueue: { group: SendItem[]; resolve: (rest: SendItem[]) => void }[] = [];
  let checkers = 0;
  /** Settles once the first bundle's check was answered (`unchecked` is then decided). */
  const firstChecked = Promise.withResolvers<void>();
  let firstTaken = false;
  /** Bundles go without a check ahead: the first one's found none of its files on the server. */
  let unchecked = false;
  const checker = async () => {
    try {
      for (let job = checkQueue.shift(); job !== undefined; job = checkQueue.shift()) {
        let rest = job.group;
        const first = !firstTaken;
        firstTaken = true;
        try {
          if (first) {
            const found = { held: 0 };
            rest = fatal ? job.group : await toSend(job.group, found);
            unchecked = !fatal && found.held === 0;
          } else {
            await firstChecked.promise;
            if (!fatal && !unchecked) rest = await toSend(job.group);
          }
        } finally {
          if (first) firstChecked.resolve();
          job.resolve(rest);
        }
      }
    } finally {
      checkers--;
    }
  };
  /**
   * The files of an unchecked bundle the server refused because it holds a file under their
   * names: checked now (one request), those it holds whole are skipped (returned), the others stay
   * refused; the bundles after it are checked ahead again. Never rejects (a failed check keeps them refused).
   */
  const settleExisting = async (items: SendItem[]): Promise<Set<SendItem>> => {
    unchecked = false;
    try {
      return (await quickCheck(await shared.get(), items, undefined, timeout, { fresh })) ?? new Set();
    } catch {
      return new Set();
    }
  };
  /** Whether the next bundles probe their compression (`compress auto`). */
  const bundleCompression = new BundleCompression();
  /** Bundles waiting for one of the {@link BUNDLES_IN_FLIGHT} turns. */
  let bundlesInFlight = 0;
  const turns: (() => void)[] = [];
  /** A bundle: its files are counted and reported when the server answered for all of them. */
  const bundle = async (group: SendItem[]) => {
    while (bundlesInFlight >= BUNDLES_IN_FLIGHT) await new Promise<void>((r) => turns.push(r));
    if (fatal) {
      // The send stopped while this bundle waited: its files are not tried; the next waiter learns it too.
      releaseContent(group);
      turns.shift()?.();
      return;
    }
    bundlesInFlight++;
    const started = performance.now();
    let outcome: BundleOutcome | undefined;
    let rest = group;
    try {
      rest = (await checks.get(group)) ?? group;
      outcome =
        rest.length === 0 || fatal
          ? []
          : await sendBundle(shared, rest, {
              compress: opts.compress,
              retries: opts.retries,
              timeout,
              auto: bundleCompression,
              notices,
            });
    } finally {
      bundlesInFlight--;
      turns.shift()?.();
      // Sent (or failed, or left to the one-by-one way, which reads the files again): their bytes go.
      releaseContent(group);
    }
    if (outcome === undefined) {
      // An older server: one by one (its files were checked).
      queue.push(...rest);
      return;
    }
    // Unchecked (or named on the server since its check): a file it holds whole is skipped, not failed.
    const existing = force ? [] : outcome.filter((o) => o.error?.code === "ERR_EXISTS").map((o) => o.item);
    const whole = existing.length > 0 ? await settleExisting(existing) : undefined;
    const elapsedMs = performance.now() - started;
    const secs = elapsedMs / 1000;
    /** The plain line's end for files of `lineSize` bytes (a bundle's files mostly share a few sizes). */
    let lineSize = -1;
    let lineEnd = "";
    for (const { item, size, crc32c, error, transferId, held } of outcome) {
      if (held === true || whole?.has(item)) {
        unchanged(item);
        continue;
      }
      // Plain lines: the view prints nothing for a finished file (the line below says it).
      if (mode !== "plain") {
        view.update(item.target, {
          transferId: transferId ?? "",
          total: size,
          bytes: error === undefined ? size : 0,
          percent: error === undefined ? 100 : 0,
          rate: 0,
          etaSeconds: undefined,
          status: error === undefined ? "completed" : "failed",
          elapsedMs,
          error,
        });
      }
      if (error !== undefined) {
        failed(item.target, error);
        continue;
      }
      sentFiles++;
      sentBytes += size;
      if (mode === "json") {
        jsonLine({ event: "sent", file: item.file, name: item.target, size, crc32c, bytesSent: size, seconds: secs });
      } else if (mode === "plain") {
        if (size !== lineSize) {
          lineSize = size;
          lineEnd = `${formatBytes(size)} in ${secs.toFixed(2)} s (${formatRate(size / Math.max(secs, 1e-3))}, in a bundle)\n`;
        }
        writeOut(`${printable(item.target)}: sent ${lineEnd}`);
      }
    }
  };
  /** Bundles checked and sent so far (each settles when its files were answered or failed). */
  const bundleRuns: Promise<void>[] = [];
  /** Checks `group` (unless `force`) and sends it when its turn comes. */
  const dispatch = (group: SendItem[]) => {
    for (const it of group) if (it.content !== undefined) held += it.content.length;
    if (!force && !unchecked) {
      const d = Promise.withResolvers<SendItem[]>();
      checks.set(group, d.promise);
      checkQueue.push({ group, resolve: d.resolve });
      if (checkers < CHECKS_IN_FLIGHT) {
        checkers++;
        void checker();
      }
    }
    const run = bundle(group);
    // A bundle reports its own failures (each file's); anything else is found when all are awaited.
    run.catch(() => {});
    bundleRuns.push(run);
  };
  /**
   * Bytes the walk read ahead (files' `content`) in bundles made and not yet answered; who waits for
   * room. The bundle being made (at most {@link BUNDLE_BYTES}) is not counted: it must complete.
   */
  let held = 0;
  const roomWaiters: (() => void)[] = [];
  const readAheadMax = Math.max(1, opts.readAhead ?? READ_AHEAD_BYTES);
  const readAhead: ReadAhead = {
    on: false,
    room: () => (held < readAheadMax ? undefined : new Promise<void>((r) => roomWaiters.push(r))),
  };
  /** A bundle is done with its files' bytes: they are dropped, and the walk may read more. */
  const releaseContent = (group: SendItem[]) => {
    for (const it of group) {
      if (it.content === undefined) continue;
      held -= it.content.length;
      it.content = undefined;
    }
    if (held < readAheadMax) for (const wake of roomWaiters.splice(0)) wake();
  };
  /** Small files become bundles as they are found, sent at once when the walk finds files under names of their own. */
  const planner = new BundlePlanner();
  let streaming = false;
  const single: SendItem[] = [];
  let foundBytes = 0;
  const onItem = (it: SendItem): boolean | undefined => {
    if (foundBytes < CRC_NATIVE_FROM) {
      foundBytes += it.size;
      // On the next turn of the event loop: after the bundle made meanwhile left (its ~5-8 ms not
      // between the first check's answer and the first bundle).
      if (foundBytes >= CRC_NATIVE_FROM) setImmediate(loadNativeCrc32c);
    }
    if (!streaming) return undefined;
    found++;
    view.add(1, it.size);
    if (it.size > BUNDLE_SMALL_MAX) {
      single.push(it);
      return undefined;
    }
    const done = planner.add(it);
    if (done === undefined) return undefined;
    dispatch(done);
    return true;
  };
  const started = performance.now();
  /** The trees' records ({@link TreeRecord}), written when the send ends. */
  const records: TreeRecord[] = [];
  let all: SendItem[] = [];
  try {
    try {
      all = await collectFiles(
        args,
        opts.recursive === true,
        (path, why) => {
          say({ event: "skipped", file: path, reason: why }, `${path}: skipped, ${why}`);
          if (mode === "tty") view.log(`${path}: skipped, ${why}`);
        },
        (unique) => {
          streaming = unique;
          // Read as found only when each file found is sent (its bundle answered frees its bytes).
          readAhead.on = unique;
          first = shared.get();
          first.catch(() => {});
        },
        onItem,
        readAhead,
        // A directory inside a tree that cannot be listed fails as a file would (exit 1): the rest goes.
        (dir, e) => {
          found++;
          failed(dir, e);
        },
        // What the last run read of each tree (files read as found only; --force and --checksum read them all
        // again, and the record is written anew from what they read).
        (dir) => {
          if (!readAhead.on) return undefined;
          const r = TreeRecord.load(dir, opts.to, !force && !fresh);
          records.push(r);
          return r;
        },
      );
    } catch (err) {
      // Bundles answered meanwhile stay stored (a re-run skips them); one cut off leaves nothing.
      fatal = true;
      shared.destroy();
      await Promise.allSettled(bundleRuns);
      throw err;
    }
    if (streaming) {
      const last = planner.end();
      if (last.bundle !== undefined) dispatch(last.bundle);
      if (last.single !== undefined) single.push(last.single);
    } else {
      // Two directories of one name: planned once the list is final (files named twice listed once).
      found = all.length;
      view.add(
        all.length,
        all.reduce((n, it) => n + it.size, 0),
      );
      const plan = planBundles(all);
      single.push(...plan.single);
      for (const group of plan.bundles) dispatch(group);
    }
    // A re-run resumes a larger file by its transfer id, made with this user's key: with a key for this process
    // only (none can be read or made in the state directory: a read-only home, one a `sudo` run left), an
    // interrupted file starts over next time. Said, not left for the user to find out then.
    if (opts.resume && single.some((it) => it.size > RESUME_MIN_BYTES)) {
      if (await resumeKeyForProcessOnly().catch(() => false)) {
        const message = `the resume key ${resumeKeyPath()} cannot be read or made: an interrupted send will start over when run again`;
        if (mode === "json") jsonLine({ event: "warning", message });
        else if (mode === "tty") view.log(`pointsub: warning: ${message}`);
        else process.stderr.write(`${printable(`pointsub: warning: ${message}`)}\n`);
      }
    }
    if (single.length > 0) {
      // The connection (opened while the directories were walked), as patient as the transfers: a
      // server that is restarting is waited for (--retries, same backoff). The files sent alone (over
      // 64 KiB) are quick-checked here, in one go; each bundle's files just before it is sent.
      for (let n = 0; ; n++) {
        try {
          const conn = await (n === 0 && first !== undefined ? first : shared.get());
          if (!force) {
            const same = await quickCheck(conn, single, undefined, timeout, { fresh });
            if (same === undefined && all.some((it) => it.tree)) throw noTrees();
            if (same !== undefined && same.size > 0) {
              for (const it of single) if (same.has(it)) unchanged(it);
              const rest = single.filter((it) => !same.has(it));
              single.length = 0;
              single.push(...rest);
            }
          }
          break;
        } catch (err) {
          const e = toPointSubError(err, "ERR_CONNECT");
          if (stopRetrying(e, n, opts.retries, shared)) {
            // No file is sent (the bundles stop where they are).
            fatal = true;
            await Promise.allSettled(bundleRuns);
            throw e;
          }
          await retryAfter(e, n, notices);
        }
      }
    }
    // Large files (the bundles of small ones are under way already).
    queue.push(...single);
    const worker = async () => {
      for (let job = queue.shift(); job !== undefined && !fatal; job = queue.shift()) {
        if (Array.isArray(job)) {
          await bundle(job);
          continue;
        }
        const it = job;
        const { file, target } = it;
        const t = sendFileVia(it.tree ? treeFiles : cliFiles, shared, file, {
          compress: opts.compress,
          retries: opts.retries,
          // A small file is sent whole: asking the server where to resume costs a round trip and a
          // lookup per file, more than resending it would.
          resume: opts.resume && it.size > RESUME_MIN_BYTES,
          // The server's answer after the last byte (its receipt, once it verified and stored the file).
          answerTimeoutMs: answerTimeoutMs(timeout, it.size),
          onRetry: (e, attempt, delay) => notices.note(e, attempt, delay),
          progressIntervalMs: 200,
          // A refusal as existing is told once it is known not to be this file, whole (below).
          onProgress: (s) => {
            if (!(s.status === "failed" && s.error?.code === "ERR_EXISTS")) view.update(target, s);
          },
          ...(it.tree ? { relativePath: target } : { name: target }),
        });
        // Its bar shows at once (initializing while it connects).
        view.update(target, t.snapshot());
        try {
          const r = await t;
          const secs = t.snapshot().elapsedMs / 1000;
          sentFiles++;
          sentBytes += r.bytesSent;
          if (mode === "json") {
            jsonLine({
              event: "sent",
              file,
              ...r,
              seconds: secs,
              rate: Math.round(r.bytesSent / Math.max(secs, 1e-3)),
            });
          } else if (mode === "plain") writeOut(`${sentLine(printable(target), r, secs)}\n`);
        } catch (err) {
          const e = toPointSubError(err, "ERR_SOURCE");
          // Named on the server since its check: by an earlier attempt of this send whose receipt was lost (the
          // server died, or the connection dropped, after it stored the file) or by another sender. Checked
          // now: skipped when the server holds it whole, as a bundle's file is.
          if (e.code === "ERR_EXISTS" && !force) {
            // (A connection that cannot be made again now leaves this file's ERR_EXISTS, not the send's end.)
            const same = await shared
              .get()
              .then((c) => quickCheck(c, [it], undefined, timeout, { fresh }))
              .catch(() => undefined);
            if (same?.has(it)) {
              view.drop(target);
              unchanged(it);
              continue;
            }
          }
          if (e.code === "ERR_EXISTS") view.update(target, t.snapshot());
          failed(target, e);
        }
      }
    };
    const parallel = Math.max(1, opts.parallel ?? 32);
    // Until the bundles were all answered: files of one an older server refused come back to the queue.
    for (let done = 0; ; ) {
      await Promise.all([
        ...Array.from({ length: Math.min(parallel, queue.length) }, worker),
        ...bundleRuns.slice(done),
      ]);
      done = bundleRuns.length;
      if (fatal || queue.length === 0) break;
    }
    await Promise.allSettled(bundleRuns);
  } finally {
    view.stop();
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
    // A server that left answers unanswered to the end is not waited for again (a graceful close
    // would wait closeTimeoutMs for the streams it never answered).
    const unanswered = stopWith?.code === "ERR_TIMEOUT" || failures.some((f) => f.error.code === "ERR_TIMEOUT");
    if (unanswered) shared.destroy();
    else await shared.close().catch(() => {});
    for (const r of records) r.save();
  }
  if (stopWith !== undefined) throw stopWith;
  const secs = (performance.now() - started) / 1000;
  const tried = all.length - skipped;
  if (mode === "tty" && skipped > 0) {
    process.stderr.write(
      skipped === 1
        ? `${lastSkipped}: skipped, the server holds it whole (--force sends it anyway)\n`
        : `${skipped} files skipped: the server holds them whole (--force sends them anyway)\n`,
    );
  }
  // A tree with no files says so (and --json has its summary) rather than printing nothing.
  if ((all.length !== 1 || skipped > 0) && !(all.length === 0 && failures.length > 0)) {
    const rate = formatRate(sentBytes / Math.max(secs, 1e-3));
    const line =
      all.length === 0
        ? "no files to send: the directories named hold none"
        : `${sentFiles} of ${all.length} files sent (${formatBytes(sentBytes)} in ${secs.toFixed(2)} s, ${rate})` +
          `${skipped > 0 ? `, ${skipped} skipped (unchanged)` : ""}${failures.length > 0 ? `, ${failures.length} failed` : ""}`;
    say(
      {
        event: "summary",
        files: all.length,
        sent: sentFiles,
        skipped,
        failed: failures.length,
        bytesSent: sentBytes,
        seconds: secs,
        connections: shared.opened,
      },
      line,
    );
    if (mode === "tty") process.stderr.write(`${line}\n`);
  }
  if (failures.length > 0) {
    const { file, error } = failures[0];
    const message = tried === 1 ? error.message : aboutName(file, error.message);
    const notTried = tried - sentFiles - failures.length;
    throw new PointSubError(
      error.code,
      failures.length === 1 && notTried === 0
        ? message
        : `${failures.length} of ${tried} files failed${notTried > 0 ? ` (${notTried} not tried)` : ""}; first: ${message}`,
      { cause: error },
    );
  }
}

function errorMode(mode: OutputMode): OutputMode {
  return mode === "json" ? "json" : "plain";
}
