/**
 * A partial upload resumable from any process sharing the directory (serve
 * --workers N): two file sinks on one directory, each behind its own server
 * (as two workers are; their memories are separate, only the disk is
 * shared). An upload dropped on one is found on the other by transfer id,
 * its state read from the sidecar (never the whole partial), and resumed
 * there; while one receives a transfer the other refuses it (the lock file);
 * a lock left by a process that is gone is stale.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes, randomFillSync } from "node:crypto";
import { utimesSync, writeFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { crc32c } from "../../src/codec/crc32c.ts";
import {
  type Connection,
  connect,
  createServer,
  FILE_ROUTE,
  fileSink,
  type Server,
  type StreamSource,
  sendResumable,
} from "../../src/index.ts";
import { type FileSink, partialKey } from "../../src/node/file-sink.ts";
import { receipt, sizeOf, waitFor } from "../helpers/file-checks.ts";

const MiB = 1024 * 1024;
/** What the directory holds, without the sink's metadata directory (large files' CRC records). */
const stored = async (dir: string) => (await readdir(dir)).filter((n) => n !== ".pointsub");
const newId = () => randomBytes(32).toString("hex");
const random = (n: number) => randomFillSync(new Uint8Array(n));

/** One "worker": a sink on the shared directory behind a server of its own. */
interface Worker {
  sink: FileSink;
  server: Server;
  url: string;
}

describe("a partial upload is resumable from any process sharing the directory", () => {
  let work: string;
  const cleanup: (() => unknown)[] = [];
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-shared-"));
  });
  after(async () => {
    for (const f of cleanup.reverse()) await f();
    await rm(work, { recursive: true, force: true });
  });

  async function worker(dir: string): Promise<Worker> {
    const sink = fileSink(dir);
    const server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    cleanup.push(
      () => server.close({ timeoutMs: 100 }),
      () => sink.close(),
    );
    await sink.ready;
    return { sink, server, url };
  }
  async function client(w: Worker): Promise<Connection> {
    const c = await connect(w.url);
    cleanup.push(() => c.destroy());
    return c;
  }

  /** Sends `keep` bytes of `data` to `w` and holds the rest; `drop()` cuts the connection, `finish()` sends the rest. */
  async function holdUpload(w: Worker, dir: string, id: string, data: Uint8Array, keep: number, name: string) {
    const conn = await client(w);
    let go!: () => void;
    const hold = new Promise<void>((r) => (go = r));
    async function* source() {
      yield data.subarray(0, keep);
      await hold;
      yield data.subarray(keep);
    }
    const t = conn.sendStream(FILE_ROUTE, source(), { transferId: id, meta: { name }, total: data.length });
    const outcome = t.done.then(
      (r) => receipt(r),
      (err: unknown) => err as Error,
    );
    const partial = join(dir, `.${await partialKey("", FILE_ROUTE, id)}.partial`);
    await waitFor(async () => (await sizeOf(partial)) >= keep, "the partial to fill");
    return {
      outcome,
      drop: async () => {
        conn.destroy();
        go();
        assert.ok((await outcome) instanceof Error);
      },
      finish: () => go(),
    };
  }

  /** Resumes (or starts) `data` under `id` like sendFile does: query, check, send the rest. */
  const resumeUpload = async (w: Worker, id: string, data: Uint8Array, name: string) =>
    receipt(
      await sendResumable(
        await client(w),
        FILE_ROUTE,
        {
          size: data.length,
          transferId: id,
          open: (offset): StreamSource => [data.subarray(offset)],
          prefixCrc: async (n) => crc32c(data.subarray(0, n)),
        },
        { meta: { name }, retryDelayMs: 10, retries: 3 },
      ),
    );

  it("dropped on one worker, resumed on the other from the sidecar (no re-read); the first then knows it is gone", async () => {
    const dir = join(work, "resume");
    const a = await worker(dir);
    const b = await worker(dir);
    const id = newId();
    const data = random(3 * MiB);
    const keep = MiB;
    const up = await holdUpload(a, dir, id, data, keep, "moved.bin");
    await up.drop();
    await waitFor(async () => (await a.sink.resume(id).catch(() => ({ offset: -1 }))).offset === keep, "A to stop");
    // B never saw this transfer: it finds it on the disk.
    assert.deepEqual(await b.sink.resume(id), { offset: keep, crc: crc32c(data.subarray(0, keep)) });
    assert.equal(b.sink.usage().rescans, 0, "the state came from the sidecar, not from reading the partial");
    const r = await resumeUpload(b, id, data, "moved.bin");
    assert.equal(r.resumedFrom, keep);
    assert.deepEqual(await readFile(join(dir, "moved.bin")), Buffer.from(data));
    // A's memory said "1 MiB stored": the disk says it is done.
    assert.deepEqual(await a.sink.resume(id), { offset: 0, crc: 0 });
    assert.deepEqual(await stored(dir), ["moved.bin"], "no partial, sidecar or lock left");
  });

  it("while one worker receives a transfer, the other refuses it (query and upload); the first completes it", async () => {
    const dir = join(work, "busy");
    const a = await worker(dir);
    const b = await worker(dir);
    const id = newId();
    const data = random(2 * MiB);
    const keep = MiB;
    const up = await holdUpload(a, dir, id, data, keep, "busy.bin");
    await assert.rejects(b.sink.resume(id), { code: "ERR_RESUME" });
    const conn = await client(b);
    await assert.rejects(conn.queryResume(FILE_ROUTE, id), { code: "ERR_RESUME" });
    // A second sender starting over under the same id on B: refused when its bytes arrive, A's partial untouched.
    const t = conn.sendStream(FILE_ROUTE, [random(1000)], { transferId: id, meta: { name: "busy.bin" }, total: 1000 });
    await assert.rejects(t.done, { code: "ERR_RESUME" });
    assert.equal(await sizeOf(join(dir, `.${await partialKey("", FILE_ROUTE, id)}.partial`)), keep);
    up.finish();
    const r = await up.outcome;
    assert.ok(!(r instanceof Error), String(r));
    assert.deepEqual(await readFile(join(dir, "busy.bin")), Buffer.from(data));
    assert.deepEqual(await stored(dir), ["busy.bin"]);
  });

  it("a lock left by a process that is gone is stale: the transfer resumes, the sweep removes such locks", async () => {
    const dir = join(work, "stale");
    const a = await worker(dir);
    const b = await worker(dir);
    const id = newId();
    const data = random(2 * MiB);
    const keep = MiB;
    const up = await holdUpload(a, dir, id, data, keep, "stale.bin");
    await up.drop();
    await waitFor(async () => (await a.sink.resume(id).catch(() => ({ offset: -1 }))).offset === keep, "A to stop");
    // A crashed receiver's lock: its pid is that of a process that has exited.
    const dead = spawnSync(process.execPath, ["-e", "0"]).pid as number;
    const key = await partialKey("", FILE_ROUTE, id);
    writeFileSync(join(dir, `.${key}.lock`), String(dead));
    const orphan = `.${"e".repeat(64)}.lock`;
    writeFileSync(join(dir, orphan), String(dead));
    // A live pid (this test runner's parent: not a receiver) in a lock untouched for two hours: stale too.
    const reused = `.${"f".repeat(64)}.lock`;
    writeFileSync(join(dir, reused), String(process.ppid));
    const twoHoursAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
    utimesSync(join(dir, reused), twoHoursAgo, twoHoursAgo);
    const fresh = `.${"d".repeat(64)}.lock`;
    writeFileSync(join(dir, fresh), String(process.ppid));
    const r = await resumeUpload(b, id, data, "stale.bin");
    assert.equal(r.resumedFrom, keep);
    assert.deepEqual(await readFile(join(dir, "stale.bin")), Buffer.from(data));
    await b.sink.sweep();
    assert.deepEqual(await stored(dir), [fresh, "stale.bin"], "a recent lock of a live process is kept");
  });
});
