/**
 * `pointsub serve --workers 2 --json` behind a reader slower than the
 * server (`| jq`, `| tee log`, a paused pipe): every worker wrote its
 * batched lines (up to 64 KiB a write) to the one stdout pipe they share,
 * and a write of more than PIPE_BUF (4 KiB) to a pipe is not atomic — two
 * workers' lines were cut into each other (74 of 12,024 lines not JSON in
 * a run by hand). The primary now writes its workers' lines: every line
 * is whole. Real sockets, the CLI as child processes.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect } from "../../src/index.ts";
import { CLI_MAIN, runCli } from "../helpers/cli-run.ts";
import { startServeProcess } from "../helpers/serve-process.ts";

const FILES = 800;
/** Copies standard input to the file named, 512 bytes a millisecond. */
const SLOW_READER = `const fs = require("node:fs");
const buf = Buffer.alloc(512);
const pause = new Int32Array(new SharedArrayBuffer(4));
const out = fs.openSync(process.argv[1], "w");
for (;;) {
  let n;
  try { n = fs.readSync(0, buf); } catch (e) { if (e.code !== "EAGAIN") throw e; n = -1; }
  if (n === 0) break;
  if (n > 0) fs.writeSync(out, buf, 0, n);
  Atomics.wait(pause, 0, 0, 1);
}`;
const SENDERS = 4;

describe("serve --workers: output lines", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-workers-output-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    for (let s = 0; s < SENDERS; s++) {
      const dir = join(work, `tree${s}`);
      await mkdir(dir, { recursive: true });
      // Long names: long lines, so that a batch of them is well over PIPE_BUF.
      for (let i = 0; i < FILES; i++) await writeFile(join(dir, `${"n".repeat(120)}-${i}.txt`), `file ${i}\n`);
    }
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("--json behind a slow reader: every line of every worker is whole JSON", async () => {
    const log = join(work, "serve.jsonl");
    const serve = spawn(
      process.execPath,
      [
        CLI_MAIN,
        "serve",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        join(work, "in"),
        "--workers",
        "2",
        "--durability",
        "none",
        "--json",
      ],
      { stdio: ["ignore", "pipe", "inherit"], env },
    );
    const exited = new Promise<number | null>((r) => serve.once("exit", (code) => r(code)));
    // The reader: 512 bytes a millisecond into the log, as a pipe into a slower program would.
    const reader = spawn(process.execPath, ["-e", SLOW_READER, log], { stdio: [serve.stdout, "ignore", "inherit"] });
    const readerDone = new Promise((r) => reader.once("exit", r));
    const out = async () => readFile(log, "utf8").catch(() => "");
    let url: string | undefined;
    for (let i = 0; i < 600 && url === undefined; i++) {
      url = /"event":"listening","url":"([^"]+)"/.exec(await out())?.[1];
      if (url === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    try {
      assert.ok(url !== undefined, `serve did not listen: ${await out()}`);
      const sends = await Promise.all(
        Array.from({ length: SENDERS }, (_, s) =>
          runCli(["send", "-r", join(work, `tree${s}`), "--to", url as string, "--json"], env, 120_000),
        ),
      );
      for (const r of sends) assert.equal(r.code, 0, r.stderr);
      const stored = async () => ((await out()).match(/"event":"file"/g) ?? []).length;
      for (let i = 0; i < 600 && (await stored()) < SENDERS * FILES; i++) await new Promise((r) => setTimeout(r, 50));
    } finally {
      serve.kill("SIGTERM");
    }
    assert.equal(await exited, 0);
    await readerDone;
    const lines = (await out()).split("\n");
    assert.equal(lines.pop(), "");
    const broken = lines.filter((l) => {
      try {
        JSON.parse(l);
        return false;
      } catch {
        return true;
      }
    });
    assert.deepEqual(broken.slice(0, 3), [], `${broken.length} of ${lines.length} lines are not JSON`);
    const events = lines.map((l) => JSON.parse(l) as { event: string });
    assert.equal(events.filter((e) => e.event === "file").length, SENDERS * FILES);
    assert.equal(events.at(-1)?.event, "closed");
  });

  it("SIGTERM: one closing line and one closed line, the last, after every worker exited", async () => {
    const serve = await startServeProcess(["--dir", join(work, "in2")], { env, workers: 2 });
    // A session on each worker (round-robin), so both have something to close.
    const conns = [await connect(serve.url), await connect(serve.url)];
    await serve.stop();
    for (const c of conns) c.destroy();
    const names = serve.events.map((e) => e.event);
    // Before: each worker said "closing" and "closed" too (3 of each), the first "closed" while the
    // other worker still served.
    assert.deepEqual(
      names.filter((n) => n === "closing" || n === "closed"),
      ["closing", "closed"],
      names.join(" "),
    );
    assert.equal(names.at(-1), "closed");
    assert.equal(names.filter((n) => n === "workerExit").length, 2, names.join(" "));
    assert.equal(serve.child.exitCode, 0);
  });
});
