/**
 * SIGTERM (or Ctrl-C) to `pointsub serve --workers 2` while its workers
 * start: the pool's "shutdown" message reached workers that did not listen
 * for it yet and was lost, so the primary waited out the shutdown timeout
 * plus 1 s (11 s) and killed them (SIGKILL), then said "pointsub:
 * ERR_CONNECT: the workers could not start (see their errors above)" — no
 * errors above — and exited 1. Now a worker still starting gets SIGTERM,
 * and the stop ends as one after the start does: closing, closed, exit 0.
 * The CLI as a child process.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CLI_MAIN } from "../helpers/cli-run.ts";

/** The pids of `pid`'s children (Linux). */
function children(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
}

describe("serve --workers: a signal while the workers start", {
  skip: !existsSync("/proc/self/task") && "needs /proc",
}, () => {
  let work: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-start-signal-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("SIGTERM once the workers are forked: they are stopped, not killed; closing, closed, exit 0", async () => {
    const env = { ...process.env };
    delete env.POINTSUB_TOKEN;
    const child = spawn(
      process.execPath,
      [CLI_MAIN, "serve", "--listen", "tcp://127.0.0.1:0", "--dir", join(work, "in"), "--workers", "2", "--json"],
      { stdio: ["ignore", "pipe", "pipe"], env },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    const killer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    try {
      // Both workers forked, neither ready (a worker takes a few hundred ms to load and listen).
      for (let i = 0; i < 2000 && children(child.pid as number).length < 2; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(children(child.pid as number).length, 2, "the workers were not forked");
      child.kill("SIGTERM");
      assert.equal(await exited, 0, stderr);
    } finally {
      clearTimeout(killer);
    }
    const events = stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { event: string; signal?: string | null });
    // Signalled before the start was over: no "listening" line, and so no "workers" line either.
    assert.equal(
      events.some((e) => e.event === "listening"),
      false,
      stdout,
    );
    assert.equal(events[0]?.event, "closing", stdout);
    assert.equal(events.at(-1)?.event, "closed", stdout);
    assert.equal(
      events.some((e) => e.event === "error"),
      false,
      stdout,
    );
    const exits = events.filter((e) => e.event === "workerExit");
    assert.equal(exits.length, 2, stdout);
    for (const e of exits) assert.notEqual(e.signal, "SIGKILL", stdout);
  });
});
