/**
 * The served directory's `.pointsub/` removed while the sink runs (a user
 * cleaning up hidden directories): the CRC store had made it once and kept
 * that as known, so every later large upload's record failed to be written
 * (ENOENT) until a restart, and another worker or a restarted `serve` read
 * those files again for each quick check. Now a record that finds it gone
 * makes it again. Real server, real sockets.
 */
import assert from "node:assert/strict";
import { lstat, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { crc32c } from "../../src/codec/crc32c.ts";
import { FILE_ROUTE } from "../../src/index.ts";
import { META_DIR } from "../../src/node/file-crc-store.ts";
import { fileServer } from "../helpers/file-server.ts";

const SIZE = 1_500_000;

describe("the CRC records' directory removed while the sink runs", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("the next large upload makes it again and records its CRC32C there", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-crc-meta-removed-"));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const { conn } = await fileServer(dir, cleanup);
    const send = (path: string, content: Buffer) =>
      conn.sendStream(FILE_ROUTE, [content], {
        transferId: `crc-meta-removed-${path.slice(0, 3)}`.padEnd(40, "x"),
        meta: { path },
        total: SIZE,
      });
    await send("one.bin", Buffer.alloc(SIZE, 1));
    assert.equal((await readdir(join(dir, META_DIR))).length, 1);
    await rm(join(dir, META_DIR), { recursive: true });
    const two = Buffer.alloc(SIZE, 2);
    await send("two.bin", two);
    const st = await lstat(join(dir, "two.bin"));
    const record = join(dir, META_DIR, `crc-${st.dev}-${st.ino}.json`);
    const r = JSON.parse(await readFile(record, "utf8").catch(() => "{}")) as { path?: string; crc?: number };
    assert.equal(r.path, "two.bin", "no record written after the directory was removed");
    assert.equal(r.crc, crc32c(two) >>> 0);
  });
});
