/**
 * Runs the CLI (`src/cli/main.ts`) as a child process, as a user would:
 * its exit code and output, killed after `hungMs` (then `hung`) so a
 * command that never ends fails its test instead of holding the suite.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";

export const CLI_MAIN = join(import.meta.dirname, "../../src/cli/main.ts");

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  hung: boolean;
}

export function runCli(args: string[], env: NodeJS.ProcessEnv, hungMs: number): Promise<CliRun> {
  return runCommand(process.execPath, [CLI_MAIN, ...args], env, hungMs);
}

/** Runs `command` with `argv` (the CLI, or a wrapper that starts it) the same way. */
export function runCommand(command: string, argv: string[], env: NodeJS.ProcessEnv, hungMs: number): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = spawn(command, argv, { stdio: ["ignore", "pipe", "pipe"], env });
    let stdout = "";
    let stderr = "";
    let hung = false;
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const killer = setTimeout(() => {
      hung = true;
      child.kill("SIGKILL");
    }, hungMs);
    child.on("close", (code) => {
      clearTimeout(killer);
      resolve({ code, stdout, stderr, hung });
    });
  });
}
