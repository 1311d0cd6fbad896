import { constants, type Stats } from "node:fs";
import { lstat, realpath } from "node:fs/promises";
import { join, sep } from "node:path";
import type { CodecName } from "../codec/compression.ts";
import { crc32cHex } from "../codec/crc32c.ts";
import {
  decodeFileGetRequest,
  decodeFileListRequest,
  encodeFileGetAnswer,
  encodeFileListAnswer,
  FILE_LIST_MAX,
  FILE_PATH_MAX,
  type FileGetAnswer,
  type FileGetRequest,
  type FileListEntry,
} from "../codec/file-routes.ts";
import type { Connection } from "../connection/connection.ts";
import type { Handler, IncomingRequest, RequestContext } from "../connection/types.ts";
import { PointSubError } from "../errors/error.ts";
import { type HeldDir, holdChild, holdDirBeneath } from "./beneath.ts";
import { type DirRound, firstNames, KIND_DIR, KIND_FILE } from "./dir-names.ts";
import { CRC_PERSIST_MIN, crcStore, isMetaName, isSinkFileAlias } from "./file-crc-store.ts";
import { checkDirAndOptions, FILE_ROUTE, fileCrc32cOf, safeRelativePath } from "./file-sink.ts";
import { fsFailure } from "./fs-error.ts";
import { tellHook } from "./hook.ts";
import { type FileAccess, type FileTransfer, readFileFrom, sendFileVia } from "./send-file.ts";

export {
  FILE_GET_ROUTE,
  FILE_LIST_MAX,
  FILE_LIST_ROUTE,
  type FileGetAnswer,
  type FileGetRequest,
  type FileHave,
  type FileListAnswer,
  type FileListEntry,
  type FileListRequest,
} from "../codec/file-routes.ts";

/** Options of {@link fileSource}. */
export interface FileSourceOptions {
  /**
   * Downloads one session may have in flight; more are answered
   * `ERR_TOO_MANY_REQUESTS`. Default 8; a whole number of at least 1, else
   * `fileSource` throws `ERR_INVALID_ARGUMENT`.
   */
  maxDownloadsPerSession?: number;
  /**
   * Downloads in flight at once over all sessions; more are answered
   * `ERR_TOO_MANY_REQUESTS`. Each holds up to two file-read buffers (1 MiB
   * each) outside the memory budget, so this bounds them: default 64
   * (128 MiB). A whole number of at least 1, else `ERR_INVALID_ARGUMENT`.
   */
  maxDownloads?: number;
  /**
   * A download must be taken within `downloadGraceMs` plus its size at
   * this rate, counted from its start (a trickle of credit does not extend
   * it), and once past the grace (from the start of this side's stream,
   * after the asker's resume answer and the check of the prefix it holds)
   * must have taken at least this rate × the time since (or all it
   * lacked), else it is stopped with `ERR_SLOW_PEER`:
   * a peer cannot keep downloads (and their buffers) open by reading them
   * slowly (what it took is known from its credit: one credit step, a
   * quarter of its stream window, is allowed for). Default 8192 (8 KiB/s,
   * a 64 kbit/s link); 0: no deadline. A finite number of at least 0,
   * else `ERR_INVALID_ARGUMENT`.
   */
  minDownloadBytesPerSecond?: number;
  /**
   * The grace of {@link minDownloadBytesPerSecond}'s deadline, in ms.
   * Default 30000; a finite number of at least 0, else `ERR_INVALID_ARGUMENT`.
   */
  downloadGraceMs?: number;
  /** Listings one session may have running; more are answered `ERR_TOO_MANY_REQUESTS`. Default 2. */
  maxListingsPerSession?: number;
  /**
   * Listings running at once over all sessions (each reads a directory and
   * holds up to 1000 names); more wait for one to end, in order. Default 8.
   */
  maxListings?: number;
  /** Compression of the file streams (`"auto"`: where a sample shows the file's bytes compress). Default `"off"`. */
  compress?: "auto" | "off" | CodecName;
  /** Key of the transfer ids (see `fileTransferId`). Default: this user's resume key. */
  resumeKey?: Uint8Array | string;
  /**
   * Called when a download starts (after its checks); progress is on the
   * transfer. A throw stops the download: its request fails with the
   * error (`ERR_HANDLER`), which `onGetEnd` gets.
   */
  onGet?: (request: FileGetRequest, transfer: FileTransfer, ctx: RequestContext) => void;
  /**
   * Called when a download ends: the answer, or the error. A throw changes
   * nothing of the download: it is thrown again from a microtask.
   */
  onGetEnd?: (request: FileGetRequest, result: FileGetAnswer | PointSubError, ctx: RequestContext) => void;
  /**
   * Use and keep large files' CRC32C records in `dir/.pointsub/` (as
   * `fileSink` does, default true): a download the asker already holds
   * whole is answered without reading the file. False: such a file is read
   * each time, and nothing is written in `dir`.
   */
  crcRecords?: boolean;
}

/** The request handlers of a served directory. */
export interface FileSource {
  /** The directory served. */
  dir: string;
  /** Register on `FILE_LIST_ROUTE`. */
  list: Handler;
  /** Register on `FILE_GET_ROUTE`. */
  get: Handler;
}

/**
 * The sink's own files (`.<key>.partial`, `.resume`, `.lock`) and metadata directory in the directory's
 * top level, under any name a file system folds to theirs (`isSinkFileAlias`, `isMetaName`): never
 * listed or served.
 */
const sinkName = (name: string) => isSinkFileAlias(name) || isMetaName(name);
/** Deepest tree a listing descends (segments from the served root), as the sink's paths. */
const MAX_DEPTH = 64;
/** The most names one round of a listing keeps of a directory (see `dir-names.ts`). */
const ROUND_MAX = 16 * FILE_LIST_MAX;

/** Whether `rel/name` could be asked for (checked as the sink checks uploads' paths: no control characters, backslash…, not too long). */
function listable(rel: string[], name: string): boolean {
  const path = rel.length === 0 ? name : `${rel.join("/")}/${name}`;
  try {
    if (Buffer.byteLength(path) > FILE_PATH_MAX) return false;
    safeRelativePath(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * How a download looks at and reads its file, `at` (its name through its held directory,
 * {@link holdDirBeneath}): never through a symbolic link (`lstat`, O_NOFOLLOW). The file's real path
 * was checked to be inside the served directory; one swapped for a link since (to a file outside, of
 * the same size and mtime) was followed and sent, and so was a directory on the way swapped for a
 * link (before its directory was held: the file was read by its path).
 */
const servedFiles = (at: string): FileAccess => ({
  stat: () => lstat(at).catch(() => undefined),
  open: (_path, offset, size) => readFileFrom(at, offset, size, SERVED_OPEN),
});

/**
 * Never through a link, and non-blocking: a file swapped for a FIFO after the checks blocked the open (a
 * thread-pool thread) for good, waiting for a writer; opened so, it reads as nothing (the download fails
 * as a file changed while sent). A regular file's reads are the same either way.
 */
const SERVED_OPEN = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);

/** The same file, unchanged: inode, device, size, mtime and ctime. */
const sameFile = (a: Stats, b: Stats) =>
  a.ino === b.ino && a.dev === b.dev && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;

/**
 * `p`, or `signal`'s reason once it aborts (what `p` does then is left to it). A download waiting for a
 * CRC32C read that other downloads share must not keep its slot after its asker gave up.
 */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const gone = () => reject(signal.reason);
    signal.addEventListener("abort", gone, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", gone));
  });
}

/** An answer stops before its JSON grows past about this many bytes (paths may be long). */
const ANSWER_BYTES = 512 * 1024;

const notFound = (path: string) =>
  new PointSubError("ERR_NOT_FOUND", `no such file or directory: ${JSON.stringify(path.slice(0, 200))}`);

const errno = (err: unknown) => (err as { code?: unknown }).code;

/** The listed form of a path: the segments checked by the sink's rules; "" and "." are the root. */
function segmentsOf(path: string | undefined): string[] {
  const p = (path ?? "").replace(/\/+$/, "");
  return p === "" || p === "." ? [] : safeRelativePath(p);
}

/**
 * Default of `minDownloadBytesPerSecond`: 8 KiB/s (a 64 kbit/s link). It was
 * 64 KiB/s (512 kbit/s): a `pointsub get` of 5 MB over a 40 KB/s link was
 * stopped with ERR_SLOW_PEER 6 times and took 772 s instead of 125; a
 * mobile or cross-continent link is often slower than that. A reader below
 * the floor still loses its slot; one that takes nothing, at the grace.
 */
const DEFAULT_MIN_DOWNLOAD_BYTES_PER_SECOND = 8 * 1024;
/** The most of a download's bytes read but not yet credited that its pace allows for: a quarter of the default stream window (1 MiB). */
const CREDIT_STEP_MAX = 1024 * 1024;

/**
 * Serves the files under `dir` to peers that ask (`pointsub get`, `ls`):
 * a listing route and a download route (docs/PROTOCOL.md §3.12.2–3.12.3).
 *
 * * names are checked with the sink's rules (`safeRelativePath`: no `..`,
 *   no absolute path, no backslash or control character, at most 4096
 *   bytes and 64 segments); every segment is looked at without following
 *   symbolic links, and a symbolic link anywhere on the way, or anything
 *   that is not a regular file or directory, is `ERR_NOT_FOUND`, as is a
 *   missing name; the file's real path is checked to be inside `dir`
 *   before it is opened, and it is looked at and opened without following
 *   a symbolic link;
 * * the sink's own files (`.<key>.partial`, `.<key>.resume`, `.<key>.lock`:
 *   unfinished uploads) and its metadata directory (`.pointsub`) are never
 *   listed nor served, nor are symbolic links;
 * * a large file's CRC32C (for a download the asker already holds whole) is
 *   read from its record in `.pointsub` when that matches the file, as the
 *   sink's quick check does, else computed (one read shared by the
 *   downloads of that unchanged file meanwhile) and recorded;
 * * a listing answers at most 1000 entries (and about 512 KiB) with a
 *   cursor to continue; it streams one directory at a time, keeping at
 *   most 1000 of its names whatever it holds; at most
 *   `maxListingsPerSession` per session, and `maxListings` in all run at
 *   once (the others wait their turn);
 * * a download streams the file back to the asker's file route
 *   (`/pointsub/file/1.0.0`, which the asker serves on its connection, e.g.
 *   with a `fileSink`) with `sendFile`: resumable from what the asker's
 *   sink holds, checked end to end with CRC32C; at most
 *   `maxDownloadsPerSession` per session and `maxDownloads` in all at
 *   once, each taken within `downloadGraceMs` plus its size at
 *   `minDownloadBytesPerSecond` (else `ERR_SLOW_PEER`).
 *
 * ```ts
 * const source = fileSource("/srv/files");
 * server.handle(FILE_LIST_ROUTE, source.list);
 * server.handle(FILE_GET_ROUTE, source.get);
 * ```
 */
export function fileSource(dir: string, options: FileSourceOptions = {}): FileSource {
  checkDirAndOptions("fileSource", dir, options, ["onGet", "onGetEnd"]);
  const maxPerSession = options.maxDownloadsPerSession ?? 8;
  const maxDownloads = options.maxDownloads ?? 64;
  const minRate = options.minDownloadBytesPerSecond ?? DEFAULT_MIN_DOWNLOAD_BYTES_PER_SECOND;
  const graceMs = options.downloadGraceMs ?? 30_000;
  // Checked as the listings' bounds are: a NaN grace stopped every download at once (ERR_SLOW_PEER
  // "within NaN ms"), a NaN or negative rate or a NaN bound turned its limit off, a bound of 0 or
  // less refused every download.
  if (
    !Number.isSafeInteger(maxDownloads) ||
    maxDownloads < 1 ||
    !Number.isSafeInteger(maxPerSession) ||
    maxPerSession < 1
  ) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      "maxDownloads and maxDownloadsPerSession are whole numbers of at least 1",
    );
  }
  if (!(Number.isFinite(minRate) && minRate >= 0) || !(Number.isFinite(graceMs) && graceMs >= 0)) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      "minDownloadBytesPerSecond and downloadGraceMs are finite numbers of at least 0",
    );
  }
  const inFlight = new WeakMap<Connection, number>();
  /** Downloads in flight over all sessions. */
  let downloads = 0;
  const maxListingsPerSession = options.maxListingsPerSession ?? 2;
  const maxListings = options.maxListings ?? 8;
  if (
    !Number.isSafeInteger(maxListings) ||
    maxListings < 1 ||
    !Number.isSafeInteger(maxListingsPerSession) ||
    maxListingsPerSession < 1
  ) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      "maxListings and maxListingsPerSession are whole numbers of at least 1",
    );
  }
  /** Listings running (or waiting for a slot) per session, and running over all sessions. */
  const listingsOf = new WeakMap<Connection, number>();
  let listings = 0;
  /** Listings waiting for one of the {@link maxListings} slots, in order. */
  const listWaiters: (() => void)[] = [];
  let root: Promise<string> | undefined;
  const crcDisk = options.crcRecords === false ? undefined : crcStore(dir);
  const realRoot = () => {
    root ??= realpath(dir);
    return root;
  };

  /** Whether `abs`, symbolic links resolved, is the served directory or under it. */
  const underRoot = async (abs: string): Promise<boolean> => {
    const real = await realpath(abs).catch(() => undefined);
    const top = await realRoot();
    return real !== undefined && (real === top || real.startsWith(top.endsWith(sep) ? top : top + sep));
  };

  /** The path's stats, each segment checked without following links. */
  const resolveInside = async (segments: string[], shown: string): Promise<{ abs: string; st: Stats }> => {
    let abs = dir;
    let st = await lstat(dir);
    for (const [i, seg] of segments.entries()) {
      if (i === 0 && sinkName(seg)) throw notFound(shown);
      abs = join(abs, seg);
      try {
        st = await lstat(abs);
      } catch (err) {
        if (errno(err) === "ENOENT" || errno(err) === "ENOTDIR") throw notFound(shown);
        throw err;
      }
      const last = i === segments.length - 1;
      if (st.isSymbolicLink() || !(st.isDirectory() || (last && st.isFile()))) throw notFound(shown);
    }
    return { abs, st };
  };

  /**
   * CRC32C reads of served files in progress (downloads whose `have` has the file's size), by device
   * and inode: concurrent downloads of one unchanged file (same size, mtime, ctime) share one read
   * and one record. Each is awaited by a download holding one of the {@link maxDownloads} slots
   * (never given up before it settles), so there are at most that many; removed when done. Before,
   * each download read the whole file: up to 64 reads of one large file at once before its record
   * was saved.
   */
  const crcReads = new Map<string, { st: Stats; crc: Promise<number | undefined> }>();
  /**
   * A large file's CRC32C from its record (the sink's, or one made here), else read (and recorded);
   * undefined when the file read is no longer the one looked up (`st`: renamed over meanwhile): then
   * nothing is recorded (its CRC under `st`'s inode, still reachable under a hard link, would answer
   * for other content), and the asker's `have` matches nothing.
   */
  const crcOf = (at: string, st: Stats, segments: string[]): Promise<number | undefined> => {
    const key = `${st.dev}:${st.ino}`;
    const reading = crcReads.get(key);
    if (reading !== undefined && sameFile(reading.st, st)) return reading.crc;
    const crc = (async () => {
      const recorded = await crcDisk?.get(st);
      if (recorded !== undefined) return recorded;
      const { crc: n, same } = await fileCrc32cOf(at, st);
      if (!same) return undefined;
      if (st.size >= CRC_PERSIST_MIN) await crcDisk?.put(segments.join("/"), st, n, false);
      return n;
    })();
    const entry = { st, crc };
    crcReads.set(key, entry);
    const done = () => {
      if (crcReads.get(key) === entry) crcReads.delete(key);
    };
    crc.then(done, done);
    return crc;
  };

  const entryOf = (path: string, st: Stats): FileListEntry => ({
    path,
    type: st.isDirectory() ? "dir" : "file",
    size: st.isDirectory() ? 0 : st.size,
    mtime: Math.max(0, Math.floor(st.mtimeMs)),
  });

  /** Runs a listing in one of the {@link maxListings} slots (waiting for one in order), at most {@link maxListingsPerSession} per session. */
  const list: Handler = async (req, ctx) => {
    const session = ctx.session;
    const n = listingsOf.get(session) ?? 0;
    if (n >= maxListingsPerSession) {
      throw new PointSubError("ERR_TOO_MANY_REQUESTS", `at most ${maxListingsPerSession} listings at once per session`);
    }
    listingsOf.set(session, n + 1);
    try {
      if (listings >= maxListings) {
        const signal = ctx.signal;
        await new Promise<void>((resolve, reject) => {
          const go = () => {
            signal.removeEventListener("abort", gone);
            resolve();
          };
          const gone = () => {
            const i = listWaiters.indexOf(go);
            if (i >= 0) listWaiters.splice(i, 1);
            reject(signal.reason);
          };
          if (signal.aborted) return reject(signal.reason);
          signal.addEventListener("abort", gone, { once: true });
          listWaiters.push(go);
        });
      } else listings++;
      try {
        return await listOne(req.data);
      } catch (err) {
        throw fsFailure(err, "the server could not list it");
      } finally {
        // The slot passes to the next waiter (still counted), or is freed.
        const next = listWaiters.shift();
        if (next !== undefined) next();
        else listings--;
      }
    } finally {
      const left = (listingsOf.get(session) ?? 1) - 1;
      if (left > 0) listingsOf.set(session, left);
      else listingsOf.delete(session);
    }
  };

  const listOne = async (data: Uint8Array) => {
    const r = decodeFileListRequest(data);
    const base = segmentsOf(r.path);
    const shown = base.join("/");
    const { abs, st } = await resolveInside(base, shown);
    if (st.isFile()) {
      // Looked at again through its directories held (opened one through the other, never through a
      // link): one swapped for a link between the lstats above listed the size and time of the file
      // outside the directory that the link led to.
      const parent = await holdDirBeneath(dir, base.slice(0, -1)).catch((err: unknown) => {
        if (["ELOOP", "ENOTDIR", "ENOENT"].includes(String(errno(err)))) throw notFound(shown);
        throw err;
      });
      let held: Stats | undefined;
      try {
        held = base.length > 1 ? await lstat(parent.at(base[base.length - 1])).catch(() => undefined) : st;
      } finally {
        parent.close();
      }
      if (held === undefined || !held.isFile()) throw notFound(shown);
      return encodeFileListAnswer({ type: "file", entries: [entryOf(shown, held)] });
    }
    const limit = Math.min(r.limit ?? FILE_LIST_MAX, FILE_LIST_MAX);
    let after: string[] | undefined;
    if (r.cursor !== undefined) {
      const c = segmentsOf(r.cursor);
      if (c.length <= base.length || base.some((s, i) => c[i] !== s)) {
        throw new PointSubError("ERR_INVALID_ARGUMENT", "the cursor is not one of this listing's");
      }
      after = c.slice(base.length);
    }
    const entries: FileListEntry[] = [];
    let bytes = 64;
    let cursor: string | undefined;
    // Depth-first in name order (code units); `cur` is what is left of the cursor at this level.
    const walk = async (held: HeldDir, absDir: string, rel: string[], cur: string[] | undefined): Promise<boolean> => {
      // Where this level starts: after the cursor's name, or at it when the cursor goes deeper.
      let from = cur?.[0];
      let inclusive = cur !== undefined && cur.length > 1 && r.recursive === true;
      // Names a listing would skip take no place in a round; a round that listed nothing (empty
      // directories, in a recursive listing) makes the next one larger: few reads of the directory.
      const accept = (name: string, kind: number) =>
        (kind === KIND_FILE || kind === KIND_DIR) && !(rel.length === 0 && sinkName(name)) && listable(rel, name);
      for (let k = FILE_LIST_MAX; ; k = Math.min(k * 2, ROUND_MAX)) {
        let round: DirRound;
        try {
          round = await firstNames(held.at("."), from, inclusive, k, accept);
        } catch (err) {
          // A directory removed or made unreadable while listed: its entries are left out.
          if (rel.length > base.length) return false;
          throw err;
        }
        // A directory on the way swapped for a symbolic link after it was checked (the read follows
        // it): what was read is not under the served directory, so none of it is listed (as a
        // download checks its file's real path). Before, such a listing named the files, sizes and
        // times of the directory the link led to.
        if (!(await underRoot(absDir))) {
          if (rel.length > base.length) return false;
          throw notFound(shown);
        }
        for (let i = 0; i < round.names.length; i++) {
          const name = round.names[i];
          const kind = round.kinds[i];
          const sub = inclusive && name === from ? (cur as string[]).slice(1) : undefined;
          const p = [...rel, name];
          const path = p.join("/");
          const child = join(absDir, name);
          if (kind === KIND_DIR && r.recursive) {
            if (p.length >= MAX_DEPTH) continue;
            // Opened through its parent, never through a link (one swapped in since it was read: skipped).
            const subDir = await holdChild(held, name, child).catch(() => undefined);
            if (subDir === undefined) continue;
            try {
              if (await walk(subDir, child, p, sub)) return true;
            } finally {
              subDir.close();
            }
            continue;
          }
          let cst: Stats;
          try {
            cst = await lstat(held.at(name));
          } catch {
            continue;
          }
          if (cst.isSymbolicLink()) continue;
          entries.push(entryOf(path, cst));
          bytes += Buffer.byteLength(path) + 64;
          if (entries.length >= limit || bytes >= ANSWER_BYTES) {
            cursor = path;
            return true;
          }
        }
        if (!round.more) return false;
        // The next names of this level (entries of empty or unlisted kinds left room on the page).
        from = round.names[round.names.length - 1];
        inclusive = false;
      }
    };
    // Read through held directories, each opened through the one before without following links: a
    // directory swapped for a link after the checks, and back before the real-path check below, was
    // read through the link (the names, sizes and times of a directory outside were listed).
    const top = await holdDirBeneath(dir, base).catch((err: unknown) => {
      if (["ELOOP", "ENOTDIR", "ENOENT"].includes(String(errno(err)))) throw notFound(shown);
      throw err;
    });
    try {
      await walk(top, abs, base, after);
    } finally {
      top.close();
    }
    return encodeFileListAnswer({ type: "dir", entries, ...(cursor === undefined ? {} : { cursor }) });
  };

  /** A download; an fs failure reaches the asker as its code only (see fsFailure). */
  const get: Handler = (req, ctx) =>
    getOne(req, ctx).catch((err: unknown) => {
      throw fsFailure(err, "the server could not read the file");
    });

  const getOne = async (req: IncomingRequest, ctx: RequestContext): Promise<Uint8Array> => {
    const r = decodeFileGetRequest(req.data);
    safeRelativePath(r.to);
    const segments = segmentsOf(r.path);
    const { abs, st } = await resolveInside(segments, r.path);
    if (!st.isFile()) throw new PointSubError("ERR_INVALID_ARGUMENT", `${r.path} is a directory`);
    // A directory on the way swapped for a link after the checks above: the real path says so.
    const real = await realpath(abs).catch(() => undefined);
    const top = await realRoot();
    if (real === undefined || !real.startsWith(top.endsWith(sep) ? top : top + sep)) throw notFound(r.path);
    const session = ctx.session;
    const n = inFlight.get(session) ?? 0;
    if (n >= maxPerSession) {
      throw new PointSubError("ERR_TOO_MANY_REQUESTS", `at most ${maxPerSession} downloads at once per session`);
    }
    if (downloads >= maxDownloads) {
      throw new PointSubError("ERR_TOO_MANY_REQUESTS", `at most ${maxDownloads} downloads at once; retry later`);
    }
    inFlight.set(session, n + 1);
    downloads++;
    let deadline: ReturnType<typeof setTimeout> | undefined;
    let pace: ReturnType<typeof setInterval> | undefined;
    let stop: AbortController | undefined;
    let parentDir: HeldDir | undefined;
    /** The CRC32C read this download started through its held directory (others may share it). */
    let reading: Promise<unknown> | undefined;
    try {
      // Its directory held (each one on the way opened through the one before, never through a link),
      // and the file read through it: a directory swapped for a link after the checks above changes nothing.
      parentDir = await holdDirBeneath(dir, segments.slice(0, -1)).catch((err: unknown) => {
        if (["ELOOP", "ENOTDIR", "ENOENT"].includes(String(errno(err)))) throw notFound(r.path);
        throw err;
      });
      const at = parentDir.at(segments[segments.length - 1]);
      if (r.have !== undefined && r.have.size === st.size) {
        // Waited for as the asker waits (its abort frees this download's slot; the read goes on for others).
        const read = crcOf(at, st, segments);
        reading = read;
        const n = await untilAborted(read, ctx.signal);
        const crc = n === undefined ? undefined : crc32cHex(n);
        if (crc !== undefined && crc === r.have.crc32c) {
          const answer: FileGetAnswer = {
            path: r.path,
            size: st.size,
            crc32c: crc,
            resumedFrom: 0,
            bytesSent: 0,
            skipped: true,
          };
          tellHook(options.onGetEnd, r, answer, ctx);
          return encodeFileGetAnswer(answer);
        }
      }
      let signal = ctx.signal;
      /** The content offset this download started from (the asker's resume point), once known. */
      let from: number | undefined;
      /** When this side's stream started (performance.now(), after the resume answer and the prefix check). */
      let streamAt: number | undefined;
      let t: FileTransfer | undefined;
      if (minRate > 0) {
        // From the start, for the whole file: taking it at a trickle does not move it.
        stop = new AbortController();
        const ms = graceMs + Math.ceil((st.size * 1000) / minRate);
        deadline = setTimeout(
          () =>
            stop?.abort(
              new PointSubError(
                "ERR_SLOW_PEER",
                `download of ${r.path} not taken within ${ms} ms (${graceMs} ms + its size at minDownloadBytesPerSecond ${minRate})`,
              ),
            ),
          Math.min(ms, 0x7fffffff),
        );
        signal = AbortSignal.any([ctx.signal, stop.signal]);
        // And all along, not only at the end: past the grace, what the asker took keeps pace with the
        // rate (or is all it lacked). Before, a peer taking a large file at a trickle (an eighth of a
        // 16 KiB window per progress timeout) held its download, and its slot, until that deadline:
        // hours for a GiB, so 8 connections held every one of maxDownloads for hours.
        // The grace counted from the stream's start: the time before it (the asker's resume answer,
        // bounded by the request timeout, and this side's own read of the prefix the asker holds, to
        // check its CRC32C) is not the asker taking nothing. Counted from the request, a resume of a
        // large file from a slow disk (a prefix read over the grace) was stopped before its first byte.
        const stopper = stop;
        pace = setInterval(
          () => {
            if (t === undefined || from === undefined || streamAt === undefined) return;
            const late = performance.now() - streamAt - graceMs;
            if (late <= 0) return;
            const taken = t.progress.bytes - from;
            const due = Math.min(st.size - from, (late * minRate) / 1000);
            // What the asker took is known from its credit, which comes back in quarter-window steps
            // (1 MiB at the default window): up to one step it read is not credited yet. Measured by
            // credit alone, a download slower than one step per grace (35 KB/s at the defaults) was
            // taken for nothing at the grace's end and stopped, at any rate.
            // The step is the asker's window's (its own setting: one announcing a huge window took nothing and
            // was never stopped by the pace, only at the deadline, hours away for a large file), at most
            // a quarter of the default window.
            if (taken + Math.min(session.peerSettings.streamWindow >>> 2, CREDIT_STEP_MAX) >= due) return;
            stopper.abort(
              new PointSubError(
                "ERR_SLOW_PEER",
                `download of ${r.path} taken slower than minDownloadBytesPerSecond ${minRate} (${taken} bytes in the ${Math.round(late)} ms past its ${graceMs} ms of grace)`,
              ),
            );
          },
          Math.max(50, Math.min(1000, graceMs / 4)),
        );
      }
      t = sendFileVia(servedFiles(at), session, real, {
        route: FILE_ROUTE,
        relativePath: r.to,
        compress: options.compress,
        resumeKey: options.resumeKey,
        signal,
        retries: 0,
        onAttempt: (_n, offset) => {
          from = offset;
          streamAt = performance.now();
        },
      });
      try {
        // A hook that throws fails the download, which is stopped and its end waited for (before, its
        // request failed ERR_HANDLER while the file went on being sent, its slot freed and no deadline).
        try {
          options.onGet?.(r, t, ctx);
        } catch (err) {
          t.cancel("the server's onGet hook failed");
          await t.done.catch(() => {});
          throw err;
        }
        const receipt = await t;
        // The asker's file route answered for what it stored: a receipt that does not fit is its fault.
        if (receipt.size !== st.size || typeof receipt.crc32c !== "string" || !/^[0-9a-f]{8}$/.test(receipt.crc32c)) {
          throw new PointSubError("ERR_PROTOCOL", "the asker's file route answered a malformed receipt");
        }
        const answer: FileGetAnswer = {
          path: r.path,
          size: receipt.size,
          crc32c: receipt.crc32c,
          // §3.12.3: the content offset this side's stream started from, which it knows; not the
          // asker's claim (a receipt saying 0 or 4 for a stream sent from 2 was passed on as is).
          resumedFrom: from ?? 0,
          bytesSent: receipt.bytesSent,
        };
        tellHook(options.onGetEnd, r, answer, ctx);
        return encodeFileGetAnswer(answer);
      } catch (err) {
        // Stopped by its deadline: say so, not the cancellation it caused.
        const cause = stop?.signal.aborted === true && !ctx.signal.aborted ? stop.signal.reason : err;
        // Reading the file failed: its code only, and never its real path (the name asked for instead).
        const e = fsFailure(cause, "the server could not read the file", { path: real, shown: r.path });
        tellHook(options.onGetEnd, r, e, ctx);
        throw e;
      }
    } finally {
      // Held until the read it started ends, which other downloads of the file may wait for.
      const held = parentDir;
      if (reading === undefined) held?.close();
      else void reading.then(held?.close, held?.close);
      if (deadline !== undefined) clearTimeout(deadline);
      if (pace !== undefined) clearInterval(pace);
      downloads--;
      const left = (inFlight.get(session) ?? 1) - 1;
      if (left > 0) inFlight.set(session, left);
      else inFlight.delete(session);
    }
  };

  return { dir, list, get };
}
