/** `pointsub serve` as a child process for CLI tests: started, its JSON lines collected, stopped by SIGTERM. */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

/** The CLI's entry point, run with the current Node. */
export const CLI_MAIN = join(import.meta.dirname, "../../src/cli/main.ts");

export interface ServeProcess {
  /** The first URL it listens on. */
  url: string;
  child: ChildProcess;
  /** Every JSON line it printed so far, parsed. */
  events: Record<string, unknown>[];
  /** SIGTERM, then resolves once it exited. */
  stop(): Promise<void>;
}

/**
 * Starts `pointsub serve --listen <listen> --json ...args` and resolves once
 * it printed its "listening" line (rejects if it exits first). Its events go
 * into `events` (a new array by default).
 */
export async function startServeProcess(
  args: readonly string[],
  opts: {
    env?: NodeJS.ProcessEnv;
    listen?: string;
    events?: Record<string, unknown>[];
    /**
     * `--workers` added when `args` has none (and no `--dashboard`): 2 by
     * default, so the tests run alike on any machine (serve's own default is
     * one per core); "default" adds nothing.
     */
    workers?: number | "default";
  } = {},
): Promise<ServeProcess> {
  const events = opts.events ?? [];
  const workers =
    opts.workers === "default" || args.includes("--workers") || args.includes("--dashboard")
      ? []
      : ["--workers", String(opts.workers ?? 2)];
  const child = spawn(
    process.execPath,
    [CLI_MAIN, "serve", "--listen", opts.listen ?? "tcp://127.0.0.1:0", "--json", ...workers, ...args],
    { stdio: ["ignore", "pipe", "inherit"], env: opts.env ?? process.env },
  );
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const url = await new Promise<string>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`serve exited with ${code}`)));
    lines.on("line", (line) => {
      const ev = JSON.parse(line) as Record<string, unknown>;
      events.push(ev);
      if (ev.event === "listening") resolve(String(ev.url));
    });
  });
  return {
    url,
    child,
    events,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

/**
 * A CLI test's work directory (a new one under the system's temporary directory, `prefix` naming it) and
 * the environment its commands run in: the state directory in it, no token or URL from the shell.
 */
export async function cliWorkspace(prefix: string): Promise<{ work: string; env: NodeJS.ProcessEnv }> {
  const work = await mkdtemp(join(tmpdir(), prefix));
  const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
  delete env.POINTSUB_TOKEN;
  delete env.POINTSUB_URL;
  return { work, env };
}
