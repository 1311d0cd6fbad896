/**
 * Attack on the file sink's CRC records (session 19's files lane): the
 * metadata directory `.pointsub/` is refused as an upload's or a
 * download's first segment only when it equals `.pointsub` ignoring ASCII
 * case. Names that the file systems the CLI runs on fold to the same
 * directory pass: `.pointſub` (U+017F LONG S: Unicode case folding gives
 * `s`; APFS and HFS+ case-insensitive volumes, NTFS's upcase table, ext4
 * casefold directories), `.point\u200Csub` (HFS+ ignores U+200C: git's
 * CVE-2014-9390), `POINTS~1` (NTFS 8.3 short name of `.pointsub`). On such
 * a volume a peer downloads a record (a file's device, inode, size and
 * times) and uploads one with the same identity and a CRC of its choice:
 * the next quick check tells an uploader its file is already stored.
 * Refused names are what this test asks for (on Linux ext4 these are other
 * directories, so the test runs anywhere). Reproduction:
 * `node scripts/attack/meta-dir-aliases.ts`.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { encodeFileGetRequest } from "../../src/codec/file-routes.ts";
import { FILE_GET_ROUTE, sendFile } from "../../src/index.ts";
import { FILE_CHECK_ROUTE } from "../../src/node/file-sink.ts";
import { fileServer } from "../helpers/file-server.ts";

/** Names that alias `.pointsub` on case-insensitive (Unicode-folding), HFS+ or NTFS volumes. */
export const ALIASES = [".point\u017Fub", ".POINT\u017FUB", ".point\u200Csub", ".pointsub\uFEFF", "POINTS~1"];

describe("the CRC records' directory under names that alias it", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("uploads, quick checks and downloads under an alias of .pointsub are refused", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-atk-meta-"));
    cleanup.push(() => rm(work, { recursive: true, force: true }));
    const dir = join(work, "serve");
    const { conn } = await fileServer(dir, cleanup);
    const src = join(work, "record.json");
    writeFileSync(
      src,
      JSON.stringify({
        v: 1,
        path: "victim.bin",
        dev: 1,
        ino: 2,
        size: 3,
        mtimeMs: 4,
        ctimeMs: 5,
        crc: 6,
        synced: true,
      }),
    );
    const accepted: string[] = [];
    for (const alias of ALIASES) {
      const path = `${alias}/crc-1-2.json`;
      const up = await Promise.resolve(sendFile(conn, src, { relativePath: path, retries: 0 })).then(
        () => "stored",
        (err: { code?: string }) => err.code,
      );
      if (up !== "ERR_INVALID_ARGUMENT") accepted.push(`upload ${JSON.stringify(path)}: ${up}`);
      const check = await conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files: [{ path, size: 1 }] })).then(
        () => "answered",
        (err: { code?: string }) => err.code,
      );
      if (check !== "ERR_INVALID_ARGUMENT") accepted.push(`check ${JSON.stringify(path)}: ${check}`);
      // The asker has no file route: a download that was found and started ends in ERR_NO_ROUTE.
      const get = await conn.request(FILE_GET_ROUTE, encodeFileGetRequest({ path, to: "x" })).then(
        () => "served",
        (err: { code?: string }) => (err.code === "ERR_NO_ROUTE" ? "served" : err.code),
      );
      if (get !== "ERR_INVALID_ARGUMENT" && get !== "ERR_NOT_FOUND")
        accepted.push(`get ${JSON.stringify(path)}: ${get}`);
    }
    assert.deepEqual(accepted, [], "every alias of the metadata directory is refused");
  });
});
