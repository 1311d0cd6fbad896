/**
 * Paths and names holding an unpaired UTF-16 surrogate (`"a\ud800b"`: not
 * Unicode text; JSON carries it as an escape). The file system stores such a
 * name as U+FFFD, so before, an upload's receipt named another string than
 * the file on disk, two different names (`a\ud800b`, `a\udbffb`) landed on
 * one file (the second replaced the first with overwrite), and a download
 * of `x\ud800.txt` served `x\ufffd.txt`. Now such a path or name is refused
 * with ERR_INVALID_ARGUMENT: uploads (`meta.name`, `meta.path`), bundle
 * entries, quick checks and downloads (`path`, `to`). And `safeFileName`
 * cuts a long name between code points (it cut a code unit at a time, and
 * could leave half of a surrogate pair). Real server, real sockets.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import {
  type BundleResult,
  encodeBundle,
  FILE_BUNDLE_ROUTE,
  FILE_GET_ROUTE,
  FILE_LIST_ROUTE,
  FILE_ROUTE,
  type PointSubError,
  safeFileName,
} from "../../src/index.ts";
import { FILE_CHECK_ROUTE } from "../../src/node/file-sink.ts";
import { fileServer } from "../helpers/file-server.ts";

const enc = new TextEncoder();
const json = (v: unknown) => enc.encode(JSON.stringify(v));
const code = (p: Promise<unknown>) =>
  p.then(
    () => "ok",
    (e: PointSubError) => e.code,
  );

describe("attack: paths and names with unpaired surrogates", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("are refused in uploads, bundles, quick checks and downloads; nothing is stored under U+FFFD", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-atk-surrogate-"));
    cleanup.push(() => rm(work, { recursive: true, force: true }));
    const dir = join(work, "served");
    await mkdir(dir);
    // A file whose name is U+FFFD where a request writes an unpaired surrogate.
    await writeFile(join(dir, "x\ufffd.txt"), "not the file asked for");
    const { conn } = await fileServer(dir, cleanup, { sink: { overwrite: true }, source: { crcRecords: false } });
    /** Downloads the server streamed to this side's file route. */
    const served: unknown[] = [];
    conn.handleStream(FILE_ROUTE, async (s) => {
      served.push(s.meta);
      let crc = 0;
      for await (const c of s) crc = crc32c(c, crc);
      return JSON.stringify({ name: "x", path: "x", size: s.total, crc32c: crc32cHex(crc), resumedFrom: 0 });
    });

    const upload = (meta: Record<string, unknown>, body = "payload") =>
      conn.sendStream(FILE_ROUTE, [enc.encode(body)], {
        total: body.length,
        transferId: randomBytes(32).toString("hex"),
        meta,
      }).done;
    for (const meta of [
      { name: "a\ud800b" },
      { name: "a\udbffb" },
      { name: "a\udc00" },
      { path: "d/a\ud800b" },
      { path: "\udfffd/a" },
    ]) {
      assert.equal(await code(upload(meta)), "ERR_INVALID_ARGUMENT", JSON.stringify(meta));
    }
    // A well-formed pair is Unicode text: stored under its own name.
    assert.equal(await code(upload({ name: "emoji \ud83d\ude00" })), "ok");

    const body = encodeBundle([
      { name: "b\ud800", content: enc.encode("1") },
      { path: "t/b\udc00", content: enc.encode("2") },
      { name: "fine.txt", content: enc.encode("3") },
    ]);
    const results = (
      JSON.parse(
        new TextDecoder().decode(await conn.sendStream(FILE_BUNDLE_ROUTE, [body], { total: body.length }).done),
      ) as { files: BundleResult[] }
    ).files;
    assert.deepEqual(
      results.map((r) => ("error" in r ? r.error.code : "ok")),
      ["ERR_INVALID_ARGUMENT", "ERR_INVALID_ARGUMENT", "ok"],
    );

    const check = (files: unknown[]) => conn.request(FILE_CHECK_ROUTE, json({ files }), { timeoutMs: 5000 });
    assert.equal(await code(check([{ name: "x\ud800.txt", size: 22 }])), "ERR_INVALID_ARGUMENT");
    assert.equal(await code(check([{ path: "x\ud800.txt", size: 22 }])), "ERR_INVALID_ARGUMENT");

    const get = (path: string, to: string) => conn.request(FILE_GET_ROUTE, json({ path, to }), { timeoutMs: 5000 });
    assert.equal(await code(get("x\ud800.txt", "out.txt")), "ERR_INVALID_ARGUMENT", "download of x\\ud800.txt");
    assert.equal(await code(get("fine.txt", "out\udc00.txt")), "ERR_INVALID_ARGUMENT", "download to out\\udc00.txt");
    assert.deepEqual(served, [], "nothing was served");
    const list = conn.request(FILE_LIST_ROUTE, json({ path: "d\ud800" }), { timeoutMs: 5000 });
    assert.equal(await code(list), "ERR_INVALID_ARGUMENT");

    // Nothing but what was there, the emoji name and the bundle's good entry.
    assert.deepEqual((await readdir(dir)).filter((n) => !n.startsWith(".")).sort(), [
      "emoji \ud83d\ude00",
      "fine.txt",
      "x\ufffd.txt",
    ]);
  });

  it("safeFileName makes unpaired surrogates `_` and cuts a long name between code points", () => {
    assert.equal(safeFileName("a\ud800b"), "a_b");
    assert.equal(safeFileName("\udc00x\ud83d\ude00"), "_x\ud83d\ude00");
    // 1 + 50 × 4 bytes: 201, cut to 1 + 49 × 4 (a code unit at a time, it kept half of the 50th).
    const cut = safeFileName(`a${"\ud83d\ude00".repeat(50)}`);
    assert.ok(cut.isWellFormed(), JSON.stringify(cut));
    assert.equal(cut, `a${"\ud83d\ude00".repeat(49)}`);
    assert.equal(safeFileName(cut), cut);
    assert.equal(safeFileName("é".repeat(150)), "é".repeat(100));
    assert.equal(safeFileName("x".repeat(300)), "x".repeat(200));
  });
});
