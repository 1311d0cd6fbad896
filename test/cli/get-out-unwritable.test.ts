/**
 * `get --out DIR` where DIR exists but this process may not write to it is a usage error, as an
 * --out it cannot make is: exit 2, one line naming --out, before the server is asked for anything.
 * Before, every file was asked for and failed with "the receiver could not store the file
 * (EACCES)", exit 1. As root (who writes anywhere) the command runs without the capabilities that override file permissions.
 */
import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileServer } from "../helpers/file-server.ts";
import { noUnprivileged, runCliUnprivileged } from "../helpers/unprivileged.ts";

describe("get: an --out it may not write to", { skip: noUnprivileged }, () => {
  let work: string;
  const cleanup: (() => unknown)[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-get-out-ro-"));
  });
  after(async () => {
    for (const c of cleanup.reverse()) await c();
    await rm(work, { recursive: true, force: true });
  });

  it("exit 2, one line ERR_INVALID_ARGUMENT naming --out, nothing asked", async () => {
    const out = join(work, "out");
    // Read and search only (as root, the command runs without the capabilities that override that).
    await mkdir(out, { mode: 0o555 });
    // Nothing may be asked: any connection counts.
    let connections = 0;
    const server = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanup.push(() => new Promise((r) => server.close(r)));
    const url = `tcp://127.0.0.1:${(server.address() as { port: number }).port}`;
    const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    const r = await runCliUnprivileged(["get", "a.txt", "--from", url, "--out", out], env, [work], 30_000);
    assert.equal(r.code, 2, `${r.stdout}${r.stderr}`);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /^pointsub: ERR_INVALID_ARGUMENT: --out [^\n]*out: not writable \(EACCES\)\n$/);
    assert.equal(connections, 0);
    assert.deepEqual(await readdir(out), []);
  });

  it("its files already whole are skipped (exit 0); a file to write there is still exit 2 before any download", async () => {
    // Before: exit 2 for a re-run into a directory made read-only since, though it had nothing to write.
    // (`out` read and search only: as root, the command runs without the capabilities that override that.)
    const inbox = join(work, "inbox");
    const out = join(work, "ro");
    await mkdir(inbox);
    await mkdir(out);
    await writeFile(join(inbox, "a.txt"), "server a\n");
    await writeFile(join(inbox, "b.txt"), "server b\n");
    await writeFile(join(out, "a.txt"), "server a\n");
    await chmod(out, 0o555);
    const { url } = await fileServer(inbox, cleanup, { sink: { durability: "none" } });
    const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(work, "state2") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    const [whole, other] = await Promise.all([
      runCliUnprivileged(["get", "a.txt", "--from", url, "--out", out], env, [work], 30_000),
      runCliUnprivileged(["get", "a.txt", "b.txt", "--from", url, "--out", out], env, [work], 30_000),
    ]);
    assert.equal(whole.code, 0, `${whole.stdout}${whole.stderr}`);
    assert.match(whole.stdout, /a\.txt: skipped, already here whole/);
    assert.equal(whole.stderr, "");
    assert.equal(other.code, 2, `${other.stdout}${other.stderr}`);
    assert.match(other.stderr, /^pointsub: ERR_INVALID_ARGUMENT: --out [^\n]*ro: not writable \(EACCES\)\n$/);
    assert.deepEqual((await readdir(out)).sort(), ["a.txt"]);
  });
});
