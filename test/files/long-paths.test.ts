/**
 * A path the sink's rules accept (≤ 4,096 bytes, segments ≤ 255) can still
 * be too long for the file system once it is put under the receiver's
 * directory (Linux: 4,096 bytes with the directory's own path). Before, such
 * a path was taken: its directories were made (one per segment) and only
 * the file's own name failed, ENAMETOOLONG — each bundle entry left up to 63
 * empty directories that nothing removes (two bundles of 1,000 entries,
 * 8 MB: 30,000 directories, and one recursive listing of the tree then took
 * 7 s to answer no entry), a single-file upload kept its whole partial as
 * if it could be resumed, and the peer got ERR_HANDLER. Now it is refused
 * when it starts, ERR_INVALID_ARGUMENT, and nothing is made. Real server,
 * real sockets.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { encodeBundle, FILE_BUNDLE_ROUTE } from "../../src/codec/file-bundle.ts";
import {
  type Connection,
  connect,
  createServer,
  FILE_ROUTE,
  type FileSink,
  fileSink,
  type PointSubError,
  type Server,
} from "../../src/index.ts";

/** `n` segments of `len` bytes, `tag` first in each. */
const longPath = (tag: string, n: number, len: number) =>
  Array.from({ length: n }, (_, i) => `${tag}${i}-`.padEnd(len, "a")).join("/");

for (const durability of ["fsync", "none"] as const) {
  describe(`file sink (durability ${durability}): a path too long for the receiver's directory`, () => {
    let work: string;
    let inbox: string;
    let sink: FileSink;
    let server: Server;
    let conn: Connection;

    before(async () => {
      work = await mkdtemp(join(tmpdir(), "pointsub-long-paths-"));
      // A served directory of ~120 bytes, as `serve --dir /home/someone/…` may be.
      inbox = join(work, "a-served-directory-whose-own-path-is-long".padEnd(90, "-"));
      await mkdir(inbox);
      sink = fileSink(inbox, { durability });
      server = createServer();
      server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
      server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
      const [url] = await server.listen("tcp://127.0.0.1:0");
      conn = await connect(url);
    });
    after(async () => {
      await conn.close();
      await server.close({ timeoutMs: 100 });
      sink.close();
      await rm(work, { recursive: true, force: true });
    });

    it("bundle entries are refused alone, ERR_INVALID_ARGUMENT, and leave no directory", async () => {
      // 16 segments of 250 bytes: 4,015 bytes, a path any rule accepts; with the directory, over 4,096.
      const files = [
        ...["x", "y", "z"].map((t) => ({ path: longPath(t, 16, 250), content: new Uint8Array([1, 2, 3]) })),
        { path: "short/ok.txt", content: new Uint8Array([4]) },
      ];
      assert.ok(Buffer.byteLength(join(inbox, files[0].path)) >= 4096);
      const body = encodeBundle(files);
      const answer = await conn.sendStream(FILE_BUNDLE_ROUTE, [body], { total: body.length }).done;
      const results = JSON.parse(new TextDecoder().decode(answer)).files as {
        error?: { code: string; message: string };
        size?: number;
      }[];
      assert.deepEqual(
        results.map((r) => r.error?.code),
        ["ERR_INVALID_ARGUMENT", "ERR_INVALID_ARGUMENT", "ERR_INVALID_ARGUMENT", undefined],
      );
      assert.match(results[0].error?.message ?? "", /too long/);
      assert.deepEqual(
        (await readdir(inbox)).filter((n) => n !== ".pointsub"),
        ["short"],
        "no directory made for the refused entries",
      );
    });

    it("a single-file upload is refused when it starts and leaves nothing", async () => {
      // The metadata (≤ 4 KiB) carries it: 16 segments of 248 bytes.
      const path = longPath("s", 16, 248);
      assert.ok(Buffer.byteLength(join(inbox, path)) >= 4096);
      const t = conn.sendStream(FILE_ROUTE, [new Uint8Array(1000)], {
        total: 1000,
        transferId: randomBytes(32).toString("hex"),
        meta: { path },
      });
      const err = (await t.done.then(
        () => assert.fail("stored"),
        (e: unknown) => e,
      )) as PointSubError;
      assert.equal(err.code, "ERR_INVALID_ARGUMENT");
      assert.match(err.message, /too long/);
      assert.equal(sink.usage().partials, 0, "no partial kept");
      assert.deepEqual(
        (await readdir(inbox)).filter((n) => n !== ".pointsub" && n !== "short"),
        [],
        "nothing made in the directory",
      );
    });
  });
}
