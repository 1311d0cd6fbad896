/**
 * Downloads whose `have` names the file's size wait for the file's CRC32C
 * (one read shared by the downloads of that file). Before, a download kept
 * waiting for that read after its asker gave up, and so kept its place
 * among `maxDownloads` for as long as the read took; now the asker's abort
 * frees it at once (the read goes on for whoever else waits on it). And the
 * read checks that the file it opened is the one looked up: a file renamed
 * over the name meanwhile is another file, whose CRC must not be recorded
 * under the first one's identity.
 */
import assert from "node:assert/strict";
import { mkdtempSync, renameSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import { connect, createServer, FILE_GET_ROUTE, type FileGetAnswer, fileSource } from "../../src/index.ts";
import { fileCrc32cOf } from "../../src/node/file-sink.ts";

const GiB = 1024 ** 3;

describe("attack: a download that waits for its file's CRC32C", () => {
  it("frees its place among maxDownloads as soon as its asker gives up", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pointsub-get-abort-"));
    const server = createServer();
    const source = fileSource(dir, { crcRecords: false, maxDownloads: 1, maxDownloadsPerSession: 1 });
    server.handle(FILE_GET_ROUTE, source.get);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    try {
      // 1 GiB (sparse): its CRC32C takes the server a few hundred ms to read.
      writeFileSync(join(dir, "big.bin"), "");
      truncateSync(join(dir, "big.bin"), GiB);
      const small = Buffer.from("small file");
      writeFileSync(join(dir, "small.txt"), small);
      const ac = new AbortController();
      const first = client.request(
        FILE_GET_ROUTE,
        JSON.stringify({ path: "big.bin", to: "big.bin", have: { size: GiB, crc32c: "00000000" } }),
        { timeoutMs: 60_000, signal: ac.signal },
      );
      first.catch(() => {});
      await new Promise((r) => setTimeout(r, 30));
      ac.abort();
      await assert.rejects(first, { code: "ERR_CANCELLED" });
      // The one place is free again: before, ERR_TOO_MANY_REQUESTS until the big file's read ended.
      const t0 = performance.now();
      const answer = JSON.parse(
        new TextDecoder().decode(
          await client.request(
            FILE_GET_ROUTE,
            JSON.stringify({
              path: "small.txt",
              to: "small.txt",
              have: { size: small.length, crc32c: crc32cHex(crc32c(small)) },
            }),
            { timeoutMs: 60_000 },
          ),
        ),
      ) as FileGetAnswer;
      assert.equal(answer.skipped, true);
      assert.ok(performance.now() - t0 < 5_000);
    } finally {
      await client.close();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a CRC read tells whether the file it read is the one looked up (not one renamed over its name)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pointsub-get-ident-"));
    try {
      const path = join(dir, "f.bin");
      const a = Buffer.alloc(300 * 1024, 1);
      writeFileSync(path, a);
      const st = statSync(path);
      const same = await fileCrc32cOf(path, st);
      assert.deepEqual(same, { crc: crc32c(a), same: true });
      // Another file of the same size renamed over the name between the lookup and the read.
      const b = Buffer.alloc(300 * 1024, 2);
      writeFileSync(join(dir, "g.bin"), b);
      renameSync(join(dir, "g.bin"), path);
      const other = await fileCrc32cOf(path, st);
      assert.deepEqual(other, { crc: crc32c(b), same: false });
      // A small one (read in one call) likewise.
      const small = join(dir, "s.bin");
      writeFileSync(small, "abc");
      const sst = statSync(small);
      writeFileSync(join(dir, "t.bin"), "abd");
      renameSync(join(dir, "t.bin"), small);
      assert.equal((await fileCrc32cOf(small, sst)).same, false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
