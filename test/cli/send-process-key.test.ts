/**
 * `send` of a larger file whose resume key cannot be read or made in the state directory (a directory at
 * its name here; a key a `sudo` run left, a read-only home) sends with a key for this process, so a re-run
 * of an interrupted send resumes nothing: it says so on stderr (a `warning` event with --json). Before, it
 * said nothing and the re-run started over, against README's "a re-run … continues where the server stopped".
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runCli } from "../helpers/cli-run.ts";
import { fileServer } from "../helpers/file-server.ts";

describe("send with a resume key for this process only", () => {
  let work: string;
  let url: string;
  const cleanup: (() => unknown)[] = [];
  const envOf = (state: string): NodeJS.ProcessEnv => {
    const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: state };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    return env;
  };

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-process-key-"));
    await mkdir(join(work, "inbox"));
    ({ url } = await fileServer(join(work, "inbox"), cleanup, { sink: { durability: "none" } }));
  });
  after(async () => {
    for (const c of cleanup.reverse()) await c();
    await rm(work, { recursive: true, force: true });
  });

  it("says a re-run will start over (stderr, or a warning event); a usable key says nothing", async () => {
    const bad = join(work, "bad-state");
    // No key file can be read there: a directory has its name.
    await mkdir(join(bad, "resume.key"), { recursive: true });
    for (const name of ["a.bin", "b.bin", "c.bin"]) await writeFile(join(work, name), Buffer.alloc(200_000, name));
    const [plain, json, fine] = await Promise.all([
      runCli(["send", join(work, "a.bin"), "--to", url], envOf(bad), 30_000),
      runCli(["send", join(work, "b.bin"), "--to", url, "--json"], envOf(bad), 30_000),
      runCli(["send", join(work, "c.bin"), "--to", url], envOf(join(work, "good-state")), 30_000),
    ]);
    assert.equal(plain.code, 0, plain.stdout + plain.stderr);
    assert.match(
      plain.stderr,
      /^pointsub: warning: the resume key [^\n]*resume\.key cannot be read or made[^\n]*start over[^\n]*\n$/,
    );
    assert.match(plain.stdout, /a\.bin: sent /);
    assert.equal(json.code, 0, json.stdout + json.stderr);
    const events = json.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { event: string; message?: string });
    assert.ok(
      events.some((e) => e.event === "warning" && /start over/.test(String(e.message))),
      json.stdout,
    );
    assert.ok(events.some((e) => e.event === "sent"));
    assert.equal(fine.code, 0, fine.stdout + fine.stderr);
    assert.equal(fine.stderr, "");
  });
});
