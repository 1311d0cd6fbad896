/**
 * Directories under the served one that may be searched but not read: one
 * of mode 0711 (its files downloadable and listable by name) and a 0733
 * drop box (uploads go in, nothing is listed). A path through either only
 * needs search permission, and so did serving and receiving under them;
 * the directories held open on a file's way (`beneath.ts`) were opened for
 * reading, so a download, a listing of a file and an upload under them
 * failed EACCES. They are now held with O_PATH (Linux). The server runs in
 * a child, as user 65534 when the test runs as root (whom permissions do
 * not bind). Real sockets.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, FILE_LIST_ROUTE, sendFile } from "../../src/index.ts";
import { runCli } from "../helpers/cli-run.ts";

describe("directories that may be searched but not read", { skip: process.platform !== "linux" }, () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-search-only-"));
  });
  after(async () => {
    await chmod(join(work, "served", "locked"), 0o755).catch(() => {});
    await chmod(join(work, "served", "box"), 0o755).catch(() => {});
    await rm(work, { recursive: true, force: true });
  });

  it("a file under one is downloaded and listed, an upload into one is stored (they failed EACCES)", async () => {
    const served = join(work, "served");
    await mkdir(join(served, "locked"), { recursive: true });
    await mkdir(join(served, "box"));
    await writeFile(join(served, "locked", "f.txt"), "under a search-only directory\n");
    const src = join(work, "up.txt");
    await writeFile(src, "into the drop box\n");
    // The owner (the test's user, or root for user 65534 as "others") may search, not read.
    await chmod(join(served, "locked"), 0o311);
    await chmod(join(served, "box"), 0o333);
    await chmod(served, 0o777);
    await chmod(work, 0o755);
    const asRoot = process.getuid?.() === 0;
    // The server's own state (its resume key) where its user may write.
    const childState = join(work, "child-state");
    await mkdir(childState);
    await chmod(childState, 0o777);
    const child = spawn(process.execPath, [join(import.meta.dirname, "search-only-dirs-child.ts"), served], {
      stdio: ["pipe", "pipe", "inherit"],
      env: { ...process.env, POINTSUB_STATE_DIR: childState },
      ...(asRoot ? { uid: 65534, gid: 65534 } : {}),
    });
    const exited = new Promise((resolve) => child.on("exit", resolve));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = "";
        child.stdout.on("data", (d) => {
          out += d;
          if (out.includes("\n")) resolve(out.trim());
        });
        child.on("exit", (code) => reject(new Error(`the server exited (${code})`)));
      });
      const conn = await connect(url);
      try {
        const listed = JSON.parse(
          new TextDecoder().decode(await conn.request(FILE_LIST_ROUTE, JSON.stringify({ path: "locked/f.txt" }))),
        );
        assert.deepEqual(
          listed.entries.map((e: { path: string; size: number }) => [e.path, e.size]),
          [["locked/f.txt", 30]],
        );
        const receipt = await sendFile(conn, src, { relativePath: "box/up.txt" });
        assert.equal(receipt.size, 18);
      } finally {
        await conn.close();
      }
      await chmod(join(served, "box"), 0o755);
      assert.equal(await readFile(join(served, "box", "up.txt"), "utf8"), "into the drop box\n");
      const out = join(work, "out");
      await mkdir(out);
      const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
      delete env.POINTSUB_URL;
      const r = await runCli(["get", "locked/f.txt", "--from", url, "--out", out, "--retries", "0"], env, 60_000);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await readFile(join(out, "f.txt"), "utf8"), "under a search-only directory\n");
      assert.ok((await stat(join(out, "f.txt"))).isFile());
    } finally {
      child.stdin?.end();
      await exited;
    }
  });
});
