/**
 * `pointsub serve --metrics HOST:PORT` or `--dashboard HOST:PORT` on a port
 * already in use: the command failed with `pointsub: ERR_HANDLER: listen
 * EADDRINUSE: …` — the code of a handler that threw, and neither option
 * named (which of the two, or the server's own --listen?). Now it is
 * ERR_CONNECT naming the option and its address, as a --listen URL in use
 * says, and nothing stays listening. Real ports, the CLI as a child process.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runCli } from "../helpers/cli-run.ts";

describe("serve: --metrics or --dashboard on a port in use", () => {
  let work: string;
  let taken: Server;
  let address: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-side-in-use-"));
    taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    address = `127.0.0.1:${(taken.address() as { port: number }).port}`;
    env = { ...process.env };
    delete env.POINTSUB_TOKEN;
  });
  after(async () => {
    await new Promise((r) => taken.close(r));
    await rm(work, { recursive: true, force: true });
  });

  for (const [flag, workers] of [
    ["--metrics", "1"],
    ["--metrics", "2"],
    ["--dashboard", "1"],
  ] as const) {
    it(`${flag} with --workers ${workers}: exit 1, one line ERR_CONNECT naming ${flag} and its address`, async () => {
      const r = await runCli(
        ["serve", "--listen", "tcp://127.0.0.1:0", "--dir", join(work, "in"), "--workers", workers, flag, address],
        env,
        60_000,
      );
      assert.equal(r.hung, false);
      assert.equal(r.code, 1, r.stderr);
      // (From the sources, the dashboard's page build adds Node's warning about stripTypeScriptTypes.)
      const lines = r.stderr.split("\n").filter((l) => l.startsWith("pointsub:"));
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], new RegExp(`^pointsub: ERR_CONNECT: ${flag} ${address}: cannot listen: .*EADDRINUSE`));
    });
  }
});
