/**
 * A sendFile resumed after a cut checks the receiver's prefix (offset and CRC32C) against its own
 * file. Before, it read that whole prefix again (by path, apart from its file access): ~1.7 s per
 * 110 MB while the resume waited. Now the CRC32C its stream computed at points it sent is kept, and
 * only the bytes after the last one before the offset are read, through the file access; a file
 * changed since (its ctime, though size and mtime are as before) or a receiver's wrong CRC is still
 * caught: the prefix is read whole, the transfer starts over from 0. Real sockets on loopback.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { closeSync, openSync, renameSync, symlinkSync, utimesSync, writeSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { type Connection, connect, createServer, FILE_ROUTE, fileSink, sendFile } from "../../src/index.ts";
import { type FileAccess, readFileFrom, sendFileVia } from "../../src/node/send-file.ts";

const MIB = 1024 * 1024;
const SIZE = 24 * MIB;

async function setup(prefix: string) {
  const work = await mkdtemp(join(tmpdir(), prefix));
  process.env.POINTSUB_STATE_DIR = join(work, "state");
  const inbox = join(work, "inbox");
  const src = join(work, "a.bin");
  const data = randomFillSync(new Uint8Array(SIZE));
  await writeFile(src, data);
  // Whole seconds: set back exactly after an edit (only the ctime then tells it).
  utimesSync(src, 1_000_000_000, 1_000_000_000);
  const sink = fileSink(inbox);
  const server = createServer();
  return { work, inbox, src, data, sink, server };
}

/**
 * What each test's sendFile takes: a dial of `url` per attempt, and options that cut the connection once,
 * once `at` bytes were sent (half the file; `atCut` runs then).
 */
function cutOnce(url: string, atCut?: () => void, at = SIZE / 2) {
  let current: Connection | undefined;
  const state = { cut: false, close: async () => current?.close() };
  const dial = async () => {
    current = await connect(url);
    return current;
  };
  const options = {
    retryDelayMs: 10,
    progressIntervalMs: 1,
    onProgress: (p: { bytes: number }) => {
      if (!state.cut && p.bytes > at) {
        state.cut = true;
        current?.destroy();
        atCut?.();
      }
    },
  };
  return { state, dial, options };
}

async function cleanup(t: Awaited<ReturnType<typeof setup>>, c: ReturnType<typeof cutOnce>): Promise<void> {
  await c.state.close();
  await t.server.close({ timeoutMs: 100 });
  t.sink.close();
  await rm(t.work, { recursive: true, force: true, maxRetries: 3 });
}

describe("sendFile: the prefix check of a resume", () => {
  it("reads only the bytes after the last checkpoint it sent, through its file access", async () => {
    const t = await setup("pointsub-prefix-marks-");
    const { work, inbox, src, data, sink, server } = t;
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // The file under a name only this file access knows: a read that bypasses it fails.
    const virtual = join(work, "no-such-name.bin");
    const reads: { from: number; to: number; bytes: number }[] = [];
    const files: FileAccess = {
      stat: (p) => (p === virtual ? stat(src) : Promise.resolve(undefined)),
      open: (p, offset, size) =>
        (async function* () {
          if (p !== virtual) throw new Error(`read of ${p}`);
          const r = { from: offset, to: size, bytes: 0 };
          reads.push(r);
          for await (const chunk of readFileFrom(src, offset, size)) {
            r.bytes += chunk.length;
            yield chunk;
          }
        })(),
    };
    // Cut at three quarters: a receiver slowed by a loaded machine still holds over 8 MiB (two checkpoints).
    const c = cutOnce(url, undefined, (SIZE * 3) / 4);
    try {
      const r = await sendFileVia(files, c.dial, virtual, { name: "a.bin", ...c.options });
      assert.ok(c.state.cut, "the connection was cut");
      assert.ok(r.resumedFrom > 8 * MIB, `resumed from ${r.resumedFrom}: ${JSON.stringify(reads)}`);
      // The prefix check's reads end short of the file's end (the content's reads go to it).
      const checks = reads.filter((x) => x.to !== SIZE);
      assert.equal(checks.length, 1, JSON.stringify(reads));
      assert.equal(checks[0].to, r.resumedFrom);
      assert.ok(checks[0].bytes <= 5 * MIB, `the prefix check read ${checks[0].bytes} bytes of ${r.resumedFrom}`);
      assert.deepEqual(await readFile(join(inbox, "a.bin")), Buffer.from(data));
    } finally {
      await cleanup(t, c);
    }
  });

  it("starts over from 0 when the file was written in its prefix since (same size and mtime, another ctime)", async () => {
    const t = await setup("pointsub-prefix-edit-");
    const { inbox, src, data, sink, server } = t;
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const edited = Buffer.from(data);
    edited[1000] ^= 0xff;
    const c = cutOnce(url, () => {
      // A byte the receiver holds, changed in place; the mtime set back.
      const fd = openSync(src, "r+");
      writeSync(fd, edited, 1000, 1, 1000);
      closeSync(fd);
      utimesSync(src, 1_000_000_000, 1_000_000_000);
    });
    try {
      const r = await sendFile(c.dial, src, c.options);
      assert.ok(c.state.cut, "the connection was cut");
      assert.equal(r.resumedFrom, 0);
      assert.deepEqual(await readFile(join(inbox, "a.bin")), edited);
    } finally {
      await cleanup(t, c);
    }
  });

  it("starts over from 0 when the receiver names a wrong CRC32C for the prefix it holds", async () => {
    const t = await setup("pointsub-prefix-lie-");
    const { inbox, src, data, sink, server } = t;
    let queries = 0;
    let claimed = 0;
    server.handleStream(FILE_ROUTE, sink.handler, {
      resume: async (id, ctx) => {
        const point = await sink.resume(id, ctx);
        // The second query (after the cut): the offset held, another CRC.
        if (++queries === 2 && point.offset > 0) {
          claimed = point.offset;
          return { offset: point.offset, crc: (point.crc ^ 1) >>> 0 };
        }
        return point;
      },
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const c = cutOnce(url);
    try {
      const r = await sendFile(c.dial, src, c.options);
      assert.ok(claimed > 8 * MIB, `the receiver claimed ${claimed} bytes`);
      assert.equal(r.resumedFrom, 0);
      assert.deepEqual(await readFile(join(inbox, "a.bin")), Buffer.from(data));
    } finally {
      await cleanup(t, c);
    }
  });

  it("starts over from 0 when an attempt read another file of the same size and mtime at its path (a link swapped, and back)", async () => {
    const t = await setup("pointsub-prefix-swap-");
    const { work, inbox, src, data, sink, server } = t;
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // Another version: a byte apart near the start (before the first checkpoint) and near the end (after the cut).
    const other = join(work, "b.bin");
    const b = Buffer.from(data);
    b[1000] ^= 0xff;
    b[SIZE - 1000] ^= 0xff;
    await writeFile(other, b);
    utimesSync(other, 1_000_000_000, 1_000_000_000);
    const link = join(work, "current.bin");
    const point = (to: string) => {
      symlinkSync(to, `${link}.new`);
      renameSync(`${link}.new`, link);
    };
    point(src);
    const c = cutOnce(url, () => point(src));
    try {
      const r = await sendFile(c.dial, link, {
        name: "a.bin",
        ...c.options,
        // After the transfer's stat, before the first attempt opens the file: the link to the other version.
        onAttempt: (n) => {
          if (n === 0) point(other);
        },
      });
      assert.ok(c.state.cut, "the connection was cut");
      // Before: the other version's checkpoint combined with this file's bytes matched the receiver's
      // prefix; it kept the other version's first half, this file's second (neither file).
      assert.equal(r.resumedFrom, 0);
      assert.deepEqual(await readFile(join(inbox, "a.bin")), Buffer.from(data));
    } finally {
      await cleanup(t, c);
    }
  });
});
