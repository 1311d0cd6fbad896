/**
 * `pointsub get` and `pointsub ls` against a real `pointsub serve --dir`, as
 * child processes over real sockets: files uploaded with `send` come back
 * byte for byte (a tree with -r), unchanged files are skipped, a dropped
 * connection and a killed download resume, POINTSUB_URL stands in for
 * --from/--to, and an unknown name is one typed line with exit 1.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  createServer,
  FILE_GET_ROUTE,
  FILE_LIST_ROUTE,
  type FileGetRequest,
  PointSubError,
  sendFile,
} from "../../src/index.ts";
import { MiB, sha256, sha256File, writeRandomFile } from "../helpers/data.ts";
import { startProxy } from "../helpers/proxy.ts";
import { startServeProcess } from "../helpers/serve-process.ts";

const MAIN = join(import.meta.dirname, "../../src/cli/main.ts");
const childEnv: NodeJS.ProcessEnv = { ...process.env };

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...childEnv, ...env },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

const events = (out: string) =>
  out
    .trim()
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);

/** `pointsub serve --dir <dir>` with this file's environment, `events` collected. */
function startServe(dir: string, events: Record<string, unknown>[]) {
  return startServeProcess(["--dir", dir], { env: childEnv, events });
}

/** The partial file a download is writing in `dir`, and its size (0 when none yet). */
async function partialSize(dir: string): Promise<number> {
  const name = (await readdir(dir).catch(() => [] as string[])).find((f) => f.endsWith(".partial"));
  return name === undefined ? 0 : (await stat(join(dir, name)).catch(() => ({ size: 0 }))).size;
}

/**
 * Holds `proxy`'s downloads once 16 MiB passed it, then waits (at most 5 s) until the partial in `out`
 * holds 4 MiB: a download stopped mid-transfer. Returns the partial's size.
 */
async function holdMidDownload(proxy: Awaited<ReturnType<typeof startProxy>>, out: string): Promise<number> {
  for (let i = 0; i < 3000 && proxy.bytes.down < 16 * MiB; i++) await new Promise((r) => setTimeout(r, 5));
  proxy.hold("down");
  let held = 0;
  for (let i = 0; i < 500; i++) {
    await new Promise((r) => setTimeout(r, 10));
    held = await partialSize(out);
    if (held >= 4 * MiB) break;
  }
  return held;
}

describe("pointsub get and ls", () => {
  let work: string;
  let inbox: string;
  let src: string;
  let serve: Awaited<ReturnType<typeof startServe>>;
  let url: string;
  const serverEvents: Record<string, unknown>[] = [];
  const files: Record<string, Uint8Array> = {};

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-get-"));
    childEnv.POINTSUB_STATE_DIR = join(work, "state");
    delete childEnv.POINTSUB_TOKEN;
    delete childEnv.POINTSUB_URL;
    inbox = join(work, "inbox");
    src = join(work, "src");
    serve = await startServe(inbox, serverEvents);
    url = serve.url;
    await mkdir(join(src, "tree", "x"), { recursive: true });
    files["a.txt"] = new TextEncoder().encode("hello\n");
    files["b.bin"] = randomFillSync(new Uint8Array(MiB + 17));
    files["tree/z.txt"] = new TextEncoder().encode("zzz");
    files["tree/x/y.bin"] = randomFillSync(new Uint8Array(300_000));
    files["tree/empty"] = new Uint8Array(0);
    for (const [name, data] of Object.entries(files)) await writeFile(join(src, name), data);
    const sent = await run(["send", "-r", join(src, "a.txt"), join(src, "b.bin"), join(src, "tree"), "--to", url]);
    assert.equal(sent.code, 0, sent.stderr);
  });

  after(async () => {
    await serve.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("send then get: several files and a directory with -r, byte for byte; a re-run skips them; --force gets them again", async () => {
    const out = join(work, "out1");
    const got = await run(["get", "a.txt", "b.bin", "tree", "-r", "--from", url, "--out", out, "--json"]);
    assert.equal(got.code, 0, got.stderr);
    const evs = events(got.stdout);
    const received = evs.filter((e) => e.event === "received");
    assert.deepEqual(received.map((e) => e.name).sort(), [
      "a.txt",
      "b.bin",
      "tree/empty",
      "tree/x/y.bin",
      "tree/z.txt",
    ]);
    for (const [name, data] of Object.entries(files)) {
      assert.equal(sha256(await readFile(join(out, name))), sha256(data), name);
    }
    const b = received.find((e) => e.name === "b.bin") as Record<string, unknown>;
    assert.equal(b.size, files["b.bin"].length);
    assert.equal(b.bytesReceived, files["b.bin"].length);
    assert.equal(b.resumedFrom, 0);
    assert.match(String(b.crc32c), /^[0-9a-f]{8}$/);
    const summary = evs.find((e) => e.event === "summary") as Record<string, unknown>;
    assert.deepEqual(
      { files: summary.files, received: summary.received, skipped: summary.skipped, failed: summary.failed },
      { files: 5, received: 5, skipped: 0, failed: 0 },
    );
    assert.ok(serverEvents.some((e) => e.event === "download" && e.status === "sent" && e.name === "b.bin"));
    // Nothing but the files: no partial or sidecar left behind.
    assert.deepEqual((await readdir(out)).sort(), ["a.txt", "b.bin", "tree"]);

    const again = await run(["get", "a.txt", "b.bin", "tree", "-r", "--from", url, "--out", out, "--json"]);
    assert.equal(again.code, 0, again.stderr);
    const evs2 = events(again.stdout);
    assert.equal(evs2.filter((e) => e.event === "skipped").length, 5);
    assert.equal(evs2.filter((e) => e.event === "received").length, 0);
    assert.equal((evs2.find((e) => e.event === "summary") as Record<string, unknown>).bytesReceived, 0);

    // A local file of the same size but other bytes is replaced; --force gets even equal ones.
    await writeFile(join(out, "a.txt"), "HELLO\n");
    const replaced = await run(["get", "a.txt", "--from", url, "--out", out]);
    assert.equal(replaced.code, 0, replaced.stderr);
    assert.match(replaced.stdout, /^a\.txt: received 6 B in /);
    assert.equal(await readFile(join(out, "a.txt"), "utf8"), "hello\n");
    const forced = await run(["get", "a.txt", "--from", url, "--out", out, "--force", "--json"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(events(forced.stdout).filter((e) => e.event === "received").length, 1);

    // A file inside a directory is stored under its base name (as scp does); a directory's tree under its name.
    const out2 = join(work, "out1b");
    const one = await run(["get", "tree/x/y.bin", "tree/x", "-r", "--from", url, "--out", out2]);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(sha256(await readFile(join(out2, "y.bin"))), sha256(files["tree/x/y.bin"]));
    assert.equal(sha256(await readFile(join(out2, "x", "y.bin"))), sha256(files["tree/x/y.bin"]));
  });

  it("ls: text and JSON lines, a directory, the whole tree with -r, a single file", async () => {
    const top = await run(["ls", "--from", url]);
    assert.equal(top.code, 0, top.stderr);
    const lines = top.stdout.trim().split("\n");
    assert.deepEqual(
      lines.map((l) => l.trim().split(/\s+/).at(-1)),
      ["a.txt", "b.bin", "tree/"],
    );
    assert.match(
      lines[1],
      new RegExp(`^\\s+${files["b.bin"].length}  \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ  b\\.bin$`),
    );
    // The server's own files (partials, sidecars) never show.
    assert.ok(!top.stdout.includes(".partial") && !top.stdout.includes(".resume"));

    const tree = await run(["ls", "tree", "-r", "--from", url, "--json"]);
    assert.equal(tree.code, 0, tree.stderr);
    const entries = events(tree.stdout);
    assert.deepEqual(
      entries.map((e) => [e.event, e.path, e.type, e.size]),
      [
        ["entry", "tree/empty", "file", 0],
        ["entry", "tree/x/y.bin", "file", 300_000],
        ["entry", "tree/z.txt", "file", 3],
      ],
    );
    assert.ok(entries.every((e) => typeof e.mtime === "number" && (e.mtime as number) > 1.5e12));

    const dir = await run(["ls", "tree/", "--from", url, "--json"]);
    assert.deepEqual(
      events(dir.stdout).map((e) => [e.path, e.type]),
      [
        ["tree/empty", "file"],
        ["tree/x", "dir"],
        ["tree/z.txt", "file"],
      ],
    );
    const file = await run(["ls", "a.txt", "--from", url]);
    assert.equal(file.code, 0, file.stderr);
    assert.match(file.stdout, /^\s+6 {2}\S+ {2}a\.txt\n$/);
  });

  it("POINTSUB_URL is the server when --from/--to is absent; the option wins; neither is a usage error", async () => {
    const env = { POINTSUB_URL: url };
    const ls = await run(["ls"], env);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /a\.txt/);
    const out = join(work, "out-env");
    const got = await run(["get", "./a.txt", "--out", out], env);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(await readFile(join(out, "a.txt"), "utf8"), "hello\n");
    await writeFile(join(work, "env.txt"), "by env");
    const sent = await run(["send", join(work, "env.txt")], env);
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(await readFile(join(inbox, "env.txt"), "utf8"), "by env");
    const req = await run(["request", "ping", "--route", "/echo/1.0.0"], env);
    assert.equal(req.code, 0, req.stderr);
    assert.equal(req.stdout, "ping");
    // --from beats a wrong POINTSUB_URL.
    const wins = await run(["ls", "--from", url], { POINTSUB_URL: "tcp://127.0.0.1:1" });
    assert.equal(wins.code, 0, wins.stderr);
    const missing = await run(["get", "a.txt"]);
    assert.equal(missing.code, 2);
    assert.equal(missing.stderr.trim().split("\n").length, 1);
    assert.match(missing.stderr, /^pointsub: ERR_INVALID_ARGUMENT: .*--from/);
    // An empty POINTSUB_URL is unset: --from serves, and without it the option is what is missing.
    // (It was refused as an invalid URL: "value '' from env 'POINTSUB_URL' is invalid".)
    const emptyWins = await run(["ls", "--from", url], { POINTSUB_URL: "" });
    assert.equal(emptyWins.code, 0, emptyWins.stderr);
    const emptyMissing = await run(["get", "a.txt"], { POINTSUB_URL: "" });
    assert.equal(emptyMissing.code, 2);
    assert.match(emptyMissing.stderr, /^pointsub: ERR_INVALID_ARGUMENT: required option .*--from.* not specified\n$/);
    const help = await run(["get", "--help"]);
    assert.match(help.stdout, /POINTSUB_URL/);
  });

  it("an unknown name, a directory without -r, a path out of the directory: exit 1 and one typed line", async () => {
    const out = join(work, "out-bad");
    const nope = await run(["get", "nope.txt", "--from", url, "--out", out]);
    assert.equal(nope.code, 1);
    assert.equal(nope.stderr, 'pointsub: ERR_NOT_FOUND: no such file or directory: "nope.txt"\n');
    const json = await run(["get", "nope.txt", "--from", url, "--out", out, "--json"]);
    assert.equal(json.code, 1);
    const err = events(json.stdout).at(-1) as Record<string, unknown>;
    assert.deepEqual([err.event, err.code, err.errno], ["error", "ERR_NOT_FOUND", 4013]);
    const dir = await run(["get", "tree", "--from", url, "--out", out]);
    assert.equal(dir.code, 1);
    assert.match(dir.stderr, /^pointsub: ERR_INVALID_ARGUMENT: tree is a directory \(get it with -r\)\n$/);
    const outside = await run(["get", "../etc/passwd", "--from", url, "--out", out]);
    assert.equal(outside.code, 1);
    assert.match(outside.stderr, /^pointsub: ERR_INVALID_ARGUMENT: refused path .*'\.\.' segment\n$/);
    const ls = await run(["ls", "nope", "--from", url]);
    assert.equal(ls.code, 1);
    assert.match(ls.stderr, /^pointsub: ERR_NOT_FOUND: /);
    // One bad name among good ones: the others arrive, exit 1 names it.
    const mixed = await run(["get", "a.txt", "nope.txt", "--from", url, "--out", out]);
    assert.equal(mixed.code, 1);
    assert.equal(await readFile(join(out, "a.txt"), "utf8"), "hello\n");
    // Named once (the server's message names it: it said `nope.txt: no such file or directory: "nope.txt"`).
    assert.match(mixed.stderr, /^pointsub: ERR_NOT_FOUND: no such file or directory: "nope\.txt"\n$/);
  });

  it("--max-file-size: a listed file over it fails with ERR_QUOTA and is not asked for; the others arrive", async () => {
    const out = join(work, "out-max");
    // b.bin is 1 MiB + 17; tree/x/y.bin 300,000 B.
    const r = await run([
      "get",
      "a.txt",
      "b.bin",
      "-r",
      "tree",
      "--from",
      url,
      "--out",
      out,
      "--max-file-size",
      "256KiB",
      "--json",
    ]);
    assert.equal(r.code, 1, r.stderr);
    const evs = events(r.stdout);
    const failed = evs.filter((e) => e.event === "failed");
    assert.ok(
      failed.some((e) => e.code === "ERR_QUOTA" && e.file === "b.bin"),
      JSON.stringify(failed),
    );
    assert.ok(
      failed.some((e) => e.code === "ERR_QUOTA" && e.file === "tree/x/y.bin"),
      r.stdout,
    );
    assert.equal(failed.length, 2, JSON.stringify(failed));
    assert.equal(evs.filter((e) => e.event === "received").length, 3);
    assert.equal(await readFile(join(out, "a.txt"), "utf8"), "hello\n");
    assert.equal(await readFile(join(out, "tree", "z.txt"), "utf8"), "zzz");
    await assert.rejects(stat(join(out, "b.bin")), { code: "ENOENT" });
    await assert.rejects(stat(join(out, "tree", "x", "y.bin")), { code: "ENOENT" });
    // Every file of the directory named over it: the final error names the first (before, only its size).
    const all = await run(["get", "-r", "tree/x", "--from", url, "--out", out, "--max-file-size", "1"]);
    assert.equal(all.code, 1, all.stderr);
    assert.match(all.stderr, /^pointsub: ERR_QUOTA: tree\/x\/y\.bin: 293\.0 KiB, over --max-file-size \(1 B\)\n$/);
    const bad = await run(["get", "a.txt", "--from", url, "--out", out, "--max-file-size", "lots"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--max-file-size/);
  });

  it("the summary counts the names that failed before their download (not found, over --max-file-size)", async () => {
    const out = join(work, "out-summary");
    // b.bin is 1 MiB + 17: over 256 KiB. Before, this said "1 of 1 files received …, 2 failed".
    const args = ["get", "a.txt", "nope.txt", "b.bin", "--from", url, "--out", out, "--max-file-size", "256KiB"];
    const plain = await run(args);
    assert.equal(plain.code, 1, plain.stderr);
    assert.match(plain.stdout.trim().split("\n").at(-1) ?? "", /^1 of 3 files received \(.*\), 2 failed$/);
    const json = await run([...args, "--force", "--json"]);
    assert.equal(json.code, 1, json.stderr);
    const summary = events(json.stdout).find((e) => e.event === "summary");
    assert.deepEqual([summary?.files, summary?.received, summary?.failed], [3, 1, 2], json.stdout);
    // One received and one not found: a summary too (before, none, as if one file had been named).
    const two = await run(["get", "a.txt", "nope.txt", "--from", url, "--out", out, "--force"]);
    assert.equal(two.code, 1, two.stderr);
    assert.match(two.stdout.trim().split("\n").at(-1) ?? "", /^1 of 2 files received \(.*\), 1 failed$/);
  });

  it("a name that exists as a directory in --out fails alone (ERR_EXISTS): the other files still arrive", async () => {
    // Before: ERR_EXISTS stopped the whole download; later names were neither received nor reported.
    const out = join(work, "out-exists");
    await mkdir(join(out, "a.txt"), { recursive: true });
    const r = await run(["get", "a.txt", "b.bin", "tree/z.txt", "-j", "1", "--from", url, "--out", out, "--json"]);
    assert.equal(r.code, 1, r.stderr);
    const evs = events(r.stdout);
    const failed = evs.filter((e) => e.event === "failed");
    assert.deepEqual(
      failed.map((e) => [e.file, e.code]),
      [["a.txt", "ERR_EXISTS"]],
    );
    assert.equal(evs.filter((e) => e.event === "received").length, 2, r.stdout);
    assert.deepEqual(await readFile(join(out, "b.bin")), Buffer.from(files["b.bin"]));
    assert.equal(await readFile(join(out, "z.txt"), "utf8"), "zzz"); // a file named alone lands under its base name
  });

  it("a connection dropped mid-download is reopened and the download continues where it stopped", async () => {
    const size = 48 * MiB;
    const want = await writeRandomFile(join(inbox, "drop.bin"), size);
    const proxy = await startProxy(url, { cutAt: { dir: "down", bytes: [12 * MiB] } });
    try {
      const out = join(work, "out-drop");
      const got = await run(["get", "drop.bin", "--from", proxy.url, "--out", out, "--json"]);
      assert.equal(got.code, 0, got.stderr);
      const r = events(got.stdout).find((e) => e.event === "received") as Record<string, number>;
      assert.ok(r.resumedFrom > 0 && r.resumedFrom < size, `resumed from ${r.resumedFrom}`);
      assert.equal(await sha256File(join(out, "drop.bin")), want);
      // Through the proxy went the file once and little more (what the cut lost in flight).
      assert.ok(proxy.bytes.down < size + 16 * MiB, `${proxy.bytes.down} bytes came down`);
    } finally {
      await proxy.close();
    }
  });

  it("a killed download, re-run, resumes: fewer bytes come the second time", async () => {
    const size = 64 * MiB;
    const want = await writeRandomFile(join(inbox, "kill.bin"), size);
    const out = join(work, "out-kill");
    // Through a proxy that is held once some bytes passed, so the kill lands mid-transfer.
    const proxy = await startProxy(url);
    const child = spawn(process.execPath, [MAIN, "get", "kill.bin", "--from", proxy.url, "--out", out], {
      stdio: "ignore",
      env: childEnv,
    });
    try {
      const held = await holdMidDownload(proxy, out);
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      assert.ok(held >= 4 * MiB && held < size, `the partial held ${held} bytes`);
    } finally {
      await proxy.close();
    }
    const again = await run(["get", "kill.bin", "--from", url, "--out", out, "--json"]);
    assert.equal(again.code, 0, again.stderr);
    const r = events(again.stdout).find((e) => e.event === "received") as Record<string, number>;
    assert.ok(r.resumedFrom > 0, `resumed from ${r.resumedFrom}`);
    assert.ok(r.bytesReceived < size, `received ${r.bytesReceived} of ${size}`);
    assert.equal(r.bytesReceived, size - r.resumedFrom);
    assert.equal(await sha256File(join(out, "kill.bin")), want);
    const sent = serverEvents.filter((e) => e.event === "download" && e.status === "sent" && e.name === "kill.bin");
    assert.equal((sent.at(-1) as Record<string, number>).resumedFrom, r.resumedFrom);
  });

  it("an interrupted download (SIGINT) saves its resume point: exit 130, its .resume sidecar kept, no .lock left", async () => {
    const size = 64 * MiB;
    const want = await writeRandomFile(join(inbox, "int.bin"), size);
    const out = join(work, "out-int");
    const proxy = await startProxy(url);
    const child = spawn(process.execPath, [MAIN, "get", "int.bin", "--from", proxy.url, "--out", out], {
      stdio: ["ignore", "ignore", "pipe"],
      env: childEnv,
    });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.once("exit", r));
    try {
      const held = await holdMidDownload(proxy, out);
      assert.ok(held >= 4 * MiB && held < size, `the partial held ${held} bytes`);
      child.kill("SIGINT");
      assert.equal(await exited, 130, stderr);
    } finally {
      await proxy.close();
    }
    assert.match(stderr, /ERR_CANCELLED: interrupted by SIGINT/);
    // One line, as send's: the connection the interrupt cut is no failure to retry (a `retrying` line
    // followed, and at times the command's own end: exit 1, its lock left and no sidecar).
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
    const left = await readdir(out);
    assert.equal(left.filter((f) => f.endsWith(".lock")).length, 0, `left: ${left.join(", ")}`);
    assert.equal(left.filter((f) => f.endsWith(".resume")).length, 1, `left: ${left.join(", ")}`);
    const again = await run(["get", "int.bin", "--from", url, "--out", out, "--json"]);
    assert.equal(again.code, 0, again.stderr);
    const r = events(again.stdout).find((e) => e.event === "received") as Record<string, number>;
    assert.ok(r.resumedFrom > 0, `resumed from ${r.resumedFrom}`);
    assert.equal(await sha256File(join(out, "int.bin")), want);
    assert.deepEqual(await readdir(out), ["int.bin"]);
  });

  it("a tree with no files: send -r and get -r say so in one line (--json: a summary of 0 files), exit 0", async () => {
    const local = join(work, "nothing-here");
    await mkdir(join(local, "sub"), { recursive: true });
    const sent = await run(["send", "-r", local, "--to", url]);
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(sent.stdout, "no files to send: the directories named hold none\n");
    const sentJson = await run(["send", "-r", local, "--to", url, "--json"]);
    assert.deepEqual(
      events(sentJson.stdout).map((e) => [e.event, e.files, e.failed]),
      [["summary", 0, 0]],
    );
    await mkdir(join(inbox, "hollow", "sub"), { recursive: true });
    const out = join(work, "out-hollow");
    const got = await run(["get", "-r", "hollow", "--from", url, "--out", out]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout, "no files to receive: the directories named hold none\n");
    const gotJson = await run(["get", "-r", "hollow", "--from", url, "--out", out, "--json"]);
    assert.deepEqual(
      events(gotJson.stdout).map((e) => [e.event, e.files, e.failed]),
      [["summary", 0, 0]],
    );
    // A name that is not there is its error alone, no summary.
    const missing = await run(["get", "not-there", "--from", url, "--out", out]);
    assert.equal(missing.code, 1);
    assert.equal(missing.stdout, "");
  });

  it("a hostile server cannot make get write a file it did not ask for, nor more than the listing said", async () => {
    const evilSrc = join(work, "evil-src.txt");
    await writeFile(evilSrc, "01234");
    // Lists a.txt as 5 bytes; on get, streams the file under the name the test picks.
    let sendAs = "evil.txt";
    const server = createServer();
    server.handle(FILE_LIST_ROUTE, () =>
      JSON.stringify({ type: "file", entries: [{ path: "a.txt", type: "file", size: 5, mtime: 0 }] }),
    );
    server.handle(FILE_GET_ROUTE, async (req, ctx) => {
      const r = JSON.parse(new TextDecoder().decode(req.data)) as FileGetRequest;
      try {
        await sendFile(ctx.session, evilSrc, { relativePath: sendAs, retries: 0, resumeKey: "k".repeat(32) });
      } catch (err) {
        throw new PointSubError("ERR_HANDLER", `refused: ${(err as Error).message}`);
      }
      return JSON.stringify({ path: r.path, size: 5, crc32c: "00000000", resumedFrom: 0, bytesSent: 5 });
    });
    const [evilUrl] = await server.listen("tcp://127.0.0.1:0");
    try {
      const out = join(work, "out-evil");
      const other = await run(["get", "a.txt", "--from", evilUrl, "--out", out, "--retries", "0"]);
      assert.equal(other.code, 1);
      assert.match(other.stderr, /did not ask for/);
      sendAs = "a.txt";
      await writeFile(evilSrc, "0123");
      const smaller = await run(["get", "a.txt", "--from", evilUrl, "--out", out, "--retries", "0"]);
      assert.equal(smaller.code, 1);
      assert.match(smaller.stderr, /sent 4 bytes where its listing said 5/);
      // More than the largest listed file is over the client sink's limit before a byte is stored.
      await writeFile(evilSrc, "0123456789");
      const bigger = await run(["get", "a.txt", "--from", evilUrl, "--out", out, "--retries", "0"]);
      assert.equal(bigger.code, 1);
      assert.match(bigger.stderr, /file of 10 bytes is over the 5-byte limit/);
      assert.deepEqual(await readdir(out), []);
    } finally {
      await server.close();
    }
  });

  it("a file stored here whole whose answer was lost with the connection is received: not asked for again", async () => {
    // The server streams the file, then the connection drops before its answer (the server died, a
    // network cut): before, the retry asked again and the whole file came a second time.
    const src = join(work, "lost-answer.bin");
    const size = 4 * MiB;
    await writeFile(src, randomFillSync(Buffer.alloc(size)));
    let asked = 0;
    const server = createServer();
    server.handle(FILE_LIST_ROUTE, () =>
      JSON.stringify({ type: "file", entries: [{ path: "l.bin", type: "file", size, mtime: 0 }] }),
    );
    server.handle(FILE_GET_ROUTE, async (req, ctx) => {
      asked++;
      const r = JSON.parse(new TextDecoder().decode(req.data)) as FileGetRequest;
      const receipt = await sendFile(ctx.session, src, { relativePath: r.to, retries: 0, resumeKey: "k".repeat(32) });
      if (asked === 1) ctx.session.destroy(); // the file went whole; its answer does not
      return JSON.stringify({ path: r.path, size, crc32c: receipt.crc32c, resumedFrom: 0, bytesSent: size });
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const out = join(work, "out-lost-answer");
      const r = await run(["get", "l.bin", "--from", url, "--out", out, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(sha256(await readFile(join(out, "l.bin"))), sha256(await readFile(src)));
      assert.equal(asked, 1, "the file was asked for again after it was stored whole");
      const received = events(r.stdout).filter((e) => e.event === "received");
      assert.equal(received.length, 1);
      assert.equal(received[0].size, size);
    } finally {
      await server.close();
    }
  });

  it("a hostile server learns nothing through a symbolic link in --out, and gets one transfer per request", async () => {
    // Before: the quick check read <out>/docs/key.txt through the link docs -> a directory outside
    // --out and sent its size and CRC32C (4 bytes: the content, inverted); and a server could open
    // any number of transfers for one request, each leaving an unfinished file.
    const secretDir = join(work, "secret-dir");
    await mkdir(secretDir, { recursive: true });
    await writeFile(join(secretDir, "key.txt"), "PW=7");
    const out = join(work, "out-link");
    await mkdir(out, { recursive: true });
    await symlink(secretDir, join(out, "docs"));
    const src = join(work, "twice-src.txt");
    await writeFile(src, "01234");
    const asked: FileGetRequest[] = [];
    const refusals: string[] = [];
    let listed = { path: "docs/key.txt", type: "file", size: 4, mtime: 0 };
    const server = createServer();
    server.handle(FILE_LIST_ROUTE, () =>
      JSON.stringify({ type: listed.path === "a.txt" ? "file" : "dir", entries: [listed] }),
    );
    server.handle(FILE_GET_ROUTE, async (req, ctx) => {
      const r = JSON.parse(new TextDecoder().decode(req.data)) as FileGetRequest;
      asked.push(r);
      if (r.path === "a.txt") {
        for (const key of ["k", "l", "m"]) {
          try {
            await sendFile(ctx.session, src, { relativePath: "a.txt", retries: 0, resumeKey: key.repeat(32) });
          } catch (err) {
            refusals.push((err as Error).message);
          }
        }
      }
      return JSON.stringify({ path: r.path, size: 5, crc32c: "00000000", resumedFrom: 0, bytesSent: 5 });
    });
    const [evilUrl] = await server.listen("tcp://127.0.0.1:0");
    try {
      await run(["get", ".", "-r", "--from", evilUrl, "--out", out, "--retries", "0"]);
      assert.equal(asked.length, 1);
      assert.equal(asked[0]?.have, undefined, "no size or CRC32C of a file behind the link went back");
      assert.equal(await readFile(join(secretDir, "key.txt"), "utf8"), "PW=7");
      listed = { path: "a.txt", type: "file", size: 5, mtime: 0 };
      const r = await run(["get", "a.txt", "--from", evilUrl, "--out", out, "--retries", "0"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await readFile(join(out, "a.txt"), "utf8"), "01234");
      assert.equal(refusals.length, 2, refusals.join("; "));
      for (const m of refusals) assert.match(m, /the server sent it [23] times for 1 request/);
      assert.deepEqual(
        (await readdir(out)).filter((n) => n.endsWith(".partial")),
        [],
      );
    } finally {
      await server.close();
    }
  });

  it("a hostile listing: paths out of --out are never looked at, escapes never printed, circles and lies about what was stored refused", async () => {
    // A file outside --out that the listing names through "..": its size and CRC32C went back to
    // the server as what this side holds (attack review, session 27).
    const secret = join(work, "secret.txt");
    await writeFile(secret, "top secret");
    const out = join(work, "out-listing");
    await mkdir(out, { recursive: true });
    const rel = `p/${"../".repeat(12)}${secret.slice(1)}`;
    let listing: (r: { cursor?: string }) => unknown = () => ({});
    let answer: (r: FileGetRequest) => unknown = () => ({});
    const asked: FileGetRequest[] = [];
    const server = createServer();
    server.handle(FILE_LIST_ROUTE, (req) =>
      JSON.stringify(listing(JSON.parse(new TextDecoder().decode(req.data)) as { cursor?: string })),
    );
    server.handle(FILE_GET_ROUTE, (req) => {
      const r = JSON.parse(new TextDecoder().decode(req.data)) as FileGetRequest;
      asked.push(r);
      return JSON.stringify(answer(r));
    });
    const [evilUrl] = await server.listen("tcp://127.0.0.1:0");
    const get = (...args: string[]) => run(["get", ...args, "--from", evilUrl, "--out", out, "--retries", "0"]);
    try {
      const file = (path: string, size = 10) => ({ path, type: "file", size, mtime: 0 });
      for (const bad of [rel, "/etc/hostname", "a/./b", "e\u001b]0;PWNED\u0007\u001b[2Jvil\nFAKE.txt"]) {
        listing = () => ({ type: "dir", entries: [file("ok.txt"), file(bad)] });
        answer = (r) => ({ path: r.path, size: 10, crc32c: "00000000", resumedFrom: 0, bytesSent: 10, skipped: true });
        const r = await get(".", "-r");
        assert.equal(r.code, 1, bad);
        assert.match(r.stderr, /^pointsub: ERR_PROTOCOL: .*the server listed a path no request could name/, bad);
        assert.ok(!(r.stdout + r.stderr).includes("\u001b"), "no escape printed");
      }
      assert.deepEqual(asked, [], "nothing was asked for (no size or CRC32C of any file went back)");
      // Not under what was asked; out of order (a listing that pages in circles repeats an entry).
      listing = () => ({ type: "dir", entries: [file("other/x")] });
      assert.match((await get("sub", "-r")).stderr, /ERR_PROTOCOL: .*listed "other\/x" under "sub"/);
      listing = (q) => ({ type: "dir", entries: [file("same.txt")], cursor: q.cursor === "A" ? "B" : "A" });
      assert.match((await get(".", "-r")).stderr, /ERR_PROTOCOL: .*listing went back: "same.txt" after "same.txt"/);
      // An mtime past the latest date (before: ls died on `Invalid time value` and showed nothing after it).
      listing = () => ({ type: "dir", entries: [{ path: "t.txt", type: "file", size: 1, mtime: 2 ** 53 - 1 }] });
      assert.match(
        (await run(["ls", "--from", evilUrl])).stderr,
        /^pointsub: ERR_PROTOCOL: .*mtime \d+ is past the latest date/,
      );
      // The same path twice in one page is two names that decode alike (invalid UTF-8): not a circle.
      listing = () => ({ type: "dir", entries: [file("dup"), file("dup")] });
      assert.equal((await run(["ls", "--from", evilUrl])).code, 0);
      // An answer over 16 MiB (FILE_ANSWER_MAX; the default maxMessageSize is 256 MiB) is not taken.
      listing = () => ({ type: "dir", entries: [file("x")], pad: "x".repeat(17 * MiB) });
      assert.match((await run(["ls", "--from", evilUrl])).stderr, /^pointsub: ERR_MESSAGE_TOO_LARGE: /);
      // A download answered OK without a file, and one "skipped" that this side never said it held:
      // not received (before: "received", exit 0, nothing stored).
      listing = () => ({ type: "file", entries: [file("a.txt")] });
      answer = (r) => ({ path: r.path, size: 10, crc32c: "00000000", resumedFrom: 0, bytesSent: 10 });
      const none = await get("a.txt");
      assert.equal(none.code, 1);
      assert.match(none.stderr, /ERR_PROTOCOL: a\.txt: the server answered the download but sent no file/);
      answer = (r) => ({ path: r.path, size: 10, crc32c: "00000000", resumedFrom: 0, bytesSent: 0, skipped: true });
      const skip = await get("a.txt");
      assert.equal(skip.code, 1);
      assert.match(skip.stderr, /ERR_PROTOCOL: a\.txt: the server skipped a file this side does not hold/);
      assert.deepEqual(await readdir(out), []);
    } finally {
      await server.close();
    }
  });

  it("a server that serves no files: ls and get say so in one line, exit 1", async () => {
    const server = createServer();
    server.handle("/echo/1.0.0", (req) => req.data);
    const [plain] = await server.listen("tcp://127.0.0.1:0");
    try {
      for (const args of [["ls"], ["get", "a.txt", "--out", join(work, "out-none")]]) {
        const r = await run([...args, "--from", plain]);
        assert.equal(r.code, 1);
        assert.equal(
          r.stderr,
          "pointsub: ERR_NO_ROUTE: the server serves no files (not a pointsub serve --dir, or an older one)\n",
        );
      }
    } finally {
      await server.close();
    }
  });
});
