/**
 * A re-run of `send -r` against a `serve --rate-limit` whose quick checks are over its limit: they
 * are asked again (with backoff) and every file the server holds whole is skipped, exit 0. Before,
 * a limited check sent its bundle blind; its files were refused as existing, their own checks
 * limited too, and reported failed (ERR_EXISTS, exit 1). Real `serve` and `send` processes.
 */
import assert from "node:assert/strict";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runCli } from "../helpers/cli-run.ts";
import { cliWorkspace, type ServeProcess, startServeProcess } from "../helpers/serve-process.ts";

describe("send: quick checks over the server's rate limit", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let serve: ServeProcess | undefined;

  before(async () => {
    ({ work, env } = await cliWorkspace("pointsub-rate-limited-check-"));
  });
  after(async () => {
    await serve?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("are asked again: every file the server holds whole is skipped, none failed, exit 0", async () => {
    const tree = join(work, "tree");
    const stored = join(work, "inbox", "tree");
    await mkdir(tree, { recursive: true });
    await mkdir(stored, { recursive: true });
    // Three bundles' worth of small files, already on the server as they are here.
    const files = 600;
    for (let i = 0; i < files; i++) {
      await writeFile(join(tree, `f${i}.txt`), `file ${i}\n`);
      await writeFile(join(stored, `f${i}.txt`), `file ${i}\n`);
    }
    serve = await startServeProcess(["--dir", join(work, "inbox"), "--rate-limit", "1", "--durability", "none"], {
      env,
      workers: 1,
    });
    const r = await runCli(["send", "-r", tree, "--to", serve.url, "--json"], env, 60_000);
    assert.equal(r.hung, false);
    const events = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { event?: string; skipped?: number; failed?: number; code?: string });
    const summary = events.find((e) => e.event === "summary");
    assert.equal(r.code, 0, `${JSON.stringify(summary)} ${events.find((e) => e.event === "failed")?.code}`);
    assert.equal(summary?.skipped, files);
    assert.equal(summary?.failed, 0);
  });
});
