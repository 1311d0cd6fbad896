/**
 * Downloads whose `have` names the file's size (the asker may hold it
 * whole): the server computes the file's CRC32C to compare. Before, each
 * such download read the whole file, and unlike the quick check's these
 * reads were not shared: up to 64 (`maxDownloads`) reads of one large file
 * at once before its CRC record was saved (none at all with `crcRecords:
 * false`). Now concurrent downloads of one unchanged file wait for one
 * read; a file changed since is read again. Measured with the bytes this
 * process read (Linux's /proc/self/io `rchar`), over a real socket.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import { connect, createServer, FILE_GET_ROUTE, type FileGetAnswer, fileSource } from "../../src/index.ts";

const MiB = 1024 * 1024;
const N = 32;

/** Bytes this process has read so far (read(2) and friends, page cache included). */
function bytesRead(): number {
  const m = /^rchar: (\d+)$/m.exec(readFileSync("/proc/self/io", "utf8"));
  return Number(m?.[1]);
}

describe("attack: concurrent downloads of a file the asker holds", () => {
  for (const crcRecords of [false, true]) {
    it(`${N} at once read a 16 MiB file once, not ${N} times; a changed file is read again (crcRecords ${crcRecords})`, async () => {
      const dir = mkdtempSync(join(tmpdir(), "pointsub-get-have-"));
      const server = createServer();
      const source = fileSource(dir, { crcRecords, maxDownloadsPerSession: N, maxDownloads: N });
      server.handle(FILE_GET_ROUTE, source.get);
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const client = await connect(url);
      const size = 16 * MiB;
      try {
        for (const fill of [1, 2]) {
          // A new file each round (another mtime and content): nothing recorded applies.
          const content = Buffer.alloc(size, fill);
          writeFileSync(join(dir, "big.bin"), content);
          const have = { size, crc32c: crc32cHex(crc32c(content)) };
          const body = JSON.stringify({ path: "big.bin", to: "big.bin", have });
          const before = bytesRead();
          const answers = await Promise.all(
            Array.from({ length: N }, () => client.request(FILE_GET_ROUTE, body, { timeoutMs: 60_000 })),
          );
          const read = bytesRead() - before;
          for (const a of answers) {
            const answer = JSON.parse(new TextDecoder().decode(a)) as FileGetAnswer;
            assert.equal(answer.skipped, true, "held whole: skipped");
            assert.equal(answer.crc32c, have.crc32c);
          }
          // Before: one read of the whole file per download (N × 16 MiB). Now one, plus what else the process read.
          assert.ok(
            read < 3 * size,
            `read ${(read / MiB).toFixed(0)} MiB for ${N} downloads of a ${size / MiB} MiB file`,
          );
          assert.ok(read >= size, "the file was read for its CRC");
        }
      } finally {
        await client.close();
        await server.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
