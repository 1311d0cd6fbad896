/**
 * `pointsub serve --workers 2` on a port already in use (new-user review):
 * each first worker failed to listen and was replaced, up to maxRestarts
 * (10) in a row, every one printing its error and a "started in its
 * place" line, for ~9 s before the command failed. A first worker that
 * exits before it is ready is not replaced now: the command fails at once
 * with the reason. Real port, the CLI as a child process.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runCli } from "../helpers/cli-run.ts";

describe("serve --workers on a port in use", () => {
  let work: string;
  let taken: Server;
  let port: number;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-port-in-use-"));
    taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    port = (taken.address() as { port: number }).port;
  });
  after(async () => {
    await new Promise((r) => taken.close(r));
    await rm(work, { recursive: true, force: true });
  });

  it("fails once with the reason; no worker is started in a failed one's place", async () => {
    const env = { ...process.env };
    delete env.POINTSUB_TOKEN;
    const r = await runCli(
      ["serve", "--listen", `tcp://127.0.0.1:${port}`, "--dir", join(work, "in"), "--workers", "2"],
      env,
      60_000,
    );
    assert.equal(r.hung, false);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /EADDRINUSE/);
    assert.match(r.stderr, /^pointsub: ERR_CONNECT: the workers could not start/m);
    assert.doesNotMatch(r.stdout, /started in its place/);
    // Each of the two workers says why at most once.
    assert.ok((r.stderr.match(/EADDRINUSE/g) ?? []).length <= 2, r.stderr);
  });
});
