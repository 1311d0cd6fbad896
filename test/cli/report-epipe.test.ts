/**
 * `pointsub get … | head -1` and `pointsub send … | head -1` (or `| grep -m1
 * received`): the reader takes a line and goes away, and the command's next
 * line fails with EPIPE. The CLI's rule for a closed stdout (`ls | head -1`:
 * exit quietly with the command's code, 0 mid-run) ended the transfers on
 * the spot with exit 0: none of the three files received (a `.lock` and a
 * `.partial` left in --out), none sent. What `get` and `send` print is a
 * report of their work: now it ends and the transfers go on to the
 * command's own exit code. Over a link of 400 KB/s, so the first line comes
 * long before the end. Real sockets, the CLI as a child process.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type Shaper, startShaper } from "../../bench/lib/shaper.ts";
import {
  createServer,
  FILE_BUNDLE_ROUTE,
  FILE_CHECK_ROUTE,
  FILE_GET_ROUTE,
  FILE_LIST_ROUTE,
  FILE_ROUTE,
  fileSink,
  fileSource,
  type Server,
} from "../../src/index.ts";
import { CLI_MAIN } from "../helpers/cli-run.ts";

const NAMES = ["a.bin", "b.bin", "c.bin"];

/** Runs the CLI, its stdout closed after its first output (as `| head -1`): exit code and stderr. */
function runHead1(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stderr: string; first: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI_MAIN, ...args], { stdio: ["ignore", "pipe", "pipe"], env });
    let stderr = "";
    let first = "";
    child.stderr.on("data", (d) => (stderr += d));
    child.stdout.once("data", (d) => {
      first = String(d).split("\n")[0];
      child.stdout.destroy();
    });
    const killer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("close", (code) => {
      clearTimeout(killer);
      resolve({ code, stderr, first });
    });
  });
}

describe("get and send: stdout's reader goes away (EPIPE)", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let server: Server;
  let shaper: Shaper;
  let url: string;
  const content = new Map<string, Buffer>();

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-report-epipe-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    await mkdir(join(work, "served"));
    await mkdir(join(work, "local"));
    for (const n of NAMES) {
      content.set(n, randomBytes(300_000));
      await writeFile(join(work, "served", n), content.get(n) as Buffer);
      await writeFile(join(work, "local", n), content.get(n) as Buffer);
    }
    const source = fileSource(join(work, "served"), { crcRecords: false });
    const sink = fileSink(join(work, "inbox"), { crcRecords: false });
    server = createServer();
    server.handle(FILE_LIST_ROUTE, source.list);
    server.handle(FILE_GET_ROUTE, source.get);
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    server.handle(FILE_CHECK_ROUTE, sink.check);
    server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
    const [direct] = await server.listen("tcp://127.0.0.1:0");
    shaper = await startShaper(
      Number(new URL(direct).port),
      { rate: 400_000, delayMs: 20 },
      { rate: 400_000, delayMs: 20 },
    );
    url = `tcp://127.0.0.1:${shaper.port}`;
  });
  after(async () => {
    await shaper.close();
    await server.close({ timeoutMs: 100 });
    await rm(work, { recursive: true, force: true });
  });

  it("get --json | head -1: every file is received, no lock or partial left, exit 0", async () => {
    const out = join(work, "out");
    const r = await runHead1(["get", ...NAMES, "-j", "1", "--json", "--from", url, "--out", out], env);
    assert.match(r.first, /^\{"event":/);
    assert.equal(r.stderr, "");
    assert.equal(r.code, 0);
    assert.deepEqual((await readdir(out)).sort(), NAMES);
    for (const n of NAMES) assert.ok((await readFile(join(out, n))).equals(content.get(n) as Buffer), n);
  });

  it("send --json | head -1: every file is sent, exit 0", async () => {
    const r = await runHead1(
      ["send", ...NAMES.map((n) => join(work, "local", n)), "-j", "1", "--json", "--to", url],
      env,
    );
    assert.match(r.first, /^\{"event":/);
    assert.equal(r.stderr, "");
    assert.equal(r.code, 0);
    const inbox = (await readdir(join(work, "inbox"))).filter((n) => !n.startsWith("."));
    assert.deepEqual(inbox.sort(), NAMES);
    for (const n of NAMES) assert.ok((await readFile(join(work, "inbox", n))).equals(content.get(n) as Buffer), n);
  });
});
