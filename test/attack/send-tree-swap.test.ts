/**
 * `send -r` sends only what is inside the tree, even when the tree changes
 * while it is walked and sent (bundles leave while the walk goes on, d7ae54b):
 * a file the walk listed that is then replaced by a symbolic link to a file
 * outside the tree, and a directory replaced by a symbolic link to one
 * outside it just before it is listed. Before, the bundle read followed the
 * link (`openSync(path, "r")`) and the walk listed the linked directory
 * (`readdir` follows links): the outside files' bytes reached the server
 * under the tree's names.
 *
 * A large file of the tree (sent as a stream of its own, after the
 * bundles) swapped the same way is not followed either (`treeFiles`: lstat
 * and O_NOFOLLOW).
 *
 * The swaps are made from the walk's own `readdir` calls (the callback API,
 * which send.ts uses), so they land at a fixed point of the walk.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import fsp from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

/** Run (once) just before the walk lists this directory. */
let onList: { dir: string; run: () => void } | undefined;
/** Run (once) once this directory was listed, before the walk sees the listing (it reads its files then). */
let onListed: { dir: string; run: () => void } | undefined;
{
  const readdir = fs.readdir;
  (fs as { readdir: unknown }).readdir = (...a: unknown[]) => {
    if (onList !== undefined && a[0] === onList.dir) {
      const { run } = onList;
      onList = undefined;
      run();
    }
    if (onListed !== undefined && a[0] === onListed.dir) {
      const { run } = onListed;
      onListed = undefined;
      const cb = a[a.length - 1] as (...r: unknown[]) => void;
      a[a.length - 1] = (...r: unknown[]) => {
        run();
        cb(...r);
      };
    }
    return (readdir as (...b: unknown[]) => void)(...a);
  };
  // send.ts imports readdir by name: its binding follows the module object now.
  syncBuiltinESMExports();
}
const { sendCommand } = await import("../../src/cli/send.ts");
const { flushOut } = await import("../../src/cli/output.ts");
const { createServer, FILE_BUNDLE_ROUTE, FILE_CHECK_ROUTE, FILE_ROUTE, fileSink } = await import("../../src/index.ts");

const SECRET = "outside the tree: never sent";

describe("attack: send -r sends nothing from outside the tree when the tree changes mid-walk", () => {
  let work: string;
  before(async () => {
    work = await fsp.mkdtemp(join(tmpdir(), "pointsub-tree-swap-"));
    await fsp.mkdir(join(work, "outside"));
    await fsp.writeFile(join(work, "outside", "secret"), SECRET);
  });
  after(() => fsp.rm(work, { recursive: true, force: true }));

  const start = async (inbox: string) => {
    const sink = fileSink(inbox, { durability: "none" });
    const server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    server.handle(FILE_CHECK_ROUTE, sink.check);
    server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const stop = async () => {
      await server.close({ timeoutMs: 100 });
      sink.close();
    };
    return { url, stop };
  };
  /** Runs `send -r` (JSON output): its events, or its error. */
  const send = async (args: string[], url: string) => {
    const lines: string[] = [];
    const out = process.stdout.write;
    process.stdout.write = ((chunk: string) => {
      lines.push(...String(chunk).split("\n").filter(Boolean));
      return true;
    }) as typeof process.stdout.write;
    try {
      await sendCommand(args, { to: url, compress: "off", retries: 0, resume: true, recursive: true, json: true });
    } catch {
      // A file that failed fails the send: what reached the server is what is checked.
    } finally {
      flushOut();
      process.stdout.write = out;
    }
    return lines;
  };
  /** Every stored file's content under `dir` (the sink's own `.pointsub` left out). */
  const stored = async (dir: string): Promise<string[]> => {
    const out: string[] = [];
    for (const e of await fsp.readdir(dir, { withFileTypes: true, recursive: true })) {
      if (e.isFile() && !join(e.parentPath, e.name).includes(".pointsub"))
        out.push(await fsp.readFile(join(e.parentPath, e.name), "utf8"));
    }
    return out;
  };

  it("a listed file replaced by a link to a file outside: its link is not followed", async () => {
    const src = join(work, "t1");
    await fsp.mkdir(join(src, "a"), { recursive: true });
    await fsp.mkdir(join(src, "b"));
    for (let i = 0; i < 3; i++) await fsp.writeFile(join(src, "a", `f${i}`), `a ${i}`);
    await fsp.writeFile(join(src, "b", "g"), "b");
    const inbox = join(work, "inbox1");
    const s = await start(inbox);
    try {
      // a/ was listed (its bundle not complete yet): a/f1 becomes a link before b/ is listed.
      onList = {
        dir: join(src, "b"),
        run: () => {
          fs.rmSync(join(src, "a", "f1"));
          fs.symlinkSync(join(work, "outside", "secret"), join(src, "a", "f1"));
        },
      };
      const lines = await send([src], s.url);
      assert.equal(onList, undefined, "the swap ran");
      const contents = await stored(inbox);
      assert.ok(!contents.includes(SECRET), `the outside file was stored: ${lines.join("\n")}`);
      assert.ok(contents.includes("a 0") && contents.includes("b"), `the others arrive: ${contents.join(", ")}`);
    } finally {
      onList = undefined;
      await s.stop();
    }
  });

  it("a file replaced by a link between its directory's listing and its read (the walk reads small files as it finds them): not followed, it fails alone", async () => {
    const src = join(work, "t4");
    await fsp.mkdir(join(src, "a"), { recursive: true });
    for (let i = 0; i < 3; i++) await fsp.writeFile(join(src, "a", `f${i}`), `a ${i}`);
    const inbox = join(work, "inbox4");
    const s = await start(inbox);
    try {
      onListed = {
        dir: join(src, "a"),
        run: () => {
          fs.rmSync(join(src, "a", "f1"));
          fs.symlinkSync(join(work, "outside", "secret"), join(src, "a", "f1"));
        },
      };
      const lines = await send([src], s.url);
      assert.equal(onListed, undefined, "the swap ran");
      const contents = await stored(inbox);
      assert.ok(!contents.includes(SECRET), `the outside file was stored: ${lines.join("\n")}`);
      assert.deepEqual(contents.sort(), ["a 0", "a 2"], `the others arrive: ${lines.join("\n")}`);
      const events = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.equal(events.find((e) => e.event === "summary")?.failed, 1, lines.join("\n"));
    } finally {
      onListed = undefined;
      await s.stop();
    }
  });

  it("a large listed file (sent on its own, not in a bundle) replaced by a link to a file outside: not followed", async () => {
    const src = join(work, "t3");
    await fsp.mkdir(join(src, "a"), { recursive: true });
    await fsp.mkdir(join(src, "b"));
    // Over 64 KiB: sent as a stream of its own, through `sendFileVia` after the bundles.
    await fsp.writeFile(join(src, "a", "big"), "L".repeat(200 * 1024));
    await fsp.writeFile(join(src, "a", "small"), "a");
    await fsp.writeFile(join(src, "b", "g"), "b");
    const bigSecret = SECRET.repeat(8 * 1024);
    await fsp.writeFile(join(work, "outside", "big-secret"), bigSecret);
    const inbox = join(work, "inbox3");
    const s = await start(inbox);
    try {
      onList = {
        dir: join(src, "b"),
        run: () => {
          fs.rmSync(join(src, "a", "big"));
          fs.symlinkSync(join(work, "outside", "big-secret"), join(src, "a", "big"));
        },
      };
      const lines = await send([src], s.url);
      assert.equal(onList, undefined, "the swap ran");
      const contents = await stored(inbox);
      assert.ok(!contents.some((c) => c.includes(SECRET)), `the outside file was stored: ${lines.join("\n")}`);
      assert.ok(contents.includes("a") && contents.includes("b"), `the others arrive: ${contents.length} files`);
    } finally {
      onList = undefined;
      await s.stop();
    }
  });

  it("a directory replaced by a link to a directory outside as the walk reaches it: not listed", async () => {
    const src = join(work, "t2");
    await fsp.mkdir(join(src, "a"), { recursive: true });
    await fsp.mkdir(join(src, "b"));
    await fsp.writeFile(join(src, "a", "f"), "a");
    await fsp.writeFile(join(src, "b", "secret"), "b's own");
    const inbox = join(work, "inbox2");
    const s = await start(inbox);
    try {
      // The parent listed b/ as a directory; it is a link to outside/ when the walk lists it.
      onList = {
        dir: join(src, "b"),
        run: () => {
          fs.rmSync(join(src, "b"), { recursive: true });
          fs.symlinkSync(join(work, "outside"), join(src, "b"));
        },
      };
      const lines = await send([src], s.url);
      assert.equal(onList, undefined, "the swap ran");
      const contents = await stored(inbox);
      assert.ok(!contents.includes(SECRET), `the outside directory's file was stored: ${lines.join("\n")}`);
      assert.ok(contents.includes("a"), `a/f arrives: ${contents.join(", ")}`);
    } finally {
      onList = undefined;
      await s.stop();
    }
  });
});
