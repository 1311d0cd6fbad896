/**
 * sendFile and sendResumable as the CLI uses them (issue 13): the receipt
 * is an object, a non-retryable error ends the call and closes the
 * connection it opened, a cancel ends a backoff wait, progress says nothing
 * before bytes move, and a resumed send counts the bytes it really sent.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type Connection,
  connect,
  createServer,
  FILE_ROUTE,
  fileSink,
  type ProgressSnapshot,
  type Server,
  sendFile,
  sendResumable,
} from "../../src/index.ts";
import { MiB } from "../helpers/data.ts";

/** Resolves once `server` has no session left (each close is an event, not a poll). */
async function noSessions(server: Server): Promise<void> {
  while (server.sessions.size > 0) await new Promise((r) => server.once("sessionClose", r));
}

describe("sendFile / sendResumable: ends, receipts and counts", () => {
  let work: string;
  let key: Uint8Array;
  const servers: Server[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-sendfile-"));
    key = new Uint8Array(32).fill(3);
  });
  after(async () => {
    for (const s of servers) await s.close();
    await rm(work, { recursive: true, force: true });
  });

  async function fileServer(dir = join(work, `inbox-${servers.length}`)) {
    const server = createServer();
    const sink = fileSink(dir);
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    servers.push(server);
    return { server, url, dir, sink };
  }

  it("readFileFrom with the file's size reads a small file into one buffer of its size, not 1 MiB", async () => {
    const { readFileFrom } = await import("../../src/node/send-file.ts");
    const small = join(work, "small.bin");
    await writeFile(small, Buffer.alloc(1500, 7));
    const chunks: Uint8Array[] = [];
    for await (const c of readFileFrom(small, 0, 1500)) chunks.push(c);
    assert.equal(chunks.length, 1);
    assert.equal(chunks[0].length, 1500);
    assert.equal(chunks[0].buffer.byteLength, 1500, "its buffer is the file's size");
    const tail: Uint8Array[] = [];
    for await (const c of readFileFrom(small, 1000, 1500)) tail.push(c);
    assert.deepEqual(
      tail.map((c) => c.buffer.byteLength),
      [500],
    );
  });

  it("to a server without a file sink: ERR_NO_ROUTE after one attempt, and the connection it opened is closed", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    servers.push(server);
    const src = join(work, "noroute.txt");
    await writeFile(src, "no sink here");
    let attempts = 0;
    let opened: Connection | undefined;
    await assert.rejects(
      sendFile(
        async () => {
          opened = await connect(url);
          return opened;
        },
        src,
        { resumeKey: key, retryDelayMs: 1, onAttempt: () => attempts++ },
      ).done,
      { code: "ERR_NO_ROUTE" },
    );
    assert.equal(attempts, 1, "not retried");
    assert.equal(opened?.state, "closed");
    await noSessions(server);
    assert.equal(server.sessions.size, 0);

    // sendResumable alike (resume off: straight to the stream).
    await assert.rejects(
      sendResumable(
        () => connect(url),
        "/nowhere/1",
        { size: 3, transferId: "r".repeat(40), open: () => [new Uint8Array(3)] },
        {
          resume: false,
          retryDelayMs: 1,
        },
      ).done,
      { code: "ERR_NO_ROUTE" },
    );
    await noSessions(server);
    assert.equal(server.sessions.size, 0);

    // A connection the caller passed stays the caller's: open.
    const mine = await connect(url);
    await assert.rejects(sendFile(mine, src, { resumeKey: key }).done, { code: "ERR_NO_ROUTE" });
    assert.equal(mine.state, "open");
    await mine.close();
  });

  it("a compression the server does not have: ERR_COMPRESSION at once, not retried, connection closed", async () => {
    const { createNodeRuntime } = await import("../../src/index.ts");
    const server = createServer({ runtime: createNodeRuntime({ compression: false }) });
    const sink = fileSink(join(work, "inbox-plain"));
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    servers.push(server);
    const src = join(work, "zstd.txt");
    await writeFile(src, "compress me");
    let attempts = 0;
    await assert.rejects(
      sendFile(() => connect(url), src, {
        compress: "gzip",
        resumeKey: key,
        retryDelayMs: 1,
        onAttempt: () => attempts++,
      }).done,
      { code: "ERR_COMPRESSION" },
    );
    assert.equal(attempts, 1);
    await noSessions(server);
  });

  it("cancel during the wait between attempts ends the transfer at once (the wait is long)", {
    timeout: 30_000,
  }, async () => {
    const src = join(work, "retry.txt");
    await writeFile(src, "x");
    let paused!: () => void;
    const isPaused = new Promise<void>((r) => (paused = r));
    const t = sendFile(() => connect("tcp://127.0.0.1:1"), src, {
      resumeKey: key,
      retries: 5,
      retryDelayMs: 120_000,
      onProgress: (s) => {
        if (s.status === "paused") paused();
      },
    });
    await isPaused;
    t.cancel("enough");
    await assert.rejects(t.done, { code: "ERR_CANCELLED" });
    assert.equal(t.snapshot().status, "cancelled");

    const ac = new AbortController();
    let paused2!: () => void;
    const isPaused2 = new Promise<void>((r) => (paused2 = r));
    const t2 = sendFile(() => connect("tcp://127.0.0.1:1"), src, {
      resumeKey: key,
      retryDelayMs: 120_000,
      signal: ac.signal,
      onProgress: (s) => {
        if (s.status === "paused") paused2();
      },
    });
    await isPaused2;
    ac.abort();
    await assert.rejects(t2.done, { code: "ERR_CANCELLED" });
  });

  it("resolves to the receipt object; progress says nothing before bytes move", async () => {
    const { url, dir } = await fileServer();
    const src = join(work, "small.txt");
    await writeFile(src, "hello receipt");
    const conn = await connect(url);
    const seen: ProgressSnapshot[] = [];
    try {
      const t = sendFile(conn, src, { resumeKey: key, onProgress: (s) => seen.push(s) });
      const r = await t;
      assert.ok(!(r instanceof Uint8Array));
      assert.deepEqual(r, {
        name: "small.txt",
        // Where under the receiver's directory (its own paths stay its own).
        path: "small.txt",
        size: 13,
        crc32c: r.crc32c,
        resumedFrom: 0,
        transferId: t.id,
        bytesSent: 13,
        attempts: 1,
      });
      assert.match(r.crc32c, /^[0-9a-f]{8}$/);
      assert.equal(await readFile(join(dir, r.path), "utf8"), "hello receipt");
    } finally {
      await conn.close();
    }
    assert.ok(seen.length > 0);
    for (const s of seen) {
      if (s.status === "initializing" || s.status === "resuming") {
        assert.equal(s.bytes, 0, `${s.status} at ${s.bytes} bytes (${s.percent}%)`);
      }
    }
    assert.equal(seen.at(-1)?.status, "completed");
  });

  it("a resumed send reports the bytes it sent in this run, not the whole size", async () => {
    const { url, sink, server } = await fileServer();
    const size = 48 * MiB;
    const src = join(work, "resume.bin");
    await writeFile(src, randomFillSync(new Uint8Array(size)));
    // A first attempt over a connection this test cuts once part of the file is stored.
    const first = await connect(url);
    const cut = sendFile(first, src, {
      resumeKey: key,
      progressIntervalMs: 1,
      onProgress: (s) => {
        if (s.bytes > 8 * MiB) first.destroy();
      },
    });
    await assert.rejects(cut.done);
    await noSessions(server);
    // The sink may still be winding the cut stream down (ERR_RESUME, retryable): a connect function retries.
    try {
      const r = await sendFile(() => connect(url), src, { resumeKey: key, retryDelayMs: 10 });
      assert.ok(r.resumedFrom > 0 && r.resumedFrom < size, `resumed from ${r.resumedFrom}`);
      assert.equal(r.size, size);
      assert.equal(r.bytesSent, size - r.resumedFrom);
      assert.ok(r.attempts >= 1);
    } finally {
      sink.close();
    }
  });
});
