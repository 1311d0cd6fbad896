/**
 * `pointsub serve --workers 2 --json` whose stdout nobody reads (a paused
 * pager, a `| tee` stuck on a full disk). The primary relays its workers'
 * lines to stdout, and every line a peer made it log (a file stored, a
 * session: as fast as peers send) waited in its memory for a reader, without
 * bound (~35 MB more in 24 s of sessions opened and closed, in a run by
 * hand). Now what stdout holds unwritten is bounded (LOG_BACKLOG_MAX): lines
 * past it are dropped, and once the reader caught up a `dropped` event says
 * how many. Here a peer's 1,000 files with ~3 KB paths: ~6 MB of lines.
 * Real sockets, the CLI as child processes.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { LOG_BACKLOG_MAX } from "../../src/cli/output.ts";
import { CLI_MAIN, runCli } from "../helpers/cli-run.ts";

const FILES = 1000;
/** 12 directories of 250 characters: every stored file's line names a ~3 KB path twice. */
const DEEP = Array.from({ length: 12 }, (_, i) => `${String(i).padStart(2, "0")}${"d".repeat(248)}`);

describe("serve: a log nobody reads", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-log-bound-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    const deep = join(work, "tree", ...DEEP);
    await mkdir(deep, { recursive: true });
    for (let i = 0; i < FILES; i++) await writeFile(join(deep, `f-${i}.txt`), `${i}\n`);
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("holds at most LOG_BACKLOG_MAX of it, drops the rest and says how many lines", async () => {
    const inbox = join(work, "in");
    const serve = spawn(
      process.execPath,
      [
        CLI_MAIN,
        "serve",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        inbox,
        "--workers",
        "2",
        "--durability",
        "none",
        "--json",
      ],
      { stdio: ["ignore", "pipe", "inherit"], env },
    );
    const exited = new Promise<number | null>((r) => serve.once("exit", (code) => r(code)));
    let text = "";
    let bytes = 0;
    const stdout = serve.stdout;
    stdout.setEncoding("utf8");
    stdout.on("data", (d: string) => {
      text += d;
      bytes += Buffer.byteLength(d);
    });
    try {
      let url: string | undefined;
      for (let i = 0; i < 600 && url === undefined; i++) {
        url = /"event":"listening","url":"([^"]+)"/.exec(text)?.[1];
        if (url === undefined) await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(url !== undefined, `serve did not listen: ${text}`);
      // Nobody reads from now on.
      stdout.pause();
      const before = bytes;
      const sent = await runCli(["send", "-r", join(work, "tree"), "--to", url, "--json"], env, 120_000);
      assert.equal(sent.code, 0, sent.stderr);
      const stored = join(inbox, "tree", ...DEEP);
      const count = async () => (await readdir(stored).catch(() => [])).length;
      for (let i = 0; i < 600 && (await count()) < FILES; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(await count(), FILES);
      // The reader comes back: everything held comes out (until nothing more comes for 1.5 s).
      stdout.resume();
      let last = -1;
      for (let i = 0; i < 60 && bytes !== last; i++) {
        last = bytes;
        await new Promise((r) => setTimeout(r, 1500));
      }
      const events = text
        .slice(text.indexOf("\n", text.indexOf('"event":"listening"')) + 1)
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as { event: string; lines?: number });
      const files = events.filter((e) => e.event === "file").length;
      const dropped = events.filter((e) => e.event === "dropped").reduce((n, e) => n + (e.lines ?? 0), 0);
      // Unbounded, all ~6 MB came out.
      assert.ok(
        bytes - before <= LOG_BACKLOG_MAX + 1024 * 1024,
        `${bytes - before} bytes held for the reader (${files} file lines, ${dropped} dropped)`,
      );
      assert.ok(dropped > 0, `no dropped event (${files} file lines)`);
      assert.ok(files + dropped >= FILES, `${files} file lines, ${dropped} dropped`);
    } finally {
      stdout.resume();
      serve.kill("SIGTERM");
    }
    assert.equal(await exited, 0);
  });
});
