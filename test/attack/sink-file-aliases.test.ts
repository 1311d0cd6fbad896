/**
 * The file sink's own files in the served directory (`.<key>.partial`,
 * `.<key>.resume`, `.<key>.lock`, a bundle's `.b<pid>_<time>_<n>-<i>.partial`)
 * were refused as upload and download paths, and hidden from listings, only
 * when spelled exactly: `.<key>.PARTIAL`, `.<key>.re\u017Fume` (ſ folds to
 * s), `.<key>.loc\u212A` (the Kelvin sign folds to k) or `.<key>.partial.`
 * (NTFS drops trailing dots) passed. On a case-insensitive volume (macOS's
 * default APFS, NTFS) such a name is the sink's file itself: a download
 * served another peer's unfinished upload (a bundle's partial names are
 * predictable: pid, time and a counter), an upload with overwrite replaced
 * it, so another peer's bundle stored the attacker's bytes under its receipt.
 * Now they are refused as `.pointsub`'s aliases are
 * (`meta-dir-aliases.test.ts`). On Linux these are other names, so the test
 * runs anywhere: it checks that they are refused. Real server, real sockets.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { encodeFileGetRequest, encodeFileListRequest } from "../../src/codec/file-routes.ts";
import { FILE_GET_ROUTE, FILE_LIST_ROUTE, FILE_ROUTE, type PointSubError } from "../../src/index.ts";
import { fileServer } from "../helpers/file-server.ts";

const key = "ab".repeat(32);
/** Names a case-insensitive (Unicode-folding), HFS+ or NTFS volume takes for one of the sink's own files. */
const ALIASES = [
  `.${key}.PARTIAL`,
  `.${key.toUpperCase()}.Partial`,
  ".b1_mabc123_0-0.PARTIAL",
  `.${key}.re\u017Fume`,
  `.${key}.loc\u212A`,
  `.${key}.partial.`,
  `.${key}.lo\u200Cck`,
];

describe("the sink's partial, sidecar and lock files under names that alias them", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("are refused as upload and download paths and never listed", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-atk-sink-alias-"));
    cleanup.push(() => rm(work, { recursive: true, force: true }));
    const dir = join(work, "serve");
    await mkdir(dir);
    // What a case-insensitive volume would show under the alias: here a file of its own, put there locally.
    writeFileSync(join(dir, ALIASES[0]), "another peer's unfinished upload");
    writeFileSync(join(dir, "plain.txt"), "listed");
    const { conn } = await fileServer(dir, cleanup, { source: { crcRecords: false } });
    const code = (p: Promise<unknown>) =>
      p.then(
        () => "stored",
        (e: PointSubError) => e.code,
      );
    for (const name of ALIASES) {
      const upload = conn.sendStream(FILE_ROUTE, [new Uint8Array([1, 2, 3])], {
        total: 3,
        transferId: randomBytes(32).toString("hex"),
        meta: { path: name },
      }).done;
      assert.equal(await code(upload), "ERR_INVALID_ARGUMENT", `upload to ${JSON.stringify(name)}`);
    }
    const get = conn.request(FILE_GET_ROUTE, encodeFileGetRequest({ path: ALIASES[0], to: "x" }), { timeoutMs: 5000 });
    // Refused as its path is (before: sent, the other peer's bytes).
    assert.equal(await code(get), "ERR_INVALID_ARGUMENT", "download of an alias");
    const listed = JSON.parse(
      new TextDecoder().decode(await conn.request(FILE_LIST_ROUTE, encodeFileListRequest({}), { timeoutMs: 5000 })),
    ) as { entries: { path: string }[] };
    assert.deepEqual(
      listed.entries.map((e) => e.path),
      ["plain.txt"],
    );
  });
});
