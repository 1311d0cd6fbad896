/**
 * `fileSource`'s download bounds given as numbers that are none: refused
 * when the source is made (ERR_INVALID_ARGUMENT), as its listing bounds
 * are. Before, a NaN `downloadGraceMs` stopped every download at once
 * (ERR_SLOW_PEER "not taken within NaN ms"), a NaN `maxDownloads` or a NaN
 * or negative `minDownloadBytesPerSecond` turned its bound off, and a bound
 * of 0 or less refused every download. The edges that mean something (a
 * rate of 0: no deadline; a grace of 0) still download. Real sockets.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type Connection,
  connect,
  createServer,
  FILE_GET_ROUTE,
  FILE_ROUTE,
  type FileSourceOptions,
  fileSink,
  fileSource,
  type PointSubError,
} from "../../src/index.ts";

/** ~200 KB of log lines. */
const LOG = Array.from({ length: 3000 }, (_, i) => `${i} GET /items/${(i * 7919) % 10007} 200 ${i % 97}ms\n`).join("");

describe("fileSource: download bounds that are not numbers it can use", () => {
  let work: string;
  let served: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-source-options-"));
    served = join(work, "served");
    await mkdir(served);
    await writeFile(join(served, "a.bin"), Buffer.alloc(200_000, 3));
    // Compressible, but far less than the receiver's maxCompressionRatio (a run of one byte exceeds it: sent raw).
    await writeFile(join(served, "log.txt"), LOG);
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  /**
   * Downloads a.bin through a source made with `options`; resolves to the answer or rejects with its error.
   * `sent` gets the server's session, whose stats count what its download compressed.
   */
  const download = async (
    options: FileSourceOptions,
    to: string,
    sent?: (session: Connection) => void,
    path = "a.bin",
  ) => {
    const server = createServer();
    if (sent !== undefined) server.on("sessionClose", sent);
    server.handle(FILE_GET_ROUTE, fileSource(served, { crcRecords: false, ...options }).get);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const sink = fileSink(join(work, to), { crcRecords: false });
    conn.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    try {
      return JSON.parse(
        new TextDecoder().decode(await conn.request(FILE_GET_ROUTE, JSON.stringify({ path, to: path }))),
      );
    } finally {
      await conn.close();
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  };

  it("NaN, negative, 0, fractional or infinite bounds are ERR_INVALID_ARGUMENT when the source is made", () => {
    const bad: FileSourceOptions[] = [
      { downloadGraceMs: Number.NaN },
      { downloadGraceMs: -1 },
      { downloadGraceMs: Number.POSITIVE_INFINITY },
      { minDownloadBytesPerSecond: Number.NaN },
      { minDownloadBytesPerSecond: -8192 },
      { minDownloadBytesPerSecond: Number.POSITIVE_INFINITY },
      { maxDownloads: Number.NaN },
      { maxDownloads: 0 },
      { maxDownloads: -1 },
      { maxDownloads: 2.5 },
      { maxDownloadsPerSession: 0 },
      { maxDownloadsPerSession: Number.NaN },
      { maxDownloadsPerSession: Number.POSITIVE_INFINITY },
    ];
    for (const options of bad) {
      assert.throws(
        () => fileSource(served, options),
        (e: PointSubError) => e.code === "ERR_INVALID_ARGUMENT",
        JSON.stringify(options, (_k, v) => (typeof v === "number" ? String(v) : v)),
      );
    }
  });

  it("a grace of 0, no deadline (rate 0) and bounds of 1 still download", async () => {
    for (const [i, options] of [
      { downloadGraceMs: 0 },
      { minDownloadBytesPerSecond: 0, maxDownloads: 1, maxDownloadsPerSession: 1 },
    ].entries()) {
      const answer = await download(options, `out${i}`);
      assert.equal(answer.size, 200_000);
      assert.deepEqual(await readFile(join(work, `out${i}`, "a.bin")), Buffer.alloc(200_000, 3));
    }
  });

  it('compress: downloads go uncompressed by default (its documented "off"); "auto" compresses them', async () => {
    const codecsUsed = async (options: FileSourceOptions, to: string): Promise<string[]> => {
      let used: string[] | undefined;
      const answer = await download(
        options,
        to,
        (s) => {
          used = Object.entries(s.stats().compression)
            .filter(([, c]) => c.compressed > 0)
            .map(([name]) => name);
        },
        "log.txt",
      );
      assert.equal(answer.size, LOG.length);
      assert.equal(await readFile(join(work, to, "log.txt"), "utf8"), LOG);
      assert.ok(used !== undefined, "the session closed");
      return used;
    };
    assert.deepEqual(await codecsUsed({}, "default"), []);
    assert.notDeepEqual(await codecsUsed({ compress: "auto" }, "auto"), []);
  });
});
