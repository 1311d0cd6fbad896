/**
 * What `pointsub send -r` knows of a tree's small files from its last run:
 * each file's CRC32C with what makes it valid, one record per directory argument in the sender's
 * state directory (beside the resume key: `trees/`). A re-run's quick check
 * (size + CRC32C, as rsync's size + mtime) then takes the CRC of a file
 * unchanged since from the record — one lstat — instead of opening and
 * reading it: a re-run of a tree the server holds whole reads none of its
 * small files (large files have their own records, `local-files.ts`).
 *
 * A file the walk read is recorded with its size, the time the run
 * started and the identity (device, inode) of the directory it was listed
 * in (no stat of the file: an fstat per file, its Stats and their garbage cost a
 * first send of 2,000 × 1 KiB ~12 % of its CPU; the walk lstats each directory
 * anyway): the next run trusts its
 * CRC when the file has that size, is in that same directory (another one put
 * in its place — `mv tree tree.old && mv other tree`, a symbolic link named as the
 * root pointed elsewhere — moves no time of the files in it), and its mtime and ctime (ctime cannot be
 * set back; Linux sets it on a rename and a link too) are at least
 * {@link SETTLED_MS} older than that start — a change after the read, or
 * right before it within the file system's timestamp granularity (FAT's
 * mtime: 2 s; git's "racily clean" entries), fails it — and then records
 * the identity it found (device, inode, size, mtime, ctime), which later
 * runs compare field by field. (The age is of the file system's times by this
 * machine's clock: one whose clock is more than {@link SETTLED_MS} behind — a
 * network file system's server — can date a change just after the read before
 * it, unseen as `--checksum`'s README paragraph says; so is a file of that size and older times bind-mounted over
 * the one read: no identity of the file is recorded by the read.) A directory whose identity is another after the walk
 * of it (replaced while it was walked: some files read from the other) leaves no record. A record is trusted in
 * the boot of the machine that wrote it only (as the large files' unsynced
 * records, `file-crc-store.ts`): after a crash a file written without fsync
 * may keep an identity with other data (fdatasync leaves its new times
 * unjournaled: its new bytes under the old identity). Best effort
 * throughout: a record that cannot be read, parsed or written is no record.
 */
import {
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  type Stats,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import { crc32cJs } from "../codec/crc32c.ts";
import { currentBoot, sameBoot } from "../node/file-crc-store.ts";
import { resumeKeyPath } from "../node/send-file.ts";

/** How old a file's mtime and ctime must be when it is read for it to be recorded (see the module's comment). */
export const SETTLED_MS = 3000;
/** Most files one record holds (a larger tree's other files are read on every run). */
export const TREE_RECORD_MAX = 200_000;
/** Most records kept: past it, the least recently used (written, or found as they were) are removed. */
export const TREE_RECORDS_KEPT = 64;
/**
 * The record's format: `PSTR`, a version byte (4), 1.0 as an f64 in this machine's byte order (a record
 * of another order is no record), the CRC32C of the server's URL (u32 LE), the boot that wrote it
 * ({@link currentBoot}: its length, u8, and bytes), the root's UTF-8 length (u32 LE) and bytes, the file
 * count (u32 LE), then the files' rows as {@link Files} keeps them — six f64s each in this machine's
 * order: CRC32C, device, inode, size, mtimeMs and ctimeMs (a file recorded by a read: NaN, its
 * directory's inode, its size, the run's start, its directory's device) —, then their targets in row
 * order, each its UTF-8 length (u16 LE) and bytes. The rows are written and read as one copy of the
 * Float64Array: no number printed, parsed or boxed per file (as JSON, 2,000 files: ~2 MB of garbage at
 * the end of a send, a GC of its own; as f64s written one by one, ~1.4 MB and 6–15 ms cold).
 */
const MAGIC = 0x52545350; // "PSTR", little-endian
const VERSION = 4;
/** 1.0 as this machine stores an f64 (the byte order of a record's rows). */
const ONE = new Uint8Array(new Float64Array([1]).buffer);
/** Bytes of a file's row. */
const ROW = 6 * 8;

/**
 * Files as recorded, by target: six numbers each (CRC32C, device, inode, size, mtimeMs, ctimeMs) side
 * by side in one Float64Array (off the V8 heap), the map giving each file's row: no object per file
 * (2,000 six-number arrays kept through a send pushed its heap past V8's first major GC, ~7 ms).
 */
class Files {
  readonly rows = new Map<string, number>();
  data = new Float64Array(6 * 64);

  get size(): number {
    return this.rows.size;
  }

  /** Takes `count` rows as a record holds them (`rows`: their bytes), before their targets are set. */
  take(rows: Uint8Array, count: number): void {
    this.data = new Float64Array(Math.max(6 * 64, 6 * count));
    new Uint8Array(this.data.buffer).set(rows);
  }

  /** Records `target` (again: its row is overwritten; or as a new row). */
  set(target: string, crc: number, dev: number, ino: number, size: number, mtimeMs: number, ctimeMs: number): void {
    let r = this.rows.get(target);
    if (r === undefined) {
      r = this.rows.size;
      if (6 * (r + 1) > this.data.length) {
        const grown = new Float64Array(this.data.length * 2);
        grown.set(this.data);
        this.data = grown;
      }
      this.rows.set(target, r);
    }
    const d = this.data;
    const at = 6 * r;
    d[at] = crc >>> 0;
    d[at + 1] = dev;
    d[at + 2] = ino;
    d[at + 3] = size;
    d[at + 4] = mtimeMs;
    d[at + 5] = ctimeMs;
  }
}

/** The directory holding the records. */
export const treeRecordsDir = (): string => join(dirname(resumeKeyPath()), "trees");

/** A root's record file: its name (safe) and a CRC of its absolute path (the path itself is inside, checked). */
function recordPath(root: string): string {
  const name =
    root
      .split(/[\\/]/)
      .pop()
      ?.replace(/[^A-Za-z0-9._-]/g, "_")
      .slice(0, 40) ?? "";
  const crc = crc32cJs(new TextEncoder().encode(root)).toString(16).padStart(8, "0");
  return join(treeRecordsDir(), `${crc}-${name || "root"}.rec`);
}

/** A directory's identity: a file recorded by a read is trusted in that directory only. */
export interface DirIdentity {
  dev: number;
  ino: number;
}

/** Whether row `r` of `f` was recorded under the identity `st`. */
const same = (f: Files, r: number, st: Stats) => {
  const d = f.data;
  const at = 6 * r;
  return (
    d[at + 1] === st.dev &&
    d[at + 2] === st.ino &&
    d[at + 3] === st.size &&
    d[at + 4] === st.mtimeMs &&
    d[at + 5] === st.ctimeMs
  );
};

/** One directory argument's record: last run's entries, and this run's (saved at the end). */
export class TreeRecord {
  private readonly root: string;
  private readonly server: number;
  private readonly last: Files;
  private readonly next = new Files();
  /** Whether this run recorded a file anew (else, with as many files as last run's, the record is as it was). */
  private changed = false;
  /** When this run started (ms since the epoch): before any of its reads. */
  private readonly started = Date.now();
  /** A directory of the tree was replaced while it was walked: this run's rows are not written, last run's removed. */
  private spoiled = false;

  private constructor(root: string, server: number, last: Files) {
    this.root = root;
    this.server = server;
    this.last = last;
  }

  /**
   * The record of the directory `dir` (as given: resolved, links not followed) for a send to `server`
   * (its URL); empty when there is none, or when the last run sent the tree to another server: where
   * the files are not held, a file taken from the record is not read by the walk but when its bundle
   * is made (an lstat per file more), and the walk's read-ahead does not overlap its reads with the
   * transfer (a first send of a known tree to a new server is the same as one of a new tree then).
   */
  static load(dir: string, server: string, useLast = true): TreeRecord {
    const root = resolve(dir);
    let last = new Files();
    const to = crc32cJs(new TextEncoder().encode(server));
    if (useLast) {
      try {
        parse(readFileSync(recordPath(root)), root, to, last);
      } catch {
        // None yet, unreadable, cut short or not ours: no record.
        last = new Files();
      }
    }
    return new TreeRecord(root, to, last);
  }

  /** Whether last run's record has any file (else the walk reads every file without an lstat first). */
  get known(): boolean {
    return this.last.size > 0;
  }

  /**
   * The CRC32C recorded for `target` when `st` is the identity it was recorded under, or (recorded by a read)
   * it is in the directory it was read in (`dir`: where the walk listed it now); kept for the next run.
   */
  lookup(target: string, st: Stats, dir: DirIdentity): number | undefined {
    const last = this.last;
    const r = last.rows.get(target);
    if (r === undefined) return undefined;
    const d = last.data;
    const at = 6 * r;
    // Recorded by a read (no identity: see the module's comment): its size, its directory, and no change since
    // before that run.
    const read = Number.isNaN(d[at + 1]);
    if (
      read
        ? d[at + 3] !== st.size ||
          d[at + 2] !== dir.ino ||
          d[at + 5] !== dir.dev ||
          Math.max(st.mtimeMs, st.ctimeMs) > d[at + 4] - SETTLED_MS
        : !same(last, r, st)
    )
      return undefined;
    const crc = d[at];
    if (this.next.size < TREE_RECORD_MAX) this.next.set(target, crc, st.dev, st.ino, st.size, st.mtimeMs, st.ctimeMs);
    // Kept with the identity found now.
    if (read) this.changed = true;
    return crc;
  }

  /**
   * Records `target`'s CRC32C of its `size` bytes this run read, listed in the directory `dir` (trusted by the
   * next run as the module's comment says).
   */
  noteRead(target: string, size: number, crc: number, dir: DirIdentity): void {
    if (this.next.size >= TREE_RECORD_MAX) return;
    this.changed = true;
    this.next.set(target, crc, Number.NaN, dir.ino, size, this.started, dir.dev);
  }

  /**
   * A directory of the tree was another one (another identity) by the end of its walk: some of the files read
   * or looked up in it may be the other's, not those of the identity their rows would keep. The record is
   * removed when the send ends (the next run reads every file).
   */
  spoil(): void {
    this.spoiled = true;
  }

  /** Writes this run's entries (replacing last run's: files gone since are dropped), if they differ. Never throws. */
  save(): void {
    if (this.spoiled) {
      try {
        rmSync(recordPath(this.root), { force: true });
      } catch {
        // Not removable (never thrown from here).
      }
      return;
    }
    // (A record of another server's was not loaded: `last` is empty, this one replaces it.)
    if (!this.changed && this.next.size === this.last.size) {
      // As it was: not written again, but marked as used (the records kept are the most recently used).
      if (this.last.size > 0) {
        try {
          const now = new Date();
          utimesSync(recordPath(this.root), now, now);
        } catch {
          // Gone meanwhile: the next run reads the files.
        }
      }
      return;
    }
    /** The record written aside, until it is in place. */
    let tmp: string | undefined;
    try {
      const dir = treeRecordsDir();
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const path = recordPath(this.root);
      tmp = `${path}.${process.pid}.tmp`;
      writeFileSync(tmp, serialize(this.root, this.server, this.next), { mode: 0o600 });
      renameSync(tmp, path);
      tmp = undefined;
      trim(dir);
    } catch {
      // A read-only home, a full disk: the next run reads the files. What was written aside goes (no run removes it later).
      try {
        if (tmp !== undefined) rmSync(tmp, { force: true });
      } catch {
        // Not removable either (never thrown from here).
      }
    }
  }
}

/** The record of `root`'s `files` in the format above. */
function serialize(root: string, server: number, files: Files): Buffer {
  const boot = currentBoot().slice(0, 255);
  const n = files.size;
  let total = 4 + 1 + 8 + 4 + 1 + Buffer.byteLength(boot) + 4 + Buffer.byteLength(root) + 4 + n * ROW;
  // forEach, not an iterator: no result object per file.
  files.rows.forEach((_, k) => {
    total += 2 + Buffer.byteLength(k);
  });
  // Off the V8 heap (not the shared pool): one allocation, no garbage per file.
  const buf = Buffer.allocUnsafeSlow(total);
  let at = buf.writeUInt32LE(MAGIC, 0);
  at = buf.writeUInt8(VERSION, at);
  buf.set(ONE, at);
  at = buf.writeUInt32LE(server >>> 0, at + 8);
  const bootBytes = buf.write(boot, at + 1, "utf8");
  buf.writeUInt8(bootBytes, at);
  at += 1 + bootBytes;
  const rootBytes = buf.write(root, at + 4, "utf8");
  buf.writeUInt32LE(rootBytes, at);
  at += 4 + rootBytes;
  at = buf.writeUInt32LE(n, at);
  // Rows 0..n-1 are the map's entries in its order (a row is never removed).
  buf.set(new Uint8Array(files.data.buffer, 0, n * ROW), at);
  at += n * ROW;
  files.rows.forEach((_, k) => {
    const len = buf.write(k, at + 2, "utf8");
    buf.writeUInt16LE(len, at);
    at += 2 + len;
  });
  return buf;
}

/** Reads a record of `root` and `server` into `into`; throws when it is not one (another root or server, another format, cut short). */
function parse(buf: Buffer, root: string, server: number, into: Files): void {
  if (buf.length < 18 || buf.readUInt32LE(0) !== MAGIC || buf.readUInt8(4) !== VERSION) {
    throw new Error("not a tree record");
  }
  if (buf.compare(ONE, 0, 8, 5, 13) !== 0) throw new Error("another byte order");
  if (buf.readUInt32LE(13) !== server >>> 0) throw new Error("another server's");
  const bootEnd = 18 + buf.readUInt8(17);
  // Written in another boot: a crash since may have left a file's identity with other data.
  if (bootEnd + 4 > buf.length || !sameBoot(buf.toString("utf8", 18, bootEnd))) throw new Error("another boot");
  const rootLen = buf.readUInt32LE(bootEnd);
  const rootEnd = bootEnd + 4 + rootLen;
  if (rootEnd + 4 > buf.length || buf.toString("utf8", bootEnd + 4, rootEnd) !== root) throw new Error("another root");
  const count = buf.readUInt32LE(rootEnd);
  let at = rootEnd + 4;
  if (count > TREE_RECORD_MAX || at + count * ROW > buf.length) throw new Error("cut short");
  into.take(buf.subarray(at, at + count * ROW), count);
  at += count * ROW;
  for (let r = 0; r < count; r++) {
    if (at + 2 > buf.length) throw new Error("cut short");
    const end = at + 2 + buf.readUInt16LE(at);
    if (end > buf.length) throw new Error("cut short");
    const target = buf.toString("utf8", at + 2, end);
    if (into.rows.has(target)) throw new Error("not a tree record");
    into.rows.set(target, r);
    at = end;
  }
  if (at !== buf.length) throw new Error("not a tree record");
}

/** Keeps the {@link TREE_RECORDS_KEPT} most recently written records of `dir`. */
function trim(dir: string): void {
  const names = readdirSync(dir).filter((n) => n.endsWith(".rec"));
  if (names.length <= TREE_RECORDS_KEPT) return;
  const aged = names
    .map((n) => ({ n, t: statSync(join(dir, n), { throwIfNoEntry: false })?.mtimeMs ?? 0 }))
    .sort((a, b) => a.t - b.t);
  for (const { n } of aged.slice(0, aged.length - TREE_RECORDS_KEPT)) {
    try {
      unlinkSync(join(dir, n));
    } catch {
      // Removed by another run meanwhile.
    }
  }
}
