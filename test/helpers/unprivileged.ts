/**
 * Running the CLI as a user who cannot read a file of mode 000 nor write a directory of mode 555: the
 * test's own user, or, as root (who reads and writes anything), root without the capabilities that
 * override file permissions, through `setpriv`. Still uid 0, it reaches the checkout and Node where root
 * owns them or all may (a CI clone under /root, 0700, is out of reach of `nobody`; one under another
 * user's 0700 home is out of reach: the tests skip), and owns what the test made.
 */
import { spawnSync } from "node:child_process";
import { CLI_MAIN, type CliRun, runCommand } from "./cli-run.ts";

export const ROOT = process.getuid?.() === 0;
/**
 * Capabilities the CLI runs without under root: it then meets file permissions as any owner does. From the
 * inheritable set too: root's new program is permitted what its bounding set or inheritable set holds (a
 * container runtime may fill the inheritable set: the CLI then kept them and read the mode 000 file).
 */
const CAPS = "-dac_override,-dac_read_search,-fowner";
const DROPPED = [`--bounding-set=${CAPS}`, `--inh-caps=${CAPS}`];
/**
 * Why such a run is not possible here, or false (for node:test's `skip`). Also when the CLI's source is out
 * of reach without those capabilities (`sudo npm test` in a home of mode 0750 owned by its user): the four
 * tests failed on a CLI that could not load, not on the file it may not read.
 */
export const noUnprivileged: string | false =
  ROOT &&
  spawnSync("setpriv", [
    ...DROPPED,
    process.execPath,
    "-e",
    "fs.accessSync(process.argv[1], fs.constants.R_OK)",
    CLI_MAIN,
  ]).status !== 0
    ? "root without setpriv (util-linux) able to drop capabilities, or the checkout out of reach without them"
    : false;

/**
 * Runs the CLI with `args` under those permissions; killed after `hungMs` (then `hung`). `_owned`: paths
 * the run must own (the test's user or root made them: they are its own already).
 */
export function runCliUnprivileged(
  args: string[],
  env: NodeJS.ProcessEnv,
  _owned: string[],
  hungMs: number,
): Promise<CliRun> {
  let command = process.execPath;
  let argv = [CLI_MAIN, ...args];
  if (ROOT) {
    argv = [...DROPPED, process.execPath, ...argv];
    command = "setpriv";
  }
  return runCommand(command, argv, env, hungMs);
}
