/**
 * A bundle's partial files (`.b<pid>_<time>_<n>-<i>.partial`) are never
 * resumed: a file sink removes those whose writer is gone when it starts
 * (a receiver killed mid-bundle left them for partialTtlMs, 24 h, counted
 * against its quotas), and leaves those a live process is writing (another
 * worker sharing the directory, or this process since it started); none of
 * them is a resumable partial.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileSink } from "../../src/index.ts";

const name = (pid: number, time: number) => `.b${pid.toString(36)}_${time.toString(36)}_0-3.partial`;

describe("file sink: a bundle's partial files at start", () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("removes those of a process that is gone (or of this pid before this process), keeps a live one's", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-bundle-leftovers-"));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    // A pid that surely names no process now: a child's, once it exited.
    const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
    const deadPid = child.pid as number;
    await new Promise((r) => child.once("exit", r));
    const now = Date.now();
    const dead = name(deadPid, now);
    const earlierSelf = name(process.pid, Math.floor(performance.timeOrigin) - 60_000);
    const self = name(process.pid, now);
    const parent = name(process.ppid, now);
    for (const n of [dead, earlierSelf, self, parent]) await writeFile(join(dir, n), "x".repeat(1000));
    const sink = fileSink(dir, { maxBytes: 10_000 });
    await sink.ready;
    sink.close();
    assert.deepEqual((await readdir(dir)).sort(), [parent, self].sort());
    // Not resumable uploads: nothing counted against the quota or the partials.
    assert.deepEqual({ partials: sink.usage().partials, bytes: sink.usage().bytes }, { partials: 0, bytes: 0 });
  });
});
