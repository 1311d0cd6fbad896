/**
 * `get` of a file whose copy under --out has the listed size but cannot be read (mode 000): it is
 * not known to be the same, so it is downloaded and replaced, and the other names arrive. Before,
 * the quick check's read of it threw EACCES out of the command: `ERR_HANDLER: EACCES: permission
 * denied`, exit 1, no file downloaded. As root (who reads anything) the command runs as `nobody`.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CLI_MAIN } from "../helpers/cli-run.ts";
import { fileServer } from "../helpers/file-server.ts";

const NOBODY = 65534;
const root = process.getuid?.() === 0;
const hasSetpriv = spawnSync("setpriv", ["--version"]).status === 0;

describe("get: a local copy it cannot read", { skip: root && !hasSetpriv ? "root without setpriv" : false }, () => {
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
    const args = [CLI_MAIN, "get", "a.txt", "b.txt", "--from", url, "--out", out];
    let command = process.execPath;
    if (root) {
      for (const p of [work, out, join(out, "a.txt")]) await chown(p, NOBODY, NOBODY);
      args.unshift(`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", process.execPath);
      command = "setpriv";
    }
    const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const code = await new Promise<number | null>((r) => child.on("close", r));
    clearTimeout(killer);
    assert.equal(code, 0, `${stdout}${stderr}`);
    assert.equal(stderr, "");
    assert.match(stdout, /a\.txt: received /);
    assert.match(stdout, /b\.txt: received /);
    assert.equal(await readFile(join(out, "a.txt"), "utf8"), "server\n");
    assert.equal(await readFile(join(out, "b.txt"), "utf8"), "other\n");
  });
});
