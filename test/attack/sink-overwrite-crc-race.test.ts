/**
 * With `overwrite`, the file sink remembered a stored file's CRC32C (for
 * the quick check) under whatever its name held when it looked after
 * naming it, which may be another file by then: another upload (or a local
 * writer) renamed over the name while this one fsynced the directory.
 * Eight overlapping uploads of one name, same size, different bytes: in 5
 * of 200 rounds the quick check then answered the CRC32C of bytes that were
 * not on disk (an upload that had lost the name), so a sender holding those
 * bytes would skip its file. Now the CRC is remembered only for the inode
 * that was written, for single uploads and bundles' entries alike (4 of 200
 * rounds wrong with half the uploads bundles, once uploads were fixed).
 * Here the name is replaced, through an inotify watch, between the sink's
 * rename and its look. Real server, real sockets.
 */
import assert from "node:assert/strict";
import { type FSWatcher, renameSync, watch, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import { type BundleResult, encodeBundle, FILE_BUNDLE_ROUTE, FILE_ROUTE } from "../../src/index.ts";
import { FILE_CHECK_ROUTE } from "../../src/node/file-sink.ts";
import { fileServer } from "../helpers/file-server.ts";

const SIZE = 5000;
const decodeBundleAnswer = (b: Uint8Array) =>
  (JSON.parse(new TextDecoder().decode(b)) as { files: (BundleResult & { crc32c?: string })[] }).files;
const ROUNDS = 8;

describe("attack: a name replaced right after an overwriting upload named it", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  for (const how of ["upload", "bundle"] as const) {
    it(`the quick check never answers the CRC32C of bytes that are not under the name (${how})`, async () => {
      const work = await mkdtemp(join(tmpdir(), "pointsub-atk-overwrite-crc-"));
      cleanup.push(() => rm(work, { recursive: true, force: true }));
      const dir = join(work, how);
      const { conn } = await fileServer(dir, cleanup, { sink: { overwrite: true } });
      await mkdir(join(work, `theirs-${how}`));
      let watcher: FSWatcher | undefined;
      cleanup.push(() => watcher?.close());
      for (let round = 0; round < ROUNDS; round++) {
        const name = `r${round}.bin`;
        const ours = Buffer.alloc(SIZE, 2 * round + 1);
        const theirs = Buffer.alloc(SIZE, 2 * round + 2);
        const theirPath = join(work, `theirs-${how}`, name);
        writeFileSync(theirPath, theirs);
        // Another writer replaces the name as soon as the upload put its file there.
        let replaced = false;
        watcher = watch(dir, (_event, file) => {
          if (file !== name || replaced) return;
          replaced = true;
          renameSync(theirPath, join(dir, name));
        });
        if (how === "upload") {
          const id = `overwrite-crc-race-${round}`.padEnd(40, "x");
          await conn.sendStream(FILE_ROUTE, [ours], { transferId: id, meta: { path: name }, total: SIZE });
        } else {
          const bundle = encodeBundle([{ path: name, content: ours }]);
          const r = decodeBundleAnswer(await conn.sendStream(FILE_BUNDLE_ROUTE, [bundle], { total: bundle.length }));
          assert.equal(r[0].crc32c, crc32cHex(crc32c(ours)));
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
        // The CRC32C of what is there, or none (the sender then sends): never the upload's, which lost the name.
        if (answer.files[0].crc32c !== undefined)
          assert.equal(answer.files[0].crc32c, crc32cHex(crc32c(disk)), `round ${round}`);
      }
    });
  }
});
