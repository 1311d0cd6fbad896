/**
 * A large stored file's CRC32C persisted next to it (`.pointsub/` in the
 * sink's directory), so a quick check answers without reading the file in
 * any process sharing the directory (`serve --workers N`) and after a
 * restart: two file sinks on one directory, each behind its own server (as
 * two workers; their memories are separate, only the disk is shared).
 * Reads are counted with the bytes this process read (Linux's
 * /proc/self/io `rchar`). A file changed on disk since is read again, a
 * record from another boot of a file stored without fsync is not trusted,
 * and the metadata directory cannot be uploaded to, listed or downloaded.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { closeSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from "node:fs";
import { mkdtemp, readdir, rm, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { crc32c } from "../../src/codec/crc32c.ts";
import {
  decodeFileGetAnswer,
  decodeFileListAnswer,
  encodeFileGetRequest,
  encodeFileListRequest,
} from "../../src/codec/file-routes.ts";
import {
  type Connection,
  connect,
  createServer,
  FILE_GET_ROUTE,
  FILE_LIST_ROUTE,
  FILE_ROUTE,
  fileSink,
  fileSource,
  type Server,
  sendFile,
} from "../../src/index.ts";
import { META_DIR } from "../../src/node/file-crc-store.ts";
import { FILE_CHECK_ROUTE, type FileSink } from "../../src/node/file-sink.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;

/** Bytes this process has read so far (read(2) and friends, page cache included). */
function bytesRead(): number {
  const m = /^rchar: (\d+)$/m.exec(readFileSync("/proc/self/io", "utf8"));
  return Number(m?.[1]);
}

describe("a large stored file's CRC32C is kept on disk", () => {
  let work: string;
  const cleanup: (() => unknown)[] = [];
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-crc-store-"));
  });
  after(async () => {
    for (const f of cleanup.reverse()) await f();
    await rm(work, { recursive: true, force: true });
  });

  /** One "worker": a sink (and a file source) on the directory behind a server of its own, and a client of it. */
  async function worker(dir: string, durability: "fsync" | "none" = "fsync", overwrite = false) {
    const sink: FileSink = fileSink(dir, { durability, overwrite });
    const server: Server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    server.handle(FILE_CHECK_ROUTE, sink.check);
    const source = fileSource(dir);
    server.handle(FILE_LIST_ROUTE, source.list);
    server.handle(FILE_GET_ROUTE, source.get);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn: Connection = await connect(url);
    cleanup.push(
      () => server.close({ timeoutMs: 100 }),
      () => sink.close(),
      () => conn.destroy(),
    );
    await sink.ready;
    return { sink, conn };
  }
  async function check(conn: Connection, path: string, size: number): Promise<{ size: number; crc32c?: string }> {
    const a = await conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files: [{ path, size }] }), { timeoutMs: 30_000 });
    return (JSON.parse(new TextDecoder().decode(a)) as { files: { size: number; crc32c?: string }[] }).files[0];
  }
  const hex = (n: number) => n.toString(16).padStart(8, "0");

  it("another sink on the directory (a second worker, a restart) answers a quick check without reading the file", async () => {
    const dir = join(work, "shared");
    const a = await worker(dir);
    const b = await worker(dir);
    const size = 16 * MiB;
    const data = randomFillSync(Buffer.alloc(size));
    const src = join(work, "big.bin");
    writeFileSync(src, data);
    const receipt = await sendFile(a.conn, src, { relativePath: "sub/big.bin" });
    assert.equal(receipt.crc32c, hex(crc32c(data)));
    // The worker that did not store it, and a sink started after it was stored.
    const c = await worker(dir);
    for (const w of [b, c]) {
      const before = bytesRead();
      const answer = await check(w.conn, "sub/big.bin", size);
      const read = bytesRead() - before;
      assert.deepEqual(answer, { size, crc32c: receipt.crc32c });
      // Before: the whole file (16 MiB) once per process. Now its record (under 1 KiB) and the socket's bytes.
      assert.ok(read < MiB, `read ${read} B to answer for a ${size / MiB} MiB file`);
    }

    // A download the asker already holds whole: the file source answers from the record too.
    {
      const before = bytesRead();
      const answer = decodeFileGetAnswer(
        await c.conn.request(
          FILE_GET_ROUTE,
          encodeFileGetRequest({ path: "sub/big.bin", to: "big.bin", have: { size, crc32c: receipt.crc32c } }),
        ),
      );
      assert.equal(answer.skipped, true);
      assert.ok(bytesRead() - before < MiB, "the download's check read no file");
    }

    // Changed on disk with its size and mtime kept (another writer): the ctime moved, so it is read again.
    const path = join(dir, "sub", "big.bin");
    const st = statSync(path);
    // The times copied to a reference file and back, to the nanosecond (touch -r).
    const ref = join(work, "ref");
    writeFileSync(ref, "");
    assert.equal(spawnSync("touch", ["-r", path, ref]).status, 0);
    const fd = openSync(path, "r+");
    writeSync(fd, Buffer.from([data[0] ^ 0xff]), 0, 1, 0);
    closeSync(fd);
    assert.equal(spawnSync("touch", ["-r", ref, path]).status, 0);
    assert.equal(statSync(path).mtimeMs, st.mtimeMs);
    data[0] ^= 0xff;
    const before = bytesRead();
    const answer = await check(b.conn, "sub/big.bin", size);
    assert.ok(bytesRead() - before >= size, "the changed file was read");
    assert.deepEqual(answer, { size, crc32c: hex(crc32c(data)) });
    // That read is recorded too: the next process answers from it.
    const d = await worker(dir);
    // The record is written after the answer: waited for (a fixed 50 ms was too short on a loaded machine).
    const changed = statSync(path);
    const record = join(dir, META_DIR, `crc-${changed.dev}-${changed.ino}.json`);
    await until(() => {
      try {
        return (JSON.parse(readFileSync(record, "utf8")) as { ctimeMs?: number }).ctimeMs === changed.ctimeMs;
      } catch {
        return false;
      }
    }, 10_000);
    const before2 = bytesRead();
    assert.deepEqual(await check(d.conn, "sub/big.bin", size), { size, crc32c: hex(crc32c(data)) });
    assert.ok(bytesRead() - before2 < MiB);
  });

  it("a file replaced by an upload (overwrite) takes its record with it: one record per stored file, not one per upload", async () => {
    const dir = join(work, "overwrite");
    const { conn } = await worker(dir, "none", true);
    const src = join(work, "overwrite-src.bin");
    for (let i = 0; i < 4; i++) {
      writeFileSync(src, randomFillSync(Buffer.alloc(1024 * 1024)));
      await sendFile(conn, src, { name: "same.bin" });
    }
    // Records are written and removed in the background of each upload: wait for the last one alone.
    const deadline = Date.now() + 10_000;
    let names: string[] = [];
    while (Date.now() < deadline) {
      names = (await readdir(join(dir, META_DIR))).filter((n) => n.endsWith(".json"));
      const { ino } = statSync(join(dir, "same.bin"));
      if (names.length === 1 && names[0].endsWith(`-${ino}.json`)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(names.length, 1, `records after 4 uploads to one name: ${names.join(", ")}`);
  });

  it("a record of a file stored without fsync is trusted in this boot only", async () => {
    const dir = join(work, "nosync");
    const a = await worker(dir, "none");
    const size = 2 * MiB;
    const data = randomFillSync(Buffer.alloc(size));
    const src = join(work, "mid.bin");
    writeFileSync(src, data);
    await sendFile(a.conn, src, { name: "mid.bin" });
    const [name] = await readdir(join(dir, META_DIR));
    const recordFile = join(dir, META_DIR, name);
    const record = JSON.parse(readFileSync(recordFile, "utf8")) as { synced: boolean; boot?: string };
    assert.equal(record.synced, false);
    assert.equal(typeof record.boot, "string");
    const b = await worker(dir);
    let before = bytesRead();
    await check(b.conn, "mid.bin", size);
    assert.ok(bytesRead() - before < size, "this boot's record is used");
    // As if the machine had rebooted (crashed) since: the record no longer counts.
    writeFileSync(recordFile, JSON.stringify({ ...record, boot: "another-boot" }));
    const c = await worker(dir);
    before = bytesRead();
    assert.deepEqual(await check(c.conn, "mid.bin", size), { size, crc32c: hex(crc32c(data)) });
    assert.ok(bytesRead() - before >= size, "the file was read");
  });

  it("the metadata directory cannot be uploaded to, listed or downloaded; the sweep drops records of removed files", async () => {
    const dir = join(work, "meta");
    const a = await worker(dir);
    const src = join(work, "m.bin");
    writeFileSync(src, randomFillSync(Buffer.alloc(MiB)));
    await sendFile(a.conn, src, { name: "m.bin" });
    const [record] = await readdir(join(dir, META_DIR));
    assert.match(record, /^crc-\d+-\d+\.json$/);
    for (const p of [`${META_DIR}/${record}`, `${META_DIR}/planted.json`, ".PointSub/x"]) {
      await assert.rejects(Promise.resolve(sendFile(a.conn, src, { relativePath: p, retries: 0 })), {
        code: "ERR_INVALID_ARGUMENT",
      });
      await assert.rejects(
        a.conn.request(FILE_GET_ROUTE, encodeFileGetRequest({ path: p, to: "x" })),
        (err: { code?: string }) => err.code === "ERR_NOT_FOUND" || err.code === "ERR_INVALID_ARGUMENT",
      );
    }
    const check1 = await a.conn
      .request(FILE_CHECK_ROUTE, JSON.stringify({ files: [{ path: `${META_DIR}/${record}`, size: 1 }] }))
      .then(
        () => "answered",
        (err: { code?: string }) => err.code,
      );
    assert.equal(check1, "ERR_INVALID_ARGUMENT");
    for (const recursive of [false, true]) {
      const list = decodeFileListAnswer(await a.conn.request(FILE_LIST_ROUTE, encodeFileListRequest({ recursive })));
      assert.deepEqual(
        list.entries.map((e) => e.path),
        ["m.bin"],
      );
    }
    assert.equal(await a.sink.sweep(), 0, "a record of a file still there is kept");
    await unlink(join(dir, "m.bin"));
    assert.equal(await a.sink.sweep(), 1);
    assert.deepEqual(await readdir(join(dir, META_DIR)), []);
  });
});
