import { close, closeSync, constants, open, readlinkSync, statSync } from "node:fs";
import { join, sep } from "node:path";

/**
 * A directory under a served or receiving directory, opened one component at a time without
 * following links, held open while names in it are made or read.
 */
export interface HeldDir {
  /**
   * The path of `name` in the held directory: through its descriptor (`/proc/self/fd/N/name`) where
   * the platform has them, so a directory on the way swapped for a symbolic link since it was
   * checked changes nothing; else the joined path (checked, not held: a swap in between is followed).
   */
  at(name: string): string;
  /** Closes the descriptor (once; `at` is not used after). */
  close(): void;
}

const FD_DIR = "/proc/self/fd/";
let fdPathsWork: boolean | undefined;

/** Whether directories can be held as descriptors and named through them: Linux's `/proc/self/fd`. */
export function fdPaths(): boolean {
  if (fdPathsWork === undefined) {
    try {
      fdPathsWork = process.platform === "linux" && statSync(FD_DIR).isDirectory();
    } catch {
      fdPathsWork = false;
    }
  }
  return fdPathsWork;
}

/**
 * O_PATH (Linux; Node names no constant): a held directory is only named through, never read, so it
 * needs search permission alone, as a path through it did. Opened for reading, a directory that may
 * be searched but not read (0711, a 0733 drop box) failed every download, listed file and upload
 * under it (EACCES). With O_DIRECTORY | O_NOFOLLOW a link is still refused (ENOTDIR).
 */
const O_PATH = process.platform === "linux" ? 0o10000000 : 0;
const DIR_FLAGS = constants.O_RDONLY | O_PATH | constants.O_DIRECTORY | (constants.O_NOFOLLOW ?? 0);

/**
 * Opens `path` as a directory, its last component never a symbolic link (ELOOP or ENOTDIR: the
 * caller's refusal), on the thread pool.
 */
export function openDirNoFollow(path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    open(path, DIR_FLAGS, (err, fd) => (err === null ? resolve(fd) : reject(err)));
  });
}

/** The path of `name` in the directory open as `fd` (see {@link fdPaths}). */
export const fdPath = (fd: number, name: string): string => `${FD_DIR}${fd}/${name}`;

/** A held directory: `fd` (-1: none, then `fallback`, the joined path, is the directory). */
export function heldDir(fd: number, fallback: string): HeldDir {
  let held = fd >= 0;
  return {
    at: (name) => (fd >= 0 ? fdPath(fd, name) : join(fallback, name)),
    close: () => {
      if (!held) return;
      held = false;
      close(fd, () => {});
    },
  };
}

/**
 * Holds the directory `segments` under `root` (which is trusted: it may itself be a link), each
 * component opened through the one before with O_DIRECTORY | O_NOFOLLOW: a symbolic link anywhere on
 * the way, there before or swapped in during the walk, fails it (ELOOP or ENOTDIR; ENOENT for a
 * missing one). Without descriptor paths (not Linux) it is the joined path, unchecked here.
 */
export async function holdDirBeneath(root: string, segments: readonly string[]): Promise<HeldDir> {
  if (!fdPaths() || segments.length === 0) return heldDir(-1, join(root, ...segments));
  let fd = -1;
  try {
    for (const seg of segments) {
      const next = await openDirNoFollow(fd < 0 ? join(root, seg) : fdPath(fd, seg));
      if (fd >= 0) closeSync(fd);
      fd = next;
    }
  } catch (err) {
    if (fd >= 0) closeSync(fd);
    throw err;
  }
  return heldDir(fd, join(root, ...segments));
}

/**
 * Holds `name` in `parent`, opened through it (O_DIRECTORY | O_NOFOLLOW: ELOOP or ENOTDIR for a link
 * or a file, ENOENT when gone); `path` is its joined path (what it is without descriptor paths).
 */
export async function holdChild(parent: HeldDir, name: string, path: string): Promise<HeldDir> {
  if (!fdPaths()) return heldDir(-1, path);
  return heldDir(await openDirNoFollow(parent.at(name)), path);
}

/**
 * Whether the file open as `fd` is under `realRoot` (a real path, no trailing separator), by the path
 * the kernel keeps for the descriptor: false for one opened through a directory on the way swapped
 * for a symbolic link. True where that path cannot be read (no descriptor paths): the checks before
 * the open are all there.
 */
export function openedUnder(fd: number, realRoot: string): boolean {
  if (!fdPaths()) return true;
  let path: string;
  try {
    path = readlinkSync(`${FD_DIR}${fd}`);
  } catch {
    return false;
  }
  return path.startsWith(realRoot.endsWith(sep) ? realRoot : realRoot + sep);
}
