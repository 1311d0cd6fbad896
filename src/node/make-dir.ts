/**
 * Makes a directory and its missing parents, one level at a time. Node's
 * `mkdir(path, { recursive: true })` never settles (and spins a CPU) where
 * a parent exists but refuses new entries with ENOENT, as /proc and /sys
 * do: `pointsub get --out /proc/x` and `serve --dir /proc/x` hung.
 */
import { mkdir, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";

const codeOf = (err: unknown) => (err as { code?: unknown }).code;

/** Makes `path` and its missing parents (`mode` for those made); rejects with the fs error, or ENOTDIR when it is not a directory. */
export async function makeDirectory(path: string, mode?: number): Promise<void> {
  const missing: string[] = [];
  for (let p = resolve(path); ; ) {
    try {
      await mkdir(p, mode);
      break;
    } catch (err) {
      const code = codeOf(err);
      if (code === "ENOENT" && dirname(p) !== p && missing.length < 4096) {
        missing.push(p);
        p = dirname(p);
        continue;
      }
      if (code !== "EEXIST") throw err;
      if (!(await stat(p)).isDirectory()) {
        throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${p}'`), { code: "ENOTDIR", path: p });
      }
      break;
    }
  }
  // Each missing level once, from the top: one that still fails (ENOENT where the parent is there) rejects.
  for (let i = missing.length - 1; i >= 0; i--) {
    try {
      await mkdir(missing[i], mode);
    } catch (err) {
      if (codeOf(err) !== "EEXIST" || !(await stat(missing[i])).isDirectory()) throw err;
    }
  }
}
