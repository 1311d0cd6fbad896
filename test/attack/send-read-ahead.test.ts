/**
 * `send -r` reads each small file as its walk finds it (one open, read and
 * close, no stat), ahead of the bundles' answers: a server that answers
 * slowly (or never) holds the sender's read-ahead to its bound
 * (`readAhead`, default READ_AHEAD_BYTES) plus the bundle being made
 * (BUNDLE_BYTES at most) and the file being read — not the whole tree. Once
 * the server answers, the walk goes on and every file arrives.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import fsp from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

/** Files of the tree the walk opened so far (the directory set by the test). */
let treeDir = "";
let opened = 0;
{
  const openSync = fs.openSync;
  (fs as { openSync: unknown }).openSync = (...a: unknown[]) => {
    if (treeDir !== "" && String(a[0]).startsWith(treeDir)) opened++;
    return (openSync as (...b: unknown[]) => number)(...a);
  };
  // send.ts imports openSync by name: its binding follows the module object now.
  syncBuiltinESMExports();
}
const { sendCommand, BUNDLE_FILES } = await import("../../src/cli/send.ts");
const { flushOut } = await import("../../src/cli/output.ts");
const { createServer, FILE_BUNDLE_ROUTE, FILE_CHECK_ROUTE, fileSink } = await import("../../src/index.ts");

describe("attack: a server that does not answer bundles holds the sender's read-ahead to its bound", () => {
  let work: string;
  before(async () => {
    work = await fsp.mkdtemp(join(tmpdir(), "pointsub-read-ahead-"));
  });
  after(() => fsp.rm(work, { recursive: true, force: true }));

  it("reads at most the bound ahead while no bundle is answered; every file arrives once they are", async () => {
    const src = join(work, "tree");
    await fsp.mkdir(src);
    const size = 1024;
    const count = BUNDLE_FILES * 12;
    for (let i = 0; i < count; i++)
      await fsp.writeFile(join(src, `f${String(i).padStart(5, "0")}`), Buffer.alloc(size, i));
    const readAhead = 2 * BUNDLE_FILES * size;
    const inbox = join(work, "inbox");
    const sink = fileSink(inbox, { durability: "none" });
    const server = createServer();
    server.handle(FILE_CHECK_ROUTE, sink.check);
    const answer = Promise.withResolvers<void>();
    /** Bundles that reached the server while the answers were held. */
    let arrived = 0;
    const held = Promise.withResolvers<void>();
    server.handleStream(FILE_BUNDLE_ROUTE, async (stream, ctx) => {
      if (++arrived >= 2) held.resolve();
      await answer.promise;
      return sink.bundle(stream, ctx);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    treeDir = src;
    opened = 0;
    const out = process.stdout.write;
    process.stdout.write = (() => true) as typeof process.stdout.write;
    try {
      const sending = sendCommand([src], {
        to: url,
        compress: "off",
        retries: 0,
        resume: true,
        recursive: true,
        json: true,
        readAhead,
      });
      // The read-ahead bound is two bundles here: those two reach the server, the walk stops after
      // the third is made (the one being made) — whatever the time it is given.
      await held.promise;
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      await new Promise((r) => setTimeout(r, 200));
      const ahead = opened;
      assert.ok(ahead < count, `the whole tree was read ahead (${ahead} files)`);
      assert.ok(
        ahead * size <= readAhead + BUNDLE_FILES * size + size,
        `${ahead} files read ahead, over the bound of ${readAhead} bytes plus one bundle and one file`,
      );
      answer.resolve();
      await sending;
      assert.equal((await fsp.readdir(join(inbox, "tree"))).length, count);
      // Each file's bytes as they were (read side by side into shared buffers, several of them).
      for (let i = 0; i < count; i++) {
        const got = await fsp.readFile(join(inbox, "tree", `f${String(i).padStart(5, "0")}`));
        assert.ok(got.equals(Buffer.alloc(size, i)), `f${i}`);
      }
      assert.equal(opened, count, "each file opened once");
    } finally {
      answer.resolve();
      treeDir = "";
      flushOut();
      process.stdout.write = out;
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  });
});
