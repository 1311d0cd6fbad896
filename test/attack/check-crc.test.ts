/**
 * The file server (finding 6 of the hardening issue): quick checks that
 * name a large stored file at its size must not make the sink read it once
 * per entry. Reads of one file are shared while in progress and cached
 * after; the sink reads at most CRC_READS_AT_ONCE files at once. Measured
 * with the bytes this process read from files (Linux's /proc/self/io
 * `rchar`), over a real socket.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect, createServer, fileSink } from "../../src/index.ts";
import { FILE_CHECK_ROUTE } from "../../src/node/file-sink.ts";

const MiB = 1024 * 1024;

/** Bytes this process has read so far (read(2) and friends, page cache included). */
function bytesRead(): number {
  const m = /^rchar: (\d+)$/m.exec(readFileSync("/proc/self/io", "utf8"));
  return Number(m?.[1]);
}

describe("attack: quick checks of a large stored file", () => {
  it("64 concurrent checks of 8 entries naming one 16 MiB file read it about once, not 512 times; a changed file is read again", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pointsub-check-crc-"));
    const server = createServer();
    const sink = fileSink(dir);
    server.handle(FILE_CHECK_ROUTE, sink.check);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    const size = 16 * MiB;
    const body = JSON.stringify({ files: Array.from({ length: 8 }, () => ({ name: "big.bin", size })) });
    try {
      for (const fill of [1, 2]) {
        // A new file each round (another mtime and content): nothing cached applies.
        writeFileSync(join(dir, "big.bin"), Buffer.alloc(size, fill));
        const before = bytesRead();
        const answers = await Promise.all(
          Array.from({ length: 64 }, () => client.request(FILE_CHECK_ROUTE, body, { timeoutMs: 120_000 })),
        );
        const read = bytesRead() - before;
        const crcs = new Set(
          answers.flatMap((a) =>
            (JSON.parse(new TextDecoder().decode(a)) as { files: { crc32c: string }[] }).files.map((f) => f.crc32c),
          ),
        );
        assert.equal(crcs.size, 1, "every entry gets the file's CRC32C");
        // Before: 512 reads of the whole file (8 GiB). Now one, plus what else the process read meanwhile.
        assert.ok(read < 3 * size, `read ${(read / MiB).toFixed(0)} MiB for a ${size / MiB} MiB file`);
        assert.ok(read >= size, "the file was read once for its CRC");
      }
    } finally {
      await client.close();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
