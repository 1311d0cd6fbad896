import {
  closeSync,
  constants,
  fstatSync,
  lstat as lstatCb,
  lstatSync,
  openSync,
  readSync,
  realpathSync,
  type Stats,
} from "node:fs";
import { type FileHandle, link, lstat, mkdir, open, readdir, readFile, rename, rm, unlink } from "node:fs/promises";
import { basename, dirname, join, resolve, sep } from "node:path";
import { crc32cHex } from "../codec/crc32c.ts";
import type { BundleResult } from "../codec/file-bundle.ts";
import type { Connection, ResumePoint } from "../connection/connection.ts";
import type { Handler, IncomingRequest, RequestContext } from "../connection/types.ts";
import { PointSubError } from "../errors/error.ts";
import { checkOptions } from "../errors/options.ts";
import type { IncomingStream } from "../stream/incoming.ts";
import type { StreamHandler } from "../stream/types.ts";
import { Limiter } from "../util/limiter.ts";
import { fdPath, fdPaths, type HeldDir, heldDir, holdDirBeneath, openDirNoFollow, openedUnder } from "./beneath.ts";
import { nodeCrc32c } from "./crc32c-native.ts";
import { bundleHandler, storeError } from "./file-bundle.ts";
import { CRC_PERSIST_MIN, crcStore, isMetaName, isSinkFileAlias } from "./file-crc-store.ts";
import { SyncGate } from "./file-sync-gate.ts";
import { fsFailure, nameUnder } from "./fs-error.ts";
import { tellHook } from "./hook.ts";
import { makeDirectory } from "./make-dir.ts";

/** The route files are sent to by default. */
export const FILE_ROUTE = "/pointsub/file/1.0.0";

/**
 * The file sink's quick-check request route (docs/PROTOCOL.md §3.12.1):
 * which of a list of files the receiver already holds, with their size and
 * CRC32C, so a sender can skip files stored whole.
 */
export const FILE_CHECK_ROUTE = "/pointsub/file/check/1";

/** Files one quick-check request may ask about. */
export const FILE_CHECK_MAX = 1000;

/** One file a quick check asks about: the name or relative path it would be sent under, and its size. */
export interface FileCheckQuery {
  name?: string;
  path?: string;
  size: number;
}

/**
 * What the receiver holds under that name: `null` when nothing (or not a
 * regular file); its size, and its CRC32C (8 hex digits) when the size is
 * the one asked about.
 */
export type FileCheckAnswer = { size: number; crc32c?: string } | null;

/** What the file sink answers for a stored file (JSON in the response). */
export interface FileReceipt {
  /** File name within the directory (sanitized). */
  name: string;
  /**
   * Where the file is stored: on the receiver (`onFile`), its absolute
   * path; in the answer the sender gets, its path under the receiver's
   * directory (`/`-separated; the receiver's own paths stay its own).
   */
  path: string;
  size: number;
  /** CRC32C of the content, hex. */
  crc32c: string;
  /** Content offset this transfer resumed from (0 when it started fresh). */
  resumedFrom: number;
}

/** Options of {@link fileSink}. */
export interface FileSinkOptions {
  /**
   * Called when a file is complete (stored and named). A throw changes
   * nothing (the sender gets its receipt): it is thrown again from a
   * microtask, as a throwing event listener's.
   */
  onFile?: (receipt: FileReceipt, stream: IncomingStream, ctx: RequestContext) => void;
  /**
   * Called when a transfer was accepted (its metadata checked, quota and
   * name free), before data is stored; progress is on `stream.progress`.
   * A throw refuses the transfer.
   */
  onStream?: (stream: IncomingStream, ctx: RequestContext) => void;
  /**
   * Replace a file that already exists under the received name. Default
   * false: such a transfer fails with `ERR_EXISTS`, checked when it starts
   * and again, atomically, when the file is put in place. A directory under
   * the name is never replaced (`ERR_EXISTS`, checked when it starts too).
   */
  overwrite?: boolean;
  /**
   * Unfinished uploads (partial files) untouched for this long are removed,
   * when the sink starts and by a periodic sweep. Default 24 h; 0 or
   * Infinity keeps them until they are resumed.
   */
  partialTtlMs?: number;
  /** Largest file accepted, in bytes (declared size and bytes actually sent). Default 0: unlimited. */
  maxFileSize?: number;
  /**
   * Bytes the sink may hold in unfinished uploads in the directory: stored
   * partial files plus the declared size of transfers in progress. Over it
   * a transfer fails with `ERR_QUOTA`. Default 0: unlimited. Finished files
   * do not count.
   */
  maxBytes?: number;
  /**
   * Most unfinished uploads (partial files) kept at once, whatever their
   * size: each costs two files and ~0.6 KiB of memory, and a peer that
   * starts transfers, sends a byte and drops the connection makes one per
   * transfer. A new transfer over it removes the least recently touched
   * partial no transfer is writing (ERR_QUOTA when all are being written).
   * Default 10,000; 0 or Infinity: unlimited. Counted per process.
   */
  maxPartials?: number;
  /**
   * Most partials one principal keeps (every unauthenticated peer is the
   * principal ""): over it, a new transfer of that principal removes that
   * principal's least recently touched partial, never another's. Default a
   * quarter of `maxPartials`.
   */
  maxPartialsPerPrincipal?: number;
  /**
   * A transfer that starts from 0 removes the stopped partials its
   * principal left for the same path and route under other transfer ids
   * (the source changed since: a new id, never resumed), unless a transfer
   * (here or in another process) is writing them, and only once `onStream`
   * accepted the transfer. Off by default: every
   * anonymous peer is the principal "", and one's upload would remove
   * another's stopped partial of that name. `pointsub get` turns it on (its
   * sink is its own). Found by the partials' sidecars: a partial left by a
   * killed receiver before its first sidecar stays until `partialTtlMs`.
   */
  replaceStalePartials?: boolean;
  /**
   * What a receipt promises about the stored file. `"fsync"` (the default):
   * the file's content is fsynced before it is named and its directory after
   * (directory fsyncs are shared by the files named meanwhile), so a file
   * the sender was told is stored survives a crash or power loss of the
   * receiver. `"none"`: no fsync; the receipt means the whole file was
   * received, verified and named, and the operating system writes it to
   * disk later (as tar, scp and rsync do by default): a crash of the
   * process loses nothing, one of the machine may lose files received in the
   * last seconds (and leave a named file empty). Resume checkpoints are made
   * durable either way.
   */
  durability?: "fsync" | "none";
  /**
   * Called when a bundle of small files ({@link FILE_BUNDLE_ROUTE}) was
   * stored: each file's receipt or error, in the bundle's order. A throw
   * changes nothing (thrown again from a microtask, as `onFile`'s).
   */
  onBundle?: (results: BundleResult[], stream: IncomingStream, ctx: RequestContext) => void;
  /**
   * Keep large files' CRC32C on disk (default true): a file of 1 MiB or
   * more that the sink stores, or reads for a quick check, gets a small
   * record in the directory's hidden `.pointsub/` (named by the file's
   * device and inode, holding the identity it is valid for: size, mtime,
   * ctime), so quick checks in another process sharing the directory
   * (`serve --workers N`) or after a restart answer without reading the
   * file. A file changed on disk since is read again. The name `.pointsub`
   * (any case) is refused as a path's first segment either way. False: the
   * CRCs are cached in memory only, nothing is written besides the files.
   */
  crcRecords?: boolean;
}

/**
 * Who asks a resume query, when the connection tells: the stream route the
 * query is about and the session (its `principal`). Without it the lookup
 * answers for any principal (the transfer id alone is the capability).
 */
export interface FileResumeContext {
  /** The stream route being resumed. */
  route?: string;
  /** The session asking; its `principal` selects that principal's partial files. */
  session?: { readonly principal?: unknown };
}

/** What a file sink holds in unfinished uploads. */
export interface FileSinkUsage {
  /** Partial files in the directory. */
  partials: number;
  /** Bytes counted against `maxBytes`: partial files plus declared sizes of transfers in progress. */
  bytes: number;
  /** Partials removed to make room for new transfers (`maxPartials`, `maxPartialsPerPrincipal`). */
  evicted: number;
  /**
   * Times a partial file had to be read to answer a resume query: whole
   * when its sidecar was missing or invalid, from the last checkpoint on
   * after a crash.
   */
  rescans: number;
}

/**
 * A stream handler that stores files in a directory, and its resume lookup.
 * Register both: `server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume })`.
 */
export interface FileSink {
  /** The stream handler: stores each transfer (see {@link fileSink}). */
  handler: StreamHandler;
  /**
   * Answers resume queries: how much of a transfer is stored. Usable as a
   * `ResumeLookup`; the optional context binds the answer to a principal
   * and route when the caller has them.
   */
  resume: (transferId: string, ctx?: FileResumeContext) => Promise<ResumePoint>;
  /** The directory files are stored in. */
  dir: string;
  /** Settles once the startup scan (loading resume state, removing expired partials) is done. */
  ready: Promise<void>;
  /**
   * Removes expired and foreign partial files now, and CRC records of files
   * removed or changed since (`crcRecords`); resolves to how many files were removed.
   */
  sweep(): Promise<number>;
  /** Partial files held and quota use. */
  usage(): FileSinkUsage;
  /** Stops the periodic sweep (the timer never keeps a process alive anyway). */
  close(): void;
  /**
   * The quick-check request handler: register it on {@link FILE_CHECK_ROUTE}
   * (`server.handle(FILE_CHECK_ROUTE, sink.check)`).
   */
  check: Handler;
  /**
   * The bundle handler (many small files in one stream): register it on
   * {@link FILE_BUNDLE_ROUTE} (`server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle)`).
   */
  bundle: StreamHandler;
}

/** Transfer ids the sink accepts: unguessable capabilities (≥ 32 chars ≈ 190 bits). */
const TRANSFER_ID = /^[A-Za-z0-9_-]{32,128}$/;
/** Names of partial files: `.<64 hex>.partial`, and older `.<transfer id>.partial`. */
const PARTIAL_NAME = /^\.([A-Za-z0-9_-]{1,128})\.partial$/;
const SIDECAR_NAME = /^\.([0-9a-f]{64})\.resume$/;
/** A transfer's lock (`.<key>.lock`, holding the receiving process's pid): one receiver at a time, across processes. */
const LOCK_NAME = /^\.([0-9a-f]{64})\.lock$/;
/** Lock files this process holds (several sinks of one process may share a directory). */
const heldLocks = new Set<string>();
/**
 * Locks this process released whose file is still being removed (on the
 * thread pool: an unlink waits on the file system's journal, behind the
 * pool's fdatasyncs, and held the event loop for milliseconds), by path.
 * Such a lock is still this process's: nobody else removes it, and
 * {@link takeLock} for the same path waits for its removal (an unlink
 * still queued must never delete the lock taken after it).
 */
const droppingLocks = new Map<string, Promise<void>>();
/**
 * A bundle's partial file (`file-bundle.ts`: `.b<pid>_<time>_<n>-<i>.partial`, its receiver's pid and
 * the bundle's start in ms, base 36). Never resumed, so never a resumable entry: removed by a scan once
 * its receiver is gone (before, a killed receiver's stayed until partialTtlMs after its restart).
 */
const BUNDLE_PARTIAL = /^\.b([0-9a-z]{1,8})_([0-9a-z]{1,10})_[0-9a-z]{1,10}-\d{1,4}\.partial$/;

/** Whether the process that wrote the bundle partial `m` ({@link BUNDLE_PARTIAL}) is gone. */
function bundleWriterGone(m: RegExpExecArray): boolean {
  const pid = Number.parseInt(m[1], 36);
  // This pid: an earlier process's (a restart in a container is often the same pid) if older than this one.
  if (pid === process.pid) return Number.parseInt(m[2], 36) < Math.floor(performance.timeOrigin);
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return errno(err) === "ESRCH";
  }
}

/**
 * When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat`'s 22nd field: Linux),
 * undefined where that cannot be read. A lock holds its taker's pid and this: a live process with the
 * pid but another start is not its taker (pids are reused; a restarted container hands out the same).
 */
const processStart = (pid: number): Promise<string | undefined> =>
  readFile(`/proc/${pid}/stat`, "utf8").then(
    (s) => s.slice(s.lastIndexOf(")") + 2).split(" ")[19],
    () => undefined,
  );
let ownStart: Promise<string | undefined> | undefined;

/**
 * How the sink opens its own files by name (a partial, its sidecar, a lock): never through a link, and
 * never blocking (O_NONBLOCK; O_NOCTTY: no terminal put there becomes this process's), then checked to
 * be a regular file. A FIFO put at such a name (the names are listed in the directory) made the open
 * wait for a writer: a thread-pool thread held for good, a startup scan that never ended (every
 * transfer waits for it), four such names and no file operation of the process ran again.
 */
const OWN_OPEN = constants.O_NOFOLLOW | constants.O_NONBLOCK | (constants.O_NOCTTY ?? 0);

/**
 * Opens `path` (one of the sink's own names) with `flags` and {@link OWN_OPEN}: its handle when it is a
 * regular file; anything else (a FIFO, a device, a directory: EISDIR) is closed and refused with
 * ERR_EXISTS, as a link is (ELOOP). A FIFO nobody reads refuses O_WRONLY itself (ENXIO).
 */
async function openOwn(path: string, flags: number, mode?: number): Promise<FileHandle> {
  const fh = await open(path, flags | OWN_OPEN, mode);
  let ok = false;
  try {
    ok = (await fh.stat()).isFile();
  } finally {
    if (!ok) await fh.close().catch(() => {});
  }
  if (!ok) throw new PointSubError("ERR_EXISTS", `${basename(path)} is not a regular file`);
  return fh;
}

/** A lock file younger than this with no pid yet is being written by its taker: held. */
const LOCK_WRITE_GRACE_MS = 2000;
/** A lock (and its partial) untouched for this long is stale even if its pid now names a live process. */
const LOCK_STALE_MS = 60 * 60 * 1000;
/**
 * How long the session of a transfer another session asks about has to answer a ping before it is
 * taken for gone (a live one answers within a round trip; its own upload may queue the answer a while).
 */
const STALE_PING_MS = 2000;
/**
 * How long a resume query waits for a transfer whose session is gone (closed, or ended by the probe) to
 * wind down: its handler still stores the bytes that arrived before the close, makes the resume point
 * durable (fdatasync, sidecar) and removes its lock — milliseconds, longer behind a busy disk. Then the
 * query answers ERR_RESUME as before (retried).
 */
const WIND_DOWN_MS = 2000;

/**
 * Whether the lock file at `path` is held: by this process (it is in
 * {@link heldLocks}) or by a live process (its pid answers signal 0, and
 * started when the lock's taker did, where the lock says and the system
 * tells: {@link processStart}). A lock whose process is gone is stale.
 * Asynchronous, as every file system
 * call a peer's transfer causes: a synchronous one held the event loop for
 * as long as the disk took (up to ~15 ms of one turn under the fuzzer).
 */
async function lockHeld(path: string): Promise<boolean> {
  let text: string;
  let fh: FileHandle | undefined;
  try {
    fh = await openOwn(path, constants.O_RDONLY);
    text = await fh.readFile("utf8");
  } catch (err) {
    // Not a regular file (a FIFO, a link): no process's lock, garbage at a name of the sink's.
    return errno(err) !== "ENOENT" && errno(err) !== "ELOOP" && errno(err) !== "ERR_EXISTS";
  } finally {
    await fh?.close().catch(() => {});
  }
  // "<pid> <start>", or "<pid>" where the start is unknown (and from older versions).
  const [pidText, start] = text.split(" ");
  const pid = Number(pidText);
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    // Taken a moment ago, its pid not written yet: held; an old one without a pid is garbage.
    const st = await lstat(path).catch(() => undefined);
    return st !== undefined && st.mtimeMs > Date.now() - LOCK_WRITE_GRACE_MS;
  }
  if (pid === process.pid) return heldLocks.has(path) || droppingLocks.has(path);
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (errno(err) !== "EPERM") return false;
  }
  // A live pid, reused since its receiver crashed: a serve killed and started again took the same pids
  // in a container, and the transfers its locks named could not be resumed nor restarted for an hour.
  if (start !== undefined && start !== "") {
    const now = await processStart(pid);
    if (now !== undefined && now !== start) return false;
  }
  // A live pid, but maybe reused since its receiver crashed (where its start is not known): a receiver writes its partial as bytes
  // arrive (and a transfer making no progress is cancelled long before), so a lock and a partial both
  // untouched for an hour are stale.
  const old = Date.now() - LOCK_STALE_MS;
  const lock = await lstat(path).catch(() => undefined);
  const partial = await lstat(path.replace(/\.lock$/, ".partial")).catch(() => undefined);
  return !(lock !== undefined && lock.mtimeMs < old && (partial === undefined || partial.mtimeMs < old));
}

/**
 * Takes the lock at `path` (O_CREAT | O_EXCL | O_NOFOLLOW, the pid written
 * in it); a stale one (its process gone) is removed and taken, once.
 * False when another receiver holds it.
 */
async function takeLock(path: string): Promise<boolean> {
  await droppingLocks.get(path);
  ownStart ??= processStart(process.pid);
  const start = await ownStart;
  for (let attempt = 0; attempt < 3; attempt++) {
    let fh: FileHandle;
    try {
      fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    } catch (err) {
      if (errno(err) === "ENOENT") {
        // The directory vanished while the sink runs: made again (as the partial's creation does).
        await mkdir(dirname(path), { recursive: true });
        continue;
      }
      if (errno(err) !== "EEXIST" || (await lockHeld(path))) {
        if (errno(err) === "EEXIST") return false;
        throw err;
      }
      // Someone else may have removed it meanwhile: try again either way.
      await unlink(path).catch(() => {});
      continue;
    }
    heldLocks.add(path);
    try {
      await fh.write(start === undefined ? String(process.pid) : `${process.pid} ${start}`);
    } finally {
      await fh.close();
    }
    return true;
  }
  return false;
}

/**
 * Releases a lock this process holds: its file is removed on the thread
 * pool (never on the event loop); the promise settles once it is gone.
 */
function dropLock(path: string): Promise<void> {
  if (!heldLocks.delete(path)) return Promise.resolve();
  const done: Promise<void> = unlink(path)
    .catch(() => {}) // gone already (a sweep of another process found it stale?)
    .then(() => {
      if (droppingLocks.get(path) === done) droppingLocks.delete(path);
    });
  droppingLocks.set(path, done);
  return done;
}
/** Settles when `p` does or after `ms`, whichever comes first (never rejects). */
function within(p: Promise<void>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p.catch(() => {}),
    new Promise<void>((r) => {
      // Unref'd: a query waiting here does not keep the process alive.
      timer = setTimeout(r, ms).unref();
    }),
  ]).finally(() => clearTimeout(timer));
}
/** Bytes handed to one writev: large enough to amortize the call, small enough to keep little in flight. */
const BATCH = 1024 * 1024;
/** Resume state is made durable (fdatasync, sidecar) after this many bytes and at least this often apart. */
const CHECKPOINT_BYTES = 64 * 1024 * 1024;
const CHECKPOINT_MS = 1000;
/** Codes after which a partial file is useless: removed. */
const DISCARD = new Set(["ERR_CANCELLED", "ERR_CHECKSUM", "ERR_PROTOCOL", "ERR_QUOTA"]);
const DEFAULT_TTL_MS = 24 * 60 * 60 * 1000;
const DEFAULT_MAX_PARTIALS = 10_000;
/** A transfer that wrote nothing for this long closes its partial's descriptor (reopened with its next bytes). */
const PARK_IDLE_MS = 2000;

/** A transfer's open partial, as the sink's idle check sees it. */
interface OpenPartial {
  /** When it last wrote (`performance.now()`: a wall clock stepped back would keep an idle partial open). */
  last: number;
  /** Closes the descriptor if the transfer is idle and not writing; resolves once done. */
  park(): Promise<void>;
}

/** An unpaired UTF-16 surrogate (a string that is not Unicode text). */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** Longest safe file name, in UTF-8 bytes. */
const NAME_MAX_BYTES = 200;

/**
 * A safe file name from what a peer sent: the last path segment only (`\`
 * counts as a separator), no control characters nor `:*?"<>|` nor unpaired
 * UTF-16 surrogates (each made `_`), no leading dots or spaces (nor code
 * points HFS+ ignores: there `\u200c.x` is `.x`), at most 200
 * bytes (cut between code points); never "." or "..", never a path. A safe
 * name is its own safe name, and Unicode text (what is stored under it is
 * named by it: the file system would store an unpaired surrogate as U+FFFD).
 * The file sink refuses a `name` that is not Unicode text
 * (`ERR_INVALID_ARGUMENT`) before it gets here.
 */
export function safeFileName(name: unknown): string {
  let s = typeof name === "string" ? name : "";
  if (!s.isWellFormed()) s = s.replace(LONE_SURROGATE, "_");
  s = s.replace(/\\/g, "/");
  s = basename(s);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping control characters is the point.
  s = s.replace(/[\u0000-\u001f\u007f-\u009f/:*?"<>|]/g, "_");
  // With the code points HFS+ ignores in names (its `\u200c.pointsub` is `.pointsub`: hidden, the sink's own).
  s = s.replace(/^[.\s\u200c-\u200f\u202a-\u202e\u206a-\u206f]+/, "").trim();
  // Cut between code points (cutting a code unit at a time left half of a surrogate pair: stored as U+FFFD).
  if (s.length > NAME_MAX_BYTES / 3 && Buffer.byteLength(s) > NAME_MAX_BYTES) {
    let bytes = 0;
    let end = 0;
    for (const ch of s) {
      const c = ch.codePointAt(0) as number;
      const n = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
      if (bytes + n > NAME_MAX_BYTES) break;
      bytes += n;
      end += ch.length;
    }
    s = s.slice(0, end);
  }
  // Cut, it may end in a space: trimmed again, so that a safe name stays itself (a sender can
  // tell the name its file will be stored under: safeFileName(safeFileName(x)) === safeFileName(x)).
  s = s.trimEnd();
  return s.length === 0 ? "file" : s;
}

/**
 * A peer's name that is not Unicode text (an unpaired UTF-16 surrogate): refused, as such a path
 * is. The file system would store it as U+FFFD, under another string than the receipt's.
 */
const notText = (what: string) =>
  PointSubError.fromPeer("ERR_INVALID_ARGUMENT", `${what} is not Unicode text (an unpaired UTF-16 surrogate)`);

/** Longest relative path (bytes), path segment (bytes) and depth a sink accepts. */
const PATH_MAX_BYTES = 4096;
const SEGMENT_MAX_BYTES = 255;
const PATH_MAX_DEPTH = 64;
/**
 * Longest path the file system takes, in bytes with its NUL (PATH_MAX: Linux 4096, macOS and the BSDs
 * 1024; Node gives Windows long paths). A relative path that fits {@link PATH_MAX_BYTES} may not fit
 * under the receiver's directory: refused when the transfer starts (ERR_INVALID_ARGUMENT), before
 * any directory on its way is made.
 */
const FS_PATH_MAX = process.platform === "win32" ? 32767 : process.platform === "linux" ? 4096 : 1024;
/** Characters Windows does not allow in names (refused there only). */
const WINDOWS_RESERVED = /[:*?"<>|]/;

/**
 * The segments of a relative path a peer asked to store a file under
 * (`meta.path`, e.g. `photos/2024/a.jpg`), checked, never cleaned: `/`
 * separates segments; an empty path or segment (so an absolute path or
 * `a//b`), `.` and `..`, a backslash, NUL or other control character, a
 * segment over 255 bytes, a path over 4096 bytes or 64 segments, a first
 * segment that looks like the sink's own `.partial`/`.resume` files or is its
 * metadata directory (`.pointsub`, any case), and on Windows (`windows`,
 * default: this platform's) `:*?"<>|`, are refused with `ERR_INVALID_ARGUMENT`. Dot files are
 * kept as they are (the tree arrives as sent).
 */
export function safeRelativePath(path: unknown, windows = sep === "\\"): string[] {
  const bad = (why: string) =>
    PointSubError.fromPeer(
      "ERR_INVALID_ARGUMENT",
      `refused path ${JSON.stringify(String(path).slice(0, 100))}: ${why}`,
    );
  if (typeof path !== "string") throw PointSubError.fromPeer("ERR_INVALID_ARGUMENT", "meta.path must be a string");
  if (path.length === 0) throw bad("empty");
  // Stored as U+FFFD by the file system: the receipt would name another string than the file, and
  // different paths ("a\ud800", "a\udbff") one file.
  if (!path.isWellFormed()) throw bad("not Unicode text (an unpaired UTF-16 surrogate)");
  // A UTF-16 code unit is at most 3 UTF-8 bytes: short strings need no count.
  if (path.length * 3 > PATH_MAX_BYTES && Buffer.byteLength(path) > PATH_MAX_BYTES)
    throw bad(`over ${PATH_MAX_BYTES} bytes`);
  if (path.includes("\\")) throw bad("backslash (the separator is /)");
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point.
  if (/[\u0000-\u001f\u007f-\u009f]/.test(path)) throw bad("NUL or control character");
  if (path.startsWith("/")) throw bad("absolute");
  const segments = path.split("/");
  if (segments.length > PATH_MAX_DEPTH) throw bad(`over ${PATH_MAX_DEPTH} segments`);
  for (const seg of segments) {
    if (seg === "") throw bad("empty segment");
    if (seg === "." || seg === "..") throw bad(`'${seg}' segment`);
    if (seg.length * 3 > SEGMENT_MAX_BYTES && Buffer.byteLength(seg) > SEGMENT_MAX_BYTES) {
      throw bad(`a segment over ${SEGMENT_MAX_BYTES} bytes`);
    }
    if (windows && (WINDOWS_RESERVED.test(seg) || /[. ]$/.test(seg))) throw bad("not a Windows name");
  }
  // The sink's own files all begin with a dot.
  const first = segments[0];
  // (Also names that alias the metadata directory elsewhere, such as its 8.3 short name.)
  if (isMetaName(first)) throw bad("reserved for the sink's metadata");
  // Also in another case and the other spellings file systems fold together (`.<key>.PARTIAL`).
  if (isSinkFileAlias(first)) throw bad("reserved for the sink's partial files");
  return segments;
}

/**
 * Stored files up to this size a quick check reads for their CRC32C on the
 * main thread, synchronously, while the disk is fast (the lookups' gate): a
 * few microseconds each where the thread pool's open, read and close cost
 * three round trips and a promise per file (a re-run of 2,000 small files
 * into a restarted `serve`).
 */
const SYNC_CRC_MAX = 64 * 1024;
/**
 * How the quick check opens a name on the main thread: never through a link, without blocking (a
 * FIFO), and without making a terminal device placed in the directory this process's controlling
 * terminal (O_NOCTTY); only a regular file is then read.
 */
const QUICK_OPEN = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | (constants.O_NOCTTY ?? 0);
/** The buffer those reads share (one at a time: they are synchronous). */
let syncCrcBuf: Buffer | undefined;

/** Prefixes up to this length are read in one call by {@link fileCrc32c}. */
const SMALL_CRC_BYTES = 256 * 1024;

/**
 * @internal ERR_INVALID_ARGUMENT unless `dir` is a non-empty string and `options` an object: `fileSink`'s
 * and `fileSource`'s arguments (a number threw fs's raw TypeError, null options one of their own).
 */
export function checkDirAndOptions(what: string, dir: unknown, options: unknown, hooks: readonly string[]): void {
  if (typeof dir !== "string" || dir === "") {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${what} needs a directory path (a non-empty string)`);
  }
  checkOptions(options, what);
  // A hook that is no function was kept: called at each upload or download, it refused every one
  // (ERR_HANDLER "options.onStream is not a function") or, as onFile, threw uncaught (a crash by default).
  for (const name of hooks) {
    const hook = (options as Record<string, unknown> | undefined)?.[name];
    if (hook !== undefined && typeof hook !== "function") {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `${what} ${name} must be a function (got ${typeof hook})`);
    }
  }
}

/** CRC32C of the first `length` bytes of a file. */
export async function fileCrc32c(path: string, length: number): Promise<number> {
  // A negative, NaN or fractional length, or a path of another type, failed with fs's raw RangeError or TypeError.
  if (typeof path !== "string" || !Number.isSafeInteger(length) || length < 0) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `fileCrc32c needs a path and a length that is an integer >= 0 (got ${typeof path}, ${String(length)})`,
    );
  }
  if (length === 0) return 0;
  const fh = await open(path, "r");
  try {
    return (await crcOfHandle(fh, length)).crc;
  } finally {
    await fh.close();
  }
}

/**
 * CRC32C of the first `expect.size` bytes of the file at `path`, read through one descriptor, and
 * whether that file is `expect` (device, inode, size, mtime): only then may the CRC be recorded under
 * `expect`'s identity. A file renamed over the path between the lstat and the open is another file:
 * its CRC, recorded for the first one's inode (still reachable under a hard link), would later answer
 * for content it is not.
 */
export async function fileCrc32cOf(
  path: string,
  expect: Stats,
  realRoot?: string,
): Promise<{ crc: number; same: boolean }> {
  // Never through a link, nor blocking on a FIFO swapped in since `expect` was taken.
  const fh = await open(path, QUICK_OPEN);
  try {
    // Opened through a directory swapped for a link (given the directory it must be under): not read.
    if (realRoot !== undefined && !openedUnder(fh.fd, realRoot)) return { crc: 0, same: false };
    const st = await fh.stat();
    const same =
      st.ino === expect.ino && st.dev === expect.dev && st.size === expect.size && st.mtimeMs === expect.mtimeMs;
    const { crc, read } = await crcOfHandle(fh, expect.size);
    return { crc, same: same && read === expect.size };
  } finally {
    await fh.close();
  }
}

/** CRC32C of the first `length` bytes of an open file, and how many it read (fewer: it is shorter). */
async function crcOfHandle(fh: FileHandle, length: number): Promise<{ crc: number; read: number }> {
  if (length === 0) return { crc: 0, read: 0 };
  if (length <= SMALL_CRC_BYTES) {
    // One read (a read stream costs twice the calls and its machinery, per file).
    const buf = Buffer.allocUnsafe(length);
    let n = 0;
    while (n < length) {
      const { bytesRead } = await fh.read(buf, n, length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    return { crc: nodeCrc32c().compute(buf.subarray(0, n), 0), read: n };
  }
  let crc = 0;
  let n = 0;
  const rs = fh.createReadStream({ start: 0, end: length - 1, highWaterMark: 1 << 20, autoClose: false });
  for await (const chunk of rs) {
    crc = nodeCrc32c().compute(chunk as Buffer, crc);
    n += (chunk as Buffer).length;
  }
  return { crc, read: n };
}

type Crypto = typeof import("node:crypto");
let cryptoModule: Promise<Crypto> | undefined;
/**
 * node:crypto, loaded when the first sink is created (it costs a process a
 * few MB of RSS, and its first load is a ~20 ms turn: at start-up, not on a
 * peer's first transfer).
 */
const loadCrypto = () => {
  cryptoModule ??= import("node:crypto");
  return cryptoModule;
};

/**
 * The key of a transfer's partial file: SHA-256 (hex) of the principal,
 * route and transfer id. The partial is `.<key>.partial`, so a directory
 * listing reveals no transfer id, and each principal has its own.
 */
export async function partialKey(principal: string, route: string, transferId: string): Promise<string> {
  const { createHash } = await loadCrypto();
  return createHash("sha256")
    .update(JSON.stringify(["pointsub-partial", principal, route, transferId]))
    .digest("hex");
}

/**
 * Names the file a partial is stored for, per principal and route: SHA-256 (hex) of the three. A fresh
 * transfer of the same file (its source changed: another transfer id) replaces the partials stopped
 * with this key; the sidecar holds it, never the path itself.
 */
async function destKey(principal: string, route: string, path: string): Promise<string> {
  const { createHash } = await loadCrypto();
  return createHash("sha256")
    .update(JSON.stringify(["pointsub-dest", principal, route, path]))
    .digest("hex");
}

/** Indexes partials by transfer id alone (for lookups that do not know the principal or route). */
async function transferTag(transferId: string): Promise<string> {
  const { createHash } = await loadCrypto();
  return createHash("sha256")
    .update(JSON.stringify(["pointsub-tag", transferId]))
    .digest("hex");
}

/** A stored file's CRC32C and the identity it was computed for (inode, size, mtime, ctime). */
/**
 * Stored files the quick checks of one sink read for their CRC32C at once;
 * more wait their turn. With one read per file at a time (reads in
 * progress are shared) and the result cached, a peer's checks make the sink
 * read each file once, not once per entry (64 checks × 8 entries naming one
 * 64 MiB file read 32 GiB: `scripts/attack/check-crc.ts`).
 */
const CRC_READS_AT_ONCE = 2;

/** What identifies a stored file's content for the CRC cache (a `Stats`' fields). */
type FileIdentity = Pick<Stats, "ino" | "dev" | "size" | "mtimeMs" | "ctimeMs">;

/** Numbers a {@link CrcCache} record holds: ino, dev, size, mtimeMs, ctimeMs, crc. */
const CRC_RECORD = 6;

/**
 * CRC32C of stored files by path, each valid under the identity (inode,
 * device, size, mtime, ctime) it was recorded for; at most `max` paths
 * and `maxChars` characters of them, the oldest written first out. The records are numbers in one Float64Array
 * (grown by doubling up to `max` records), the map holds a record's index
 * per path: no object per stored file. (An object per file, referenced
 * from the long-lived map, cost a `serve` storing 2,000 small files 4–8 µs
 * each, mostly in young-generation collections copying them; ~1 µs now.)
 * A path written again gets a new record, its old one goes stale (skipped
 * when its turn to be reused comes).
 */
export class CrcCache {
  private readonly index = new Map<string, number>();
  private records: Float64Array;
  private paths: (string | undefined)[];
  /** The oldest record's slot, and how many slots from it on are in use (a ring of `max` slots). */
  private head = 0;
  private count = 0;
  /** Characters of the paths the slots in use hold (stale ones included). */
  private chars = 0;
  private readonly max: number;
  private readonly maxChars: number;

  /**
   * At most `max` records, and at most `maxChars` characters of paths in
   * them (a peer chooses the paths: 100,000 of 4 KB would hold ~400 MB);
   * the oldest go first.
   */
  constructor(max = 100_000, maxChars = 8 * 1024 * 1024) {
    this.max = max;
    this.maxChars = maxChars;
    const cap = Math.min(max, 1024);
    this.records = new Float64Array(cap * CRC_RECORD);
    this.paths = new Array(cap);
  }

  /** Paths with a record. */
  get size(): number {
    return this.index.size;
  }

  /** Characters of the paths held (at most `maxChars`, or one path's when that alone is more). */
  get pathChars(): number {
    return this.chars;
  }

  /** Records `crc` for `path` under `st`'s identity (replacing its record, if any). */
  set(path: string, st: FileIdentity, crc: number): void {
    while (this.count > 0 && (this.count >= this.max || this.chars + path.length > this.maxChars)) this.evict();
    let slot = this.head + this.count;
    if (slot >= this.max) slot -= this.max;
    if (slot * CRC_RECORD >= this.records.length) this.grow();
    this.count++;
    this.paths[slot] = path;
    this.chars += path.length;
    this.index.set(path, slot);
    const r = this.records;
    const o = slot * CRC_RECORD;
    r[o] = st.ino;
    r[o + 1] = st.dev;
    r[o + 2] = st.size;
    r[o + 3] = st.mtimeMs;
    r[o + 4] = st.ctimeMs;
    r[o + 5] = crc;
  }

  /** Whether `path` has a record (valid or not for the file there now). */
  has(path: string): boolean {
    return this.index.has(path);
  }

  /** The CRC recorded for `path` when `st` is the identity it was recorded under; else undefined. */
  get(path: string, st: FileIdentity): number | undefined {
    const slot = this.index.get(path);
    if (slot === undefined) return undefined;
    const r = this.records;
    const o = slot * CRC_RECORD;
    return r[o] === st.ino &&
      r[o + 1] === st.dev &&
      r[o + 2] === st.size &&
      r[o + 3] === st.mtimeMs &&
      r[o + 4] === st.ctimeMs
      ? r[o + 5]
      : undefined;
  }

  /** Frees the oldest slot (its path's record unless the path was written again since). */
  private evict(): void {
    const slot = this.head;
    const old = this.paths[slot];
    if (old !== undefined) {
      if (this.index.get(old) === slot) this.index.delete(old);
      this.chars -= old.length;
      this.paths[slot] = undefined;
    }
    this.head = slot + 1 === this.max ? 0 : slot + 1;
    this.count--;
  }

  private grow(): void {
    const cap = Math.min(this.max, (this.records.length / CRC_RECORD) * 2);
    const records = new Float64Array(cap * CRC_RECORD);
    records.set(this.records);
    this.records = records;
    this.paths.length = cap;
  }
}

/** One transfer's partial file, as the sink knows it. */
interface Entry {
  key: string;
  /** The principal whose transfer it is, once one of its transfers ran in this process (the key is a hash). */
  owner: string | undefined;
  /** {@link transferTag} of its transfer id, when known. */
  tag: string | undefined;
  route: string | undefined;
  /** {@link destKey} of the file it is stored for, when known (a sidecar or a transfer of this process). */
  dest: string | undefined;
  /** A partial file exists under the key. */
  exists: boolean;
  /** Bytes of the partial file (as far as written). */
  size: number;
  /** Declared total of a transfer in progress (counts against maxBytes). */
  reserved: number;
  /** Content bytes stored and their CRC32C, when known: what a resume query answers. */
  point: ResumePoint | undefined;
  /** A checkpoint short of the file's end (after a crash): the point is computed from there on. */
  base: ResumePoint | undefined;
  /** The point being computed from the file (one read, shared by concurrent queries). */
  computing: Promise<ResumePoint> | undefined;
  /** A transfer is writing it, or the sweep removing it. */
  active: boolean;
  /** The session of the transfer writing it (probed when another asks about it: {@link probeStale}). */
  session?: Connection;
  /** Settles when the transfer writing it lets it go (its handler ended, its lock removed). */
  released: Promise<void> | undefined;
  /** When it last changed (ms), to prefer the newest of several candidates. */
  touched: number;
  /** A sidecar may exist (one was written, or found by the startup scan): removed with the partial. */
  sidecar: boolean;
  /** The partial file's identity (inode, size, mtime) when its state was last read from the disk. */
  ident: string | undefined;
}

/** What a sidecar file holds (JSON). */
interface Sidecar {
  v: 1;
  offset: number;
  crc: number;
  tag?: string;
  route?: string;
  /** {@link destKey} of the file the partial is for. */
  dest?: string;
}

function errno(err: unknown): unknown {
  return (err as { code?: unknown }).code;
}
const isUint = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
const limit = (n: number | undefined, what: string): number => {
  if (n === undefined || n === 0 || n === Number.POSITIVE_INFINITY) return 0;
  if (!isUint(n)) throw PointSubError.fromPeer("ERR_INVALID_ARGUMENT", `${what} must be a non-negative integer`);
  return n;
};

/**
 * Receives files into `dir`, for peers you do not trust:
 *
 * * a transfer is written to `dir/.<key>.partial`, where the key is a
 *   SHA-256 of the session's principal, the route and the transfer id (the
 *   listing reveals no id), created exclusively when the first bytes
 *   arrive (a transfer that fails before them leaves nothing on disk), and
 *   put in place under its sanitized name once the whole content was
 *   verified: fsync, then a hard link that fails if the name exists
 *   (`ERR_EXISTS`, unless `overwrite`), or a rename with `overwrite`, then
 *   an fsync of the directory;
 * * transfer ids must be 32..128 characters of `[A-Za-z0-9_-]`: the id is
 *   the capability to query and resume a transfer (`sendFile` derives an
 *   HMAC one); a principal can only resume its own partials;
 * * a resume query is answered from memory, or after a restart from a
 *   small sidecar file (`.<key>.resume`, written after an fdatasync at
 *   checkpoints and when a transfer stops), so it never re-reads the
 *   partial file; only when the sidecar is missing or invalid, or older
 *   than the partial (written to since by someone else: the whole file), or
 *   short of the file's end after a crash (the bytes after the checkpoint)
 *   is it read, once, however many queries arrive. A wrong
 *   prefix CRC or offset answers `ERR_RESUME` and keeps the partial;
 * * the resume lookup is bound to the principal when it is given a
 *   context ({@link FileResumeContext}), as the router gives it (a query
 *   from another principal with the same transfer id finds nothing); called
 *   without one, it finds any principal's partial, but only the principal
 *   that stored it can resume or extend it;
 * * processes may share the directory (`serve --workers N`): a transfer
 *   is received by one at a time (`.<key>.lock`, created exclusively,
 *   holding the receiver's pid and, on Linux, its start: a lock whose process is
 *   gone, or whose pid now names a process started since, is stale), and
 *   a resume query or a resumed upload reads the transfer's state from the
 *   disk (an lstat; the sidecar when the partial changed since this process
 *   last knew it), so an upload dropped on one process resumes on another.
 *   Quotas (`maxBytes`) count per process;
 * * partial files, their sidecars and locks are opened without following
 *   symbolic links and without blocking (O_NONBLOCK: a FIFO put at such a
 *   name never holds a thread), and anything at their names that is not a
 *   regular file is refused (a sidecar or lock in the way is replaced);
 * * `maxFileSize` and `maxBytes` bound what a peer may store (`ERR_QUOTA`,
 *   checked against the declared size up front and while writing); partials
 *   untouched for `partialTtlMs` are removed;
 * * malformed metadata gets `ERR_INVALID_ARGUMENT` before anything is
 *   locked or created. A cancelled, corrupt or over-quota transfer's partial
 *   file is removed; a dropped connection keeps it for the resume.
 *
 * ```ts
 * const sink = fileSink("/srv/inbox", { maxFileSize: 4 * 2 ** 30 });
 * server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
 * ```
 */
export function fileSink(dir: string, options: FileSinkOptions = {}): FileSink {
  checkDirAndOptions("fileSink", dir, options, ["onStream", "onFile", "onBundle"]);
  const overwrite = options.overwrite === true;
  const maxFileSize = limit(options.maxFileSize, "maxFileSize");
  const maxBytes = limit(options.maxBytes, "maxBytes");
  const ttl = limit(options.partialTtlMs ?? DEFAULT_TTL_MS, "partialTtlMs");
  const maxPartials = limit(options.maxPartials ?? DEFAULT_MAX_PARTIALS, "maxPartials");
  const maxPartialsPer = limit(
    options.maxPartialsPerPrincipal ?? (maxPartials > 0 ? Math.max(1, Math.floor(maxPartials / 4)) : 0),
    "maxPartialsPerPrincipal",
  );
  const durability = options.durability ?? "fsync";
  if (durability !== "fsync" && durability !== "none") {
    throw new PointSubError("ERR_INVALID_ARGUMENT", 'durability must be "fsync" or "none"');
  }
  const fsync = durability === "fsync";
  /** Large stored files' CRC32C on disk: quick checks in other processes and after a restart read no file. */
  const crcDisk = options.crcRecords === false ? undefined : crcStore(dir);
  void loadCrypto();
  const entries = new Map<string, Entry>();
  /** tag → keys of partials of that transfer id. */
  const byTag = new Map<string, Set<string>>();
  /** Routes partials were stored for: candidates for lookups that do not know the route. */
  const routes = new Set<string>([FILE_ROUTE]);
  let held = 0;
  let rescans = 0;
  let evicted = 0;
  /**
   * Transfers holding a partial's descriptor. One that writes nothing for
   * {@link PARK_IDLE_MS} closes it (a peer trickling a byte now and then to
   * each of its streams held a descriptor per stream for ever: 65 per
   * connection, until the process ran out and refused every connection).
   */
  const openPartials = new Set<OpenPartial>();
  let parkTimer: ReturnType<typeof setInterval> | undefined;
  const watchIdle = (p: OpenPartial) => {
    openPartials.add(p);
    parkTimer ??= setInterval(() => {
      const now = performance.now();
      for (const o of openPartials) if (now - o.last >= PARK_IDLE_MS) void o.park();
      if (openPartials.size === 0) {
        clearInterval(parkTimer);
        parkTimer = undefined;
      }
    }, PARK_IDLE_MS / 2);
    parkTimer.unref?.();
  };
  /** Bytes of the directory's path with its separator (the prefix of every stored file's). */
  const dirBytes = Buffer.byteLength(join(dir, "x")) - 1;
  /**
   * Throws ERR_INVALID_ARGUMENT when `segments` (checked) are too long a path under this directory
   * for the file system: its directories would be made and its name refused (ENAMETOOLONG), an
   * empty directory left per segment.
   */
  const fitsDir = (segments: string[]): string[] => {
    let n = dirBytes + segments.length - 1;
    for (const seg of segments) n += Buffer.byteLength(seg);
    if (n >= FS_PATH_MAX) {
      throw PointSubError.fromPeer(
        "ERR_INVALID_ARGUMENT",
        `refused path ${JSON.stringify(segments.join("/").slice(0, 100))}: too long for the receiver's directory (${n} of at most ${FS_PATH_MAX - 1} bytes)`,
      );
    }
    return segments;
  };
  const partialPath = (key: string) => join(dir, `.${key}.partial`);
  const sidecarPath = (key: string) => join(dir, `.${key}.resume`);
  const lockPath = (key: string) => join(dir, `.${key}.lock`);
  const weight = (e: Entry) => Math.max(e.size, e.reserved);

  const entryFor = (key: string): Entry => {
    let e = entries.get(key);
    if (e === undefined) {
      e = {
        key,
        owner: undefined,
        tag: undefined,
        route: undefined,
        dest: undefined,
        exists: false,
        size: 0,
        reserved: 0,
        point: undefined,
        base: undefined,
        computing: undefined,
        active: false,
        released: undefined,
        touched: Date.now(),
        sidecar: false,
        ident: undefined,
      };
      entries.set(key, e);
    }
    return e;
  };
  const setTag = (e: Entry, tag: string | undefined, route: string | undefined) => {
    if (route !== undefined) {
      e.route = route;
      routes.add(route);
    }
    if (tag === undefined || e.tag === tag) return;
    e.tag = tag;
    const keys = byTag.get(tag) ?? new Set<string>();
    byTag.set(tag, keys);
    keys.add(e.key);
  };
  const setSize = (e: Entry, size: number, reserved = e.reserved) => {
    held -= weight(e);
    e.size = size;
    e.reserved = reserved;
    held += weight(e);
  };
  /** Forgets an entry (its file is gone). */
  const forget = (e: Entry) => {
    setSize(e, 0, 0);
    e.exists = false;
    e.point = undefined;
    e.base = undefined;
    e.dest = undefined;
    if (e.tag !== undefined) {
      const keys = byTag.get(e.tag);
      keys?.delete(e.key);
      if (keys?.size === 0) byTag.delete(e.tag);
      e.tag = undefined;
    }
    if (!e.active) entries.delete(e.key);
  };
  /**
   * Room for the partial a new transfer of `owner` may create (`e`, already
   * active): under `maxPartialsPerPrincipal` and `maxPartials`, counting
   * partials and transfers in progress, made by removing the least recently
   * touched partials no transfer writes — the owner's own while it is over
   * its share, else anybody's. ERR_QUOTA when every candidate is being
   * written. A scan of the entries: only a new transfer pays it.
   */
  const makeRoom = async (e: Entry, owner: string): Promise<void> => {
    if (maxPartials === 0 && maxPartialsPer === 0) return;
    const skip = new Set<Entry>();
    for (;;) {
      let total = 0;
      let mine = 0;
      let oldestMine: Entry | undefined;
      let oldest: Entry | undefined;
      for (const x of entries.values()) {
        if (x === e || !(x.exists || x.active)) continue;
        total++;
        const own = x.owner === owner;
        if (own) mine++;
        if (x.active || skip.has(x)) continue;
        if (own && (oldestMine === undefined || x.touched < oldestMine.touched)) oldestMine = x;
        if (oldest === undefined || x.touched < oldest.touched) oldest = x;
      }
      const overMine = maxPartialsPer > 0 && mine >= maxPartialsPer;
      if (!overMine && !(maxPartials > 0 && total >= maxPartials)) return;
      const victim = overMine ? oldestMine : oldest;
      if (victim === undefined) {
        throw PointSubError.fromPeer(
          "ERR_QUOTA",
          overMine
            ? `this peer has ${mine} unfinished uploads being received (maxPartialsPerPrincipal ${maxPartialsPer})`
            : `the sink has ${total} unfinished uploads being received (maxPartials ${maxPartials})`,
        );
      }
      // Another process sharing the directory may be receiving it: left alone.
      victim.active = true;
      const busy = await lockHeld(lockPath(victim.key));
      if (!busy) {
        await unlink(sidecarPath(victim.key)).catch(() => {});
        await unlink(partialPath(victim.key)).catch(() => {});
        evicted++;
      }
      victim.active = false;
      if (busy) skip.add(victim);
      else forget(victim);
    }
  };

  /**
   * Removes the stopped partials of `e`'s file (same principal, route and path: `e.dest`) but `e`'s own,
   * when `e` starts from 0 (`replaceStalePartials`): another transfer id for the same file is its source
   * changed since (a `pointsub get` of a file replaced on the server), so they would never be resumed,
   * only kept until `partialTtlMs`. A partial being written (here, or by another process sharing the
   * directory: its lock) is left alone.
   */
  const dropSuperseded = async (e: Entry): Promise<void> => {
    if (e.dest === undefined || entries.size < 2) return;
    for (const x of [...entries.values()]) {
      if (x === e || x.dest !== e.dest || x.active || !x.exists) continue;
      x.active = true;
      const busy = await lockHeld(lockPath(x.key));
      if (!busy) {
        await unlink(sidecarPath(x.key)).catch(() => {});
        await unlink(partialPath(x.key)).catch(() => {});
      }
      x.active = false;
      if (!busy) forget(x);
    }
  };

  /** Removes an entry's partial and sidecar. */
  const discard = async (e: Entry) => {
    // unlink, not rm: rm checks the path synchronously first (a cost per
    // failed transfer that a flood of bad uploads multiplies).
    // The sidecar first: a crash in between leaves a partial without one
    // (read once after the restart), never a sidecar without its partial.
    await unlink(sidecarPath(e.key)).catch(() => {});
    await unlink(partialPath(e.key)).catch(() => {});
    forget(e);
  };

  const writeSidecar = async (e: Entry, point: ResumePoint) => {
    const s: Sidecar = { v: 1, offset: point.offset, crc: point.crc, tag: e.tag, route: e.route, dest: e.dest };
    e.sidecar = true;
    const path = sidecarPath(e.key);
    let fh: FileHandle | undefined;
    try {
      fh = await openOwn(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600).catch(
        async (err: unknown) => {
          // Something else at its name (a FIFO, a link): removed, and the sidecar made in its place.
          if (errno(err) !== "ERR_EXISTS" && errno(err) !== "ENXIO" && errno(err) !== "ELOOP") throw err;
          await unlink(path);
          return openOwn(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
        },
      );
      await fh.writeFile(JSON.stringify(s));
    } catch {
      // Best effort: without it a restart computes the point once from the file.
    } finally {
      await fh?.close().catch(() => {});
    }
  };

  /**
   * A partial's sidecar, with when it was written (`at`, its mtime): a partial whose mtime is later was
   * written to since (by someone else: the sink writes the sidecar after the bytes it claims), so the
   * point it claims for the whole file is not taken (the file is read once instead). Before, a partial
   * changed in place behind the sink (same size) was resumed from its sidecar's CRC32C: the end-to-end
   * check passed and the stored file was silently not the one sent.
   */
  const readSidecar = async (key: string): Promise<(Sidecar & { at: number }) | undefined> => {
    let fh: FileHandle | undefined;
    try {
      fh = await openOwn(sidecarPath(key), constants.O_RDONLY);
      const st = await fh.stat();
      if (st.size > 4096) return undefined;
      const s = JSON.parse(await fh.readFile("utf8")) as Partial<Sidecar>;
      if (s.v !== 1 || !isUint(s.offset) || !isUint(s.crc) || s.crc > 0xffffffff) return undefined;
      return {
        v: 1,
        offset: s.offset,
        crc: s.crc,
        tag: typeof s.tag === "string" && /^[0-9a-f]{64}$/.test(s.tag) ? s.tag : undefined,
        route: typeof s.route === "string" && s.route.length <= 1024 ? s.route : undefined,
        dest: typeof s.dest === "string" && /^[0-9a-f]{64}$/.test(s.dest) ? s.dest : undefined,
        at: st.mtimeMs,
      };
    } catch {
      return undefined;
    } finally {
      await fh?.close().catch(() => {});
    }
  };

  /**
   * Brings an entry up to date with the disk, where another process (a
   * worker sharing the directory) may have stored, extended, finished or
   * removed the transfer meanwhile: an lstat, and when the partial changed
   * since this process last knew it, its sidecar (a few bytes, never the
   * partial itself unless the sidecar is missing or short of the file).
   */
  const refresh = async (e: Entry, owner = false): Promise<void> => {
    // The callback lstat (`exists`): a missing partial makes no Error and no rejected promise.
    const st = await exists(partialPath(e.key));
    const ident = st?.isFile() ? `${st.ino}:${st.size}:${st.mtimeMs}` : undefined;
    const s = st?.isFile() && !(e.exists && e.ident === ident) ? await readSidecar(e.key) : undefined;
    // A transfer of this process started meanwhile: its state is newer than what was read.
    if (e.active && !owner) return;
    if (st === undefined) {
      if (e.exists) {
        e.exists = false;
        e.point = undefined;
        e.base = undefined;
        e.ident = undefined;
        setSize(e, 0);
      }
      return;
    }
    if (!st.isFile()) return; // refused where it is opened; removed by the sweep
    if (e.exists && e.ident === ident) return;
    e.exists = true;
    e.ident = ident;
    e.touched = st.mtimeMs;
    e.point = undefined;
    e.base = undefined;
    setSize(e, st.size);
    if (s !== undefined) {
      e.sidecar = true;
      setTag(e, s.tag, s.route);
      e.dest ??= s.dest;
      if (s.offset === st.size && st.mtimeMs <= s.at) e.point = { offset: s.offset, crc: s.crc };
      else if (s.offset < st.size) e.base = { offset: s.offset, crc: s.crc };
    }
  };

  /** Opens a partial file ({@link openOwn}: no link, no FIFO); undefined unless it is a regular file. */
  const openPartial = (key: string, flags: number): Promise<FileHandle | undefined> =>
    // ENOENT, ELOOP (a symbolic link), ERR_EXISTS (a FIFO...), EISDIR...
    openOwn(partialPath(key), flags).catch(() => undefined);

  /** Where a transfer stands: from memory, else read once from the file (shared by concurrent callers). */
  const pointOf = (e: Entry): Promise<ResumePoint> => {
    if (e.point !== undefined) return Promise.resolve(e.point);
    if (e.computing !== undefined) return e.computing;
    const computing = (async (): Promise<ResumePoint> => {
      const fh = await openPartial(e.key, constants.O_RDONLY);
      if (fh === undefined) {
        // Not a regular file (or gone): nothing to resume; the sweep removes foreign things.
        forget(e);
        return { offset: 0, crc: 0 };
      }
      try {
        rescans++;
        const buf = Buffer.allocUnsafe(1 << 20);
        // From a checkpoint when there is one: only the bytes after it are read.
        const base = e.base !== undefined && e.base.offset <= (await fh.stat()).size ? e.base : undefined;
        let crc = base?.crc ?? 0;
        let offset = base?.offset ?? 0;
        for (;;) {
          const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
          if (bytesRead === 0) break;
          crc = nodeCrc32c().compute(buf.subarray(0, bytesRead), crc);
          offset += bytesRead;
        }
        const point = { offset, crc: crc >>> 0 };
        setSize(e, offset);
        // Cached (a transfer starting meanwhile waits for this computation before it changes anything).
        e.point = point;
        e.base = undefined;
        await writeSidecar(e, point);
        return point;
      } finally {
        await fh.close().catch(() => {});
      }
    })();
    e.computing = computing;
    const clear = () => {
      if (e.computing === computing) e.computing = undefined;
    };
    computing.then(clear, clear);
    return computing;
  };

  /**
   * Scans the directory: removes expired partials (and anything at a
   * partial's name that is not a regular file, and orphan sidecars), and on
   * the first scan loads the resume state of the others.
   */
  const scan = async (load: boolean): Promise<number> => {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return 0;
    }
    const now = Date.now();
    let removed = 0;
    const partials = new Set<string>();
    for (const name of names) {
      const b = BUNDLE_PARTIAL.exec(name);
      if (b !== null) {
        // A live receiver's bundle in progress is left alone (and a stale one, should its pid be reused, goes
        // after the TTL).
        const gone = bundleWriterGone(b);
        const st = gone ? undefined : await lstat(join(dir, name)).catch(() => undefined);
        if (gone || (ttl > 0 && st?.isFile() === true && st.mtimeMs < now - ttl)) {
          await unlink(join(dir, name)).then(
            () => removed++,
            () => {},
          );
        }
        continue;
      }
      const m = PARTIAL_NAME.exec(name);
      if (m === null) continue;
      const key = m[1];
      partials.add(key);
      if (entries.get(key)?.active || (await lockHeld(lockPath(key)))) continue;
      const st = await lstat(join(dir, name)).catch(() => undefined);
      if (st === undefined || st.isDirectory()) continue;
      const before = entries.get(key);
      if (before?.active) continue;
      if (!st.isFile() || (ttl > 0 && st.mtimeMs < now - ttl)) {
        // Locked while removed: a transfer starting on this key meanwhile gets ERR_RESUME (retryable).
        const e = before ?? entryFor(key);
        e.active = true;
        await rm(join(dir, name), { force: true }).catch(() => {});
        await rm(join(dir, `.${key}.resume`), { force: true }).catch(() => {});
        removed++;
        e.active = false;
        forget(e);
        continue;
      }
      // A file that appeared after the first scan, not through this sink, is left alone.
      if (!load || before !== undefined) continue;
      const e = entryFor(key);
      e.exists = true;
      e.sidecar = true;
      e.touched = st.mtimeMs;
      setSize(e, st.size);
      const s = await readSidecar(key);
      if (s !== undefined) {
        setTag(e, s.tag, s.route);
        e.dest = s.dest;
        // Written when the transfer stopped, a sidecar matches the file's size. One short of it is
        // a checkpoint (the receiver crashed later): the bytes after it are read once, on first use.
        if (s.offset === st.size && st.mtimeMs <= s.at) e.point = { offset: s.offset, crc: s.crc };
        else if (s.offset < st.size) e.base = { offset: s.offset, crc: s.crc };
      }
    }
    for (const name of names) {
      const m = SIDECAR_NAME.exec(name);
      if (m === null || partials.has(m[1]) || entries.get(m[1])?.active) continue;
      await rm(join(dir, name), { force: true }).catch(() => {});
    }
    // Locks left by a process that is gone.
    for (const name of names) {
      if (LOCK_NAME.test(name) && !(await lockHeld(join(dir, name)))) await unlink(join(dir, name)).catch(() => {});
    }
    return removed;
  };

  const ready = (async () => {
    await makeDirectory(dir).catch(() => {});
    await scan(true);
  })().catch(() => {});

  let timer: ReturnType<typeof setInterval> | undefined;
  let sweeping = false;
  if (ttl > 0) {
    timer = setInterval(
      () => {
        if (sweeping) return; // a slow scan of a large directory is never run twice at once
        sweeping = true;
        scan(false)
          .then(() => crcDisk?.sweep())
          .catch(() => {})
          .finally(() => {
            sweeping = false;
          });
      },
      Math.min(Math.max(ttl / 4, 10), 60 * 60 * 1000),
    );
    timer.unref();
  }

  /**
   * The session of a transfer another session asks about (its sender reconnected): one that does not
   * answer a ping, nor send anything, within {@link STALE_PING_MS} is taken for gone and ended, so that
   * its handler lets the transfer go and a retry resumes it. Before, a connection cut where this side
   * never saw it close (a partition, a NAT dropping it) held the transfer until its keepalive ended it, up to twice
   * keepAliveMs (60 s), and the sender's retries (10 over ~20 s) ran out on ERR_RESUME meanwhile.
   */
  const probing = new WeakMap<Connection, Promise<void>>();
  const probeStale = (s: Connection): Promise<void> => {
    if (s.state !== "open") return Promise.resolve();
    // One probe per holder at a time: the queries of a sender (or many) retrying share it, not a PING each.
    let probe = probing.get(s);
    if (probe === undefined) {
      // Bytes from it meanwhile say it is there: on a slow uplink its answer waits behind the upload's
      // data (a window of it when not paced), and ending it would let any holder of the id cut it.
      const heard = s.info().bytesIn;
      probe = s.ping({ timeoutMs: STALE_PING_MS }).then(
        () => {
          probing.delete(s);
        },
        () => {
          probing.delete(s);
          if (s.info().bytesIn !== heard) return;
          s.destroy(
            new PointSubError(
              "ERR_KEEPALIVE",
              `no answer to a ping within ${STALE_PING_MS} ms while another session resumes its transfer`,
            ),
          );
        },
      );
      probing.set(s, probe);
    }
    return probe;
  };

  const resume = async (transferId: string, ctx?: FileResumeContext): Promise<ResumePoint> => {
    if (typeof transferId !== "string" || !TRANSFER_ID.test(transferId)) return { offset: 0, crc: 0 };
    await ready;
    const keys = new Set<string>();
    const session = ctx?.session;
    if (session !== undefined) {
      const principal = String(session.principal ?? "");
      for (const r of ctx?.route !== undefined ? [ctx.route] : routes) {
        keys.add(await partialKey(principal, r, transferId));
      }
    } else {
      for (const k of byTag.get(await transferTag(transferId)) ?? []) {
        const e = entries.get(k);
        if (ctx?.route === undefined || e?.route === undefined || e.route === ctx.route) keys.add(k);
      }
      for (const r of ctx?.route !== undefined ? [ctx.route] : routes) keys.add(await partialKey("", r, transferId));
    }
    let best: Entry | undefined;
    for (const k of keys) {
      let held = entries.get(k);
      let probed = false;
      if (held?.active && held.session !== undefined && held.session !== session) {
        // The sender reconnected: its old session is gone, or silent (ended by the probe), or live (answers).
        await probeStale(held.session);
        probed = true;
        // Gone: its handler is winding down (storing what arrived before the close, the sidecar, the lock),
        // waited for. Before, the query was refused with ERR_RESUME at once, and the sender's retries (each
        // after its backoff, on a new connection) came ~0.3 s and 2–4 connections later.
        if (held.session?.state === "closed" && held.released !== undefined) await within(held.released, WIND_DOWN_MS);
        held = entries.get(k);
      }
      if (held?.active || (await lockHeld(lockPath(k)))) {
        if (!probed && held?.session !== undefined && held.session !== session) await probeStale(held.session);
        throw PointSubError.fromPeer("ERR_RESUME", "this transfer is still being received; retry shortly");
      }
      // The disk is the truth: another process sharing the directory may have stored it.
      const e = entryFor(k);
      await refresh(e);
      if (!e.exists) {
        if (!e.active) entries.delete(k);
        continue;
      }
      if (best === undefined || e.touched > best.touched) best = e;
    }
    return best === undefined ? { offset: 0, crc: 0 } : pointOf(best);
  };

  /** Checks what a peer sent before anything is locked or created. */
  const check = (stream: IncomingStream): { tid: string; name: string; segments: string[] | undefined } => {
    const tid = stream.transferId;
    if (tid === undefined || !TRANSFER_ID.test(tid)) {
      throw PointSubError.fromPeer(
        "ERR_INVALID_ARGUMENT",
        "file transfers need a transferId of 32 to 128 characters [A-Za-z0-9_-] (an unguessable capability)",
      );
    }
    const raw = stream.meta.name;
    if (raw !== undefined && typeof raw !== "string") {
      throw PointSubError.fromPeer("ERR_INVALID_ARGUMENT", "meta.name must be a string");
    }
    if (raw !== undefined && !raw.isWellFormed()) throw notText("meta.name");
    const rel = stream.meta.path === undefined ? undefined : fitsDir(safeRelativePath(stream.meta.path));
    if (
      !isUint(stream.offset) ||
      (stream.total !== undefined && (!isUint(stream.total) || stream.offset > stream.total))
    ) {
      throw PointSubError.fromPeer("ERR_INVALID_ARGUMENT", "bad stream offset or total");
    }
    if (maxFileSize > 0 && Math.max(stream.total ?? 0, stream.offset) > maxFileSize) {
      throw PointSubError.fromPeer(
        "ERR_QUOTA",
        `file of ${stream.total ?? stream.offset} bytes is over the ${maxFileSize}-byte limit`,
      );
    }
    const name = rel === undefined ? safeFileName(raw) : rel.join("/");
    if (rel === undefined) fitsDir([name]);
    return { tid, name, segments: rel };
  };

  /** lstat calls in flight, by path: transfers checking the same name at once share one. */
  const checking = new Map<string, Promise<Stats | undefined>>();
  /**
   * What is at `path` (not following links), or undefined. The callback
   * API: for a missing path it costs about half of the promise API's (no
   * rejected promise), and a flood of uploads under one name costs one
   * call per round instead of one per upload.
   */
  const exists = (path: string): Promise<Stats | undefined> => {
    let p = checking.get(path);
    if (p === undefined) {
      p = new Promise((resolve) => {
        lstatCb(path, (err, st) => {
          checking.delete(path);
          resolve(err === null ? st : undefined);
        });
      });
      checking.set(path, p);
    }
    return p;
  };

  /** Fsyncs a directory so a rename, link or mkdir in it survives a crash (best effort where unsupported). */
  const fsyncDir = async (path: string) => {
    let fh: FileHandle | undefined;
    try {
      // O_DIRECTORY: a directory swapped for a link to a FIFO since the file was named blocked this open
      // (a thread-pool thread) until something wrote to it, and the upload was never answered.
      fh = await open(path, constants.O_RDONLY | (constants.O_DIRECTORY ?? 0));
      await fh.sync();
    } catch {
      // Not supported here (Windows, some network file systems).
    } finally {
      await fh?.close().catch(() => {});
    }
  };
  /** Per directory: the fsync running, and the one queued behind it (shared by everyone who asks meanwhile). */
  const dirSyncs = new Map<string, { running: Promise<void> | undefined; queued: Promise<void> | undefined }>();
  /**
   * Syncs `path` (a directory) after the caller changed it: group commit —
   * callers that arrive while an fsync of it runs share the next one, which
   * starts after that one ends, so it covers their changes; many files
   * placed at once cost a few directory fsyncs, not one each.
   */
  const syncDir = (path: string = dir): Promise<void> => {
    if (!fsync) return Promise.resolve();
    let s = dirSyncs.get(path);
    if (s === undefined) {
      s = { running: undefined, queued: undefined };
      dirSyncs.set(path, s);
    }
    const state = s;
    const start = (): Promise<void> => {
      const p: Promise<void> = fsyncDir(path).finally(() => {
        if (state.running === p) state.running = undefined;
        if (state.running === undefined && state.queued === undefined && dirSyncs.get(path) === state) {
          dirSyncs.delete(path);
        }
      });
      state.running = p;
      return p;
    };
    if (state.queued !== undefined) return state.queued;
    if (state.running === undefined) return start();
    const queued = state.running.then(() => {
      state.queued = undefined;
      return start();
    });
    state.queued = queued;
    return queued;
  };

  /**
   * Puts a complete partial file in place under `finalPath`, never replacing a file unless `overwrite`;
   * `at` is where it is named (`finalPath` through its held directory: {@link parents}).
   */
  const place = async (partial: string, finalPath: string, at: string = finalPath) => {
    if (overwrite) {
      const old = await exists(at);
      if (old?.isDirectory()) throw PointSubError.fromPeer("ERR_EXISTS", "a directory has that name");
      await rename(partial, at);
      // The replaced file's CRC record goes with it (else one per overwrite until the sweep).
      if (old?.isFile() && old.nlink <= 1) void crcDisk?.forget(old);
    } else {
      try {
        await link(partial, at);
      } catch (err) {
        if (errno(err) === "EEXIST")
          throw PointSubError.fromPeer("ERR_EXISTS", `${nameUnder(dir, finalPath)} already exists`);
        if (!["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EXDEV", "EMLINK"].includes(String(errno(err)))) throw err;
        // No hard links on this file system: check, then rename. A file
        // created under the same name between the two is replaced (accepted race).
        if ((await exists(at)) !== undefined) {
          throw PointSubError.fromPeer("ERR_EXISTS", `${nameUnder(dir, finalPath)} already exists`);
        }
        await rename(partial, at);
      }
      await unlink(partial).catch(() => {});
    }
    await syncDir(dirname(finalPath));
  };

  /**
   * Makes the directories of a relative path under `dir`, each one checked
   * not to be a symbolic link or a file (`ERR_EXISTS`): a path never leads
   * out of `dir`. Each is opened through the one before (O_DIRECTORY |
   * O_NOFOLLOW, {@link holdDirBeneath}) and the last one held: the file is
   * named through it, so a directory on the way swapped for a link after
   * the checks (another local user's) leads nowhere else. Before, only the
   * lstats checked, and a swap between them and the link or mkdir wrote
   * outside `dir`. Where descriptors cannot be named (not Linux) the checks
   * are all.
   */
  const parents = async (segments: string[]): Promise<HeldDir> => {
    const viaFd = fdPaths();
    let cur = dir;
    let fd = -1;
    try {
      for (const seg of segments.slice(0, -1)) {
        cur = join(cur, seg);
        const path = fd < 0 ? cur : fdPath(fd, seg);
        let st = await exists(path);
        if (st === undefined) {
          const created = await mkdir(path).then(
            () => true,
            (err: unknown) => {
              if (errno(err) !== "EEXIST") throw err;
              return false;
            },
          );
          // A new directory's name is durable once its parent is synced.
          if (created) await syncDir(dirname(cur));
          st = await lstat(path).catch(() => undefined);
        }
        if (st === undefined || !st.isDirectory()) throw notADirectory(segments, cur, st);
        if (!viaFd) continue;
        const next = await openDirNoFollow(path).catch(async (err: unknown) => {
          const code = errno(err);
          if (code !== "ELOOP" && code !== "ENOTDIR" && code !== "ENOENT") throw err;
          // Swapped since the lstat above.
          throw notADirectory(segments, cur, await exists(path));
        });
        if (fd >= 0) closeSync(fd);
        fd = next;
      }
    } catch (err) {
      if (fd >= 0) closeSync(fd);
      throw err;
    }
    return heldDir(fd, cur);
  };

  /** What {@link parents} answers for `cur`, a directory on the way of `segments` that is not one. */
  const notADirectory = (segments: string[], cur: string, st: Stats | undefined) =>
    PointSubError.fromPeer(
      "ERR_EXISTS",
      `${segments.join("/")}: ${cur.slice(dir.length + 1)} is ${st?.isSymbolicLink() ? "a symbolic link" : "not a directory"} on the receiver`,
    );

  /**
   * The directories of a relative path under `dir`, checked without making them (as {@link parents}
   * checks them: ERR_EXISTS for a file or a symbolic link in the way); false when one is missing
   * (nothing is stored under it yet: made once the content arrived).
   */
  const dirsOnTheWay = async (segments: string[]): Promise<boolean> => {
    let cur = dir;
    for (const seg of segments.slice(0, -1)) {
      cur = join(cur, seg);
      const st = await exists(cur);
      if (st === undefined) return false;
      if (!st.isDirectory()) throw notADirectory(segments, cur, st);
    }
    return true;
  };

  /** CRC32C of stored files, by path, valid while the file's identity (inode, size, mtime, ctime) is unchanged. */
  const crcs = new CrcCache();
  /** The same file, unchanged (compared field by field: no identity string formatted per stored file). */
  const sameFile = (a: FileIdentity, b: FileIdentity) =>
    a.ino === b.ino && a.dev === b.dev && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;
  /**
   * Caches a stored file's CRC32C under its identity: the fstat its writer took, or a synchronous lstat
   * (the inode was just written: cached, no disk access; a thread-pool round
   * trip per small file costs the main thread several times more).
   */
  const remember = (path: string, size: number, crc: number, stat?: Stats) => {
    const st = stat ?? lstatSync(path, { throwIfNoEntry: false });
    if (st?.isFile() === true && st.size === size) cacheCrc(path, st, crc);
  };
  const cacheCrc = (path: string, st: Stats, crc: number) => crcs.set(path, st, crc);

  /**
   * Where the quick check's lstats run: on the main thread, synchronously, while the disk is fast (an
   * lstat of a cached inode or a missing name takes a microsecond or two, a thread-pool round trip
   * costs the main thread ten times that and a wake-up), on the thread pool while it is slow.
   */
  const lookupGate = new SyncGate();
  /** {@link exists}, synchronously when {@link lookupGate} allows (undefined: ask the pool). */
  const existsNow = (path: string): { st: Stats | undefined } | undefined => {
    const t0 = performance.now();
    if (!lookupGate.mainThread(t0)) return undefined;
    let st: Stats | undefined;
    try {
      st = lstatSync(path, { throwIfNoEntry: false });
    } catch {
      // ENOTDIR, EACCES...: nothing there that can be checked.
    }
    const t1 = performance.now();
    lookupGate.record(t1 - t0, t1);
    return { st };
  };
  /** `join(dir, ...segments)` for checked segments (none empty, `.`, `..` or with a separator): no normalizing per file. */
  const dirPrefix = join(dir, "x").slice(0, -1);
  /**
   * What is stored under one quick-check entry (a file the sink put there or not: any regular file),
   * for its checked `segments`: the answer itself when every lstat ran on the main thread, its
   * directories were known or checked now and its CRC32C was cached or not needed (no promise per
   * file), else a promise of it (an lstat on the pool, a directory another entry is checking, a CRC
   * to read). Only through real directories (never a symbolic link out of the directory), each
   * checked once per request (`dirs`): a tree's files share their directories, and a missing one
   * answers for all of them.
   */
  const lookup = (
    segments: string[],
    size: number,
    dirs: Map<string, Promise<boolean> | boolean>,
  ): FileCheckAnswer | Promise<FileCheckAnswer> => {
    let path = dirPrefix;
    for (let i = 0; i < segments.length - 1; i++) {
      path += i === 0 ? segments[0] : sep + segments[i];
      let isDir = dirs.get(path);
      if (isDir === undefined) {
        const now = existsNow(path);
        if (now !== undefined) isDir = now.st?.isDirectory() === true;
        else {
          const dirPath = path;
          // Settled, the answer replaces the promise: the walk below, started again, passes it.
          isDir = exists(path).then((st) => {
            const d = st?.isDirectory() === true;
            dirs.set(dirPath, d);
            return d;
          });
        }
        dirs.set(path, isDir);
      }
      if (isDir === false) return null;
      if (isDir !== true) return isDir.then((d) => (d ? lookup(segments, size, dirs) : null));
    }
    if (segments.length === 1) return lookupAt(dirPrefix + segments[0], size, false);
    return lookupAt(`${path}${sep}${segments[segments.length - 1]}`, size, true);
  };
  /** {@link lookup} of `target` once its directories were checked (`nested`: under a subdirectory). */
  const lookupAt = (target: string, size: number, nested: boolean): FileCheckAnswer | Promise<FileCheckAnswer> => {
    // No CRC cached for it (a file this process did not store, nor checked yet): opened at once, its
    // fstat in place of an lstat (a file to read: 4 calls, not 5), the descriptor checked to be in the directory.
    if (!crcs.has(target)) {
      const opened = openNow(target, size);
      if (opened !== undefined) return opened;
    }
    const now = existsNow(target);
    return now !== undefined
      ? stored(target, now.st, size, nested)
      : exists(target).then((st) => stored(target, st, size, nested));
  };
  /**
   * The answer for `target`, a name under a subdirectory, asked about at `size`, from the file itself:
   * opened (never through a link, non-blocking), its descriptor checked to be under the directory's
   * real path ({@link openedUnder}), then fstat'd; null when it is not there, cannot be opened or is
   * not a regular file; a CRC32C only when cached for the identity the descriptor has. An lstat by the
   * path goes through the directories on the way as they are at that moment: one swapped for a link
   * after its check answered the size of the file outside (and that one existed there), and so did
   * one swapped back before an open that only confirmed the lstat's answer.
   */
  const confirmed = (target: string, size: number): FileCheckAnswer | Promise<FileCheckAnswer> => {
    const answer = (fd: number, st: Stats): FileCheckAnswer => {
      if (!st.isFile() || !openedUnder(fd, realDir())) return null;
      if (st.size !== size) return { size: st.size };
      const cached = crcs.get(target, st);
      // Not known for this identity (the file changed since the lstat): the sender sends, the transfer decides.
      return cached === undefined ? { size: st.size } : { size: st.size, crc32c: crc32cHex(cached) };
    };
    const t0 = performance.now();
    if (!lookupGate.mainThread(t0)) {
      return open(target, QUICK_OPEN).then(
        (fh) =>
          fh
            .stat()
            .then((st) => answer(fh.fd, st))
            .finally(() => fh.close()),
        () => null,
      );
    }
    let a: FileCheckAnswer = null;
    let fd = -1;
    try {
      fd = openSync(target, QUICK_OPEN);
      a = answer(fd, fstatSync(fd));
    } catch {
      // Not openable: not known to be in the directory.
    } finally {
      if (fd >= 0) closeSync(fd);
    }
    const t1 = performance.now();
    lookupGate.record(t1 - t0, t1);
    return a;
  };
  /**
   * The answer for what is at `target` (its lstat `st`), asked about at `size`: a promise only for a CRC
   * to read or a file to open. Under a subdirectory (`nested`) an answer with no CRC32C is the file's
   * own ({@link confirmed}), never the lstat's; a CRC32C is only answered for the identity of a file
   * found in the directory (cached so, or read through a descriptor checked to be there).
   */
  const stored = (
    target: string,
    st: Stats | undefined,
    size: number,
    nested: boolean,
  ): FileCheckAnswer | Promise<FileCheckAnswer> => {
    if (st === undefined || !st.isFile()) return null;
    // Without descriptor paths the checks of the directories on the way are all (see openedUnder).
    const confirm = nested && fdPaths();
    if (st.size !== size) return confirm ? confirmed(target, size) : { size: st.size };
    const cached = crcs.get(target, st);
    if (cached !== undefined) return { size: st.size, crc32c: crc32cHex(cached) };
    const now = st.size <= SYNC_CRC_MAX ? crcNow(target, st) : undefined;
    if (now !== undefined) return { size: st.size, crc32c: crc32cHex(now) };
    // Replaced while it was read: its size, no CRC32C (the sender sends; the transfer's own checks decide).
    return storedCrc(target, st).then((crc) =>
      crc !== undefined
        ? { size: st.size, crc32c: crc32cHex(crc) }
        : confirm
          ? confirmed(target, size)
          : { size: st.size },
    );
  };
  /**
   * The directory's real path (once): a stored file read for the quick check must be under it, the
   * quick check looking it up through directories checked with lstat, not held (see {@link openedUnder}).
   */
  let realDirPath: string | undefined;
  const realDir = (): string => {
    if (realDirPath === undefined) {
      try {
        realDirPath = realpathSync(dir);
      } catch {
        return resolve(dir);
      }
    }
    return realDirPath;
  };
  /**
   * The CRC32C of the `size` bytes (at most SYNC_CRC_MAX) of the file open as `fd`, read synchronously
   * into one shared buffer; undefined when it ended short (it shrank meanwhile).
   */
  const crcOfFd = (fd: number, size: number): number | undefined => {
    syncCrcBuf ??= Buffer.allocUnsafe(SYNC_CRC_MAX);
    let n = 0;
    while (n < size) {
      const r = readSync(fd, syncCrcBuf, n, size - n, n);
      if (r === 0) break;
      n += r;
    }
    return n === size ? nodeCrc32c().compute(syncCrcBuf.subarray(0, n), 0) : undefined;
  };
  /**
   * A small stored file's CRC32C read synchronously when {@link lookupGate} allows (undefined: read it on the
   * pool), cached under the identity `st` seen before the read (a change meanwhile makes another identity).
   */
  const crcNow = (target: string, st: Stats): number | undefined => {
    const t0 = performance.now();
    if (!lookupGate.mainThread(t0)) return undefined;
    let crc: number | undefined;
    let fd = -1;
    try {
      // Non-blocking, then checked to be the regular file that was looked up: a FIFO swapped in
      // between the lstat and the open must not block the event loop.
      fd = openSync(target, QUICK_OPEN);
      const opened = fstatSync(fd);
      if (!opened.isFile() || opened.ino !== st.ino || opened.dev !== st.dev || opened.size !== st.size)
        return undefined;
      if (!openedUnder(fd, realDir())) return undefined;
      crc = crcOfFd(fd, st.size);
    } catch {
      // Gone, or not readable now: the pool's read says what it is.
    } finally {
      if (fd >= 0) closeSync(fd);
    }
    const t1 = performance.now();
    lookupGate.record(t1 - t0, t1);
    if (crc !== undefined) cacheCrc(target, st, crc);
    return crc;
  };
  /**
   * The answer for `target` asked about at `size`, from a synchronous open (never through a link,
   * non-blocking: a FIFO must not block the event loop) and its fstat, with the CRC32C of a small
   * file read through the same descriptor (and cached): what {@link existsNow} and {@link stored}
   * answer, without the lstat. Undefined (nothing learned: the lstat way) when {@link lookupGate}
   * sends lookups to the pool, the open fails otherwise than for a missing name or a link, or the
   * file is a regular file too large to read here. Nothing but a regular file is read.
   */
  const openNow = (target: string, size: number): FileCheckAnswer | undefined => {
    const t0 = performance.now();
    if (!lookupGate.mainThread(t0)) return undefined;
    let answer: FileCheckAnswer | undefined;
    let fd = -1;
    try {
      fd = openSync(target, QUICK_OPEN);
      const st = fstatSync(fd);
      // Opened through a directory on the way swapped for a link: nothing of it is in the directory
      // (the lstat way answered the outside file's size).
      if (!openedUnder(fd, realDir())) answer = null;
      else if (!st.isFile()) answer = null;
      else if (st.size !== size) answer = { size: st.size };
      else if (st.size <= SYNC_CRC_MAX) {
        const crc = crcOfFd(fd, st.size);
        // Read short (it shrank meanwhile): the lstat way says what is there now.
        if (crc !== undefined) {
          cacheCrc(target, st, crc);
          answer = { size: st.size, crc32c: crc32cHex(crc) };
        }
      }
    } catch (err) {
      // Nothing there (ENOENT, ENOTDIR) or a symbolic link (ELOOP): nothing stored under the name, as
      // an lstat finds. Anything else (EACCES...): the lstat way.
      const code = errno(err);
      if (fd < 0 && (code === "ENOENT" || code === "ENOTDIR" || code === "ELOOP")) answer = null;
    } finally {
      if (fd >= 0) closeSync(fd);
    }
    const t1 = performance.now();
    lookupGate.record(t1 - t0, t1);
    return answer;
  };
  /** Reads of stored files for their CRC32C in progress, by path (see {@link CRC_READS_AT_ONCE}). */
  const crcReads = new Map<string, { st: Stats; crc: Promise<number | undefined> }>();
  const crcLimiter = new Limiter(CRC_READS_AT_ONCE);
  /** The CRC32C of the file at `target` (`st`): a read in progress of the same file, or one more read in turn. */
  const storedCrc = (target: string, st: Stats): Promise<number | undefined> => {
    const reading = crcReads.get(target);
    if (reading !== undefined && sameFile(reading.st, st)) return reading.crc;
    const large = crcDisk !== undefined && st.size >= CRC_PERSIST_MIN;
    const crc = (large ? crcDisk.get(st) : Promise.resolve(undefined)).then((recorded) =>
      recorded !== undefined
        ? recorded
        : crcLimiter.run(async () => {
            // A read that finished while this one waited may have cached it.
            const c = crcs.get(target, st);
            if (c !== undefined) return c;
            const { crc: v, same } = await fileCrc32cOf(target, st, realDir());
            // Not the file looked up (one renamed over the name since): its CRC is not `st`'s to record.
            if (!same) return undefined;
            // Recorded for the identity seen before the read (a change during it makes another identity).
            if (large) void crcDisk?.put(target.slice(dirPrefix.length).split(sep).join("/"), st, v, false);
            return v;
          }),
    );
    const entry = { st, crc };
    crcReads.set(target, entry);
    const done = () => {
      if (crcReads.get(target) === entry) crcReads.delete(target);
    };
    crc.then((v) => {
      if (v !== undefined) cacheCrc(target, st, v);
      done();
    }, done);
    return crc;
  };

  /** The quick check; an fs failure reaches the peer as its code only (see fsFailure). */
  const checkHandler: Handler = (req) =>
    checkFiles(req).catch((err: unknown) => {
      throw fsFailure(err, "the receiver could not check the files");
    });
  const checkFiles = async (req: IncomingRequest) => {
    let body: { files?: unknown };
    try {
      body = JSON.parse(new TextDecoder().decode(req.data)) as { files?: unknown };
    } catch {
      throw PointSubError.fromPeer("ERR_INVALID_ARGUMENT", "a quick check is a JSON object {files: [...]}");
    }
    const files = body?.files;
    if (!Array.isArray(files) || files.length > FILE_CHECK_MAX) {
      throw PointSubError.fromPeer(
        "ERR_INVALID_ARGUMENT",
        `files must be an array of at most ${FILE_CHECK_MAX} entries`,
      );
    }
    /** Each relative path's segments, checked once (the lookup takes them as they are). */
    const paths: (string[] | undefined)[] = new Array(files.length);
    const queries: FileCheckQuery[] = files.map((f: unknown, i: number) => {
      const q = (typeof f === "object" && f !== null ? f : {}) as Record<string, unknown>;
      if (!isUint(q.size)) throw PointSubError.fromPeer("ERR_INVALID_ARGUMENT", "each entry needs a size");
      if (q.name !== undefined && typeof q.name !== "string") {
        throw PointSubError.fromPeer("ERR_INVALID_ARGUMENT", "name must be a string");
      }
      if (q.name !== undefined && !q.name.isWellFormed()) throw notText("name");
      if (q.path !== undefined) paths[i] = safeRelativePath(q.path);
      return { name: q.name as string | undefined, path: q.path as string | undefined, size: q.size };
    });
    await ready;
    const answers: FileCheckAnswer[] = new Array(queries.length).fill(null);
    // A few files read at once (their CRCs), in order of the list.
    let next = 0;
    const dirs = new Map<string, Promise<boolean> | boolean>();
    let turn = performance.now();
    const worker = async () => {
      for (let i = next++; i < queries.length; i = next++) {
        // Synchronous lstats: other sessions are served between turns of at most ~2 ms.
        if (performance.now() - turn > 2) {
          await new Promise((r) => setImmediate(r));
          turn = performance.now();
        }
        const q = queries[i];
        const answer = lookup(paths[i] ?? [safeFileName(q.name)], q.size, dirs);
        answers[i] = answer instanceof Promise ? await answer : answer;
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, queries.length) }, worker));
    return JSON.stringify({ files: answers });
  };

  /**
   * Creates a transfer's partial file: exclusively and never through a link
   * (O_CREAT | O_EXCL | O_NOFOLLOW, which is what makes it safe: no lstat
   * before). Whatever is in the way (a stale partial, a link someone
   * planted) is removed, once; a directory that vanished is made again.
   */
  const createPartial = async (e: Entry): Promise<FileHandle> => {
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
    let cleared = false;
    let made = false;
    for (;;) {
      try {
        return await open(partialPath(e.key), flags, 0o666);
      } catch (err) {
        const code = errno(err);
        if (code === "ENOENT" && !made) {
          made = true;
          await mkdir(dir, { recursive: true });
        } else if (code === "EEXIST" && !cleared) {
          cleared = true;
          await unlink(sidecarPath(e.key)).catch(() => {});
          await unlink(partialPath(e.key)).catch(() => {});
        } else if (code === "EEXIST") {
          throw PointSubError.fromPeer("ERR_RESUME", "a partial file is in the way; retry");
        } else {
          throw err;
        }
      }
    }
  };

  const handler: StreamHandler = async (stream, ctx) => {
    // First, before any await: every later frame then lands in a buffer of
    // its own (never as views of socket chunks), so after each batch
    // `stream.contentCrc` is exactly the CRC of the bytes read so far.
    stream.release([]);
    const { tid, name, segments } = check(stream);
    await ready;
    const route = stream.route;
    const principal = String(ctx.session?.principal ?? "");
    const key = await partialKey(principal, route, tid);
    const e = entryFor(key);
    if (e.active) throw PointSubError.fromPeer("ERR_RESUME", "this transfer is already being received");
    e.active = true;
    e.session = ctx.session;
    let letGo!: () => void;
    e.released = new Promise<void>((r) => {
      letGo = r;
    });
    const lock = lockPath(key);
    let locked = false;
    /** Takes the transfer's lock once (the first call's promise is every later call's). */
    let locking: Promise<void> | undefined;
    const lockNow = (): Promise<void> =>
      (locking ??= takeLock(lock).then((ok) => {
        locked = ok;
        if (!ok) throw PointSubError.fromPeer("ERR_RESUME", "this transfer is being received by another process");
      }));
    const partial = partialPath(key);
    const finalPath = segments === undefined ? join(dir, name) : join(dir, ...segments);
    const offset = stream.offset;
    let fh: FileHandle | undefined;
    /** The partial file was opened for writing by this transfer. */
    let touched = false;
    try {
      // Across processes sharing the directory: its state read from the disk, and one receiver per
      // transfer — locked now when something is stored for it, else when its partial is created.
      await refresh(e, true);
      if (offset > 0 || e.exists) {
        await lockNow();
        await refresh(e, true);
      }
      const tag = await transferTag(tid);
      setTag(e, tag, route);
      const dest = await destKey(principal, route, name);
      e.dest = dest;
      // The directory was made when the sink started (and is made again
      // should it vanish, when the partial is created): no mkdir per transfer.
      // The directories on the way are checked now, not once the whole content arrived (a file or a
      // symbolic link in the way), and the name is looked up only through real directories: through a
      // link an existing name answered ERR_EXISTS at once and a missing one only after the upload,
      // which told the peer what exists outside the directory.
      const through = segments === undefined || segments.length === 1 || (await dirsOnTheWay(segments));
      // The name looked up through its directories held (a directory swapped for a link after the
      // check above answered for a name outside: "already exists" told the peer it was there); one
      // that cannot be held now (swapped) is refused when the file is named.
      const inDir =
        through && segments !== undefined && segments.length > 1
          ? await holdDirBeneath(dir, segments.slice(0, -1)).catch(() => undefined)
          : undefined;
      if (through && (inDir !== undefined || segments === undefined || segments.length === 1)) {
        try {
          // With overwrite a directory under the name is refused now too (found once the content was all
          // stored, it was refused then, its whole-size partial kept).
          const old = await exists(inDir === undefined ? finalPath : inDir.at(segments?.at(-1) as string));
          if (old !== undefined && !overwrite) throw PointSubError.fromPeer("ERR_EXISTS", `${name} already exists`);
          if (old?.isDirectory()) throw PointSubError.fromPeer("ERR_EXISTS", "a directory has that name");
        } finally {
          inDir?.close();
        }
      }
      if (maxBytes > 0) {
        const need = Math.max(stream.total ?? 0, offset, e.size);
        if (held - weight(e) + need > maxBytes) {
          throw PointSubError.fromPeer(
            "ERR_QUOTA",
            `storing ${need} bytes would exceed the sink's ${maxBytes}-byte quota`,
          );
        }
      }
      setSize(e, e.size, stream.total ?? 0);
      e.owner = principal;
      if (!e.exists) await makeRoom(e, principal);
      await e.computing?.catch(() => {});
      if (offset > 0) {
        const have = e.exists ? await pointOf(e) : undefined;
        if (have === undefined || have.offset === 0) {
          throw PointSubError.fromPeer("ERR_RESUME", "nothing is stored for this transfer; start from 0");
        }
        if (have.offset !== offset || have.crc !== stream.prefixCrc) {
          throw PointSubError.fromPeer(
            "ERR_RESUME",
            `the stored prefix does not match the sender's (offset ${offset}); query the resume point again`,
          );
        }
        fh = await openPartial(key, constants.O_RDWR);
        const size = fh === undefined ? -1 : (await fh.stat()).size;
        if (fh === undefined || size < offset) {
          // Not a regular file, or shorter than its recorded state: refused, and removed so a restart from 0 works.
          await fh?.close().catch(() => {});
          fh = undefined;
          await discard(e);
          throw PointSubError.fromPeer("ERR_RESUME", "the stored partial file is unusable; start from 0");
        }
        touched = true;
        if (size > offset) await fh.truncate(offset);
      } else if (e.exists) {
        // A fresh start replaces what was stored for this transfer.
        const reserved = e.reserved;
        await discard(e);
        setTag(e, tag, route);
        e.dest = dest;
        setSize(e, 0, reserved);
      }
      setSize(e, offset);
      e.base = undefined;
      e.touched = Date.now();
      options.onStream?.(stream, ctx);
      // Only once the application took it: a transfer onStream refuses (for `pointsub get`, a file it did not
      // ask for, pushed by the server) replaces nothing.
      if (offset === 0 && options.replaceStalePartials === true) await dropSuperseded(e);

      /**
       * Creates the partial of a fresh transfer when its first bytes arrive
       * (or at its end when it has none), so a transfer that fails before
       * sending data costs one lstat and leaves nothing behind. Its sidecar
       * is written at checkpoints and when it stops; a crash before then
       * leaves a partial without one, read once after the restart. Only a
       * principal's transfer records where it starts at once: the sidecar
       * holds the tag that finds the partial by transfer id alone (the key
       * finds the anonymous principal's).
       */
      const begin = async (): Promise<FileHandle> => {
        if (fh !== undefined) return fh;
        await lockNow();
        fh = await createPartial(e);
        touched = true;
        e.exists = true;
        e.point = { offset: 0, crc: 0 };
        if (principal !== "") await writeSidecar(e, { offset: 0, crc: 0 });
        return fh;
      };

      let size = offset;
      let sinceCheckpoint = 0;
      let lastCheckpoint = performance.now();
      let checkpoint: Promise<void> | undefined;
      // Everything available goes to one writev; one write in flight while
      // the next batch arrives. Writes stay in order: the partial file never
      // has holes.
      let writing: Promise<unknown> = Promise.resolve();
      let out: FileHandle | undefined;
      /** The partial's identity while its descriptor is parked (closed while the transfer is idle). */
      let parked: { dev: number; ino: number } | undefined;
      let parking: Promise<void> | undefined;
      const idle: OpenPartial = {
        last: performance.now(),
        park: () =>
          (parking ??= (async () => {
            const f = out;
            if (f === undefined || inFlight) return;
            await checkpoint;
            // What was written stays durable for the resume point (a sidecar may claim it).
            const st = await f.stat();
            await f.datasync();
            // Bytes that came meanwhile are being written through this descriptor: kept open.
            if (out !== f || inFlight || performance.now() - idle.last < PARK_IDLE_MS) return;
            parked = { dev: st.dev, ino: st.ino };
            out = undefined;
            fh = undefined;
            openPartials.delete(idle);
            await f.close();
          })().finally(() => {
            parking = undefined;
          })),
      };
      /** The parked partial opened again (the same file, else ERR_RESUME). */
      const unpark = async (): Promise<FileHandle> => {
        await parking;
        if (parked === undefined) return out ?? (await begin());
        const f = await openPartial(key, constants.O_RDWR);
        const st = await f?.stat();
        if (f === undefined || st === undefined || st.dev !== parked.dev || st.ino !== parked.ino) {
          await f?.close().catch(() => {});
          throw PointSubError.fromPeer("ERR_RESUME", "the partial file was replaced while the transfer was idle");
        }
        parked = undefined;
        fh = f;
        watchIdle(idle);
        return f;
      };
      /** A write is in flight (or failed: the transfer ends then, never parked). */
      let inFlight = false;
      try {
        for (let batch = await stream.readBatch(BATCH); batch !== null; batch = await stream.readBatch(BATCH)) {
          let n = 0;
          for (const b of batch) n += b.length;
          if (maxFileSize > 0 && size + n > maxFileSize) {
            throw PointSubError.fromPeer("ERR_QUOTA", `the file is over the ${maxFileSize}-byte limit`);
          }
          if (maxBytes > 0 && held - weight(e) + Math.max(size + n, e.reserved) > maxBytes) {
            throw PointSubError.fromPeer("ERR_QUOTA", `the sink's ${maxBytes}-byte quota is used up`);
          }
          const point = { offset: size + n, crc: stream.contentCrc };
          await writing;
          idle.last = performance.now();
          if (out === undefined) {
            out = parked !== undefined || parking !== undefined ? await unpark() : await begin();
            if (!openPartials.has(idle)) watchIdle(idle);
          }
          const at = size;
          size += n;
          setSize(e, size);
          const chunks = batch;
          inFlight = true;
          writing = out.writev(chunks, at).then(({ bytesWritten }) => {
            if (bytesWritten !== n) throw new PointSubError("ERR_QUOTA", "the disk is full");
            // Written: the stream may receive later frames into these buffers.
            stream.release(chunks);
            e.point = point;
            idle.last = performance.now();
            inFlight = false;
          });
          sinceCheckpoint += n;
          if (
            checkpoint === undefined &&
            sinceCheckpoint >= CHECKPOINT_BYTES &&
            performance.now() - lastCheckpoint >= CHECKPOINT_MS
          ) {
            // In the background, while later batches are written: once the
            // bytes up to `point` are on disk, the sidecar may claim them.
            await writing;
            sinceCheckpoint = 0;
            lastCheckpoint = performance.now();
            const file = out;
            checkpoint = file
              .datasync()
              .then(() => writeSidecar(e, point))
              .catch(() => {})
              .finally(() => {
                checkpoint = undefined;
              });
          }
        }
      } finally {
        openPartials.delete(idle);
        await writing.catch(() => {});
        // Never let a checkpoint's sidecar land after the final one.
        await checkpoint;
        await parking;
      }
      await writing;
      if (out === undefined && parked !== undefined) out = await unpark();
      openPartials.delete(idle);
      // A transfer without content bytes creates its (empty) file now.
      if (out === undefined && fh === undefined) await lockNow();
      out ??= fh ?? (await createPartial(e));
      fh = out;
      touched = true;
      e.exists = true;
      if (fsync) await out.sync();
      // The inode written, for any CRC remembered: what is named after `place` must be it (another upload with
      // overwrite, or a local writer even without, may have renamed over the name meanwhile — the directory's
      // fsync awaited: remembered under that file's identity, the quick check answered this one's CRC for
      // bytes not on disk).
      const written = await out.stat();
      await out.close();
      fh = undefined;
      e.point = { offset: size, crc: stream.contentCrc };
      const parentDir = segments !== undefined && segments.length > 1 ? await parents(segments) : undefined;
      try {
        const at = parentDir === undefined ? finalPath : parentDir.at(segments?.at(-1) as string);
        await place(partial, finalPath, at);
        const st = lstatSync(at, { throwIfNoEntry: false });
        if (st?.isFile() && st.ino === written.ino && st.dev === written.dev && st.size === size) {
          // Another file may have replaced it meanwhile: then nothing is recorded.
          cacheCrc(finalPath, st, stream.contentCrc);
          if (size >= CRC_PERSIST_MIN) await crcDisk?.put(name, st, stream.contentCrc, fsync);
        }
      } finally {
        parentDir?.close();
      }
      // Most transfers never wrote one (a small file, an anonymous peer): no unlink that fails.
      if (e.sidecar) await unlink(sidecarPath(key)).catch(() => {});
      forget(e);
      const crc32c = crc32cHex(stream.contentCrc);
      tellHook(options.onFile, { name, path: resolve(finalPath), size, crc32c, resumedFrom: offset }, stream, ctx);
      // The peer learns where under this directory, not this machine's paths.
      return JSON.stringify({ name, path: name, size, crc32c, resumedFrom: offset } satisfies FileReceipt);
    } catch (err) {
      const failure = storeError(err);
      if (touched) await stopped(e, fh, errno(failure));
      throw failure;
    } finally {
      await fh?.close().catch(() => {});
      if (locked) {
        // What this process leaves on disk is what it knows (no re-read on its next query). On the thread pool:
        // a synchronous lstat per ended transfer, behind the pool's fdatasyncs on the same journal, showed in the
        // fuzzer's longest turns (the transfer stays active, its key refused, until this is known).
        const st = e.exists ? await exists(partial) : undefined;
        e.ident = st === undefined ? undefined : `${st.ino}:${st.size}:${st.mtimeMs}`;
        // Off the event loop; the transfer stays active (its key refused) until the lock is gone.
        await dropLock(lock);
      }
      e.active = false;
      e.session = undefined;
      e.released = undefined;
      setSize(e, e.size, 0);
      if (!e.exists) forget(e);
      letGo();
    }
  };

  /** A transfer stopped early: remove its partial, or make its resume state durable. */
  const stopped = async (e: Entry, fh: FileHandle | undefined, code: unknown) => {
    const point = e.point;
    if (DISCARD.has(String(code)) || point === undefined || point.offset === 0) {
      await fh?.close().catch(() => {});
      await discard(e);
      return;
    }
    await fh?.datasync().catch(() => {});
    e.touched = Date.now();
    await writeSidecar(e, point);
  };

  return {
    handler,
    resume,
    dir,
    ready,
    sweep: async () => {
      await ready;
      return (await scan(false)) + ((await crcDisk?.sweep()) ?? 0);
    },
    usage: () => {
      let partials = 0;
      for (const e of entries.values()) if (e.exists) partials++;
      return { partials, bytes: held, evicted, rescans };
    },
    close: () => {
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
      if (parkTimer !== undefined) clearInterval(parkTimer);
      parkTimer = undefined;
    },
    check: checkHandler,
    bundle: bundleHandler({
      dir,
      fsync,
      overwrite,
      ready,
      maxFileSize,
      reserve: (bytes) => {
        if (maxBytes > 0 && held + bytes > maxBytes) {
          throw new PointSubError("ERR_QUOTA", `storing ${bytes} bytes would exceed the sink's ${maxBytes}-byte quota`);
        }
        held += bytes;
        let released = false;
        return () => {
          if (!released) held -= bytes;
          released = true;
        };
      },
      target: (h) => {
        if (h.path !== undefined) {
          const segments = fitsDir(safeRelativePath(h.path));
          // Checked as it is (never cleaned): the path is its segments joined by "/".
          return { name: h.path as string, segments };
        }
        if (h.name !== undefined && typeof h.name !== "string") {
          throw new PointSubError("ERR_INVALID_ARGUMENT", "name must be a string");
        }
        if (h.name !== undefined && !h.name.isWellFormed()) throw notText("name");
        const name = safeFileName(h.name);
        return { name, segments: fitsDir([name]) };
      },
      parents,
      place,
      syncDir,
      remember,
      onBundle: options.onBundle,
    }),
  };
}
