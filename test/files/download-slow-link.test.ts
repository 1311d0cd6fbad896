/**
 * fileSource's download pace (minDownloadBytesPerSecond past
 * downloadGraceMs) against honest downloads over a slow link
 * (bench/lib/shaper.ts, a rate-limited loopback proxy):
 * - its default was 64 KiB/s: a `pointsub get` of 5 MB over a 40 KB/s link
 *   was stopped with ERR_SLOW_PEER 6 times (772 s instead of 125 s); it is
 *   8 KiB/s now;
 * - what the asker took was measured by its credit alone, which comes back
 *   in quarter-window steps (1 MiB at the default window): a download
 *   slower than one step per grace was taken for nothing when the grace
 *   ended, and stopped whatever the floor; one step is allowed for now.
 * The grace is 1 s here (30 s by default) and the files are small (5 s at
 * the link's rate; the one stopped, 5 s against its 1.8 s deadline) to keep
 * the test short.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { startShaper } from "../../bench/lib/shaper.ts";
import {
  connect,
  createServer,
  FILE_GET_ROUTE,
  FILE_ROUTE,
  type FileSourceOptions,
  fileSink,
  fileSource,
} from "../../src/index.ts";
import { cleanupsFor } from "../helpers/slow-link.ts";

/** Downloads `size` random bytes through a link of `rate` B/s down; the answer, or the error. */
async function download(t: TestContext, size: number, rate: number, options: FileSourceOptions, streamWindow?: number) {
  const cleanups = cleanupsFor(t);
  const work = await mkdtemp(join(tmpdir(), "pointsub-slow-get-"));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  const content = randomBytes(size);
  await writeFile(join(work, "f.bin"), content);
  const server = createServer();
  server.handle(FILE_GET_ROUTE, fileSource(join(work), { crcRecords: false, ...options }).get);
  const [url] = await server.listen("tcp://127.0.0.1:0");
  cleanups.push(() => server.close({ timeoutMs: 200 }));
  const shaper = await startShaper(
    Number(new URL(url).port),
    { rate: 10_000_000, delayMs: 50 },
    { rate, delayMs: 50, queueBytes: Math.round(rate / 2) },
  );
  cleanups.push(() => shaper.close());
  const out = join(work, "out");
  const sink = fileSink(out);
  const conn = await connect(`tcp://127.0.0.1:${shaper.port}`, streamWindow === undefined ? {} : { streamWindow });
  cleanups.push(() => conn.close({ timeoutMs: 200 }));
  conn.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
  const t0 = Date.now();
  try {
    const answer = await conn.request(FILE_GET_ROUTE, JSON.stringify({ path: "f.bin", to: "f.bin" }), {
      timeoutMs: 0,
    });
    const stored = await readFile(join(out, "f.bin"));
    return { ok: Buffer.compare(stored, content) === 0, ms: Date.now() - t0, answer: new TextDecoder().decode(answer) };
  } catch (err) {
    return { ok: false, ms: Date.now() - t0, answer: `${(err as { code?: string }).code}: ${String(err)}` };
  }
}

// Each waits on a link of its own: they run at once.
describe("fileSource downloads over a slow link", { concurrency: true }, () => {
  it("a download at 30 KB/s is not stopped at the default floor (150 KB, grace 1 s)", async (t) => {
    const r = await download(t, 150_000, 30_000, { downloadGraceMs: 1_000 });
    assert.ok(r.ok, `${r.answer} after ${r.ms} ms`);
    assert.ok(r.ms >= 2_500, `took ${r.ms} ms`);
  });

  it("what was read and not yet credited counts: 40 KB/s against a floor of 16 KiB/s (256 KiB stream window: credit every 64 KiB)", async (t) => {
    const r = await download(
      t,
      200_000,
      40_000,
      { downloadGraceMs: 1_000, minDownloadBytesPerSecond: 16 * 1024 },
      256 * 1024,
    );
    assert.ok(r.ok, `${r.answer} after ${r.ms} ms`);
  });

  it("a download slower than the floor is still stopped with ERR_SLOW_PEER (50 KB at 10 KB/s against 64 KiB/s)", async (t) => {
    const r = await download(t, 50_000, 10_000, { downloadGraceMs: 1_000, minDownloadBytesPerSecond: 64 * 1024 });
    assert.match(r.answer, /^ERR_SLOW_PEER/);
  });
});
