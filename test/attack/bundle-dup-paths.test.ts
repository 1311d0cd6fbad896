/**
 * A bundle naming one path more than once (attack review of the file
 * server). Before, every entry got a success receipt and, with overwrite,
 * which content ended on disk was chance: entries are named a few at once
 * (the last entry's content was not the one on disk in 5 of 30 rounds with
 * fsync, 3 of 30 without), so the sender's receipts described files that
 * were not there. Now the first entry naming a path is stored and each later
 * one naming it again (the same path, or a name that sanitizes to it) is
 * refused alone with ERR_INVALID_ARGUMENT, whatever `overwrite` and
 * `durability`: every success receipt describes what is on disk. Paths a
 * case-sensitive file system keeps apart (`Dup.txt`, `dup.txt`) are both
 * stored there. Real server, real sockets.
 */
import assert from "node:assert/strict";
import { lstatSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import { type BundleResult, encodeBundle, FILE_BUNDLE_ROUTE, type FileSinkOptions } from "../../src/index.ts";
import { foldedPath } from "../../src/node/file-crc-store.ts";
import { fileServer } from "../helpers/file-server.ts";

const decode = (b: Uint8Array) => (JSON.parse(new TextDecoder().decode(b)) as { files: BundleResult[] }).files;
const COPIES = 12;

describe("attack: a bundle naming one path twice", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  const configs: FileSinkOptions[] = [
    { overwrite: true },
    { overwrite: true, durability: "none" },
    {},
    { durability: "none" },
  ];
  for (const options of configs) {
    it(`stores the first entry, refuses the later ones alone (${JSON.stringify(options)})`, async () => {
      const work = await mkdtemp(join(tmpdir(), "pointsub-atk-bundle-dup-"));
      cleanup.push(() => rm(work, { recursive: true, force: true }));
      const { conn, sink } = await fileServer(join(work, "in"), cleanup, { sink: options });
      const dir = sink.dir;
      // Is this directory case-sensitive (Linux: yes; APFS, NTFS: no)?
      await writeFile(join(dir, "probe"), "");
      const caseSensitive = lstatSync(join(dir, "PROBE"), { throwIfNoEntry: false }) === undefined;
      for (let round = 0; round < 3; round++) {
        const files = [];
        const expected: string[] = [];
        for (let i = 0; i < COPIES; i++) {
          files.push({ path: `r${round}/dup.txt`, content: Buffer.from(`copy ${i} of dup.txt`) });
          expected.push(i === 0 ? "ok" : "ERR_INVALID_ARGUMENT");
          files.push({ path: `r${round}/sub/d.bin`, content: Buffer.alloc(1000 + i, i) });
          expected.push(i === 0 ? "ok" : "ERR_INVALID_ARGUMENT");
        }
        // A name is its last segment: `x/n.txt` and `y/n.txt` are both `n.txt`.
        files.push({ name: `x/n${round}.txt`, content: Buffer.from("first n") });
        files.push({ name: `y/n${round}.txt`, content: Buffer.from("second n") });
        files.push({ path: `n${round}.txt`, content: Buffer.from("third n") });
        expected.push("ok", "ERR_INVALID_ARGUMENT", "ERR_INVALID_ARGUMENT");
        // Another path for a case-sensitive file system (its own file there).
        files.push({ path: `r${round}/Dup.txt`, content: Buffer.from("capital") });
        // Where it is one file: refused (every durability names entries once the bundle was verified).
        expected.push(caseSensitive ? "ok" : "ERR_INVALID_ARGUMENT");
        const body = encodeBundle(files);
        const results = decode(await conn.sendStream(FILE_BUNDLE_ROUTE, [body], { total: body.length }).done);
        assert.deepEqual(
          results.map((r) => ("error" in r ? r.error.code : "ok")),
          expected,
          `round ${round}`,
        );
        const refused = results[2];
        assert.ok("error" in refused);
        assert.match(refused.error.message, /dup\.txt.*entry 0 of this bundle/);
        // Every success receipt describes the file on disk.
        for (const r of results) {
          if ("error" in r) continue;
          const on = await readFile(join(dir, ...r.path.split("/")));
          assert.equal(crc32cHex(crc32c(on)), r.crc32c, `${r.path}'s receipt`);
        }
        assert.equal(await readFile(join(dir, `r${round}`, "dup.txt"), "utf8"), "copy 0 of dup.txt");
        assert.deepEqual(await readFile(join(dir, `r${round}`, "sub", "d.bin")), Buffer.alloc(1000, 0));
        assert.equal(await readFile(join(dir, `n${round}.txt`), "utf8"), "first n");
      }
    });
  }

  it("folds paths as case-insensitive and normalizing file systems do (the candidates checked on disk)", () => {
    assert.equal(foldedPath(["Dup.TXT"]), foldedPath(["dup.txt"]));
    assert.equal(foldedPath(["A", "b"]), foldedPath(["a", "B"]));
    assert.equal(foldedPath(["caf\u00e9"]), foldedPath(["cafe\u0301"]));
    assert.equal(foldedPath(["x\u200c.txt"]), foldedPath(["x.txt"]));
    assert.equal(foldedPath(["x.txt. "]), foldedPath(["x.txt"]));
    assert.equal(foldedPath(["\u212Aelvin"]), foldedPath(["kelvin"]));
    assert.notEqual(foldedPath(["a", "b"]), foldedPath(["ab"]));
  });
});
