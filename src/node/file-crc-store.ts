/**
 * Stored files' CRC32C kept on disk, next to them, so a quick check (size +
 * CRC compare) or a download's "already have it" check answers without
 * reading a large file: in any process sharing the directory (`serve
 * --workers N`) and after a restart. One small JSON file per stored file in
 * the served directory's hidden metadata directory ({@link META_DIR}),
 * named by the file's device and inode, holding the CRC and the identity it
 * was computed for (device, inode, size, mtime, ctime): a file changed on
 * disk since (by anyone: its size, mtime or ctime differs; ctime cannot be
 * set back) or replaced (another inode) is never answered from it. Names in
 * the metadata directory are refused for upload, download and listing.
 */
import { constants, readFileSync, type Stats } from "node:fs";
import { type FileHandle, lstat, mkdir, open, readdir, rename, unlink } from "node:fs/promises";
import { uptime } from "node:os";
import { join } from "node:path";
import { fdPaths, type HeldDir, heldDir, holdDirBeneath } from "./beneath.ts";

/**
 * The served directory's hidden metadata directory (top level). A name
 * that equals it ignoring case is reserved (case-insensitive file systems
 * would alias it).
 */
export const META_DIR = ".pointsub";

/**
 * Files from this size on have their CRC persisted: below it reading the
 * file costs about as much as reading its record (one open and read
 * either way), and small files (bundles' entries are at most 256 KiB)
 * cost no extra write each.
 */
export const CRC_PERSIST_MIN = 1024 * 1024;

const NOT_ASCII = /[^ -~]/;
/** Code points HFS+ ignores in names (git's `is_hfs_dotgit` list): joiners, direction marks, the BOM. */
const HFS_IGNORED = /[\u200c-\u200f\u202a-\u202e\u206a-\u206f\ufeff]/g;

/**
 * Whether a path's first segment names the metadata directory on some file
 * system: equal to `.pointsub` after Unicode compatibility normalization
 * and case folding (`.pointſub` on case-insensitive volumes), with the code
 * points HFS+ ignores removed, and the trailing dots and spaces NTFS drops
 * (and anything from a `:`, NTFS's stream separator); or its NTFS 8.3 short
 * name (`POINTS~1`). As git guards `.git`.
 */
export function isMetaName(segment: string): boolean {
  // Most names: no leading dot, no `~`, plain ASCII (no normalization needed).
  if (segment.charCodeAt(0) !== 46 && !segment.includes("~") && !NOT_ASCII.test(segment)) return false;
  const s = foldSegment(segment);
  return s === META_DIR || /^points~[0-9]+$/.test(s);
}

/**
 * A path segment as the file systems that alias names would fold it: the
 * code points HFS+ ignores removed, Unicode compatibility normalization
 * (NFKC; APFS and HFS+ compare canonically equivalent names as one), case
 * folding (`ſ` and `s`, `K` and `k`), and NTFS's stream suffix (from a `:`)
 * and trailing dots and spaces dropped. Two segments that fold alike may
 * be one file on some volume (never on a case-sensitive one unless equal).
 */
export function foldSegment(segment: string): string {
  let s = NOT_ASCII.test(segment)
    ? segment.replace(HFS_IGNORED, "").normalize("NFKC").toUpperCase().toLowerCase()
    : segment.toLowerCase();
  const colon = s.indexOf(":");
  if (colon >= 0) s = s.slice(0, colon);
  return s.replace(/[. ]+$/, "");
}

/** A relative path's checked segments folded ({@link foldSegment}), joined by `/`. */
export function foldedPath(segments: readonly string[]): string {
  let out = "";
  for (let i = 0; i < segments.length; i++) out += (i === 0 ? "" : "/") + foldSegment(segments[i]);
  return out;
}

/** The sink's own files in the served directory's top level, folded (see {@link isSinkFileAlias}). */
const SINK_FILE_FOLDED = /^\.[a-z0-9_-]{1,128}\.(partial|resume|lock)$/;

/**
 * Whether a path's first segment names one of the file sink's own files
 * (`.<key>.partial`, `.<key>.resume`, `.<key>.lock`, a bundle's
 * `.b<id>-<n>.partial`) on some file system: as {@link isMetaName} folds
 * (case, `ſ` for `s`, `K` for `k`, the code points HFS+ ignores, NTFS's
 * trailing dots and spaces and stream suffix). On a case-insensitive volume
 * `.<key>.PARTIAL` is the partial itself: a download of it served another
 * peer's unfinished upload, an upload with overwrite replaced it.
 */
export function isSinkFileAlias(segment: string): boolean {
  if (segment.charCodeAt(0) !== 46 && !NOT_ASCII.test(segment)) return false;
  return SINK_FILE_FOLDED.test(foldSegment(segment));
}

/** What a record holds (JSON). */
interface CrcRecord {
  v: 1;
  /** The file's path relative to the directory, `/`-separated: for the sweep. */
  path: string;
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  crc: number;
  /**
   * The file's data was fsynced before the CRC was recorded. Else `boot`
   * says which boot of the machine recorded it: after a crash a file
   * written without fsync may keep its size and times with other data
   * (some file systems), so such a record is trusted in that boot only.
   */
  synced: boolean;
  boot?: string;
}

const RECORD = /^crc-(\d+)-(\d+)\.json$/;
const TEMP = /^crc-\d+-\d+\.json\.\d+\.\d+\.tmp$/;
/** Largest record read (a path of 4,096 bytes escaped, and the numbers). */
const RECORD_MAX = 32 * 1024;

let bootId: string | undefined;
/**
 * This boot of the machine: Linux's boot id, elsewhere the boot time in
 * seconds (from the uptime; compared with a tolerance for clock steps).
 */
export function currentBoot(): string {
  if (bootId === undefined) {
    try {
      bootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    } catch {
      bootId = `t${Math.round(Date.now() / 1000 - uptime())}`;
    }
  }
  return bootId;
}
/** Whether `a` (a {@link currentBoot} of some time) is this boot. */
export function sameBoot(a: string | undefined): boolean {
  const b = currentBoot();
  if (a === undefined) return false;
  if (a === b) return true;
  // Boot times from the uptime move with the wall clock: a few seconds apart is the same boot.
  return a[0] === "t" && b[0] === "t" && Math.abs(Number(a.slice(1)) - Number(b.slice(1))) <= 5;
}

const same = (r: CrcRecord, st: Stats) =>
  r.ino === st.ino && r.dev === st.dev && r.size === st.size && r.mtimeMs === st.mtimeMs && r.ctimeMs === st.ctimeMs;

const isNum = (n: unknown): n is number => typeof n === "number" && Number.isFinite(n) && n >= 0;

/** A directory's persisted CRCs (see the module's description). */
export interface CrcStore {
  /** The CRC recorded for the file whose lstat is `st`, when its record matches it; never throws. */
  get(st: Stats): Promise<number | undefined>;
  /**
   * Records `crc` for the file at `path` (relative, `/`-separated) whose
   * lstat is `st` (taken after the file was put in place and checked to be
   * the inode that was written); `synced`: its data was fsynced. Best
   * effort, never throws; files under {@link CRC_PERSIST_MIN} are skipped.
   */
  put(path: string, st: Stats, crc: number, synced: boolean): Promise<void>;
  /** Removes the record of the file whose lstat was `st` (a file being replaced); never throws. */
  forget(st: Stats): Promise<void>;
  /** Removes records whose file is gone or changed, and stale temporary files; resolves to how many. */
  sweep(): Promise<number>;
}

/**
 * The persisted CRCs of the files under `dir`, kept in `dir/.pointsub/`
 * (or `metaDir`: a sender keeps its own files' CRCs in its state
 * directory, with `dir` the file system's root).
 */
export function crcStore(dir: string, opts: { metaDir?: string } = {}): CrcStore {
  const meta = opts.metaDir ?? join(dir, META_DIR);
  const recordName = (st: Stats) => `crc-${st.dev}-${st.ino}.json`;
  /**
   * The metadata directory held for one operation, never through a symbolic link planted at its name
   * (a local user's directory of forged records was trusted: the quick check answered their CRC32C for
   * a file of other bytes, and the sweep unlinked files there); undefined when it is not a directory.
   * A `metaDir` of the caller's own (the sender's state directory) is trusted as it is.
   */
  const holdMeta = async (): Promise<HeldDir | undefined> => {
    if (opts.metaDir !== undefined) return heldDir(-1, meta);
    if (!fdPaths()) {
      const st = await lstat(meta).catch(() => undefined);
      return st?.isDirectory() === true ? heldDir(-1, meta) : undefined;
    }
    return holdDirBeneath(dir, [META_DIR]).catch(() => undefined);
  };
  /** The metadata directory is there and a real directory (never a link planted in its place). */
  let made: Promise<boolean> | undefined;
  const ensureDir = (): Promise<boolean> => {
    made ??= (async () => {
      await mkdir(meta, { mode: 0o700, recursive: opts.metaDir !== undefined }).catch(() => {});
      const st = await lstat(meta).catch(() => undefined);
      return st?.isDirectory() === true;
    })();
    // Retried next time when it failed (the directory itself may have been missing).
    void made.then((ok) => {
      if (!ok) made = undefined;
    });
    return made;
  };
  let temps = 0;

  const read = async (path: string, maxBytes = RECORD_MAX): Promise<CrcRecord | undefined> => {
    let fh: FileHandle | undefined;
    try {
      // Non-blocking: a FIFO at a record's name would hold the open (a thread-pool thread) for good.
      fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
      if (!(await fh.stat()).isFile()) return undefined;
      const buf = Buffer.allocUnsafe(maxBytes + 1);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      if (bytesRead > maxBytes) return undefined;
      const r = JSON.parse(buf.toString("utf8", 0, bytesRead)) as Partial<CrcRecord>;
      if (
        r.v !== 1 ||
        typeof r.path !== "string" ||
        !isNum(r.dev) ||
        !isNum(r.ino) ||
        !isNum(r.size) ||
        !isNum(r.mtimeMs) ||
        !isNum(r.ctimeMs) ||
        !isNum(r.crc) ||
        !Number.isInteger(r.crc) ||
        r.crc > 0xffffffff ||
        typeof r.synced !== "boolean"
      ) {
        return undefined;
      }
      return r as CrcRecord;
    } catch {
      return undefined;
    } finally {
      await fh?.close().catch(() => {});
    }
  };

  return {
    get: async (st) => {
      if (st.size < CRC_PERSIST_MIN) return undefined;
      const held = await holdMeta();
      if (held === undefined) return undefined;
      let r: CrcRecord | undefined;
      try {
        r = await read(held.at(recordName(st)));
      } finally {
        held.close();
      }
      if (r === undefined || !same(r, st) || !(r.synced || sameBoot(r.boot))) return undefined;
      return r.crc;
    },
    put: async (path, st, crc, synced) => {
      if (st.size < CRC_PERSIST_MIN || !st.isFile()) return;
      let tmp: string | undefined;
      let held: HeldDir | undefined;
      try {
        if (!(await ensureDir())) return;
        held = await holdMeta();
        if (held === undefined) {
          // Removed since it was made (a user's cleanup): made again, else no record was written till a restart.
          made = undefined;
          if (!(await ensureDir())) return;
          held = await holdMeta();
          if (held === undefined) return;
        }
        const r: CrcRecord = {
          v: 1,
          path,
          dev: st.dev,
          ino: st.ino,
          size: st.size,
          mtimeMs: st.mtimeMs,
          ctimeMs: st.ctimeMs,
          crc: crc >>> 0,
          synced,
          ...(synced ? {} : { boot: currentBoot() }),
        };
        // Written aside and renamed: a reader sees a whole record or none. Not fsynced: a record lost
        // or torn in a crash only costs one read of the file (a torn one does not parse).
        const final = held.at(recordName(st));
        tmp = held.at(`${recordName(st)}.${process.pid}.${temps++}.tmp`);
        const fh = await open(
          tmp,
          constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
          0o600,
        );
        try {
          await fh.writeFile(JSON.stringify(r));
        } finally {
          await fh.close();
        }
        await rename(tmp, final);
        tmp = undefined;
      } catch {
        // Best effort: without a record the file is read once more.
      } finally {
        if (tmp !== undefined) await unlink(tmp).catch(() => {});
        held?.close();
      }
    },
    forget: async (st) => {
      if (st.size < CRC_PERSIST_MIN) return;
      const held = await holdMeta();
      if (held === undefined) return;
      await unlink(held.at(recordName(st))).catch(() => {});
      held.close();
    },
    sweep: async () => {
      const held = await holdMeta();
      if (held === undefined) return 0;
      try {
        return await sweepIn(held);
      } finally {
        held.close();
      }
    },
  };

  /** {@link CrcStore.sweep} in the held metadata directory. */
  async function sweepIn(held: HeldDir): Promise<number> {
    let names: string[];
    try {
      names = await readdir(held.at("."));
    } catch {
      return 0;
    }
    let removed = 0;
    const now = Date.now();
    for (const name of names) {
      const file = held.at(name);
      let stale: boolean;
      if (TEMP.test(name)) {
        // A writer that died between writing and renaming (a live one renames within moments).
        const st = await lstat(file).catch(() => undefined);
        stale = st !== undefined && st.mtimeMs < now - 60_000;
      } else if (RECORD.test(name)) {
        const r = await read(file);
        const st =
          r === undefined || r.path.split("/").some((s) => s === "" || s === "." || s === "..")
            ? undefined
            : await lstat(join(dir, ...r.path.split("/"))).catch(() => undefined);
        stale = r === undefined || st === undefined || !same(r, st) || !(r.synced || sameBoot(r.boot));
      } else {
        continue;
      }
      if (
        stale &&
        (await unlink(file).then(
          () => true,
          () => false,
        ))
      )
        removed++;
    }
    return removed;
  }
}
