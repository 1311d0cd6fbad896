/**
 * Running the CLI as a user who cannot read a file of mode 000: the test's own user, or, as root (who
 * reads anything), `nobody` through `setpriv`.
 */
import { spawn, spawnSync } from "node:child_process";
import { chown } from "node:fs/promises";
import { CLI_MAIN, type CliRun } from "./cli-run.ts";

/** The uid and gid the CLI runs as under root. */
export const NOBODY = 65534;
export const ROOT = process.getuid?.() === 0;
/** Why such a run is not possible here, or false (for node:test's `skip`). */
export const noUnprivileged: string | false =
  ROOT && spawnSync("setpriv", ["--version"]).status !== 0 ? "root without setpriv" : false;

/**
 * Runs the CLI with `args` as that user (`owned`: the paths it must own, chowned first under root);
 * killed after `hungMs` (then `hung`).
 */
export async function runCliUnprivileged(
  args: string[],
  env: NodeJS.ProcessEnv,
  owned: string[],
  hungMs: number,
): Promise<CliRun> {
  let command = process.execPath;
  let argv = [CLI_MAIN, ...args];
  if (ROOT) {
    for (const p of owned) await chown(p, NOBODY, NOBODY);
    argv = [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", process.execPath, ...argv];
    command = "setpriv";
  }
  const child = spawn(command, argv, { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let hung = false;
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const killer = setTimeout(() => {
    hung = true;
    child.kill("SIGKILL");
  }, hungMs);
  const code = await new Promise<number | null>((r) => child.on("close", r));
  clearTimeout(killer);
  return { code, stdout, stderr, hung };
}
