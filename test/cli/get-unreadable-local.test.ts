/**
 * `get` of a file whose copy under --out has the listed size but cannot be read (mode 000): it is
 * not known to be the same, so it is downloaded and replaced, and the other names arrive. Before,
 * the quick check's read of it threw EACCES out of the command: `ERR_HANDLER: EACCES: permission
 * denied`, exit 1, no file downloaded. As root (who reads anything) the command runs without the capabilities that override file permissions.
 */
import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileServer } from "../helpers/file-server.ts";
import { noUnprivileged, runCliUnprivileged } from "../helpers/unprivileged.ts";

describe("get: a local copy it cannot read", { skip: noUnprivileged }, () => {
  let work: string;
  const cleanup: (() => unknown)[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-get-unreadable-"));
  });
  after(async () => {
    for (const c of cleanup.reverse()) await c();
    await rm(work, { recursive: true, force: true });
  });

  it("is downloaded and replaced; the other names arrive; exit 0", async () => {
    const inbox = join(work, "inbox");
    const out = join(work, "out");
    await mkdir(inbox);
    await mkdir(out);
    await writeFile(join(inbox, "a.txt"), "server\n");
    await writeFile(join(inbox, "b.txt"), "other\n");
    const { url } = await fileServer(inbox, cleanup, { sink: { durability: "none" } });
    // Same size as the server's, unreadable.
    await writeFile(join(out, "a.txt"), "local!\n");
    await chmod(join(out, "a.txt"), 0o000);
    const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    const r = await runCliUnprivileged(
      ["get", "a.txt", "b.txt", "--from", url, "--out", out],
      env,
      [work, out, join(out, "a.txt")],
      30_000,
    );
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    assert.equal(r.stderr, "");
    assert.match(r.stdout, /a\.txt: received /);
    assert.match(r.stdout, /b\.txt: received /);
    assert.equal(await readFile(join(out, "a.txt"), "utf8"), "server\n");
    assert.equal(await readFile(join(out, "b.txt"), "utf8"), "other\n");
  });
});
