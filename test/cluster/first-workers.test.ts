/**
 * A pool's first workers and the replacements of those that died after
 * they were ready, while another first worker still starts: `ready` waits
 * for the first workers only (a replacement's ready resolved it while a
 * first worker had not listened yet, listing it without URLs), and a
 * replacement that dies before it is ready is a restart like any other (it
 * was taken for a first worker: `ready` rejected and the whole pool closed,
 * the healthy workers with it).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runWorkers } from "../../src/cluster/index.ts";

const exec = join(import.meta.dirname, "scripted-worker.ts");

describe("runWorkers: first workers and replacements", { timeout: 30_000 }, () => {
  let work: string;
  let n = 0;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-first-workers-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });
  const pool = async (script: Record<string, string>) => {
    const dir = await mkdtemp(join(work, `p${n++}-`));
    return runWorkers({
      workers: 2,
      signals: false,
      shutdownTimeoutMs: 200,
      exec,
      env: { POINTSUB_ORDINALS: dir, POINTSUB_SCRIPT: JSON.stringify(script) },
    });
  };

  it("ready waits for every first worker: a replacement's ready does not stand for one still starting", async () => {
    // One first worker is ready and dies; its replacement is ready at once; the other first worker is slow.
    const p = await pool({ 0: "readyThenDie", 1: "slowReady", default: "ready" });
    try {
      const ready = await p.ready;
      assert.equal(ready.length, 2);
      for (const w of ready) assert.ok(w.urls.length > 0, `worker ${w.id} listed in ready with its URLs`);
    } finally {
      await p.close();
    }
  });

  it("a replacement that dies before it is ready while a first worker starts is replaced: the pool starts", async () => {
    // One first worker is ready and dies; its replacement dies at once; the next replacement is ready.
    const p = await pool({ 0: "readyThenDie", 1: "slowReady", 2: "die", default: "ready" });
    const exits: { code: number | null; replaced: boolean }[] = [];
    p.on("exit", (_w, code, _s, r) => exits.push({ code, replaced: r !== undefined }));
    try {
      const ready = await p.ready;
      assert.equal(ready.length, 2);
      for (const w of ready) assert.ok(w.urls.length > 0);
      assert.deepEqual(exits, [
        { code: 3, replaced: true },
        { code: 4, replaced: true },
      ]);
    } finally {
      await p.close();
    }
  });
});

describe("runWorkers: a pool closed while a worker still starts", { timeout: 30_000 }, () => {
  it("the worker still starting stops (SIGTERM, or asked again once ready), not killed after shutdownTimeoutMs", async () => {
    // One first worker fails its setup, so the pool closes while the other still sets up: the shutdown it
    // was sent came before serveWorkers listened for it, and was lost; it stayed until it was killed
    // (SIGKILL), shutdownTimeoutMs + 1 s after the close.
    const dir = await mkdtemp(join(tmpdir(), "pointsub-slow-setup-"));
    try {
      const p = runWorkers({
        workers: 2,
        signals: false,
        shutdownTimeoutMs: 10_000,
        exec: join(import.meta.dirname, "slow-setup-worker.ts"),
        env: { POINTSUB_ORDINALS: dir },
      });
      const exits: string[] = [];
      p.on("exit", (_w, code, signal) => exits.push(`${signal ?? code}`));
      await assert.rejects(p.ready, { code: "ERR_CONNECTION_CLOSED" });
      await p.closed;
      // The other one is told to stop at once (SIGTERM: it serves nothing yet), or once ready: never killed
      // (SIGKILL) after shutdownTimeoutMs.
      exits.sort();
      assert.equal(exits[0], "1", `the failed setup exits 1 (exits: ${exits.join(", ")})`);
      assert.ok(
        exits[1] === "0" || exits[1] === "SIGTERM",
        `the other stopped by the close (exits: ${exits.join(", ")})`,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
