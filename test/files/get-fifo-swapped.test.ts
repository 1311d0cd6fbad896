/**
 * A served file swapped (by another local user) for a FIFO after the
 * download's checks and before its open: the open (O_NOFOLLOW, blocking)
 * waited for a writer that never came — a thread-pool thread held for good
 * and the download never answered (four stop every fs call of the server).
 * The file is now opened non-blocking: the FIFO reads as nothing, and the
 * download fails as a file changed while sent. The swap is made inside the
 * open (`syncBuiltinESMExports`), so it always falls between the checks and
 * the open. Real sockets, the CLI as the asker.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs, { closeSync, constants, openSync, renameSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createServer, FILE_GET_ROUTE, FILE_LIST_ROUTE, fileSource } from "../../src/index.ts";
import { runCli } from "../helpers/cli-run.ts";

describe("fileSource: a file swapped for a FIFO before it is opened", { skip: process.platform === "win32" }, () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-get-fifo-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("the download fails at once (it waited for a writer for good)", async () => {
    const served = join(work, "served");
    await mkdir(join(served, "sub"), { recursive: true });
    const file = join(served, "sub", "report.txt");
    await writeFile(file, "public report\n");
    const source = fileSource(served, { crcRecords: false });
    const server = createServer();
    server.handle(FILE_LIST_ROUTE, source.list);
    server.handle(FILE_GET_ROUTE, source.get);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const realOpen = fs.promises.open;
    let swapped = false;
    fs.promises.open = ((path: fs.PathLike, flags?: string | number, mode?: fs.Mode) => {
      if (!swapped && String(path).endsWith("report.txt") && typeof flags === "number") {
        swapped = true;
        renameSync(file, `${file}.moved`);
        execFileSync("mkfifo", [file]);
      }
      return realOpen(path, flags, mode);
    }) as typeof fs.promises.open;
    syncBuiltinESMExports();
    try {
      const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
      delete env.POINTSUB_URL;
      delete env.POINTSUB_TOKEN;
      const out = join(work, "out");
      const args = ["get", "sub/report.txt", "--from", url, "--out", out, "--retries", "0", "--timeout", "0"];
      const r = await runCli(args, env, 30_000);
      assert.equal(swapped, true, "the swap was made");
      assert.equal(r.hung, false, "the download was answered (before: its open blocked on the FIFO)");
      assert.notEqual(r.code, 0, `${r.stdout}${r.stderr}`);
    } finally {
      fs.promises.open = realOpen;
      syncBuiltinESMExports();
      // A reader blocked in the FIFO's open (before the fix) is let go: opened read-write, it has a writer.
      closeSync(openSync(file, constants.O_RDWR | constants.O_NONBLOCK));
      await server.close({ timeoutMs: 100 });
    }
  });
});
