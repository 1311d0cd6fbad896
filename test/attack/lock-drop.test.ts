/**
 * A file transfer's lock is removed off the event loop. Under the mutation
 * fuzzer every transfer to the file sink ended with an `unlinkSync` of its
 * lock on the main thread: an unlink waits on the file system's journal,
 * behind the thread pool's fdatasyncs, and showed in the server's longest
 * turns. The unlink now runs on the thread pool; until it is done the lock
 * is still this process's: the transfer answers only then, and another
 * receiver of the same transfer in this process waits for it (an unlink
 * still queued must never delete the lock taken after it).
 */
import assert from "node:assert/strict";
import { randomBytes, randomFillSync } from "node:crypto";
import fs from "node:fs";
import fsp, { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type Connection, connect, createServer, FILE_ROUTE, fileSink } from "../../src/index.ts";
import { type FileSink, partialKey } from "../../src/node/file-sink.ts";
import { receipt, sizeOf, waitFor } from "../helpers/file-checks.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const random = (n: number) => randomFillSync(new Uint8Array(n));

describe("a transfer's lock is removed off the event loop", () => {
  let work: string;
  const cleanup: (() => unknown)[] = [];
  const origUnlinkSync = fs.unlinkSync;
  const origUnlink = fsp.unlink;
  const origLstatSync = fs.lstatSync;
  /** Partials looked at with lstatSync (on the event loop). */
  const syncPartialLstats: string[] = [];
  /** Lock files removed with unlinkSync (on the event loop). */
  const syncLockUnlinks: string[] = [];
  /** While set, the thread pool's next unlink of a lock waits for it (one unlink: later ones run at once). */
  let gate: Promise<void> | undefined;
  const lockUnlinks: string[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-lockdrop-"));
    fs.unlinkSync = (path: fs.PathLike) => {
      if (String(path).endsWith(".lock")) syncLockUnlinks.push(String(path));
      origUnlinkSync(path);
    };
    (fs as { lstatSync: unknown }).lstatSync = (path: fs.PathLike, ...rest: unknown[]) => {
      if (String(path).endsWith(".partial")) syncPartialLstats.push(String(path));
      return (origLstatSync as (...a: unknown[]) => unknown)(path, ...rest);
    };
    fsp.unlink = async (path: fs.PathLike) => {
      if (String(path).endsWith(".lock")) {
        lockUnlinks.push(String(path));
        const g = gate;
        gate = undefined;
        await g;
      }
      return origUnlink(path);
    };
    syncBuiltinESMExports();
  });
  after(async () => {
    fs.unlinkSync = origUnlinkSync;
    fsp.unlink = origUnlink;
    (fs as { lstatSync: unknown }).lstatSync = origLstatSync;
    syncBuiltinESMExports();
    for (const f of cleanup.reverse()) await f();
    await rm(work, { recursive: true, force: true });
  });

  async function serve(dir: string, onStream?: () => void): Promise<Connection & { sink: FileSink }> {
    const sink = fileSink(dir, { onStream });
    const server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    await sink.ready;
    const conn = await connect(url);
    cleanup.push(
      () => server.close({ timeoutMs: 100 }),
      () => sink.close(),
      () => conn.destroy(),
    );
    return Object.assign(conn, { sink });
  }

  it("every transfer's lock is gone when it answers, and none was removed with unlinkSync", async () => {
    const dir = join(work, "plain");
    const conn = await serve(dir);
    for (let i = 0; i < 4; i++) {
      const data = random(64 * 1024 + i);
      const id = randomBytes(32).toString("hex");
      const t = conn.sendStream(FILE_ROUTE, [data], {
        transferId: id,
        meta: { name: `f${i}.bin` },
        total: data.length,
      });
      assert.equal(receipt(await t.done).size, data.length);
      assert.deepEqual(await readFile(join(dir, `f${i}.bin`)), Buffer.from(data));
    }
    assert.deepEqual((await readdir(dir)).sort(), ["f0.bin", "f1.bin", "f2.bin", "f3.bin"], "no lock left");
    assert.equal(lockUnlinks.length, 4, "each lock was removed on the thread pool");
    assert.deepEqual(syncLockUnlinks, [], "no lock was removed on the event loop");
  });

  it("a receiver of the same transfer waits for a lock still being removed, and its own lock survives that removal", async () => {
    const dir = join(work, "race");
    // Two sinks on one directory in one process (as two servers of one process would be).
    const a = await serve(dir);
    let bStarted = false;
    const b = await serve(dir, () => {
      bStarted = true;
    });
    const id = randomBytes(32).toString("hex");
    const lock = join(dir, `.${await partialKey("", FILE_ROUTE, id)}.lock`);
    const partial = lock.replace(/\.lock$/, ".partial");
    let open!: () => void;
    gate = new Promise<void>((r) => (open = r));
    const before = lockUnlinks.length;
    const first = random(10_000);
    const ta = a.sendStream(FILE_ROUTE, [first], { transferId: id, meta: { name: "a.bin" }, total: first.length });
    let aAnswered = false;
    const doneA = ta.done.then((r) => {
      aAnswered = true;
      return receipt(r);
    });
    // A stored its file and is removing its lock (held at the gate).
    await waitFor(() => lockUnlinks.length > before, "A to remove its lock");
    assert.deepEqual(await readFile(join(dir, "a.bin")), Buffer.from(first));
    assert.equal(aAnswered, false, "A answers once its lock is gone");

    // B receives the same transfer id meanwhile; its bytes wait for A's lock to go.
    const second = random(20_000);
    let go!: () => void;
    const hold = new Promise<void>((r) => (go = r));
    async function* source() {
      yield second.subarray(0, 10_000);
      await hold;
      yield second.subarray(10_000);
    }
    const tb = b.sendStream(FILE_ROUTE, source(), { transferId: id, meta: { name: "b.bin" }, total: second.length });
    let bFailed: unknown;
    const doneB = tb.done.then(receipt, (err: unknown) => {
      bFailed = err;
      throw err;
    });
    doneB.catch(() => {});
    await waitFor(() => bStarted, "B to start the transfer");
    await sleep(100);
    assert.equal(bFailed, undefined, "B is not refused while A's lock is being removed");
    assert.equal(await sizeOf(partial), -1, "B has not started storing before A's lock is gone");

    open();
    assert.equal((await doneA).size, first.length);
    // B takes the lock after A's removal: A's unlink never deletes B's lock.
    await waitFor(async () => (await sizeOf(partial)) === 10_000, "B to store its first bytes");
    assert.ok((await sizeOf(lock)) >= 0, "B holds its lock");
    await sleep(20);
    assert.ok((await sizeOf(lock)) >= 0, "B still holds its lock");
    go();
    assert.equal((await doneB).size, second.length);
    assert.deepEqual(await readFile(join(dir, "b.bin")), Buffer.from(second));
    assert.deepEqual((await readdir(dir)).sort(), ["a.bin", "b.bin"], "no partial or lock left");
  });

  it("an interrupted transfer's partial is looked at on the thread pool, not with lstatSync, and its offset is known", async () => {
    const dir = join(work, "interrupted");
    const conn = await serve(dir);
    const sink = conn.sink;
    const id = randomBytes(32).toString("hex");
    const lock = join(dir, `.${await partialKey("", FILE_ROUTE, id)}.lock`);
    const partial = lock.replace(/\.lock$/, ".partial");
    const data = random(30_000);
    async function* source() {
      yield data.subarray(0, 10_000);
      await new Promise(() => {}); // the sender goes away mid-transfer
    }
    const t = conn.sendStream(FILE_ROUTE, source(), { transferId: id, meta: { name: "c.bin" }, total: data.length });
    t.done.catch(() => {});
    await waitFor(async () => (await sizeOf(partial)) === 10_000, "the first bytes to be stored");
    const before = lockUnlinks.length;
    conn.destroy();
    await waitFor(() => lockUnlinks.length > before, "the interrupted transfer to drop its lock");
    assert.deepEqual(syncPartialLstats, [], "no partial was looked at with lstatSync");
    assert.equal(await sizeOf(partial), 10_000, "the partial is kept for a resume");
    await waitFor(async () => (await sink.resume(id).catch(() => ({ offset: -1 }))).offset === 10_000, "the offset");
  });
});
