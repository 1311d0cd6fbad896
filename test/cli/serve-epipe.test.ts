/**
 * `pointsub serve | head -1`: the reader takes the first line and exits, and
 * serve's next line fails with EPIPE. The CLI's rule for a closed stdout
 * (`--help | head -1`: end quietly with the command's code) ended the server
 * on the spot: its sessions and transfers cut, the port gone, exit 0 as if
 * it had been asked to stop. A server's stdout is its log: now the log ends
 * and the server goes on serving, until a signal closes it gracefully (exit
 * 0, nothing on stderr). Real sockets, the CLI as a child process.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect } from "../../src/index.ts";
import { CLI_MAIN } from "../helpers/cli-run.ts";

describe("serve: its stdout's reader goes away (EPIPE)", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-serve-epipe-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  for (const workers of ["1", "2"]) {
    it(`--workers ${workers}: serves on without its log, and a SIGTERM ends it with exit 0 and no stack trace`, async () => {
      const serve = spawn(
        process.execPath,
        [CLI_MAIN, "serve", "--listen", "tcp://127.0.0.1:0", "--dir", join(work, `in${workers}`), "--workers", workers],
        { stdio: ["ignore", "pipe", "pipe"], env },
      );
      let stderr = "";
      serve.stderr.on("data", (d) => (stderr += d));
      let exit: number | null | undefined;
      const exited = new Promise<number | null>((r) =>
        serve.once("exit", (code) => {
          exit = code;
          r(code);
        }),
      );
      try {
        let text = "";
        let url: string | undefined;
        serve.stdout.setEncoding("utf8");
        const onData = (d: string) => {
          text += d;
          url ??= /listening on (\S+),/.exec(text)?.[1];
        };
        serve.stdout.on("data", onData);
        for (let i = 0; i < 600 && url === undefined && exit === undefined; i++) {
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.ok(url !== undefined, `serve did not listen: ${text} ${stderr}`);
        // As `head -1` does once it has its line.
        serve.stdout.destroy();
        const at = url;
        // Each session is two lines more for the closed pipe: the first one's fails with EPIPE.
        for (let i = 0; i < 5; i++) {
          const conn = await connect(at);
          assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", `hi ${i}`)), `hi ${i}`);
          await conn.close();
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.equal(exit, undefined, `serve exited (${exit}) when its log's reader went away`);
      } finally {
        serve.kill("SIGTERM");
      }
      assert.equal(await exited, 0);
      assert.equal(stderr, "");
    });
  }
});
