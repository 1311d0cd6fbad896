/**
 * Output redirected to a file on a full disk (`pointsub ls -r --from URL >
 * list.txt`; here /dev/full): the write failed with ENOSPC, and the CLI's
 * stdout error listener threw it again — an uncaught exception printing a
 * line of the program's source (10 KB of the bundle's one line) and a
 * stack trace (`request`, `bench`) — or, when the command had ended, the
 * failure went unnoticed: `ls` and `--help` exited 0 having written
 * nothing. Now it is one line on stderr and exit 1. Real sockets, the CLI
 * as a child process.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CLI_MAIN } from "../helpers/cli-run.ts";
import { type ServeProcess, startServeProcess } from "../helpers/serve-process.ts";

/** Runs the CLI with its stdout on /dev/full: exit code and stderr. */
function runToFull(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string }> {
  const full = openSync("/dev/full", "w");
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI_MAIN, ...args], { stdio: ["ignore", full, "pipe"], env });
    closeSync(full);
    let stderr = "";
    child.stderr?.on("data", (d) => (stderr += d));
    const killer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("close", (code) => {
      clearTimeout(killer);
      resolve({ code, stderr });
    });
  });
}

describe("CLI: standard output on a full disk", { skip: !existsSync("/dev/full") && "no /dev/full" }, () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let serve: ServeProcess;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-stdout-full-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    await mkdir(join(work, "in"));
    await writeFile(join(work, "in", "a.txt"), "listed\n");
    serve = await startServeProcess(["--dir", join(work, "in")], { env, workers: 1 });
  });
  after(async () => {
    await serve?.stop();
    await rm(work, { recursive: true, force: true });
  });

  for (const [name, args] of [
    ["--help", () => ["--help"]],
    ["ls", () => ["ls", "--from", serve.url]],
    ["request", () => ["request", "--to", serve.url, "--route", "/echo/1.0.0", "hello"]],
    ["bench", () => ["bench", "--to", serve.url, "-n", "10", "-s", "1M"]],
  ] as const) {
    it(`${name} > /dev/full: exit 1, one line saying why, no stack trace`, async () => {
      const r = await runToFull(args(), env);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^pointsub: ERR_QUOTA: cannot write standard output: ENOSPC[^\n]*\n$/);
    });
  }
});
