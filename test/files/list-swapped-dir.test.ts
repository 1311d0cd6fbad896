/**
 * A listing whose directory is swapped for a symbolic link (to a directory
 * outside the served one) after `fileSource` checked it and before it read
 * it: the read follows the link. A download checks its file's real path for
 * this; a listing did not, and answered the names, sizes and times of the
 * directory the link led to. Now nothing of it is listed: a subdirectory of
 * a recursive listing is left out, the directory asked for is ERR_NOT_FOUND.
 * The swap is made inside `opendir` (the binding `dir-names.ts` imports
 * follows the module object: `syncBuiltinESMExports`), so it always falls
 * between the check and the read. Real sockets.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, createServer, FILE_LIST_ROUTE, fileSource, type PointSubError } from "../../src/index.ts";

/** The directory whose next opendir first swaps it for a link to `swapTo` (set by each test). */
let swapAt = "";
let swapTo = "";
const realOpendir = fs.promises.opendir;
const realOf = (path: string) => {
  try {
    return fs.realpathSync(path);
  } catch {
    return "";
  }
};
(fs.promises as { opendir: unknown }).opendir = async (path: fs.PathLike, options?: fs.OpenDirOptions) => {
  // The directory by its path, or held (read through its descriptor, /proc/self/fd/N: its real path).
  if (swapAt !== "" && (String(path) === swapAt || realOf(String(path)) === swapAt)) {
    const at = swapAt;
    swapAt = "";
    await rename(at, `${at}.moved`);
    await symlink(swapTo, at);
  }
  return realOpendir(path, options);
};
syncBuiltinESMExports();

describe("fileSource: a directory swapped for a link while it is listed", () => {
  let work: string;
  let served: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-list-swap-"));
    served = join(work, "served");
    await mkdir(join(work, "secret"), { recursive: true });
    await writeFile(join(work, "secret", "private.key"), "s3cret");
  });
  after(async () => {
    (fs.promises as { opendir: unknown }).opendir = realOpendir;
    syncBuiltinESMExports();
    await rm(work, { recursive: true, force: true });
  });

  const ask = async (body: object) => {
    await rm(served, { recursive: true, force: true });
    await mkdir(join(served, "sub"), { recursive: true });
    await writeFile(join(served, "sub", "ok.txt"), "ok");
    await writeFile(join(served, "top.txt"), "top");
    swapAt = join(served, "sub");
    swapTo = join(work, "secret");
    const server = createServer();
    server.handle(FILE_LIST_ROUTE, fileSource(served, { crcRecords: false }).list);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      return JSON.parse(new TextDecoder().decode(await conn.request(FILE_LIST_ROUTE, JSON.stringify(body))));
    } finally {
      assert.equal(swapAt, "", "the swap was made");
      await conn.close();
      await server.close({ timeoutMs: 100 });
    }
  };

  it("a recursive listing leaves the swapped subdirectory out (it listed sub/private.key from outside)", async () => {
    const r = await ask({ recursive: true });
    assert.deepEqual(
      r.entries.map((e: { path: string }) => e.path),
      ["top.txt"],
    );
  });

  it("the directory asked for, swapped, is ERR_NOT_FOUND (its outside entries were the answer)", async () => {
    await assert.rejects(ask({ path: "sub" }), (e: PointSubError) => e.code === "ERR_NOT_FOUND");
  });
});
