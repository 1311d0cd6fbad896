/**
 * `send -r`: each bundle of small files leaves as soon as the walk completed
 * it, while the walk goes on (the server stores the first files while the
 * sender still lists the others); every file still arrives once, with its
 * content. Two directory arguments of one name keep the walk-then-send
 * order: a file both would store under one name is refused before anything
 * is sent; the same directory named twice sends its files once.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import fsp from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

/**
 * The walk lists directory `holdDir` only once the server received a bundle (or after 5 s, so that a
 * send that waits for its walk to end before sending anything still ends: the assertion is on the
 * order, not on the time).
 */
let holdDir = "";
/** The walk fails to list this directory (EACCES), once the server received a bundle. */
let failDir = "";
let bundleSeen: () => void = () => {};
let held = false;
{
  const readdir = fs.readdir;
  (fs as { readdir: unknown }).readdir = (...a: unknown[]) => {
    const call = () => (readdir as (...b: unknown[]) => void)(...a);
    if (failDir !== "" && a[0] === failDir) {
      const cb = a[a.length - 1] as (err: NodeJS.ErrnoException) => void;
      const err: NodeJS.ErrnoException = new Error(`EACCES: permission denied, scandir '${failDir}'`);
      err.code = "EACCES";
      // Once a bundle reached the server (as the hold below).
      const seen = new Promise<void>((r) => {
        bundleSeen = r;
      });
      let timer: NodeJS.Timeout | undefined;
      void Promise.race([seen, new Promise((r) => (timer = setTimeout(r, 5000)))]).then(() => {
        clearTimeout(timer);
        cb(err);
      });
      return;
    }
    if (holdDir === "" || a[0] !== holdDir) return call();
    const seen = new Promise<void>((r) => {
      bundleSeen = r;
    });
    let timer: NodeJS.Timeout | undefined;
    void Promise.race([seen, new Promise((r) => (timer = setTimeout(r, 5000)))]).then(() => {
      clearTimeout(timer);
      held = true;
      call();
    });
  };
  // send.ts imports readdir by name: its binding follows the module object now.
  syncBuiltinESMExports();
}
const { BUNDLE_FILES, sendCommand } = await import("../../src/cli/send.ts");
const { flushOut } = await import("../../src/cli/output.ts");
const { createServer, FILE_BUNDLE_ROUTE, FILE_CHECK_ROUTE, FILE_ROUTE, fileSink } = await import("../../src/index.ts");

describe("send -r: bundles sent while the walk goes on", () => {
  let work: string;
  before(async () => {
    work = await fsp.mkdtemp(join(tmpdir(), "pointsub-stream-bundles-"));
  });
  after(() => fsp.rm(work, { recursive: true, force: true }));

  /** A file sink's server that counts bundles and notes, for each, whether the held directory was listed. */
  const start = async (inbox: string) => {
    const sink = fileSink(inbox, { durability: "none" });
    const server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    server.handle(FILE_CHECK_ROUTE, sink.check);
    const listedAtBundle: boolean[] = [];
    /** The bundle handlers' runs (a bundle cut off by a failed send cleans up after its connection closed). */
    const handled: Promise<unknown>[] = [];
    server.handleStream(FILE_BUNDLE_ROUTE, (stream, ctx) => {
      listedAtBundle.push(held);
      bundleSeen();
      const run = Promise.resolve(sink.bundle(stream, ctx));
      handled.push(run.catch(() => {}));
      return run;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const stop = async () => {
      await server.close({ timeoutMs: 100 });
      sink.close();
    };
    return { url, listedAtBundle, handled, stop };
  };
  /** Runs `send` (JSON output), resolves to its events, or rejects with its error. */
  const send = async (args: string[], url: string) => {
    const lines: string[] = [];
    const out = process.stdout.write;
    process.stdout.write = ((chunk: string) => {
      lines.push(...String(chunk).split("\n").filter(Boolean));
      return true;
    }) as typeof process.stdout.write;
    try {
      await sendCommand(args, { to: url, compress: "off", retries: 0, resume: true, recursive: true, json: true });
    } finally {
      flushOut();
      process.stdout.write = out;
    }
    return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  };

  it("the first bundle reaches the server before the walk listed the last directory; every file arrives once", async () => {
    const src = join(work, "tree");
    // a/ holds two full bundles and the start of a third; b/ is walked after it.
    const nA = BUNDLE_FILES * 2 + 44;
    await fsp.mkdir(join(src, "a"), { recursive: true });
    await fsp.mkdir(join(src, "b"));
    for (let i = 0; i < nA; i++) await fsp.writeFile(join(src, "a", `f${String(i).padStart(3, "0")}`), `a ${i}`);
    for (let i = 0; i < 10; i++) await fsp.writeFile(join(src, "b", `g${i}`), `b ${i}`);
    const inbox = join(work, "inbox");
    const s = await start(inbox);
    try {
      held = false;
      holdDir = join(src, "b");
      const events = await send([src], s.url);
      holdDir = "";
      assert.equal(s.listedAtBundle[0], false, `b/ listed at each bundle: ${s.listedAtBundle.join(", ")}`);
      assert.ok(held, "b/ was listed");
      const summary = events.find((e) => e.event === "summary");
      assert.deepEqual([summary?.files, summary?.sent, summary?.failed], [nA + 10, nA + 10, 0]);
      const names = events.filter((e) => e.event === "sent").map((e) => e.name as string);
      assert.equal(new Set(names).size, nA + 10, "each file sent once");
      const a = (await fsp.readdir(join(inbox, "tree", "a"))).sort();
      assert.equal(a.length, nA);
      for (const name of [a[0], a[BUNDLE_FILES - 1], a[BUNDLE_FILES], a[nA - 1]]) {
        assert.equal(await fsp.readFile(join(inbox, "tree", "a", name), "utf8"), `a ${Number(name.slice(1))}`);
      }
      assert.equal((await fsp.readdir(join(inbox, "tree", "b"))).length, 10);
      assert.equal(await fsp.readFile(join(inbox, "tree", "b", "g9"), "utf8"), "b 9");
      // The re-run sends none: each bundle's check, asked while the walk goes on, finds its files whole.
      const again = (await send([src], s.url)).find((e) => e.event === "summary");
      assert.deepEqual([again?.sent, again?.skipped, again?.failed], [0, nA + 10, 0]);
    } finally {
      holdDir = "";
      await s.stop();
    }
  });

  it("a directory the walk cannot list after bundles left: it fails alone (ERR_SOURCE, exit 1), the rest is sent; a re-run completes it", async () => {
    const src = join(work, "failing");
    await fsp.mkdir(join(src, "a"), { recursive: true });
    await fsp.mkdir(join(src, "b"));
    for (let i = 0; i < 300; i++) await fsp.writeFile(join(src, "a", `f${String(i).padStart(3, "0")}`), `a ${i}`);
    await fsp.writeFile(join(src, "b", "g"), "b");
    const inbox = join(work, "inbox-failing");
    const s = await start(inbox);
    try {
      failDir = join(src, "b");
      // Before: the whole send failed with the raw EACCES (reported as ERR_HANDLER by the CLI).
      await assert.rejects(send([src], s.url), (err: Error & { code?: string }) => {
        assert.equal(err.code, "ERR_SOURCE");
        assert.match(err.message, /failing\/b: cannot be listed \(EACCES\)/);
        return true;
      });
      failDir = "";
      assert.ok(s.listedAtBundle.length >= 1, "a bundle left before the walk failed");
      await Promise.all(s.handled);
      assert.equal((await fsp.readdir(join(inbox, "failing", "a"))).length, 300, "the rest of the tree was sent");
      // A bundle answered before the failure stays stored, one cut off leaves nothing: a re-run (the walk
      // now succeeds) skips the stored files and sends the rest, none refused.
      const again = (await send([src], s.url)).find((e) => e.event === "summary");
      assert.equal(again?.failed, 0);
      assert.equal(Number(again?.sent) + Number(again?.skipped), 301);
      assert.equal((await fsp.readdir(join(inbox, "failing", "a"))).length, 300);
    } finally {
      failDir = "";
      await s.stop();
    }
  });

  it("two directories of one name holding a file for one name: refused before any bundle is sent", async () => {
    const one = join(work, "one", "t");
    const two = join(work, "two", "t");
    await fsp.mkdir(one, { recursive: true });
    await fsp.mkdir(two, { recursive: true });
    // Enough files for a bundle before the walk reaches the second directory's clash.
    for (let i = 0; i < 300; i++) await fsp.writeFile(join(one, `f${String(i).padStart(3, "0")}`), `one ${i}`);
    await fsp.writeFile(join(two, "f299"), "two");
    const inbox = join(work, "inbox-clash");
    const s = await start(inbox);
    try {
      await assert.rejects(
        send([one, two], s.url),
        (err: Error & { code?: string }) =>
          err.code === "ERR_INVALID_ARGUMENT" && /both be stored as t\/f299/.test(err.message),
      );
      assert.equal(s.listedAtBundle.length, 0, "no bundle sent");
      assert.equal(fs.existsSync(join(inbox, "t")), false);
    } finally {
      await s.stop();
    }
  });

  it("two directories of one name without a clash, and one directory named twice: each file sent once", async () => {
    const x = join(work, "x", "u");
    const y = join(work, "y", "u");
    await fsp.mkdir(x, { recursive: true });
    await fsp.mkdir(y, { recursive: true });
    for (let i = 0; i < 200; i++) await fsp.writeFile(join(x, `x${String(i).padStart(3, "0")}`), `x ${i}`);
    for (let i = 0; i < 5; i++) await fsp.writeFile(join(y, `y${i}`), `y ${i}`);
    const inbox = join(work, "inbox-merge");
    const s = await start(inbox);
    try {
      const events = await send([x, y, `${x}/`], s.url);
      const summary = events.find((e) => e.event === "summary");
      assert.deepEqual([summary?.files, summary?.sent, summary?.failed], [205, 205, 0]);
      assert.equal((await fsp.readdir(join(inbox, "u"))).length, 205);
      assert.equal(await fsp.readFile(join(inbox, "u", "y4"), "utf8"), "y 4");
    } finally {
      await s.stop();
    }
  });
});
