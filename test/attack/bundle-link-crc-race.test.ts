/**
 * A bundle's entry (no overwrite) named the slow way — on the thread pool,
 * or by a rename on a file system without hard links (exFAT, vfat: link
 * fails EPERM) — had its CRC32C remembered under whatever its name held
 * once named: a local writer's rename over it in between made the quick
 * check answer the entry's CRC32C for the other file's bytes (a sender
 * holding the entry's bytes skips its file). Now, named the slow way, the
 * CRC is remembered only for the inode written. Here hard links fail as on
 * such a file system, and the name is replaced through an inotify watch as
 * soon as the entry appears. Real server, real sockets.
 */
import assert from "node:assert/strict";
import fs, { type FSWatcher, renameSync, watch, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import { type BundleResult, encodeBundle, FILE_BUNDLE_ROUTE } from "../../src/index.ts";
import { FILE_CHECK_ROUTE } from "../../src/node/file-sink.ts";
import { fileServer } from "../helpers/file-server.ts";

const SIZE = 5000;
const ROUNDS = 4;

describe("attack: a bundle entry's name replaced right after it was named without hard links", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("the quick check never answers the CRC32C of bytes that are not under the name", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-atk-bundle-link-crc-"));
    cleanup.push(() => rm(work, { recursive: true, force: true }));
    const dir = join(work, "in");
    const { conn } = await fileServer(dir, cleanup);
    await mkdir(join(work, "theirs"));
    const noLinks = () => Object.assign(new Error("EPERM: operation not permitted, link"), { code: "EPERM" });
    const { linkSync } = fs;
    const { link } = fs.promises;
    fs.linkSync = () => {
      throw noLinks();
    };
    fs.promises.link = () => Promise.reject(noLinks());
    syncBuiltinESMExports();
    cleanup.push(() => {
      fs.linkSync = linkSync;
      fs.promises.link = link;
      syncBuiltinESMExports();
    });
    let watcher: FSWatcher | undefined;
    cleanup.push(() => watcher?.close());
    for (let round = 0; round < ROUNDS; round++) {
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
      const bundle = encodeBundle([{ path: name, content: ours }]);
      const [r] = (
        JSON.parse(
          new TextDecoder().decode(await conn.sendStream(FILE_BUNDLE_ROUTE, [bundle], { total: bundle.length })),
        ) as { files: (BundleResult & { crc32c?: string })[] }
      ).files;
      assert.equal(r.crc32c, crc32cHex(crc32c(ours)));
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
  });
});
