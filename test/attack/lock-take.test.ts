/**
 * A file transfer's lock is taken in one file-system operation: a copy of
 * this process's pid file, made exclusively (O_EXCL: never through a link).
 * Under the mutation fuzzer the lock's open, write and close (three thread
 * pool jobs, three completions on the event loop, a FileHandle) showed in the
 * server's longest turns.
 */
import assert from "node:assert/strict";
import { randomBytes, randomFillSync } from "node:crypto";
import type fs from "node:fs";
import fsp, { lstat, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, createServer, FILE_ROUTE, fileSink } from "../../src/index.ts";
import { createPidFile, pidFilePath } from "../../src/node/pid-file.ts";
import { receipt } from "../helpers/file-checks.ts";

const code = (err: unknown) => (err as NodeJS.ErrnoException).code;

describe("a transfer's lock is taken in one file-system operation", () => {
  let work: string;
  const origOpen = fsp.open;
  /** Lock files opened through node:fs/promises (open, then write and close). */
  const lockOpens: string[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-locktake-"));
    fsp.open = (async (path: fs.PathLike, ...rest: unknown[]) => {
      if (String(path).endsWith(".lock")) lockOpens.push(String(path));
      return (origOpen as (...a: unknown[]) => unknown)(path, ...rest);
    }) as typeof fsp.open;
    syncBuiltinESMExports();
  });
  after(async () => {
    fsp.open = origOpen;
    syncBuiltinESMExports();
    await rm(work, { recursive: true, force: true });
  });

  it("creates the file exclusively, mode 0600, holding the pid; never through a link", async () => {
    const path = join(work, "a.lock");
    assert.equal(await createPidFile(path), true);
    assert.equal(await readFile(path, "utf8"), String(process.pid));
    assert.equal((await lstat(path)).mode & 0o777, 0o600);
    await assert.rejects(createPidFile(path), (e) => code(e) === "EEXIST");
    // A link at the path (to a file or to nowhere) is not followed.
    const target = join(work, "target");
    await writeFile(target, "keep");
    await symlink(target, join(work, "b.lock"));
    await assert.rejects(createPidFile(join(work, "b.lock")), (e) => code(e) === "EEXIST");
    await symlink(join(work, "nowhere"), join(work, "c.lock"));
    await assert.rejects(createPidFile(join(work, "c.lock")), (e) => code(e) === "EEXIST");
    assert.equal(await readFile(target, "utf8"), "keep");
    await assert.rejects(lstat(join(work, "nowhere")));
    await assert.rejects(createPidFile(join(work, "missing", "d.lock")), (e) => code(e) === "ENOENT");
  });

  it("a pid file removed from under it is made again", async () => {
    const template = await pidFilePath();
    assert.ok(template !== undefined);
    await rm(dirname(template), { recursive: true, force: true });
    const path = join(work, "e.lock");
    // The copy fails once (ENOENT: the caller retries, as for a missing directory), then works.
    await assert.rejects(createPidFile(path), (e) => code(e) === "ENOENT");
    assert.equal(await createPidFile(path), true);
    assert.equal(await readFile(path, "utf8"), String(process.pid));
    assert.notEqual(await pidFilePath(), template);
  });

  it("the file sink's transfers take their locks without opening them", async () => {
    const dir = join(work, "sink");
    const sink = fileSink(dir);
    const server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    await sink.ready;
    const conn = await connect(url);
    try {
      for (let i = 0; i < 3; i++) {
        const data = randomFillSync(new Uint8Array(10_000 + i));
        const t = conn.sendStream(FILE_ROUTE, [data], {
          transferId: randomBytes(32).toString("hex"),
          meta: { name: `f${i}.bin` },
          total: data.length,
        });
        assert.equal(receipt(await t.done).size, data.length);
        assert.deepEqual(await readFile(join(dir, `f${i}.bin`)), Buffer.from(data));
      }
      assert.deepEqual(lockOpens, [], "no lock was opened (open, write, close)");
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
      await sink.close();
    }
  });
});
