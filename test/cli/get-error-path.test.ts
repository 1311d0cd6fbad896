/**
 * `pointsub get` of several files, one of which the server streams at
 * another size than its listing said (it changed in between). The error of
 * that file named it twice, "sub/y.txt: sub/y.txt: the server sent …", in
 * its `failed` line and in the final error: the message had the path in it
 * and each printer put it in front again. Now the path is said once. Real
 * server, real sockets, the CLI as a child process.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createServer, FILE_GET_ROUTE, FILE_LIST_ROUTE, fileSource, type Server } from "../../src/index.ts";
import { runCli } from "../helpers/cli-run.ts";

describe("get: a file whose size changed after its listing", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let server: Server;
  let url: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-get-error-path-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    const served = join(work, "served");
    await mkdir(join(served, "sub"), { recursive: true });
    await writeFile(join(served, "a.txt"), "a".repeat(5000));
    await writeFile(join(served, "sub", "y.txt"), "y".repeat(1000));
    const source = fileSource(served, { resumeKey: "s".repeat(40), crcRecords: false });
    server = createServer();
    server.handle(FILE_LIST_ROUTE, async (req, ctx) => {
      const answer = await source.list(req, ctx);
      // Listed at 1000 bytes, sent at 2000.
      if (new TextDecoder().decode(req.data).includes("sub/y.txt")) {
        await writeFile(join(served, "sub", "y.txt"), "Y".repeat(2000));
      }
      return answer;
    });
    server.handle(FILE_GET_ROUTE, source.get);
    [url] = await server.listen("tcp://127.0.0.1:0");
  });
  after(async () => {
    await server.close({ timeoutMs: 100 });
    await rm(work, { recursive: true, force: true });
  });

  it("names the file once in its failed line and in the final error", async () => {
    const out = join(work, "out");
    const r = await runCli(
      ["get", "sub/y.txt", "a.txt", "--from", url, "--out", out, "--retries", "0", "--parallel", "1"],
      env,
      30_000,
    );
    assert.equal(r.hung, false);
    assert.equal(r.code, 1, r.stdout);
    const all = `${r.stdout}${r.stderr}`;
    assert.match(all, /y\.txt: failed: /, all);
    assert.match(all, /the server sent 2000 bytes where its listing said 1000/, all);
    assert.doesNotMatch(all, /y\.txt: (failed: \w+: )?(sub\/)?y\.txt: /, all);
  });
  it("a name the server does not have, or a directory without -r: named once in the final error", async () => {
    const out = join(work, "out2");
    const missing = await runCli(["get", "sub/missing.txt", "a.txt", "--from", url, "--out", out], env, 30_000);
    assert.equal(missing.code, 1, missing.stdout);
    // The server's message names it already ("sub/missing.txt: no such file or directory: "sub/missing.txt"").
    assert.match(missing.stderr, /ERR_NOT_FOUND: no such file or directory: "sub\/missing\.txt"\n$/, missing.stderr);
    const dir = await runCli(["get", "sub", "a.txt", "--from", url, "--out", out], env, 30_000);
    assert.equal(dir.code, 1, dir.stdout);
    assert.match(dir.stderr, /ERR_INVALID_ARGUMENT: sub is a directory \(get it with -r\)\n$/, dir.stderr);
  });
});

describe("get: the one name given fails alone", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let server: Server;
  let url: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-get-one-name-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    const served = join(work, "served");
    await mkdir(join(served, "sub"), { recursive: true });
    await writeFile(join(served, "sub", "y.txt"), "y".repeat(1000));
    const source = fileSource(served, { resumeKey: "s".repeat(40), crcRecords: false });
    server = createServer();
    server.handle(FILE_LIST_ROUTE, source.list);
    server.handle(FILE_GET_ROUTE, source.get);
    [url] = await server.listen("tcp://127.0.0.1:0");
  });
  after(async () => {
    await server.close({ timeoutMs: 100 });
    await rm(work, { recursive: true, force: true });
  });

  it("given as ./sub/y.txt, over --max-file-size: its error alone, as when given as sub/y.txt", async () => {
    for (const name of ["sub/y.txt", "./sub/y.txt"]) {
      const r = await runCli(
        ["get", name, "--from", url, "--out", join(work, "out"), "--max-file-size", "1"],
        env,
        30_000,
      );
      assert.equal(r.hung, false);
      assert.equal(r.code, 1, r.stdout);
      // Before, given as ./sub/y.txt: "ERR_QUOTA: sub/y.txt: 1000 B, …" (its name compared with the one given).
      assert.match(r.stderr, /^pointsub: ERR_QUOTA: 1000 B, over --max-file-size \(1 B\)\n$/, `${name}: ${r.stderr}`);
    }
  });
});
