/**
 * `get` retrying a request a `serve --rate-limit` refused waits at least as long as the server said
 * ("retry in 999 ms"), not its own shorter backoff: before, the first retry came after 0.2 s, was
 * limited again, and the `--retries` were spent within seconds. Real `serve` and `get` processes.
 */
import assert from "node:assert/strict";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runCli } from "../helpers/cli-run.ts";
import { cliWorkspace, type ServeProcess, startServeProcess } from "../helpers/serve-process.ts";

describe("get: a server's rate-limit hint", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let serve: ServeProcess | undefined;

  before(async () => {
    ({ work, env } = await cliWorkspace("pointsub-rate-limit-hint-"));
  });
  after(async () => {
    await serve?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("each retry after ERR_RATE_LIMITED waits at least its 'retry in'; every file arrives", async () => {
    const inbox = join(work, "inbox");
    await mkdir(inbox);
    for (let i = 0; i < 3; i++) await writeFile(join(inbox, `f${i}.txt`), `file ${i}\n`);
    serve = await startServeProcess(["--dir", inbox, "--rate-limit", "1"], { env, workers: 1 });
    const names = ["f0.txt", "f1.txt", "f2.txt"];
    const r = await runCli(
      ["get", ...names, "--from", serve.url, "--out", join(work, "out"), "-j", "1", "--json"],
      env,
      60_000,
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const events = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { event?: string; code?: string; delayMs?: number; message?: string });
    const limited = events.filter((e) => e.event === "retry" && e.code === "ERR_RATE_LIMITED");
    assert.ok(limited.length > 0, r.stdout);
    for (const e of limited) {
      const hint = Number(/retry in (\d+) ms/.exec(String(e.message))?.[1]);
      assert.ok(Number.isFinite(hint), String(e.message));
      assert.ok((e.delayMs ?? 0) >= hint, `${e.delayMs} ms for ${e.message}`);
    }
    assert.equal(events.filter((e) => e.event === "received").length, 3);
  });
});
