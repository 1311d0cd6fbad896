/**
 * `send -r` opens a tree's files by the names its walk listed. Something put
 * at such a name after the walk — a FIFO that nobody writes to — held the
 * synchronous open for good: the sender's event loop blocked, the CLI hung
 * (no timeout could fire). Tree files are opened non-blocking now: reading a
 * FIFO fails that file, and the sender goes on.
 * The reads run in a child process: before, they never returned.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";

const send = pathToFileURL(new URL("../../src/cli/send.ts", import.meta.url).pathname).href;

/** Runs `code` (an ES module body) in a child; its stdout, or "timed out" after `ms`. */
function child(code: string, ms = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ["--input-type=module", "-e", code], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (c: Buffer) => (out += c));
    p.stderr.on("data", (c: Buffer) => (err += c));
    const t = setTimeout(() => {
      p.kill("SIGKILL");
      resolve("timed out");
    }, ms);
    p.on("error", reject);
    p.on("exit", () => {
      clearTimeout(t);
      resolve(out.trim() || `no output: ${err.trim().split("\n").slice(-3).join(" / ")}`);
    });
  });
}

describe("send -r and a FIFO put at a listed name", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "pointsub-tree-fifo-"));
    execFileSync("mkfifo", [join(dir, "f.bin")]);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("reading it as a tree's file (the walk's read, and the read when it is sent) returns instead of blocking", async () => {
    const fifo = JSON.stringify(join(dir, "f.bin"));
    const out = await child(`
      import { readTreeFile, readListed } from ${JSON.stringify(send)};
      const outcome = (f) => { try { return String(f()); } catch (e) { return e.code; } };
      const a = outcome(() => readTreeFile(${fifo}, "t/f.bin").size);
      const b = outcome(() => readListed({ file: ${fifo}, target: "t/f.bin", tree: true, size: 0 }).length);
      console.log(JSON.stringify([a, b]));
    `);
    // Before, "timed out": the open waited for a writer. Now the positioned read refuses a pipe (ESPIPE):
    // that file fails (ERR_SOURCE for the sender), the others go on.
    assert.equal(out, '["ESPIPE","ESPIPE"]');
  });
});
