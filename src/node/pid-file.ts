import { constants, copyFile, rmSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * A private file holding this process's pid (in a directory of its own
 * under the system's temporary directory, removed when the process exits),
 * made on first use; undefined when it cannot be made.
 */
let pidFile: Promise<string | undefined> | undefined;

function pidTemplate(): Promise<string | undefined> {
  pidFile ??= mkdtemp(join(tmpdir(), "pointsub-pid-"))
    .then(async (dir) => {
      const path = join(dir, "pid");
      await writeFile(path, String(process.pid), { mode: 0o600, flag: "wx" });
      process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
      return path;
    })
    .catch(() => undefined);
  return pidFile;
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
