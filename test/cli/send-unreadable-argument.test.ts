/**
 * A file argument `send` may not read (mode 000) is what README promises for an argument that is
 * not a readable file: exit 1, one line `ERR_INVALID_ARGUMENT`, nothing sent (every argument is
 * checked before `send` connects). Before, it failed alone once sent (`ERR_SOURCE: EACCES`) and the
 * other files were sent. As root the command runs without the capabilities that override file permissions.
 */
import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileServer } from "../helpers/file-server.ts";
import { noUnprivileged, runCliUnprivileged } from "../helpers/unprivileged.ts";

describe("send: a file argument it may not read", { skip: noUnprivileged }, () => {
  let work: string;
  const cleanup: (() => unknown)[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-send-unreadable-arg-"));
  });
  after(async () => {
    for (const c of cleanup.reverse()) await c();
    await rm(work, { recursive: true, force: true });
  });

  it("exit 1, one line ERR_INVALID_ARGUMENT naming it, nothing sent", async () => {
    const inbox = join(work, "inbox");
    await mkdir(inbox);
    const ok = join(work, "ok.txt");
    const locked = join(work, "locked.txt");
    await writeFile(ok, "fine\n");
    await writeFile(locked, "secret\n");
    await chmod(locked, 0o000);
    const { url } = await fileServer(inbox, cleanup, { sink: { durability: "none" } });
    const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    const r = await runCliUnprivileged(["send", ok, locked, "--to", url], env, [work, ok, locked], 30_000);
    assert.equal(r.code, 1, `${r.stdout}${r.stderr}`);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr, `pointsub: ERR_INVALID_ARGUMENT: ${locked} is not a readable file (permission denied)\n`);
    assert.deepEqual(
      (await readdir(inbox)).filter((n) => !n.startsWith(".")),
      [],
    );
  });
});
