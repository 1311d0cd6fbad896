/**
 * FIFOs put (by another local user) at the names of the file sink's own
 * files: a partial's sidecar (`.<key>.resume`), a transfer's lock
 * (`.<key>.lock`), a partial itself, a large file's CRC record
 * (`.pointsub/crc-<dev>-<ino>.json`). The names are listed in the directory.
 * Before, these were opened without O_NONBLOCK: each open waited for a
 * writer (or reader) that never came, a thread-pool thread held for good —
 * the startup scan never ended (every upload waits for it), a resume query or
 * a quick check was never answered. Now they are opened non-blocking and
 * anything but a regular file is refused (removed where the name is the
 * sink's). Real sockets, real files.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, constants, existsSync, lstatSync, openSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import {
  type Connection,
  connect,
  createServer,
  FILE_ROUTE,
  type FileSink,
  fileSink,
  type Server,
  type StreamSource,
  sendResumable,
} from "../../src/index.ts";
import { FILE_CHECK_ROUTE, partialKey } from "../../src/node/file-sink.ts";
import { MiB, sha256 } from "../helpers/data.ts";
import { sleep } from "../helpers/wait.ts";

const HUNG = Symbol("hung");
/** `p`, or HUNG when it has not settled within `ms` (a bound for what never settled before the fix). */
async function within<T>(p: Promise<T>, ms = 10_000): Promise<T | typeof HUNG> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<typeof HUNG>((r) => (timer = setTimeout(() => r(HUNG), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Lets go of opens blocked on the FIFOs (before the fix): each opened read-write, non-blocking (it has a
 * reader and a writer then), a few times, as the blocked scan moves from one to the next.
 */
async function releaseFifos(fifos: string[]): Promise<void> {
  for (let round = 0; round < 20; round++) {
    for (const f of fifos) {
      try {
        if (lstatSync(f).isFIFO()) closeSync(openSync(f, constants.O_RDWR | constants.O_NONBLOCK));
      } catch {
        // Gone (removed by the sink).
      }
    }
    await sleep(10);
  }
}

const mkfifo = (path: string) => execFileSync("mkfifo", [path]);

describe("file sink: FIFOs at the names of its own files", { skip: process.platform === "win32" }, () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-own-fifo-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  /** A server with `sink` on the upload and quick-check routes, and a connection to it. */
  async function serve(sink: FileSink): Promise<{ server: Server; conn: Connection }> {
    const server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    server.handle(FILE_CHECK_ROUTE, sink.check);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    return { server, conn: await connect(url) };
  }

  it("at a partial's sidecar and lock when the sink starts: the scan ends, the upload resumes, the FIFOs are replaced", async () => {
    const inbox = join(work, "startup");
    await mkdir(inbox);
    const id = randomBytes(32).toString("hex");
    const key = await partialKey("", FILE_ROUTE, id);
    const data = randomBytes(300_000);
    const keep = 100_000;
    // What a stopped upload leaves, its sidecar and lock swapped for FIFOs.
    await writeFile(join(inbox, `.${key}.partial`), data.subarray(0, keep));
    const fifos = [join(inbox, `.${key}.resume`), join(inbox, `.${key}.lock`)];
    for (const f of fifos) mkfifo(f);
    const sink = fileSink(inbox, { crcRecords: false });
    let conn: Connection | undefined;
    let server: Server | undefined;
    try {
      assert.notEqual(await within(sink.ready), HUNG, "the startup scan ended (before: it waited on the FIFO)");
      assert.equal(existsSync(fifos[1]), false, "the FIFO at the lock's name is no lock: removed");
      ({ server, conn } = await serve(sink));
      const point = await within(conn.queryResume(FILE_ROUTE, id));
      assert.deepEqual(point, { offset: keep, crc: crc32c(data.subarray(0, keep)) }, "the partial is read once");
      assert.ok((await stat(fifos[0])).isFile(), "its sidecar was written in the FIFO's place");
      const c = conn;
      const receipt = await within(
        sendResumable(
          c,
          FILE_ROUTE,
          {
            size: data.length,
            transferId: id,
            open: (offset): StreamSource => [data.subarray(offset)],
            prefixCrc: async (n) => crc32c(data.subarray(0, n)),
          },
          { meta: { name: "resumed.bin" }, retries: 0 },
        ).done,
      );
      assert.notEqual(receipt, HUNG, "the resumed upload was answered");
      assert.equal(
        (JSON.parse(new TextDecoder().decode(receipt as Uint8Array)) as { resumedFrom: number }).resumedFrom,
        keep,
      );
      assert.equal(sha256(await readFile(join(inbox, "resumed.bin"))), sha256(data));
    } finally {
      await releaseFifos(fifos);
      conn?.destroy();
      await server?.close({ timeoutMs: 100 });
      sink.close();
    }
  });

  it("a partial swapped for a FIFO: its resume query answers nothing to resume, and a fresh upload is stored", async () => {
    const inbox = join(work, "partial");
    await mkdir(inbox);
    const id = randomBytes(32).toString("hex");
    const partial = join(inbox, `.${await partialKey("", FILE_ROUTE, id)}.partial`);
    // No sidecar: its point is read from the file when first asked.
    await writeFile(partial, randomBytes(50_000));
    const sink = fileSink(inbox, { crcRecords: false });
    let conn: Connection | undefined;
    let server: Server | undefined;
    try {
      await sink.ready;
      ({ server, conn } = await serve(sink));
      await unlink(partial);
      mkfifo(partial);
      const point = await within(conn.queryResume(FILE_ROUTE, id));
      assert.deepEqual(point, { offset: 0, crc: 0 }, "before: the query waited on the FIFO for good");
      const fresh = randomBytes(20_000);
      const c = conn;
      const receipt = await within(
        c.sendStream(FILE_ROUTE, [fresh], { transferId: id, meta: { name: "fresh.bin" } }).done,
      );
      assert.notEqual(receipt, HUNG);
      assert.equal(sha256(await readFile(join(inbox, "fresh.bin"))), sha256(fresh));
    } finally {
      await releaseFifos([partial]);
      conn?.destroy();
      await server?.close({ timeoutMs: 100 });
      sink.close();
    }
  });

  it("at a large file's CRC record: the quick check is answered (the file read instead)", async () => {
    const inbox = join(work, "record");
    await mkdir(join(inbox, ".pointsub"), { recursive: true, mode: 0o700 });
    const data = randomBytes(MiB + 7);
    const file = join(inbox, "big.bin");
    await writeFile(file, data);
    const st = await stat(file);
    const record = join(inbox, ".pointsub", `crc-${st.dev}-${st.ino}.json`);
    mkfifo(record);
    const sink = fileSink(inbox);
    let conn: Connection | undefined;
    let server: Server | undefined;
    try {
      await sink.ready;
      ({ server, conn } = await serve(sink));
      const c = conn;
      const answer = await within(
        c.request(FILE_CHECK_ROUTE, JSON.stringify({ files: [{ name: "big.bin", size: data.length }] })),
      );
      assert.notEqual(answer, HUNG, "before: the record's open waited on the FIFO for good");
      assert.deepEqual(JSON.parse(new TextDecoder().decode(answer as Uint8Array)), {
        files: [{ size: data.length, crc32c: crc32cHex(crc32c(data)) }],
      });
    } finally {
      await releaseFifos([record]);
      conn?.destroy();
      await server?.close({ timeoutMs: 100 });
      sink.close();
    }
  });
});
