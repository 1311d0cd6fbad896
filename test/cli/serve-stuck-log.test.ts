/**
 * `pointsub serve | tee log` with tee stuck (a full disk, a paused pager):
 * serve's log holds what the reader does not take (bounded: LOG_BACKLOG_MAX).
 * A SIGTERM closed the server, and then the process waited for that backlog
 * to be written before it exited — for ever, with a reader that takes
 * nothing: a service manager's stop hung until its SIGKILL. A server's log is
 * lost rather than fatal: once the reader takes nothing for a while, the
 * process ends with the close's exit code. Real sockets, the CLI as a child
 * process whose stdout nobody reads.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect } from "../../src/index.ts";
import { CLI_MAIN } from "../helpers/cli-run.ts";

describe("serve: its log's reader is stuck", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-serve-stuck-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  for (const workers of ["1", "2"]) {
    it(`--workers ${workers}: a SIGTERM still ends it, exit 0`, async () => {
      const serve = spawn(
        process.execPath,
        [CLI_MAIN, "serve", "--listen", "tcp://127.0.0.1:0", "--dir", join(work, `in${workers}`), "--workers", workers],
        {
          stdio: ["ignore", "pipe", "pipe"],
          env,
        },
      );
      let stderr = "";
      serve.stderr.on("data", (d) => (stderr += d));
      let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
      const exited = new Promise<void>((r) =>
        serve.once("exit", (code, signal) => {
          exit = { code, signal };
          r();
        }),
      );
      // The safety net a service manager would be: a process still there long after its SIGTERM.
      let killer: ReturnType<typeof setTimeout> | undefined;
      try {
        let text = "";
        let url: string | undefined;
        serve.stdout.setEncoding("utf8");
        const onData = (d: string) => {
          text += d;
          url ??= /listening on (\S+),/.exec(text)?.[1];
          // Then nobody reads: the pipe fills, and serve holds the rest.
          if (url !== undefined) serve.stdout.pause();
        };
        serve.stdout.on("data", onData);
        for (let i = 0; i < 600 && url === undefined && exit === undefined; i++) {
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.ok(url !== undefined, `serve did not listen: ${text} ${stderr}`);
        // Two lines a session: well past the pipe's 64 KiB. Ten at a time (each one a few round trips).
        const server = url;
        for (let i = 0; i < 1500; i += 10) {
          await Promise.all(
            Array.from({ length: 10 }, async () => {
              const conn = await connect(server);
              await conn.close({ timeoutMs: 100 });
            }),
          );
        }
        assert.ok(serve.stdout.readableLength + text.length < 100_000, "the log was not read");
      } finally {
        serve.kill("SIGTERM");
        killer = setTimeout(() => serve.kill("SIGKILL"), 30_000);
      }
      await exited;
      clearTimeout(killer);
      assert.deepEqual(exit, { code: 0, signal: null }, stderr);
    });
  }
});
