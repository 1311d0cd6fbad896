/**
 * After an upload is named, the sink fsyncs its directory, opened by its
 * path. A directory on the way swapped (by another local user) for a
 * symbolic link to a FIFO between the naming and that fsync made the open
 * block until something wrote to the FIFO: a thread-pool thread held for
 * good and the upload never answered (four such uploads stop every file
 * operation of the server). The directory is now opened with O_DIRECTORY:
 * anything else fails at once (the fsync is best effort). The swap is made
 * right after the link that names the file (`syncBuiltinESMExports`). Real
 * sockets.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs, { closeSync, constants, openSync, renameSync, symlinkSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, createServer, FILE_ROUTE, fileSink, sendFile } from "../../src/index.ts";

describe("file sink: the fsync of an upload's directory", { skip: process.platform === "win32" }, () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-sync-fifo-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("never blocks on a FIFO swapped in for the directory: the upload is answered", async () => {
    const inbox = join(work, "inbox");
    await mkdir(join(inbox, "sub"), { recursive: true });
    const fifo = join(work, "fifo");
    execFileSync("mkfifo", [fifo]);
    const src = join(work, "f.txt");
    await writeFile(src, "named, then its directory swapped\n");
    const sink = fileSink(inbox, { crcRecords: false });
    await sink.ready;
    const server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const realLink = fs.promises.link;
    let swapped = false;
    fs.promises.link = (async (from: fs.PathLike, to: fs.PathLike) => {
      await realLink(from, to);
      if (!swapped && String(to).endsWith("f.txt")) {
        swapped = true;
        renameSync(join(inbox, "sub"), join(inbox, "sub.moved"));
        symlinkSync(fifo, join(inbox, "sub"));
      }
    }) as typeof fs.promises.link;
    syncBuiltinESMExports();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const hung = new Promise<"hung">((resolve) => {
        timer = setTimeout(() => resolve("hung"), 10_000);
      });
      const receipt = await Promise.race([sendFile(conn, src, { relativePath: "sub/f.txt" }), hung]);
      assert.equal(swapped, true, "the swap was made");
      assert.notEqual(receipt, "hung", "the upload was answered (before: its directory's fsync blocked on the FIFO)");
      assert.equal(await readFile(join(inbox, "sub.moved", "f.txt"), "utf8"), "named, then its directory swapped\n");
    } finally {
      clearTimeout(timer);
      fs.promises.link = realLink;
      syncBuiltinESMExports();
      // A reader blocked in the FIFO's open (before the fix) is let go: opened read-write, it has a writer.
      closeSync(openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK));
      conn.destroy();
      await server.close({ timeoutMs: 100 });
      await sink.close();
    }
  });
});
