/**
 * The quick check's lstats run on the main thread while the disk is fast
 * (issue 13): a request about files in a directory that exists costs no
 * thread-pool round trip per file. Counted with async_hooks (an
 * FSREQCALLBACK is created for each callback-style fs call), over a real
 * connection; the answers stay right (missing, other size, same size with
 * its CRC32C, a directory and a symbolic link are no files).
 */
import assert from "node:assert/strict";
import { createHook } from "node:async_hooks";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { crc32cJs } from "../../src/codec/crc32c.ts";
import { connect, createServer, fileSink } from "../../src/index.ts";
import { FILE_CHECK_ROUTE, type FileCheckAnswer } from "../../src/node/file-sink.ts";

/** A sink over `dir` that serves the quick check, and a connection to it. */
async function checkServer(dir: string) {
  const sink = fileSink(dir);
  const srv = createServer();
  srv.handle(FILE_CHECK_ROUTE, sink.check);
  const [url] = await srv.listen("tcp://127.0.0.1:0");
  await sink.ready;
  const conn = await connect(url);
  const close = async () => {
    await conn.close();
    await srv.close();
    sink.close();
  };
  return { conn, close };
}

/** A quick check's answers. */
const answersOf = (res: Uint8Array) =>
  (JSON.parse(new TextDecoder().decode(res)) as { files: FileCheckAnswer[] }).files;

/** The CRC32C of `text` as a check answers it (8 lowercase hex digits). */
const crcHex = (text: string) => crc32cJs(new TextEncoder().encode(text)).toString(16).padStart(8, "0");

describe("file sink: quick-check lookups on the main thread", () => {
  let work: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-check-sync-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("a check of 200 files in an existing directory makes (almost) no thread-pool calls; the answers are right", async () => {
    const dir = join(work, "inbox");
    await mkdir(join(dir, "tree", "sub"), { recursive: true });
    await writeFile(join(dir, "tree", "same.txt"), "hello");
    await writeFile(join(dir, "tree", "other.txt"), "a longer file");
    await symlink(join(dir, "tree", "same.txt"), join(dir, "tree", "link.txt"));
    const { conn, close } = await checkServer(dir);
    const files = [
      { path: "tree/same.txt", size: 5 },
      { path: "tree/other.txt", size: 5 },
      { path: "tree/sub", size: 0 },
      { path: "tree/link.txt", size: 5 },
      ...Array.from({ length: 196 }, (_, i) => ({ path: `tree/missing-${i}.txt`, size: 1024 })),
    ];
    const ask = async () => {
      const res = await conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files }));
      return answersOf(res);
    };
    await ask(); // the first reads same.txt's CRC32C (cached after)
    // On a loaded machine one lstat can take long enough that the gate sends the next second's calls to
    // the pool (as it should on a slow disk): up to 5 tries, each after that second. Before: ≥ 200 each.
    const tries: number[] = [];
    /** Promises made by each try (in this process: the server's and the client's side of the request). */
    const promises: number[] = [];
    let answers: FileCheckAnswer[] = [];
    for (let i = 0; i < 5 && !(tries.length > 0 && Math.min(...tries) < 20); i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 1100));
      let calls = 0;
      let made = 0;
      const hook = createHook({
        init(_id, type) {
          if (type === "FSREQCALLBACK") calls++;
          else if (type === "PROMISE") made++;
        },
      }).enable();
      try {
        answers = await ask();
      } finally {
        hook.disable();
      }
      tries.push(calls);
      promises.push(made);
    }
    assert.ok(Math.min(...tries) < 20, `thread-pool calls for 200 files: ${tries.join(", ")}`);
    // A file answered at once makes no promise (before: one per file, ≥ 200).
    const best = tries.indexOf(Math.min(...tries));
    assert.ok(promises[best] < 100, `promises for 200 files: ${promises.join(", ")}`);
    assert.equal(answers.length, 200);
    const crc = crcHex("hello");
    assert.deepEqual(answers[0], { size: 5, crc32c: crc });
    assert.deepEqual(answers[1], { size: 13 });
    assert.equal(answers[2], null, "a directory is no file");
    assert.equal(answers[3], null, "a symbolic link is no file");
    for (const a of answers.slice(4)) assert.equal(a, null);
    await close();
  });
  it("a FIFO or a symbolic link under a name the sink never cached is no file, and the check does not block on it", async () => {
    const dir = join(work, "special");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "real.txt"), "hello");
    await symlink(join(dir, "real.txt"), join(dir, "link.txt"));
    // Opened first (no lstat) for a name without a cached CRC: non-blocking, so a FIFO with no writer
    // answers at once instead of holding the event loop.
    execFileSync("mkfifo", [join(dir, "fifo")]);
    const { conn, close } = await checkServer(dir);
    const files = [
      { path: "fifo", size: 0 },
      { path: "link.txt", size: 5 },
      { path: "real.txt", size: 5 },
      { path: "real.txt/x", size: 5 },
    ];
    const res = await conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files }), { timeoutMs: 10_000 });
    const answers = answersOf(res);
    const crc = crcHex("hello");
    assert.deepEqual(answers, [null, null, { size: 5, crc32c: crc }, null]);
    await close();
  });

  it("small stored files the sink did not store (a restarted serve, another worker) are read for their CRC32C on the main thread", async () => {
    const dir = join(work, "small");
    const { conn, close } = await checkServer(dir);
    const body = (i: number) => `file ${i} `.repeat(100);
    // As in check 1: a loaded machine may send a second's calls to the pool; each try asks about files
    // not read before (a directory of its own), so nothing is cached. Before: ≥ 3 pool calls per file.
    const tries: number[] = [];
    for (let t = 0; t < 5 && !(tries.length > 0 && Math.min(...tries) < 20); t++) {
      if (t > 0) await new Promise((r) => setTimeout(r, 1100));
      await mkdir(join(dir, `t${t}`), { recursive: true });
      for (let i = 0; i < 200; i++) await writeFile(join(dir, `t${t}`, `f${i}.txt`), body(i));
      const files = Array.from({ length: 200 }, (_, i) => ({ path: `t${t}/f${i}.txt`, size: body(i).length }));
      let calls = 0;
      const hook = createHook({
        init(_id, type) {
          if (type === "FSREQCALLBACK" || type === "FSREQPROMISE") calls++;
        },
      }).enable();
      let answers: FileCheckAnswer[];
      try {
        const res = await conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files }));
        answers = answersOf(res);
      } finally {
        hook.disable();
      }
      tries.push(calls);
      answers.forEach((a, i) => {
        const crc = crcHex(body(i));
        assert.deepEqual(a, { size: body(i).length, crc32c: crc });
      });
    }
    assert.ok(Math.min(...tries) < 20, `thread-pool calls for 200 small files: ${tries.join(", ")}`);
    await close();
  });
  it("answers stay right when the lstats go to the thread pool (a slow disk) part of the way", async () => {
    const dir = join(work, "slow");
    await mkdir(join(dir, "tree", "sub"), { recursive: true });
    await writeFile(join(dir, "tree", "same.txt"), "hello");
    await writeFile(join(dir, "tree", "other.txt"), "a longer file");
    await writeFile(join(dir, "tree", "sub", "deep.txt"), "hello");
    await symlink(join(dir, "tree"), join(dir, "linked"));
    const { conn, close } = await checkServer(dir);
    const files = [
      { path: "tree/same.txt", size: 5 },
      { path: "tree/other.txt", size: 5 },
      { path: "tree/sub/deep.txt", size: 5 },
      { path: "tree/sub", size: 0 },
      { path: "linked/same.txt", size: 5 },
      { path: "missing/a.txt", size: 5 },
      { path: "tree/missing/b.txt", size: 5 },
      { path: "tree/sub/deep.txt", size: 4 },
    ];
    const crc = crcHex("hello");
    const expected = [
      { size: 5, crc32c: crc },
      { size: 13 },
      { size: 5, crc32c: crc },
      null,
      null,
      null,
      null,
      { size: 5 },
    ];
    // Every lstat the sink times looks like 25 ms (a stalled disk): the sink's gate sends the next
    // ones to the pool for a second of this clock, then tries the main thread again — a request
    // mixes both ways, directories answered later than the files below them are asked about.
    const realNow = performance.now.bind(performance);
    let skew = 0;
    let poolCalls = 0;
    const hook = createHook({
      init(_id, type) {
        if (type === "FSREQCALLBACK") poolCalls++;
      },
    });
    for (let round = 0; round < 6; round++) {
      const res = conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files: [...files, ...files] }));
      performance.now = () => {
        skew += 12.5;
        return realNow() + skew;
      };
      let answers: FileCheckAnswer[];
      hook.enable();
      try {
        answers = answersOf(await res);
      } finally {
        hook.disable();
        performance.now = realNow;
      }
      assert.deepEqual(answers, [...expected, ...expected], `round ${round}`);
    }
    // Both ways were taken: some lstats on the pool, not all of them (6 rounds × 16 entries).
    assert.ok(poolCalls > 0 && poolCalls < 6 * 16 * 2, `thread-pool calls: ${poolCalls}`);
    await close();
  });
});
