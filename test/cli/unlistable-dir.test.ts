/**
 * `send -r`'s walk: a directory inside the tree that cannot be listed (gone
 * since its parent was listed, unreadable) is skipped with a line, as a
 * special file is, and the rest of the tree goes; a directory argument that
 * cannot be listed is one ERR_SOURCE naming it. Before: either aborted the
 * whole send with the fs error as "ERR_HANDLER" (the remote handler's code).
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { collectFiles } from "../../src/cli/send.ts";

describe("send -r: directories that cannot be listed", () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-unlistable-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("one inside the tree is skipped with its reason; the files around it are still sent", async () => {
    const tree = join(work, "tree");
    await mkdir(join(tree, "b"), { recursive: true });
    await writeFile(join(tree, "a.txt"), "a");
    await writeFile(join(tree, "b", "x.txt"), "x");
    await writeFile(join(tree, "c.txt"), "c");
    const skipped: [string, string][] = [];
    // Found in name order: a.txt, then b/ (removed when a.txt is seen: listed by its parent, gone when walked).
    const items = await collectFiles(
      [tree],
      true,
      (path, why) => skipped.push([path, why]),
      () => {},
      (it) => {
        if (it.target === "tree/a.txt") rmSync(join(tree, "b"), { recursive: true });
        return undefined;
      },
    );
    assert.deepEqual(
      items.map((i) => i.target),
      ["tree/a.txt", "tree/c.txt"],
    );
    assert.deepEqual(skipped, [[join(tree, "b"), "cannot be listed (ENOENT)"]]);
  });

  it("a directory argument that cannot be listed is one ERR_SOURCE naming it", async () => {
    const gone = join(work, "gone");
    await mkdir(gone);
    await assert.rejects(
      collectFiles([gone], true, undefined, () => rmSync(gone, { recursive: true })),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, "ERR_SOURCE");
        assert.equal(err.message, `${gone}: cannot be listed (ENOENT)`);
        return true;
      },
    );
  });
});
