/**
 * A served file swapped for a symbolic link (to a file outside the served
 * directory, of the same size and modification time) after `fileSource`
 * checked its real path and before the download read it: the read followed
 * the link and `pointsub get` received the outside file. Now the download
 * looks at and opens the file without following links: it fails, and
 * nothing of the outside file arrives. The swap is made in the `onGet` hook,
 * which runs after the checks and before the file is read. Real sockets, the
 * real `pointsub get`.
 */
import assert from "node:assert/strict";
import { renameSync, symlinkSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createServer, FILE_GET_ROUTE, FILE_LIST_ROUTE, fileSource, type Server } from "../../src/index.ts";
import { runCli } from "../helpers/cli-run.ts";

describe("fileSource: a file swapped for a link while it is downloaded", () => {
  let work: string;
  let server: Server;
  let url: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-get-swap-"));
    const served = join(work, "served");
    await mkdir(served);
    await mkdir(join(work, "secret"));
    await mkdir(join(work, "out"));
    const file = join(served, "report.txt");
    const secret = join(work, "secret", "private.key");
    await writeFile(file, "public report 0123456789\n");
    await writeFile(secret, "PRIVATE KEY abcdefghijkl\n");
    await utimes(file, 1_700_000_000, 1_700_000_000);
    await utimes(secret, 1_700_000_000, 1_700_000_000);
    const [a, b] = [await stat(file), await stat(secret)];
    assert.deepEqual([a.size, a.mtimeMs], [b.size, b.mtimeMs]);
    const source = fileSource(served, {
      crcRecords: false,
      onGet: () => {
        renameSync(file, `${file}.moved`);
        symlinkSync(secret, file);
      },
    });
    server = createServer();
    server.handle(FILE_LIST_ROUTE, source.list);
    server.handle(FILE_GET_ROUTE, source.get);
    [url] = await server.listen("tcp://127.0.0.1:0");
  });
  after(async () => {
    await server.close({ timeoutMs: 100 });
    await rm(work, { recursive: true, force: true });
  });

  it("the download fails and nothing of the outside file arrives", async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_URL;
    delete env.POINTSUB_TOKEN;
    const out = join(work, "out");
    const r = await runCli(["get", "report.txt", "--from", url, "--out", out, "--retries", "0"], env, 60_000);
    assert.equal(r.hung, false);
    const names = await readdir(out);
    for (const name of names) {
      const content = await readFile(join(out, name), "utf8").catch(() => "");
      assert.ok(!content.includes("PRIVATE"), `${name} holds the outside file: ${r.stdout}`);
    }
    assert.equal(r.code, 1, `${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /^pointsub: ERR_\w+: /);
  });
});
