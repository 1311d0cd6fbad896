/**
 * `pointsub send`'s quick check of a large file reads it for its CRC32C
 * once, then answers from a record in the sender's state directory
 * (`$POINTSUB_STATE_DIR/crc/`) while the file's identity (size, mtime,
 * ctime, inode, device) is unchanged: the third send of a completed 8 MiB
 * file reads ~none of it. A file touched since is read again. Bytes read
 * counted in the CLI child (/proc/self/io `rchar`, printed at its exit).
 * The records of files gone or changed are swept daily (`crc/.swept`).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { statSync, utimesSync } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CLI_MAIN, type ServeProcess, startServeProcess } from "../helpers/serve-process.ts";

const MiB = 1024 * 1024;
const HOOK = join(import.meta.dirname, "../helpers/rchar-at-exit.ts");

describe("send: the sender's record of a large file's CRC32C", () => {
  let work: string;
  let serve: ServeProcess;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-local-crc-"));
    serve = await startServeProcess(["--dir", join(work, "inbox")]);
  });
  after(async () => {
    await serve?.stop();
    await rm(work, { recursive: true, force: true });
  });

  /** Runs `pointsub send file --to serve`: its exit code, output and the bytes it read. */
  const send = (file: string) =>
    new Promise<{ code: number | null; out: string; read: number }>((resolve) => {
      const child = spawn(process.execPath, ["--import", HOOK, CLI_MAIN, "send", file, "--to", serve.url], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, POINTSUB_STATE_DIR: join(work, "state") },
      });
      let out = "";
      let err = "";
      child.stdout.on("data", (d) => (out += d));
      child.stderr.on("data", (d) => (err += d));
      child.on("close", (code) => resolve({ code, out, read: Number(/^rchar (\d+)$/m.exec(err)?.[1]) }));
    });

  it("a re-run reads the file once for its CRC, the next none of it; a touched file is read again", async () => {
    const file = join(work, "big.bin");
    await writeFile(file, randomFillSync(Buffer.alloc(8 * MiB)));
    const first = await send(file);
    assert.equal(first.code, 0, first.out);
    const rerun = await send(file);
    assert.equal(rerun.code, 0);
    assert.match(rerun.out, /skipped/);
    const records = await readdir(join(work, "state", "crc")).then((n) => n.filter((x) => x.endsWith(".json")));
    assert.equal(records.length, 1);
    const again = await send(file);
    assert.equal(again.code, 0);
    assert.match(again.out, /skipped/);
    // The first re-run read the whole file for its CRC; the next answered from the record (before: 8 MiB again).
    assert.ok(rerun.read - again.read >= 7 * MiB, `re-runs read ${rerun.read} and ${again.read} bytes`);
    // Touched (its times, so its ctime, change): the record no longer applies.
    const now = new Date();
    utimesSync(file, now, now);
    const touched = await send(file);
    assert.match(touched.out, /skipped/);
    assert.ok(touched.read - again.read >= 7 * MiB, `a touched file is read again (${touched.read} bytes)`);
  });

  it("records of files gone or changed are swept once a day, when a send records a file", async () => {
    const dir = join(work, "state", "crc");
    const stale = join(dir, "crc-1-424242.json");
    const record = { v: 1, path: "gone/away.bin", dev: 1, ino: 424242, size: 2 * MiB, mtimeMs: 1, ctimeMs: 1 };
    await writeFile(stale, JSON.stringify({ ...record, crc: 7, synced: true }));
    const recordOf = async (name: string) => {
      const file = join(work, name);
      await writeFile(file, randomFillSync(Buffer.alloc(2 * MiB)));
      assert.equal((await send(file)).code, 0);
      const rerun = await send(file); // the quick check records its CRC
      assert.match(rerun.out, /skipped/);
      return `crc-${statSync(file).dev}-${statSync(file).ino}.json`;
    };
    // Swept within the day already (the first test's record made the stamp): the stale record stays.
    const first = await recordOf("second.bin");
    let names = await readdir(dir);
    assert.ok(names.includes(first) && names.includes("crc-1-424242.json"), names.join(" "));
    // A day later: the next record sweeps it.
    const old = new Date(Date.now() - 25 * 60 * 60 * 1000);
    utimesSync(join(dir, ".swept"), old, old);
    const next = await recordOf("third.bin");
    names = await readdir(dir);
    assert.ok(!names.includes("crc-1-424242.json"), `the stale record was swept: ${names.join(" ")}`);
    assert.ok(names.includes(first) && names.includes(next), "live files' records stay");
    assert.ok(statSync(join(dir, ".swept")).mtimeMs > Date.now() - 60_000, "the stamp moved");
  });
});
