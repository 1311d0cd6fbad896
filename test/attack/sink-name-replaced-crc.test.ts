/**
 * The file sink remembers a stored file's CRC32C for the quick check. It
 * remembered it under whatever its name held when it looked after naming
 * it, which may be another file by then: with `overwrite`, another upload
 * renamed over the name while this one fsynced the directory (eight
 * overlapping uploads of one name, same size, different bytes: in 5 of 200
 * rounds the quick check answered the CRC32C of bytes not on disk; 4 of 200
 * with half of them bundles, once uploads were fixed); without it, a local
 * writer's rename over the name did the same, every round; and so did a
 * bundle's entry named the slow way — on the thread pool, or by a rename
 * on a file system without hard links (exFAT, vfat: link fails EPERM).
 * A sender holding the lost bytes would skip its file. Now the CRC is
 * remembered only for the inode written. Here the name is replaced, through
 * an inotify watch, as soon as the upload or the entry put its file there.
 * Real server, real sockets.
 */
import assert from "node:assert/strict";
import fs, { type FSWatcher, renameSync, watch, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import { type BundleResult, encodeBundle, FILE_BUNDLE_ROUTE, FILE_ROUTE } from "../../src/index.ts";
import { FILE_CHECK_ROUTE } from "../../src/node/file-sink.ts";
import { fileServer } from "../helpers/file-server.ts";

const SIZE = 5000;

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

/** Hard links fail (EPERM) until the returned function puts them back, as on exFAT or vfat. */
function withoutHardLinks(): () => void {
  const noLinks = () => Object.assign(new Error("EPERM: operation not permitted, link"), { code: "EPERM" });
  const { linkSync } = fs;
  const { link } = fs.promises;
  fs.linkSync = () => {
    throw noLinks();
  };
  fs.promises.link = () => Promise.reject(noLinks());
  syncBuiltinESMExports();
  return () => {
    fs.linkSync = linkSync;
    fs.promises.link = link;
    syncBuiltinESMExports();
  };
}

/**
 * `rounds` files stored by `how` into a sink (`overwrite` or not), each name replaced by a local writer's
 * rename as soon as the file appears under it; then the quick check must answer the CRC32C of what is
 * there, or none (the sender sends) — never the upload's, which lost the name.
 */
async function race(how: "upload" | "bundle", overwrite: boolean, rounds: number): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), "pointsub-atk-name-crc-"));
  cleanup.push(() => rm(work, { recursive: true, force: true }));
  const dir = join(work, "in");
  const { conn } = await fileServer(dir, cleanup, { sink: { overwrite } });
  await mkdir(join(work, "theirs"));
  let watcher: FSWatcher | undefined;
  try {
    for (let round = 0; round < rounds; round++) {
      const name = `r${round}.bin`;
      const ours = Buffer.alloc(SIZE, 2 * round + 1);
      const theirs = Buffer.alloc(SIZE, 2 * round + 2);
      const theirPath = join(work, "theirs", name);
      writeFileSync(theirPath, theirs);
      let replaced = false;
      watcher = watch(dir, (_event, file) => {
        if (file !== name || replaced) return;
        replaced = true;
        renameSync(theirPath, join(dir, name));
      });
      if (how === "upload") {
        const id = `name-crc-race-${round}`.padEnd(40, "x");
        await conn.sendStream(FILE_ROUTE, [ours], { transferId: id, meta: { path: name }, total: SIZE });
      } else {
        const bundle = encodeBundle([{ path: name, content: ours }]);
        const answer = await conn.sendStream(FILE_BUNDLE_ROUTE, [bundle], { total: bundle.length });
        const [r] = (JSON.parse(new TextDecoder().decode(answer)) as { files: (BundleResult & { crc32c?: string })[] })
          .files;
        assert.equal(r.crc32c, crc32cHex(crc32c(ours)));
      }
      watcher.close();
      assert.ok(replaced, "the watch saw the name");
      const disk = await readFile(join(dir, name));
      assert.deepEqual(disk, theirs);
      const answer = JSON.parse(
        new TextDecoder().decode(
          await conn.request(
            FILE_CHECK_ROUTE,
            new TextEncoder().encode(JSON.stringify({ files: [{ path: name, size: SIZE }] })),
          ),
        ),
      ) as { files: [{ size: number; crc32c?: string }] };
      assert.equal(answer.files[0].size, SIZE);
      if (answer.files[0].crc32c !== undefined)
        assert.equal(answer.files[0].crc32c, crc32cHex(crc32c(disk)), `round ${round}`);
    }
  } finally {
    watcher?.close();
  }
}

describe("attack: a name replaced right after the file sink named it", () => {
  for (const how of ["upload", "bundle"] as const) {
    it(`with overwrite: the quick check never answers the CRC32C of bytes that are not under the name (${how})`, () =>
      race(how, true, 8));
  }

  it("without overwrite: the quick check never answers the CRC32C of bytes that are not under the name (upload)", () =>
    race("upload", false, 4));

  it("without overwrite, hard links refused (a bundle entry named by rename): the same (bundle)", async () => {
    const restore = withoutHardLinks();
    try {
      await race("bundle", false, 4);
    } finally {
      restore();
    }
  });
});
