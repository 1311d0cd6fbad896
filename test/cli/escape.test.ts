/**
 * What a server says never drives the user's terminal: an error message with
 * escape sequences (retitle the window, clear the screen) and a carriage
 * return that would forge a line reaches `pointsub request`'s stderr with its
 * control characters shown as `\xNN`. Real loopback socket, the CLI as a
 * child process.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ProgressView, printable } from "../../src/cli/output.ts";
import {
  createServer,
  FILE_GET_ROUTE,
  FILE_LIST_ROUTE,
  fileSource,
  PointSubError,
  type Server,
} from "../../src/index.ts";
import { runCli } from "../helpers/cli-run.ts";
import { startServeProcess } from "../helpers/serve-process.ts";

const run = (args: string[]) => {
  const env = { ...process.env };
  delete env.POINTSUB_TOKEN;
  return runCli(args, env, 20_000);
};
const MAIN = join(import.meta.dirname, "../../src/cli/main.ts");
const EVIL = "\x1b]0;pwned\x07\x1b[2J\rpointsub: all good\n\x9b31m";

describe("the CLI shows a peer's text without its control characters", () => {
  let server: Server | undefined;
  after(() => server?.close({ timeoutMs: 100 }));

  it("printable() shows C0, DEL and C1 controls as \\xNN and leaves the rest", () => {
    assert.equal(printable("a\x1b[2Jb\x07c\rd\ne\x7ff\x9bg – ü"), "a\\x1b[2Jb\\x07c\\x0dd\\x0ae\\x7ff\\x9bg – ü");
  });

  it("printable() shows the bidirectional controls (a name that reads backwards) as \\uXXXX", () => {
    assert.equal(printable("x\u202etxt.exe \u2066a\u2069 \u200f"), "x\\u202etxt.exe \\u2066a\\u2069 \\u200f");
    // Line and paragraph separators, the zero-width space and the BOM too; a joiner in an emoji stays.
    assert.equal(
      printable("a\u2028b\u2029c\u200bd\ufeffe \u{1F469}\u200d\u{1F4BB}"),
      "a\\u2028b\\u2029c\\u200bd\\ufeffe \u{1F469}\u200d\u{1F4BB}",
    );
  });

  it("printable() shows what would print as nothing, and doubles a backslash (a peer's literal \\x1b is not an escaped ESC)", () => {
    // Word joiner, invisible times, soft hyphen, Hangul fillers, tag characters (U+E0041 'A').
    assert.equal(printable("a\u2060b\u2062c\u00add\u3164e\u{E0041}f"), "a\\u2060b\\u2062c\\xadd\\u3164e\\u{e0041}f");
    assert.equal(printable("literal \\x1b and ESC \x1b"), "literal \\\\x1b and ESC \\x1b");
  });

  it("request on a terminal: the answer's escape sequences are shown inert (a pipe still gets the bytes)", {
    skip: spawnSync("script", ["--version"]).status === 0 ? false : "no `script` (util-linux) to run a pseudo-terminal",
  }, async () => {
    // Before: written raw, so a server's answer retitled the window and cleared the screen.
    const s = createServer();
    s.handle("/evil", () => EVIL);
    const [url] = await s.listen("tcp://127.0.0.1:0");
    try {
      const env = { ...process.env };
      delete env.POINTSUB_TOKEN;
      const command = `exec '${process.execPath}' '${MAIN}' request --to ${url} --route /evil x`;
      // Spawned, not spawnSync: this process serves the request meanwhile.
      const child = spawn("script", ["-qefc", command, "/dev/null"], { env, stdio: ["pipe", "pipe", "inherit"] });
      let out = "";
      child.stdout.on("data", (d) => (out += d));
      const kill = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const status = await new Promise<number | null>((r) => child.on("close", r));
      clearTimeout(kill);
      const tty = { status, stdout: out };
      assert.equal(tty.status, 0, tty.stdout);
      assert.ok(!tty.stdout.includes("\x1b]0;") && !tty.stdout.includes("\x9b"), JSON.stringify(tty.stdout));
      assert.ok(tty.stdout.includes("\\x1b]0;pwned\\x07\\x1b[2J"), JSON.stringify(tty.stdout));
      const piped = await run(["request", "--to", url, "--route", "/evil", "x"]);
      assert.equal(piped.stdout, EVIL);
    } finally {
      await s.close({ timeoutMs: 100 });
    }
  });

  it("the progress view on a terminal (several files): a failure's message and a file's name from the peer are drawn inert", () => {
    // Before: the line a failed file leaves above the bars carried the server's ESC ]0;… BEL and
    // ESC [2J raw, and the bars' names their C1 controls (U+009B is CSI).
    let raw = "";
    const stream = {
      isTTY: true,
      columns: 100,
      write(t: string) {
        raw += t;
        return true;
      },
    };
    const view = new ProgressView("tty", { files: 2, bytes: 2000, stream, fps: 1 });
    const base = { transferId: "t", total: 1000, bytes: 10, percent: 1, rate: 5, etaSeconds: 10, elapsedMs: 1 };
    try {
      view.update("in\x9b2Jflight", { ...base, status: "transferring" });
      view.render();
      const error = new PointSubError("ERR_HANDLER", EVIL);
      view.update("bad\x1b]0;t\x07.bin", { ...base, status: "failed", error });
      view.render();
    } finally {
      view.stop();
    }
    for (const evil of ["\x1b]", "\x07", "\x1b[2J", "\x9b", "\rpointsub"])
      assert.ok(!raw.includes(evil), JSON.stringify(evil));
    assert.ok(raw.includes("bad\\x1b]0;t\\x07.bin: ERR_HANDLER: \\x1b]0;pwned\\x07"), raw);
    assert.ok(raw.includes("in\\x9b2Jflight"), raw);
  });

  it("the progress view on a terminal: a line logged just before it stops (no redraw since) is still shown", () => {
    // Before: cli-progress keeps logged lines until its next redraw, and stop() does not draw them: a
    // retry's notice, a skipped file's or a failure's line logged in the last tenth of a second, or
    // while no bar was ever drawn (every file skipped), never reached the terminal.
    let raw = "";
    const stream = {
      isTTY: true,
      columns: 100,
      write(t: string) {
        raw += t;
        return true;
      },
    };
    const view = new ProgressView("tty", { files: 1, bytes: 10, stream, fps: 1 });
    view.log("a.txt: skipped, already here whole");
    view.stop();
    assert.ok(raw.includes("a.txt: skipped, already here whole\n"), JSON.stringify(raw));
  });

  it("ls: a listed name with a bidirectional override is shown escaped, in plain and in --json output", async () => {
    const s = createServer();
    const [url] = await s.listen("tcp://127.0.0.1:0");
    s.handle(FILE_LIST_ROUTE, () =>
      JSON.stringify({ type: "dir", entries: [{ path: "x\u202etxt.exe", type: "file", size: 1, mtime: 0 }] }),
    );
    try {
      const plain = await run(["ls", "--from", url]);
      assert.equal(plain.code, 0, plain.stderr);
      assert.ok(!plain.stdout.includes("\u202e") && plain.stdout.includes("x\\u202etxt.exe"), plain.stdout);
      const json = await run(["ls", "--from", url, "--json"]);
      assert.equal(json.code, 0, json.stderr);
      assert.ok(!json.stdout.includes("\u202e"), JSON.stringify(json.stdout));
      const entry = JSON.parse(json.stdout.trim().split("\n")[0] ?? "") as { path?: string; name?: string };
      assert.equal(entry.path ?? entry.name, "x\u202etxt.exe", "still the same JSON value");
    } finally {
      await s.close({ timeoutMs: 100 });
    }
  });

  it("send: its plain lines show a walked name's bidirectional and control characters escaped (sent, skipped)", async () => {
    // Before: the failure line was escaped, the `sent` and `skipped` lines printed the name raw.
    const work = await mkdtemp(join(tmpdir(), "pointsub-send-escape-"));
    const tree = join(work, "tree");
    await mkdir(tree);
    await writeFile(join(tree, "small\u202etxt.exe"), "x");
    await writeFile(join(tree, "large\u202etxt.exe"), new Uint8Array(200 * 1024));
    const fifo = spawnSync("mkfifo", [join(tree, "fifo\x1b]0;pwned\x07")]).status === 0;
    const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    const serve = await startServeProcess(["--dir", join(work, "inbox")], { env, workers: 1 });
    try {
      for (const round of ["sent", "skipped"]) {
        const r = await runCli(["send", "-r", tree, "--to", serve.url], env, 60_000);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(!r.stdout.includes("\u202e") && !r.stdout.includes("\x1b"), `${round}: ${JSON.stringify(r.stdout)}`);
        assert.ok(r.stdout.includes(`tree/small\\u202etxt.exe: ${round}`), `${round}: ${r.stdout}`);
        assert.ok(r.stdout.includes(`tree/large\\u202etxt.exe: ${round}`), `${round}: ${r.stdout}`);
        if (fifo) assert.ok(r.stdout.includes("fifo\\x1b]0;pwned\\x07: skipped"), `${round}: ${r.stdout}`);
      }
    } finally {
      await serve.stop();
      await rm(work, { recursive: true, force: true });
    }
  });

  it("request: a handler's error message with escape sequences is printed inert, on one line", async () => {
    server = createServer();
    server.handle("/evil", () => {
      throw new Error(EVIL);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const r = await run(["request", "--to", url, "--route", "/evil", "x"]);
    assert.equal(r.code, 1, r.stderr);
    const controls = [...r.stderr.slice(0, -1)].filter((c) => c.charCodeAt(0) < 0x20 || (c >= "\x7f" && c <= "\x9f"));
    assert.deepEqual(controls, [], JSON.stringify(r.stderr));
    assert.match(
      r.stderr,
      /^pointsub: ERR_HANDLER: .*\\x1b\]0;pwned\\x07\\x1b\[2J\\x0dpointsub: all good\\x0a\\x9b31m\n$/,
    );
  });

  it("ls: a listed path with escape sequences is refused, its error printed inert (no server lists such a name)", async () => {
    const s = createServer();
    const [url] = await s.listen("tcp://127.0.0.1:0");
    s.handle(FILE_LIST_ROUTE, () =>
      JSON.stringify({
        type: "dir",
        entries: [{ path: `a${EVIL.replaceAll("\n", "")}`, type: "file", size: 1, mtime: 0 }],
      }),
    );
    try {
      const r = await run(["ls", "--from", url]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, "");
      assert.match(r.stderr, /^pointsub: ERR_PROTOCOL: the server listed a path no request could name/);
      const controls = [...r.stderr.slice(0, -1)].filter((c) => c.charCodeAt(0) < 0x20 || (c >= "\x7f" && c <= "\x9f"));
      assert.deepEqual(controls, [], JSON.stringify(r.stderr));
    } finally {
      await s.close({ timeoutMs: 100 });
    }
  });

  it("get on a terminal: a retry's notice and a skipped file's line above the bars are escaped once, not twice", {
    skip: spawnSync("script", ["--version"]).status === 0 ? false : "no `script` (util-linux) to run a pseudo-terminal",
  }, async () => {
    // Before: both lines were made printable, then printable again by the view (a peer's U+202E was
    // shown as \\u202e, its escapes' backslashes doubled).
    const work = await mkdtemp(join(tmpdir(), "pointsub-escape-tty-"));
    const s = createServer();
    try {
      const served = join(work, "served");
      const out = join(work, "out");
      await mkdir(served);
      await mkdir(out);
      const name = "r\u202eb.txt";
      await writeFile(join(served, name), "same");
      await writeFile(join(out, name), "same");
      const source = fileSource(served);
      let gets = 0;
      s.handle(FILE_LIST_ROUTE, source.list);
      s.handle(FILE_GET_ROUTE, (req, ctx) => {
        if (gets++ === 0) throw new PointSubError("ERR_OVERLOADED", "busy \u202e now");
        return source.get(req, ctx);
      });
      const [url] = await s.listen("tcp://127.0.0.1:0");
      const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
      delete env.CI;
      delete env.POINTSUB_TOKEN;
      const command = `stty cols 200 rows 24; exec '${process.execPath}' '${MAIN}' get '${name}' --from ${url} --out '${out}' --retries 1`;
      const child = spawn("script", ["-qefc", command, "/dev/null"], { env, stdio: ["pipe", "pipe", "inherit"] });
      let raw = "";
      child.stdout.on("data", (d) => (raw += d));
      const code = await new Promise<number | null>((r) => child.on("close", r));
      assert.equal(code, 0, raw);
      assert.equal(gets, 2, raw);
      assert.ok(raw.includes("after ERR_OVERLOADED: busy \\u202e now"), JSON.stringify(raw));
      assert.ok(raw.includes("r\\u202eb.txt: skipped, already here whole"), JSON.stringify(raw));
      assert.ok(!raw.includes("\\\\"), `a backslash doubled: ${JSON.stringify(raw)}`);
      assert.ok(!raw.includes("\u202e"), "the override reached the terminal");
    } finally {
      await s.close({ timeoutMs: 100 });
      await rm(work, { recursive: true, force: true });
    }
  });
});
