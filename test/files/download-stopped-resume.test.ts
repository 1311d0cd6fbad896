/**
 * A download the server stops for a retryable reason (fileSource's pace
 * check, ERR_SLOW_PEER) and the asker's retry: the stream's abort always
 * went out as CANCEL(ERR_CANCELLED), after which the asker's file sink
 * removes the partial (a cancelled transfer's is useless), so every retry
 * started from 0: 600 KB over 30 KB/s stopped at 10 s, the retry sent all
 * 600,000 bytes again (a 5 MB `pointsub get` at 40 KB/s: 7 attempts from 0,
 * 770 s). A stream aborted with a retryable PointSubError now ends with
 * that code: the sink keeps the partial and the retry resumes from it.
 * Here 600 KB at 60 KB/s, the first attempt held to 128 KiB/s.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { startShaper } from "../../bench/lib/shaper.ts";
import {
  connect,
  createServer,
  FILE_GET_ROUTE,
  FILE_ROUTE,
  type FileGetAnswer,
  fileSink,
  fileSource,
} from "../../src/index.ts";

describe("a download stopped with ERR_SLOW_PEER", () => {
  it("keeps what the asker stored: the retry resumes from it (600 KB at 60 KB/s)", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-stopped-get-"));
    const content = randomBytes(600_000);
    await writeFile(join(work, "f.bin"), content);
    const server = createServer();
    // The first download is held to 128 KiB/s (stopped at ~2 s), the retry to nothing.
    const strict = fileSource(work, { crcRecords: false, downloadGraceMs: 1_000, minDownloadBytesPerSecond: 131_072 });
    const lax = fileSource(work, { crcRecords: false, minDownloadBytesPerSecond: 0 });
    let asked = 0;
    server.handle(FILE_GET_ROUTE, (req, ctx) => (asked++ === 0 ? strict : lax).get(req, ctx));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const shaper = await startShaper(
      Number(new URL(url).port),
      { rate: 10_000_000, delayMs: 50 },
      { rate: 60_000, delayMs: 50, queueBytes: 30_000 },
    );
    const out = join(work, "out");
    const sink = fileSink(out);
    // A 128 KiB window: the server cannot have the whole file (and its END) in the sockets when it stops.
    const conn = await connect(`tcp://127.0.0.1:${shaper.port}`, { streamWindow: 128 * 1024 });
    conn.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const ask = async () =>
      JSON.parse(
        new TextDecoder().decode(
          await conn.request(FILE_GET_ROUTE, JSON.stringify({ path: "f.bin", to: "f.bin" }), { timeoutMs: 0 }),
        ),
      ) as FileGetAnswer;
    try {
      await assert.rejects(ask(), { code: "ERR_SLOW_PEER" });
      const second = await ask();
      assert.ok(second.resumedFrom > 0, `resumed from ${second.resumedFrom} (sent ${second.bytesSent})`);
      assert.equal(second.resumedFrom + second.bytesSent, 600_000);
      assert.ok(Buffer.compare(await readFile(join(out, "f.bin")), content) === 0, "stored byte-exact");
    } finally {
      await conn.close({ timeoutMs: 100 }).catch(() => {});
      await server.close({ timeoutMs: 100 });
      await shaper.close();
      await rm(work, { recursive: true, force: true });
    }
  });
});
