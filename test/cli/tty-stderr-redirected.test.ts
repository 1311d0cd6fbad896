/**
 * `send` and `get` from a terminal with their stderr redirected (`2>log`): the bars go to stderr, so
 * they print plain lines on the terminal instead. Before, the view drew bars on the file, where
 * cli-progress draws nothing, and the first bar it removed threw: `send` died with a TypeError and
 * its stack (exit 1, the files sent), `get` said `ERR_HANDLER: payload.line is not a function`.
 * Run under a pseudo-terminal with `script`.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CLI_MAIN } from "../helpers/cli-run.ts";
import { fileServer } from "../helpers/file-server.ts";

const hasScript = spawnSync("script", ["--version"]).status === 0;

/** Runs `args` with stdout on a pseudo-terminal and stderr into `errFile`: exit code and what the terminal showed. */
function onTerminal(
  args: string[],
  errFile: string,
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; out: string }> {
  const quoted = args.map((a) => `'${a}'`).join(" ");
  const command = `stty cols 80 rows 24; exec '${process.execPath}' '${CLI_MAIN}' ${quoted} 2>'${errFile}'`;
  const child = spawn("script", ["-qefc", command, "/dev/null"], { env, stdio: ["pipe", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  // A command that never ends fails here rather than holding the suite.
  const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  return new Promise((resolve) =>
    child.on("close", (code) => {
      clearTimeout(killer);
      resolve({ code, out });
    }),
  );
}

describe("send and get on a terminal with stderr redirected", { skip: hasScript ? false : "no `script`" }, () => {
  let work: string;
  const cleanup: (() => unknown)[] = [];
  let url: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-tty-stderr-"));
    await mkdir(join(work, "inbox"));
    ({ url } = await fileServer(join(work, "inbox"), cleanup, { sink: { durability: "none" } }));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.CI;
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
  });
  after(async () => {
    for (const c of cleanup.reverse()) await c();
    await rm(work, { recursive: true, force: true });
  });

  it("send: plain lines on the terminal, exit 0, no stack on stderr; get likewise", async () => {
    const big = join(work, "big.bin");
    await writeFile(big, Buffer.alloc(3 * 1024 * 1024, 7));
    await writeFile(join(work, "s1.txt"), "one\n");
    await writeFile(join(work, "s2.txt"), "two\n");
    const sendErr = join(work, "send.err");
    const sent = await onTerminal(["send", big, join(work, "s1.txt"), join(work, "s2.txt"), "--to", url], sendErr, env);
    const sendStderr = await readFile(sendErr, "utf8");
    assert.equal(sent.code, 0, `${sent.out}\n${sendStderr}`);
    assert.equal(sendStderr, "");
    for (const name of ["big.bin", "s1.txt", "s2.txt"]) assert.match(sent.out, new RegExp(`${name}: sent `));
    assert.match(sent.out, /3 of 3 files sent/);
    assert.deepEqual(await readFile(join(work, "inbox", "s2.txt"), "utf8"), "two\n");

    const out = join(work, "out");
    const getErr = join(work, "get.err");
    const got = await onTerminal(["get", "big.bin", "s1.txt", "s2.txt", "--from", url, "--out", out], getErr, env);
    const getStderr = await readFile(getErr, "utf8");
    assert.equal(got.code, 0, `${got.out}\n${getStderr}`);
    assert.equal(getStderr, "");
    for (const name of ["big.bin", "s1.txt", "s2.txt"]) assert.match(got.out, new RegExp(`${name}: received `));
    assert.equal((await readFile(join(out, "big.bin"))).length, 3 * 1024 * 1024);
  });
});
