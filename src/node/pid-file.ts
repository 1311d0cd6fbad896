import { constants, copyFile, rmSync } from "node:fs";
import { lstat, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const PREFIX = "pointsub-pid-";
const DIR_NAME = /^pointsub-pid-[A-Za-z0-9]{6}$/;

/**
 * A private file holding this process's pid (in a directory of its own
 * under the system's temporary directory, removed when the process exits),
 * made on first use; undefined when it cannot be made. A process that was
 * killed leaves its directory behind: the next one to make its pid file
 * removes those of this user whose process is gone.
 */
let pidFile: Promise<string | undefined> | undefined;

function pidTemplate(): Promise<string | undefined> {
  pidFile ??= mkdtemp(join(tmpdir(), PREFIX))
    .then(async (dir) => {
      const path = join(dir, "pid");
      await writeFile(path, String(process.pid), { mode: 0o600, flag: "wx" });
      process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
      void sweepLeftovers(dir);
      return path;
    })
    .catch(() => undefined);
  return pidFile;
}

/** Removes the pid-file directories of this user's processes that are gone (best effort, once per process). */
async function sweepLeftovers(own: string): Promise<void> {
  try {
    const base = tmpdir();
    const uid = process.getuid?.();
    for (const name of await readdir(base)) {
      if (!DIR_NAME.test(name)) continue;
      const dir = join(base, name);
      if (dir === own) continue;
      const st = await lstat(dir).catch(() => undefined);
      if (st === undefined || !st.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
      const pid = Number(await readFile(join(dir, "pid"), "utf8").catch(() => ""));
      // No pid yet: being made (or a crash in between; left, harmless).
      if (!Number.isSafeInteger(pid) || pid <= 0 || alive(pid)) continue;
      await rm(dir, { recursive: true, force: true }).catch(() => {});
    }
  } catch {
    // The temporary directory cannot be listed: nothing to sweep.
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Creates the file at `path` exclusively (never through a link: a link at
 * `path` is EEXIST) with mode 0600, holding this process's pid — in one
 * file-system operation on the thread pool (a copy of the pid file, see
 * {@link pidTemplate}), where open, write and close took three, each a
 * completion on the event loop. Rejects with the copy's error (EEXIST when
 * something is at `path`, ENOENT when its directory, or the pid file, is
 * missing: the pid file is made again next time); resolves false, having
 * created nothing, when the pid file cannot be made (the caller then writes
 * the file itself).
 */
export async function createPidFile(path: string): Promise<boolean> {
  const template = await pidTemplate();
  if (template === undefined) return false;
  return new Promise((resolve, reject) => {
    copyFile(template, path, constants.COPYFILE_EXCL, (err) => {
      if (err === null) return resolve(true);
      // (Its directory, or the pid file: removed by a temporary-directory cleaner?)
      if (err.code === "ENOENT") pidFile = undefined;
      reject(err);
    });
  });
}

/** @internal This process's pid file (tests). */
export function pidFilePath(): Promise<string | undefined> {
  return pidTemplate();
}
