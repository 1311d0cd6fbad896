/**
 * Without `overwrite` the file sink still remembered a stored small file's
 * CRC32C (for the quick check) under whatever its name held when it looked
 * after naming it: an upload cannot replace the name then, but a local
 * writer can (a rename over it while the sink fsynced the directory), and
 * the quick check answered the upload's CRC32C for the other file's bytes
 * (a sender holding the upload's bytes skips its file). Now the CRC is
 * remembered only for the inode written, with or without overwrite. Here
 * the name is replaced, through an inotify watch, between the sink's link
 * and its look. Real server, real sockets.
 */
import assert from "node:assert/strict";
import { type FSWatcher, renameSync, watch, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import { FILE_ROUTE } from "../../src/index.ts";
import { FILE_CHECK_ROUTE } from "../../src/node/file-sink.ts";
import { fileServer } from "../helpers/file-server.ts";

const SIZE = 5000;
const ROUNDS = 4;

describe("attack: a name replaced right after an upload (no overwrite) named it", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("the quick check never answers the CRC32C of bytes that are not under the name", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-atk-link-crc-"));
    cleanup.push(() => rm(work, { recursive: true, force: true }));
    const dir = join(work, "in");
    const { conn } = await fileServer(dir, cleanup);
    await mkdir(join(work, "theirs"));
    let watcher: FSWatcher | undefined;
    cleanup.push(() => watcher?.close());
    for (let round = 0; round < ROUNDS; round++) {
      const name = `r${round}.bin`;
      const ours = Buffer.alloc(SIZE, 2 * round + 1);
      const theirs = Buffer.alloc(SIZE, 2 * round + 2);
      const theirPath = join(work, "theirs", name);
      writeFileSync(theirPath, theirs);
      // A local writer replaces the name as soon as the upload put its file there.
      let replaced = false;
      watcher = watch(dir, (_event, file) => {
        if (file !== name || replaced) return;
        replaced = true;
        renameSync(theirPath, join(dir, name));
      });
      const id = `link-crc-race-${round}`.padEnd(40, "x");
      await conn.sendStream(FILE_ROUTE, [ours], { transferId: id, meta: { path: name }, total: SIZE });
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
      // The CRC32C of what is there, or none (the sender then sends): never the upload's.
      if (answer.files[0].crc32c !== undefined)
        assert.equal(answer.files[0].crc32c, crc32cHex(crc32c(disk)), `round ${round}`);
    }
  });
});
