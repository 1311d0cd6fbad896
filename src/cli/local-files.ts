/**
 * How `pointsub send` reads the files it sends: a small file with one
 * synchronous open, read and close when its stream starts, a larger one as
 * `sendFile` does (asynchronously, 1 MiB at a time). The CLI is one process
 * doing one job: a few tens of microseconds of blocking per small file cost
 * less than the three thread-pool round trips of an asynchronous read
 * (about a third of the CPU time of sending 2,000 files of 1 KiB).
 */
import { closeSync, constants, lstatSync, openSync, readSync, statSync } from "node:fs";
import { utimes, writeFile } from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";
import { nodeCrc32c } from "../node/crc32c-native.ts";
import { CRC_PERSIST_MIN, type CrcStore, crcStore } from "../node/file-crc-store.ts";
import { fileCrc32c } from "../node/file-sink.ts";
import { type FileAccess, readFileFrom, resumeKeyPath } from "../node/send-file.ts";

/** Files whose rest (from the offset sent from) is at most this many bytes are read synchronously. */
export const SYNC_READ_MAX = 64 * 1024;

/** Reads `path` from `offset` to `size` in one synchronous read, when iterated. */
function* readSmall(path: string, offset: number, size: number, flags: string | number = "r"): Generator<Uint8Array> {
  if (size <= offset) return;
  const fd = openSync(path, flags);
  try {
    const buf = Buffer.allocUnsafe(size - offset);
    let n = 0;
    while (n < buf.length) {
      const r = readSync(fd, buf, n, buf.length - n, offset + n);
      if (r === 0) break;
      n += r;
    }
    if (n > 0) yield buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * Opening a file inside a tree: read-only, never through a symbolic link (see {@link treeFiles}), and
 * never blocking: the walk listed a regular file (where O_NONBLOCK changes nothing), and a FIFO put at its
 * name since held the synchronous open, the whole sender with it, until someone wrote to it.
 */
export const NO_FOLLOW = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);

/** File access that follows symbolic links (`stat`, "r") or not (`lstat`, {@link NO_FOLLOW}). */
function fileAccess(follow: boolean): FileAccess {
  const statOf = follow ? statSync : lstatSync;
  const flags = follow ? "r" : NO_FOLLOW;
  return {
    stat: async (path) => {
      try {
        return statOf(path);
      } catch {
        return undefined;
      }
    },
    open: (path, offset, size) =>
      size - offset <= SYNC_READ_MAX ? readSmall(path, offset, size, flags) : readFileFrom(path, offset, size, flags),
  };
}

/** The CLI's file access (see the module's comment). */
export const cliFiles: FileAccess = fileAccess(true);

/**
 * The CLI's file access for the large files of a tree (`send -r`): the walk
 * listed a regular file, so one that is a symbolic link by the time it is
 * sent (the tree changed meanwhile) is not a file here (`lstat`) and is not
 * opened through the link (O_NOFOLLOW): a link to a file outside the tree is
 * never read and sent under the tree's name. Small files of a tree go in
 * bundles, opened the same way (`send.ts`).
 */
export const treeFiles: FileAccess = fileAccess(false);

let records: CrcStore | undefined;
/**
 * The sender's records of its own large files' CRC32C, in its state
 * directory (beside the resume key: `crc/`), as the server keeps its
 * files' (`file-crc-store.ts`): valid while the file's size, mtime, ctime,
 * inode and device are unchanged, in the boot that computed it.
 */
const localRecords = () => {
  records ??= crcStore(sep, { metaDir: localRecordsDir() });
  return records;
};
const localRecordsDir = () => join(dirname(resumeKeyPath()), "crc");

/** How often the sender's records are swept (records of files gone or changed removed): daily, as a serve's. */
export const LOCAL_SWEEP_MS = 24 * 60 * 60 * 1000;
let swept = false;
/**
 * Sweeps the sender's records when the last sweep (the mtime of `crc/.swept`)
 * is {@link LOCAL_SWEEP_MS} old or there was none: at most once per process,
 * after it recorded a file (so the directory cannot grow by a record per
 * file ever sent). Best effort, never throws.
 */
async function sweepLocalRecords(): Promise<void> {
  if (swept) return;
  swept = true;
  const stamp = join(localRecordsDir(), ".swept");
  const last = statSync(stamp, { throwIfNoEntry: false })?.mtimeMs ?? 0;
  if (Date.now() - last < LOCAL_SWEEP_MS) return;
  const now = new Date();
  await utimes(stamp, now, now).catch(() => writeFile(stamp, "", { mode: 0o600 }).catch(() => {}));
  await localRecords().sweep();
}

/**
 * CRC32C of the first `length` bytes of `path` (the quick check's), a small
 * file read synchronously; a file of {@link CRC_PERSIST_MIN} or more whose
 * whole CRC is asked for is read once and recorded (a re-run after that
 * reads none of it). `fresh` (`send --checksum`): read even when recorded, and recorded anew.
 */
export async function localCrc32c(path: string, length: number, fresh = false): Promise<number> {
  if (length >= CRC_PERSIST_MIN) {
    const st = statSync(path, { throwIfNoEntry: false });
    if (st?.isFile() && st.size === length) {
      const recorded = fresh ? undefined : await localRecords().get(st);
      if (recorded !== undefined) return recorded;
      const crc = await fileCrc32c(path, length);
      // Recorded for the identity seen before the read (a change during it makes another identity).
      await localRecords().put(resolve(path).split(sep).filter(Boolean).join("/"), st, crc, false);
      await sweepLocalRecords();
      return crc;
    }
  }
  if (length > SYNC_READ_MAX) return fileCrc32c(path, length);
  let crc = 0;
  for (const chunk of readSmall(path, 0, length)) crc = nodeCrc32c().compute(chunk, crc);
  return crc;
}
