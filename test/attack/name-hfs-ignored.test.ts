/**
 * A file's `name` (not `path`) was cleaned of leading dots and white space
 * only: `\u200c.pointsub` or `\u200c.<key>.partial` (a zero-width
 * non-joiner first) was stored under that name, which HFS+ (it ignores
 * U+200C–U+200F, U+202A–U+202E, U+206A–U+206F in names) takes as
 * `.pointsub` (the sink's metadata directory: ERR_EXISTS, an oracle) or as
 * another peer's partial file (replaced with overwrite), as a `path` of
 * that spelling, refused, would have been. Now those code points are
 * dropped at the start of a name as dots are: `pointsub`, never hidden, on
 * every file system. Uploads and bundle entries; real server, real sockets.
 */
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { type BundleResult, encodeBundle, FILE_BUNDLE_ROUTE, FILE_ROUTE } from "../../src/index.ts";
import { foldSegment, isMetaName, isSinkFileAlias } from "../../src/node/file-crc-store.ts";
import { safeFileName } from "../../src/node/file-sink.ts";
import { fileServer } from "../helpers/file-server.ts";

const key = "cd".repeat(32);
const NAMES = [
  "\u200c.pointsub",
  `\u200d.${key}.partial`,
  `\u202a\u200f.${key}.lock`,
  ".\u206a.\u200e.hidden",
  "\ufeff.x",
];
/** As HFS+ compares names: its ignored code points removed (foldSegment also folds case and compatibility forms). */
const hidden = (name: string) => foldSegment(name).startsWith(".");

describe("attack: names that HFS+ makes hidden or the sink's own", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("are stored without the ignored code points and dots that lead them", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-atk-hfs-names-"));
    cleanup.push(() => rm(work, { recursive: true, force: true }));
    const { conn, sink } = await fileServer(join(work, "in"), cleanup);
    let n = 0;
    for (const name of NAMES) {
      const safe = safeFileName(name);
      assert.equal(safeFileName(safe), safe, "a safe name is its own");
      assert.ok(!hidden(safe) && !isMetaName(safe) && !isSinkFileAlias(safe), JSON.stringify(safe));
      const receipt = JSON.parse(
        new TextDecoder().decode(
          await conn.sendStream(FILE_ROUTE, [new Uint8Array([n])], {
            transferId: `hfs-ignored-name-${n++}`.padEnd(40, "x"),
            meta: { name },
            total: 1,
          }),
        ),
      ) as { path: string };
      assert.equal(receipt.path, safe);
      const bundle = encodeBundle([{ name, content: new Uint8Array([n]) }]);
      const [entry] = (
        JSON.parse(
          new TextDecoder().decode(await conn.sendStream(FILE_BUNDLE_ROUTE, [bundle], { total: bundle.length })),
        ) as { files: BundleResult[] }
      ).files;
      // Stored once already: the bundle's entry finds it (ERR_EXISTS), under the same clean name.
      assert.ok("error" in entry && entry.error.code === "ERR_EXISTS", JSON.stringify(entry));
    }
    for (const stored of await readdir(sink.dir)) {
      assert.ok(!hidden(stored) || stored === ".pointsub", `stored ${JSON.stringify(stored)}`);
    }
  });
});
