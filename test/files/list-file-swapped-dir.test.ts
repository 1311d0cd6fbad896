/**
 * A listing of one file (`ls sub/f.txt`) whose directory on the way is
 * swapped for a symbolic link (to a directory outside the served one)
 * between `fileSource`'s lstat of the directory and its lstat of the file:
 * the second lstat followed the link, and the size and time of the file
 * outside were listed (a directory's listing is read through held
 * directories; a file's was not). Now the file is looked at again through
 * its directories held: the swapped one is ERR_NOT_FOUND. The swap is made
 * inside the file's lstat by its path (`syncBuiltinESMExports`), so it
 * always falls between the two. Real sockets.
 */
import assert from "node:assert/strict";
import fs, { renameSync, symlinkSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, createServer, FILE_LIST_ROUTE, fileSource, type PointSubError } from "../../src/index.ts";

/** The path whose next lstat first swaps `swapDir` for a link to `swapTo` (set by the test). */
let swapAt = "";
let swapDir = "";
let swapTo = "";
const realLstat = fs.promises.lstat;
(fs.promises as { lstat: unknown }).lstat = (path: fs.PathLike, options?: fs.StatOptions) => {
  if (swapAt !== "" && String(path) === swapAt) {
    swapAt = "";
    renameSync(swapDir, `${swapDir}.moved`);
    symlinkSync(swapTo, swapDir);
  }
  return realLstat(path, options);
};
syncBuiltinESMExports();

describe("fileSource: a file's directory swapped for a link while the file is listed", () => {
  let work: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-list-file-swap-"));
  });
  after(async () => {
    (fs.promises as { lstat: unknown }).lstat = realLstat;
    syncBuiltinESMExports();
    await rm(work, { recursive: true, force: true });
  });

  it("is ERR_NOT_FOUND: the outside file's size and time are not listed", async () => {
    const served = join(work, "served");
    const secret = join(work, "secret");
    await mkdir(join(served, "sub"), { recursive: true });
    await mkdir(secret);
    await writeFile(join(served, "sub", "f.txt"), "ok");
    await writeFile(join(secret, "f.txt"), "a much longer private file");
    const server = createServer();
    server.handle(FILE_LIST_ROUTE, fileSource(served, { crcRecords: false }).list);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const ask = async () =>
        JSON.parse(
          new TextDecoder().decode(await conn.request(FILE_LIST_ROUTE, JSON.stringify({ path: "sub/f.txt" }))),
        );
      // Unswapped: the file itself.
      const plain = await ask();
      assert.deepEqual(
        plain.entries.map((e: { path: string; size: number }) => [e.path, e.size]),
        [["sub/f.txt", 2]],
      );
      swapAt = join(served, "sub", "f.txt");
      swapDir = join(served, "sub");
      swapTo = secret;
      await assert.rejects(ask(), (e: PointSubError) => e.code === "ERR_NOT_FOUND");
      assert.equal(swapAt, "", "the swap was made");
    } finally {
      swapAt = "";
      await conn.close();
      await server.close({ timeoutMs: 100 });
    }
  });
});
