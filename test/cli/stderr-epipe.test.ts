/**
 * `pointsub get … 2>&1 | head -1`, `get … 2> >(head -1)`: stderr's reader
 * goes away, and the next line the command writes there (a retry notice in
 * plain mode, after a cut connection) failed with EPIPE, which ended the
 * process on the spot with exit 0: the files after it never received, a
 * `.lock` and `.partial` left in --out. stdout's going away was made to end
 * the output only (a report of the work); stderr's now does the same for
 * `get`, `send` and `serve`. Real sockets, a proxy cutting the first
 * connection, the CLI as a child process.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createServer, FILE_GET_ROUTE, FILE_LIST_ROUTE, fileSource, type Server } from "../../src/index.ts";
import { CLI_MAIN } from "../helpers/cli-run.ts";
import { type FaultProxy, startProxy } from "../helpers/proxy.ts";

const NAMES = ["a.bin", "b.bin", "c.bin"];

describe("get: stderr's reader goes away (EPIPE)", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let server: Server;
  let proxy: FaultProxy;
  const content = new Map<string, Buffer>();

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-stderr-epipe-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    await mkdir(join(work, "served"));
    for (const n of NAMES) {
      content.set(n, randomBytes(300_000));
      await writeFile(join(work, "served", n), content.get(n) as Buffer);
    }
    const source = fileSource(join(work, "served"), { crcRecords: false });
    server = createServer();
    server.handle(FILE_LIST_ROUTE, source.list);
    server.handle(FILE_GET_ROUTE, source.get);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // The first connection is cut in b.bin: the retry's notice is the first line on stderr.
    proxy = await startProxy(url, { cutAt: { dir: "down", bytes: [450_000] } });
  });
  after(async () => {
    await proxy.close();
    await server.close({ timeoutMs: 100 });
    await rm(work, { recursive: true, force: true });
  });

  it("every file is received after the retry, exit 0", async () => {
    const out = join(work, "out");
    const child = spawn(
      process.execPath,
      [CLI_MAIN, "get", ...NAMES, "-j", "1", "--from", proxy.url, "--out", out, "--retries", "3"],
      { stdio: ["ignore", "pipe", "pipe"], env },
    );
    // Nobody reads stderr: its first write fails with EPIPE.
    child.stderr.destroy();
    let stdout = "";
    child.stdout.on("data", (d) => (stdout += d));
    const killer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    const code = await new Promise<number | null>((r) => child.on("close", r));
    clearTimeout(killer);
    assert.equal(code, 0, stdout);
    assert.deepEqual((await readdir(out)).sort(), NAMES);
    for (const n of NAMES) assert.ok((await readFile(join(out, n))).equals(content.get(n) as Buffer), n);
    for (const n of NAMES) assert.match(stdout, new RegExp(`^${n}: received `, "m"));
    assert.match(stdout, /resumed at/, "b.bin was cut and resumed");
  });
});
