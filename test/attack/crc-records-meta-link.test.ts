/**
 * The served directory's CRC records (`.pointsub/`) were read, written and
 * swept through whatever had its name: a local user who swapped it for a
 * symbolic link to a directory of their own (between runs, or while the
 * sink runs) had their forged records trusted. A record names the identity
 * it is valid for (device, inode, size, times: what any lstat shows), so a
 * forged one for a stored 2 MB file made the quick check answer a CRC32C
 * of other bytes (a sender holding those bytes would skip its file, and a
 * download's "have" check would say the asker holds it), and the sweep
 * unlinked record-named files in that directory. Now the metadata
 * directory is opened without following a link (O_DIRECTORY | O_NOFOLLOW)
 * and its records named through it: a link there means no records.
 * Real server, real sockets.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import { FILE_ROUTE } from "../../src/index.ts";
import { META_DIR } from "../../src/node/file-crc-store.ts";
import { FILE_CHECK_ROUTE } from "../../src/node/file-sink.ts";
import { fileServer } from "../helpers/file-server.ts";

const SIZE = 2_000_000;

describe("attack: the CRC records' directory swapped for a symbolic link", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("forged records there are neither trusted nor swept, and none are written there", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-atk-meta-link-"));
    cleanup.push(() => rm(work, { recursive: true, force: true }));
    const dir = join(work, "in");
    const content = Buffer.alloc(SIZE, 5);
    // A first run stores a large file: its record is made.
    {
      const first: (() => unknown)[] = [];
      const { conn } = await fileServer(dir, first);
      await conn.sendStream(FILE_ROUTE, [content], {
        transferId: "m".repeat(40),
        meta: { path: "big.bin" },
        total: SIZE,
      });
      for (const f of first.reverse()) await f();
    }
    const [record] = await readdir(join(dir, META_DIR));
    assert.match(record, /^crc-\d+-\d+\.json$/);
    // Between runs, the metadata directory becomes a link to the local user's own, holding a forged record
    // (the real one's identity, another CRC) and a stale-looking record-named file.
    const real = JSON.parse(await readFile(join(dir, META_DIR, record), "utf8")) as { crc: number };
    const evil = join(work, "evil");
    await mkdir(evil);
    const forged = (real.crc ^ 0x5a5a5a5a) >>> 0;
    await writeFile(join(evil, record), JSON.stringify({ ...real, crc: forged }));
    await writeFile(join(evil, "crc-1-2.json"), "keep me");
    await rename(join(dir, META_DIR), join(work, "old-meta"));
    await symlink(evil, join(dir, META_DIR));

    const { conn, sink } = await fileServer(dir, cleanup);
    const ask = async (path: string, size: number) =>
      (
        JSON.parse(
          new TextDecoder().decode(
            await conn.request(FILE_CHECK_ROUTE, new TextEncoder().encode(JSON.stringify({ files: [{ path, size }] }))),
          ),
        ) as { files: [{ size: number; crc32c?: string } | null] }
      ).files[0];
    const answer = await ask("big.bin", SIZE);
    assert.equal(answer?.size, SIZE);
    assert.notEqual(answer?.crc32c, crc32cHex(forged), "the forged record was trusted");
    assert.equal(answer?.crc32c, crc32cHex(crc32c(content)));
    // Another large upload records nothing there; the sweep removes nothing there.
    const other = Buffer.alloc(SIZE, 6);
    await conn.sendStream(FILE_ROUTE, [other], {
      transferId: "n".repeat(40),
      meta: { path: "other.bin" },
      total: SIZE,
    });
    await sink.sweep();
    assert.deepEqual((await readdir(evil)).sort(), [record, "crc-1-2.json"].sort());
    assert.equal(await readFile(join(evil, "crc-1-2.json"), "utf8"), "keep me");
  });
});
