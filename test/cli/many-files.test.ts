/**
 * `pointsub send` with many files and directories (issue 13): every file of
 * one send over one connection, `-r DIR` keeps the tree (same-named files
 * in two folders both arrive), two files for one name are refused before
 * anything is sent, and a re-run skips what the server holds whole (the
 * quick check) unless --force. Real `serve` and `send` processes on loopback.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { BUNDLE_FILES } from "../../src/cli/send.ts";
import { createServer, FILE_BUNDLE_ROUTE, FILE_CHECK_ROUTE, FILE_ROUTE, fileSink } from "../../src/index.ts";
import { sha256 } from "../helpers/data.ts";
import { startServeProcess } from "../helpers/serve-process.ts";

const MAIN = join(import.meta.dirname, "../../src/cli/main.ts");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe("pointsub send: many files, directories, quick check", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  const children: ChildProcess[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-many-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state"), POINTSUB_TOKEN: "" };
    delete env.POINTSUB_TOKEN;
  });
  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    await rm(work, { recursive: true, force: true });
  });

  function run(args: string[]): Promise<Run> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [MAIN, ...args], { stdio: ["ignore", "pipe", "pipe"], env });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.on("close", (code) => resolve({ code, stdout, stderr }));
    });
  }

  /** `pointsub serve --json`; its JSON events collect in `events`. */
  async function serve(dir: string, args: string[] = [], listen = "tcp://127.0.0.1:0") {
    const p = await startServeProcess(["--dir", dir, ...args], { env, listen });
    children.push(p.child);
    return { ...p, count: (event: string) => p.events.filter((e) => e.event === event).length };
  }

  const jsonLines = (out: string) =>
    out
      .trim()
      .split("\n")
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  it("200 files go over one connection and all arrive whole", async () => {
    const src = join(work, "flat");
    await mkdir(src);
    const files: string[] = [];
    const hashes = new Map<string, string>();
    for (let i = 0; i < 200; i++) {
      const data = randomFillSync(Buffer.alloc(1024 + i));
      const f = join(src, `f${i}.bin`);
      await writeFile(f, data);
      files.push(f);
      hashes.set(`f${i}.bin`, sha256(data));
    }
    const inbox = join(work, "inbox-flat");
    const s = await serve(inbox);
    try {
      const r = await run(["send", ...files, "--to", s.url, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      const out = jsonLines(r.stdout);
      assert.equal(out.filter((e) => e.event === "sent").length, 200);
      const summary = out.find((e) => e.event === "summary");
      assert.equal(summary?.connections, 1);
      for (const [name, h] of hashes) assert.equal(sha256(await readFile(join(inbox, name))), h, name);
      // The server saw one session for the 200 files (plus the listening line's none).
      assert.equal(s.count("session"), 1);
      assert.equal(s.count("file"), 200);
    } finally {
      await s.stop();
    }
  });

  it("-r DIR keeps the tree: same-named files in two folders both arrive; a re-run sends nothing, --force sends again", async () => {
    const root = join(work, "photos");
    const tree: Record<string, Buffer> = {
      "a/same.txt": Buffer.from("from folder a\n"),
      "b/same.txt": Buffer.from("from folder b, longer\n"),
      "b/deep/er/x.bin": randomFillSync(Buffer.alloc(70_000)),
      ".hidden/conf": Buffer.from("dot files keep their dot\n"),
      "top.txt": Buffer.from("top\n"),
    };
    for (const [rel, data] of Object.entries(tree)) {
      await mkdir(join(root, rel, ".."), { recursive: true });
      await writeFile(join(root, rel), data);
    }
    const inbox = join(work, "inbox-tree");
    const s = await serve(inbox, ["--overwrite"]);
    try {
      const first = await run(["send", "-r", `${root}/`, "--to", s.url, "--json"]);
      assert.equal(first.code, 0, first.stderr);
      for (const [rel, data] of Object.entries(tree)) {
        assert.equal(sha256(await readFile(join(inbox, "photos", rel))), sha256(data), rel);
      }
      assert.equal(s.count("file"), 5);
      // The sender learns where under the served directory, never the server's own paths; the
      // server's own events give its absolute paths.
      assert.ok(!first.stdout.includes(inbox), first.stdout);
      const sentPaths = jsonLines(first.stdout)
        .filter((e) => e.event === "sent" && typeof e.path === "string")
        .map((e) => e.path);
      for (const p of sentPaths) assert.ok(!String(p).startsWith("/"), String(p));
      for (const e of s.events.filter((e) => e.event === "file")) {
        assert.ok(String(e.path).startsWith(join(inbox, "photos")), String(e.path));
        // Who sent it, bundled or not (README's serve events).
        assert.match(String(e.from), /^tcp:\/\/127\.0\.0\.1:\d+$/, JSON.stringify(e));
      }
      // The four small files went in one bundle, the 70 kB one as a stream of its own.
      const transfers = s.count("transfer");
      assert.equal(transfers, 1);

      // Re-run: the quick check finds every file whole; nothing is sent.
      const again = await run(["send", "-r", root, "--to", s.url, "--json"]);
      assert.equal(again.code, 0, again.stderr);
      const ev = jsonLines(again.stdout);
      assert.equal(ev.filter((e) => e.event === "sent").length, 0);
      assert.equal(ev.filter((e) => e.event === "skipped" && e.reason === "unchanged").length, 5);
      assert.deepEqual(
        ev
          .filter((e) => e.event === "skipped")
          .map((e) => e.name)
          .sort(),
        Object.keys(tree)
          .map((k) => `photos/${k}`)
          .sort(),
      );
      assert.equal(ev.find((e) => e.event === "summary")?.bytesSent, 0);
      assert.equal(s.count("file"), 5, "the server stored nothing new");
      assert.equal(s.count("transfer"), transfers, "nor began a transfer");

      // One file changed (same size, other bytes): only it is sent.
      const changed = Buffer.from("from folder A\n");
      await writeFile(join(root, "a/same.txt"), changed);
      const third = await run(["send", "-r", root, "--to", s.url]);
      assert.equal(third.code, 0, third.stderr);
      assert.match(third.stdout, /photos\/a\/same\.txt: sent 14 B/);
      assert.match(third.stdout, /1 of 5 files sent .*, 4 skipped \(unchanged\)/);
      assert.deepEqual(await readFile(join(inbox, "photos/a/same.txt")), changed);

      // --force sends them all again.
      const forced = await run(["send", "-r", root, "--to", s.url, "--force", "--json"]);
      assert.equal(forced.code, 0, forced.stderr);
      assert.equal(jsonLines(forced.stdout).filter((e) => e.event === "sent").length, 5);
      assert.equal(s.count("file"), 5 + 1 + 5);
    } finally {
      await s.stop();
    }
  });

  it("a file the server refuses fails alone: the others arrive, the exit is 1 with one line", async () => {
    const d = join(work, "some");
    await mkdir(d, { recursive: true });
    for (let i = 0; i < 5; i++) await writeFile(join(d, `k${i}.txt`), `content ${i}\n`);
    const inbox = join(work, "inbox-some");
    await mkdir(inbox, { recursive: true });
    await writeFile(join(inbox, "k2.txt"), "another file of that name\n");
    const s = await serve(inbox);
    try {
      const r = await run(["send", ...[0, 1, 2, 3, 4].map((i) => join(d, `k${i}.txt`)), "--to", s.url]);
      assert.equal(r.code, 1);
      // Named once (it said "k2.txt: k2.txt already exists").
      assert.match(r.stderr, /^pointsub: ERR_EXISTS: k2\.txt already exists/);
      assert.equal(r.stderr.trim().split("\n").length, 1);
      assert.match(r.stdout, /k2\.txt: failed: ERR_EXISTS/);
      assert.match(r.stdout, /4 of 5 files sent .*, 1 failed/);
      for (const i of [0, 1, 3, 4]) assert.equal(await readFile(join(inbox, `k${i}.txt`), "utf8"), `content ${i}\n`);
      assert.equal(await readFile(join(inbox, "k2.txt"), "utf8"), "another file of that name\n");
    } finally {
      await s.stop();
    }
  });

  it("a send started before the server listens waits for it (the quick check retries like the transfers)", async () => {
    const net = await import("node:net");
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const port = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    const f = join(work, "early.txt");
    await writeFile(f, "sent once the server came up\n");
    const sending = run(["send", f, "--to", `tcp://127.0.0.1:${port}`, "--retries", "30", "--json"]);
    // Let it fail to connect at least once (not a timing assertion: the order is what matters).
    await new Promise((r) => setTimeout(r, 500));
    const inbox = join(work, "inbox-early");
    const s = await serve(inbox, [], `tcp://127.0.0.1:${port}`);
    try {
      const r = await sending;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await readFile(join(inbox, "early.txt"), "utf8"), "sent once the server came up\n");
    } finally {
      await s.stop();
    }
  });

  it("a -r send of many small files keeps at most 4 bundles in flight, answered all along; every file arrives", async () => {
    const src = join(work, "pipelined");
    await mkdir(src);
    const count = BUNDLE_FILES * 9 + 5; // 10 bundles
    for (let i = 0; i < count; i++) await writeFile(join(src, `p${i}.txt`), `small file ${i}\n`);
    const inbox = join(work, "inbox-pipelined");
    const sink = fileSink(inbox);
    const server = createServer();
    server.handle(FILE_CHECK_ROUTE, sink.check);
    let now = 0;
    let most = 0;
    let answered = 0;
    /** Bundles that had been answered when each bundle started: later ones start after earlier answers. */
    const answeredAtStart: number[] = [];
    server.handleStream(FILE_BUNDLE_ROUTE, async (stream, ctx) => {
      answeredAtStart.push(answered);
      most = Math.max(most, ++now);
      try {
        return await sink.bundle(stream, ctx);
      } finally {
        now--;
        answered++;
      }
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const r = await run(["send", "-r", src, "--to", url, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(jsonLines(r.stdout).filter((e) => e.event === "sent").length, count);
      assert.equal(answeredAtStart.length, 10);
      assert.ok(most <= 4, `${most} bundles at once`);
      // The last bundle started only once six had been answered (all ten at once before).
      assert.ok(answeredAtStart[9] >= 6, `answered before the last started: ${answeredAtStart[9]}`);
      for (const i of [0, 700, count - 1]) {
        assert.equal(await readFile(join(inbox, "pipelined", `p${i}.txt`), "utf8"), `small file ${i}\n`);
      }
    } finally {
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  });

  it("each bundle's files are quick-checked on their own (one request each): the first bundle leaves once its files are checked", async () => {
    const src = join(work, "checked-per-bundle");
    await mkdir(src);
    const count = BUNDLE_FILES * 9 + 5; // 10 bundles
    for (let i = 0; i < count; i++) await writeFile(join(src, `c${i}.txt`), `checked ${i}\n`);
    const inbox = join(work, "inbox-checked-per-bundle");
    // The first bundle's files and some of the second's are on the server already.
    const held = BUNDLE_FILES + 72;
    await mkdir(join(inbox, "checked-per-bundle"), { recursive: true });
    for (let i = 0; i < held; i++) await writeFile(join(inbox, "checked-per-bundle", `c${i}.txt`), `checked ${i}\n`);
    const sink = fileSink(inbox);
    const server = createServer();
    let checked = 0;
    let biggestCheck = 0;
    let requests = 0;
    let answered = 0;
    /** Checks answered when the first bundle began: before all of them (it waited for its own only). */
    let answeredWhenBundlesBegan = -1;
    const firstBundle = Promise.withResolvers<void>();
    server.handle(FILE_CHECK_ROUTE, async (req, ctx) => {
      const n = (JSON.parse(new TextDecoder().decode(req.data)) as { files: unknown[] }).files.length;
      checked += n;
      biggestCheck = Math.max(biggestCheck, n);
      // Every check but the first waits for a bundle to begin (or 5 s: a sender that waits for all
      // its checks before sending gets its answers late, and the assertion below fails).
      if (++requests > 1) await Promise.race([firstBundle.promise, new Promise((r) => setTimeout(r, 5000))]);
      try {
        return await sink.check(req, ctx);
      } finally {
        answered++;
      }
    });
    server.handleStream(FILE_BUNDLE_ROUTE, (stream, ctx) => {
      if (answeredWhenBundlesBegan < 0) answeredWhenBundlesBegan = answered;
      firstBundle.resolve();
      return sink.bundle(stream, ctx);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const r = await run(["send", "-r", src, "--to", url, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      const ev = jsonLines(r.stdout);
      assert.equal(ev.filter((e) => e.event === "sent").length, count - held);
      assert.equal(ev.filter((e) => e.event === "skipped" && e.reason === "unchanged").length, held);
      assert.equal(ev.find((e) => e.event === "summary")?.skipped, held);
      assert.equal(checked, count, "every file checked once");
      assert.ok(biggestCheck <= BUNDLE_FILES, `a check of ${biggestCheck} files`);
      assert.equal(requests, 10, "one check per bundle");
      assert.ok(
        answeredWhenBundlesBegan >= 1 && answeredWhenBundlesBegan < 10,
        `${answeredWhenBundlesBegan} checks answered before the first bundle`,
      );
      for (const i of [0, held - 1, held, count - 1]) {
        assert.equal(await readFile(join(inbox, "checked-per-bundle", `c${i}.txt`), "utf8"), `checked ${i}\n`);
      }
    } finally {
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  });

  it("a new tree is checked once (its first bundle): the bundles after it go unchecked; a file found then is skipped when whole, refused when not", async () => {
    const src = join(work, "unchecked");
    await mkdir(src);
    const count = BUNDLE_FILES * 4 + 3; // 5 bundles
    const name = (i: number) => `u${String(i).padStart(4, "0")}.txt`;
    for (let i = 0; i < count; i++) await writeFile(join(src, name(i)), `unchecked ${i}\n`);
    const inbox = join(work, "inbox-unchecked");
    const sink = fileSink(inbox, { durability: "none" });
    const server = createServer();
    let requests = 0;
    let checked = 0;
    server.handle(FILE_CHECK_ROUTE, (req, ctx) => {
      requests++;
      checked += (JSON.parse(new TextDecoder().decode(req.data)) as { files: unknown[] }).files.length;
      return sink.check(req, ctx);
    });
    server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      // A new tree: one check (the first bundle's files), every file sent.
      const r = await run(["send", "-r", src, "--to", url, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(jsonLines(r.stdout).filter((e) => e.event === "sent").length, count);
      assert.deepEqual([requests, checked], [1, BUNDLE_FILES], "only the first bundle checked");

      // The server lost the first bundle's files; it holds the others, two of them changed there.
      for (let i = 0; i < BUNDLE_FILES; i++) await rm(join(inbox, "unchecked", name(i)));
      // Two files of later bundles (the second's first two) changed on the server.
      const [c1, c2] = [BUNDLE_FILES, BUNDLE_FILES + 1];
      await writeFile(join(inbox, "unchecked", name(c1)), "changed on the server\n");
      await writeFile(join(inbox, "unchecked", name(c2)), `unchecked ${c2}\n`.toUpperCase());
      requests = 0;
      const again = await run(["send", "-r", src, "--to", url, "--json"]);
      assert.equal(again.code, 1, "two files refused");
      const ev = jsonLines(again.stdout);
      assert.equal(ev.filter((e) => e.event === "sent").length, BUNDLE_FILES, "the first bundle's files sent again");
      assert.equal(
        ev.filter((e) => e.event === "skipped" && e.reason === "unchanged").length,
        count - BUNDLE_FILES - 2,
        "the files the server holds whole skipped, though their bundles went unchecked",
      );
      assert.equal(ev.find((e) => e.event === "error")?.code, "ERR_EXISTS");
      const summary = ev.find((e) => e.event === "summary");
      assert.deepEqual([summary?.sent, summary?.skipped, summary?.failed], [BUNDLE_FILES, count - BUNDLE_FILES - 2, 2]);
      assert.equal(await readFile(join(inbox, "unchecked", name(c1)), "utf8"), "changed on the server\n");
      assert.equal(await readFile(join(inbox, "unchecked", name(0)), "utf8"), "unchecked 0\n");
    } finally {
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  });

  it("a server without the bundle route gets the small files one by one", async () => {
    const src = join(work, "older");
    await mkdir(src);
    const files: string[] = [];
    for (let i = 0; i < 5; i++) {
      files.push(join(src, `o${i}.txt`));
      await writeFile(files[i], `old server ${i}\n`);
    }
    // An older server: the file route and the quick check, no bundles.
    const inbox = join(work, "inbox-older");
    const sink = fileSink(inbox);
    const server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    server.handle(FILE_CHECK_ROUTE, sink.check);
    let bundles = 0;
    server.use(async (ctx, next) => {
      if (ctx.route.includes("bundle")) bundles++;
      return next();
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const r = await run(["send", ...files, "--to", url, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(jsonLines(r.stdout).filter((e) => e.event === "sent").length, 5);
      for (let i = 0; i < 5; i++) assert.equal(await readFile(join(inbox, `o${i}.txt`), "utf8"), `old server ${i}\n`);
      assert.equal(bundles, 1, "one bundle tried, answered ERR_NO_ROUTE");
    } finally {
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  });

  it("two files for one name are refused before anything is sent; a directory needs -r", async () => {
    const d = join(work, "dups");
    await mkdir(join(d, "one"), { recursive: true });
    await mkdir(join(d, "two"), { recursive: true });
    await writeFile(join(d, "one/x.txt"), "1");
    await writeFile(join(d, "two/x.txt"), "2");
    const inbox = join(work, "inbox-dups");
    const s = await serve(inbox);
    try {
      const r = await run(["send", join(d, "one/x.txt"), join(d, "two/x.txt"), "--to", s.url]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^pointsub: ERR_INVALID_ARGUMENT: .*both be stored as x\.txt.*-r/);
      assert.equal(r.stderr.trim().split("\n").length, 1);
      const dir = await run(["send", d, "--to", s.url]);
      assert.equal(dir.code, 1);
      assert.match(dir.stderr, /is a directory \(send it with -r\)/);
      // Names the server would clean to one (a backslash is a separator there, a leading dot goes):
      // before, both were reported sent and one replaced the other (with --overwrite).
      await writeFile(join(d, "one/a\\b.txt"), "first");
      await writeFile(join(d, "two/c\\b.txt"), "second");
      await writeFile(join(d, "one/.y.txt"), "dot");
      await writeFile(join(d, "two/y.txt"), "plain");
      for (const [a, b, stored] of [
        ["one/a\\b.txt", "two/c\\b.txt", "b\\.txt"],
        ["one/.y.txt", "two/y.txt", "y\\.txt"],
      ]) {
        const clash = await run(["send", join(d, a), join(d, b), "--to", s.url]);
        assert.equal(clash.code, 1, clash.stderr);
        assert.match(clash.stderr, new RegExp(`^pointsub: ERR_INVALID_ARGUMENT: .*both be stored as ${stored};`));
      }
      assert.equal(s.count("session"), 0, "nothing connected");
      // Reported under the name it is stored under.
      const one = await run(["send", join(d, "one/a\\b.txt"), "--to", s.url, "--json"]);
      assert.equal(one.code, 0, one.stderr);
      const sent = jsonLines(one.stdout).find((e) => e.event === "sent");
      assert.equal(sent?.name, "b.txt");
      assert.equal(await readFile(join(inbox, "b.txt"), "utf8"), "first");
    } finally {
      await s.stop();
    }
  });
});
