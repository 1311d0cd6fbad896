/**
 * The CLI turns on Node's compile cache at its entry (V8's compiled code
 * kept on disk between runs: a command's start-up skips most parsing). The
 * cache lives outside the install (the system's temporary directory, or
 * NODE_COMPILE_CACHE), so a read-only install changes nothing; a cache
 * directory that cannot be created leaves the CLI working, uncached; and
 * NODE_DISABLE_COMPILE_CACHE=1 turns it off.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);
const MAIN = join(import.meta.dirname, "../../src/cli/main.ts");

describe("the CLI's compile cache", () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-compile-cache-"));
  });
  after(() => rm(work, { recursive: true, force: true }));

  const version = (env: Record<string, string>) => {
    const base = { ...process.env };
    delete base.NODE_COMPILE_CACHE;
    delete base.NODE_DISABLE_COMPILE_CACHE;
    return run(process.execPath, [MAIN, "--version"], { env: { ...base, ...env }, timeout: 30_000 });
  };

  it("writes its cache under the temporary directory, outside the install", async () => {
    const r = await version({ TMPDIR: work });
    assert.equal(r.stdout.trim(), "0.1.0");
    assert.deepEqual(await readdir(work), ["node-compile-cache"]);
  });

  it("works uncached when the cache directory cannot be created, and when the cache is turned off", async () => {
    // A file where a directory is needed: the cache cannot be made (ENOTDIR).
    const r = await version({ TMPDIR: "/dev/null/cache" });
    assert.equal(r.stdout.trim(), "0.1.0");
    assert.equal(r.stderr, "");
    const off = join(work, "off");
    const d = await version({ NODE_DISABLE_COMPILE_CACHE: "1", NODE_COMPILE_CACHE: off });
    assert.equal(d.stdout.trim(), "0.1.0");
    await assert.rejects(readdir(off), { code: "ENOENT" });
  });
});
