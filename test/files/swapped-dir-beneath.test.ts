/**
 * A directory on the way of a file (`sub` of `served/sub/f.txt`) swapped for
 * a symbolic link to a directory outside — by another local user, after the
 * sink or source checked each directory with lstat and before the file was
 * named or read. Before, only the last component was opened without following
 * links: an upload (a single file, a bundle of `send -r`) was linked outside
 * the directory, and a download read the outside file. Now each directory is
 * opened through the one before (O_DIRECTORY | O_NOFOLLOW) and the file named
 * or read through the last one held: it lands in (is read from) the directory
 * that was checked, wherever its name went. Real sockets. The swap is made in
 * the `onGet` hook (after the checks, before the read), and for uploads where
 * the sink links the finished partial: the last step before the name exists,
 * made deterministic by wrapping `fs.linkSync` and `fs.promises.link` (a race
 * of another process cannot be timed).
 */
import assert from "node:assert/strict";
import fs, { existsSync, readdirSync, readlinkSync, renameSync, symlinkSync, unlinkSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import { decodeBundleAnswer, encodeBundle, FILE_BUNDLE_ROUTE } from "../../src/codec/file-bundle.ts";
import { decodeFileListAnswer, encodeFileListRequest } from "../../src/codec/file-routes.ts";
import {
  type Connection,
  connect,
  createServer,
  FILE_GET_ROUTE,
  FILE_LIST_ROUTE,
  FILE_ROUTE,
  fileSink,
  fileSource,
  type Server,
  sendFile,
} from "../../src/index.ts";
import { FILE_CHECK_ROUTE } from "../../src/node/file-sink.ts";
import { runCli } from "../helpers/cli-run.ts";

/** Moves `dir` aside (still under its parent) and puts a link to `to` in its place. */
function swapForLink(dir: string, to: string): void {
  renameSync(dir, `${dir}.moved`);
  symlinkSync(to, dir);
}

describe("a directory on a file's way swapped for a link after the checks", () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-swapped-dir-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("get: the file is read from the directory checked, never from outside", async () => {
    const served = join(work, "served");
    const secret = join(work, "secret");
    await mkdir(join(served, "sub"), { recursive: true });
    await mkdir(secret);
    await mkdir(join(work, "out"));
    const file = join(served, "sub", "report.txt");
    const outside = join(secret, "report.txt");
    await writeFile(file, "public report 0123456789\n");
    await writeFile(outside, "PRIVATE KEY abcdefghijkl\n");
    await utimes(file, 1_700_000_000, 1_700_000_000);
    await utimes(outside, 1_700_000_000, 1_700_000_000);
    const [a, b] = [await stat(file), await stat(outside)];
    assert.deepEqual([a.size, a.mtimeMs], [b.size, b.mtimeMs]);
    const source = fileSource(served, {
      crcRecords: false,
      onGet: () => swapForLink(join(served, "sub"), secret),
    });
    const server = createServer();
    server.handle(FILE_LIST_ROUTE, source.list);
    server.handle(FILE_GET_ROUTE, source.get);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
      delete env.POINTSUB_URL;
      delete env.POINTSUB_TOKEN;
      const out = join(work, "out");
      const r = await runCli(["get", "sub/report.txt", "--from", url, "--out", out, "--retries", "0"], env, 60_000);
      assert.equal(r.hung, false);
      for (const name of readdirSync(out)) {
        const content = await readFile(join(out, name), "utf8").catch(() => "");
        assert.ok(!content.includes("PRIVATE"), `${name} holds the outside file: ${r.stdout}`);
      }
      assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
      assert.equal(await readFile(join(out, "report.txt"), "utf8"), "public report 0123456789\n");
    } finally {
      await server.close({ timeoutMs: 100 });
    }
  });

  it("ls: a directory swapped for a link while it is read, and back, lists its own names only", async () => {
    const served = join(work, "served-ls");
    const secret = join(work, "secret-ls");
    await mkdir(join(served, "sub"), { recursive: true });
    await mkdir(secret);
    await writeFile(join(served, "sub", "inside.txt"), "in");
    await writeFile(join(secret, "outside-secret.txt"), "out");
    const source = fileSource(served, { crcRecords: false });
    const server = createServer();
    server.handle(FILE_LIST_ROUTE, source.list);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    // The swap, and the swap back before the listing's real-path check, around the directory's read.
    const opendir = fs.promises.opendir;
    let armed = true;
    fs.promises.opendir = (async (path: string, options?: fs.OpenDirOptions) => {
      if (!armed) return opendir(path, options);
      armed = false;
      const sub = join(served, "sub");
      swapForLink(sub, secret);
      try {
        return await opendir(path, options);
      } finally {
        unlinkSync(sub);
        renameSync(`${sub}.moved`, sub);
      }
    }) as typeof fs.promises.opendir;
    syncBuiltinESMExports();
    try {
      const answer = decodeFileListAnswer(
        await conn.request(FILE_LIST_ROUTE, encodeFileListRequest({ path: "sub", recursive: true })),
      );
      assert.equal(armed, false, "the swap was made");
      // Before: the outside directory was read (here: nothing listed, its names not found by path once
      // swapped back; swapped to the link again around the lstats, its names, sizes and times were listed).
      assert.deepEqual(
        answer.entries.map((e) => e.path),
        ["sub/inside.txt"],
      );
    } finally {
      fs.promises.opendir = opendir;
      syncBuiltinESMExports();
      await conn.close();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("quick check: a file opened through a directory swapped for a link is not read (no CRC32C of the outside file)", async () => {
    const inbox = join(work, "check-inbox");
    const secret = join(work, "check-secret");
    await mkdir(join(inbox, "sub"), { recursive: true });
    await mkdir(secret);
    await writeFile(join(inbox, "sub", "f.txt"), "inside 0123456789");
    await writeFile(join(secret, "f.txt"), "SECRET abcdefghij");
    const outsideCrc = crc32cHex(crc32c(await readFile(join(secret, "f.txt"))));
    const sink = fileSink(inbox, { crcRecords: false });
    const server = createServer();
    server.handle(FILE_CHECK_ROUTE, sink.check);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    // The swap at the file's open (the quick check opens it on the main thread, or on the pool while the disk is slow).
    const openSync = fs.openSync;
    const open = fs.promises.open;
    let armed = true;
    const swap = (path: unknown) => {
      if (armed && String(path).endsWith(`${join("sub", "f.txt")}`)) {
        armed = false;
        swapForLink(join(inbox, "sub"), secret);
      }
    };
    fs.openSync = ((path: fs.PathLike, flags?: fs.OpenMode, mode?: fs.Mode) => {
      swap(path);
      return openSync(path, flags ?? "r", mode);
    }) as typeof fs.openSync;
    fs.promises.open = ((path: fs.PathLike, flags?: string | number, mode?: fs.Mode) => {
      swap(path);
      return open(path, flags, mode);
    }) as typeof fs.promises.open;
    syncBuiltinESMExports();
    try {
      const a = await conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files: [{ path: "sub/f.txt", size: 17 }] }));
      const answer = (JSON.parse(new TextDecoder().decode(a)) as { files: { size: number; crc32c?: string }[] })
        .files[0];
      assert.equal(armed, false, "the swap was made");
      // Before: the CRC32C of the outside file, read through the link.
      assert.notEqual(answer?.crc32c, outsideCrc, JSON.stringify(answer));
    } finally {
      fs.openSync = openSync;
      fs.promises.open = open;
      syncBuiltinESMExports();
      await conn.close();
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  });

  it("quick check: a name found through a directory swapped for a link answers nothing (not the outside file's size)", async () => {
    const inbox = join(work, "size-inbox");
    const secret = join(work, "size-secret");
    await mkdir(join(inbox, "sub"), { recursive: true });
    await mkdir(secret);
    await writeFile(join(inbox, "sub", "f.txt"), "ok");
    await writeFile(join(secret, "f.txt"), "a longer private file: 28 B\n");
    const sink = fileSink(inbox, { crcRecords: false });
    const server = createServer();
    server.handle(FILE_CHECK_ROUTE, sink.check);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    // The swap at the file's first open or lstat, whichever way (main thread or pool) the check goes.
    const real = {
      openSync: fs.openSync,
      open: fs.promises.open,
      lstatSync: fs.lstatSync,
      lstat: fs.lstat,
    };
    let armed = false;
    const swap = (path: unknown) => {
      if (armed && String(path) === join(inbox, "sub", "f.txt")) {
        armed = false;
        swapForLink(join(inbox, "sub"), secret);
      }
    };
    fs.openSync = ((path: fs.PathLike, flags?: fs.OpenMode, mode?: fs.Mode) => {
      swap(path);
      return real.openSync(path, flags ?? "r", mode);
    }) as typeof fs.openSync;
    fs.promises.open = ((path: fs.PathLike, flags?: string | number, mode?: fs.Mode) => {
      swap(path);
      return real.open(path, flags, mode);
    }) as typeof fs.promises.open;
    Object.assign(fs, {
      lstatSync: (path: fs.PathLike, options?: fs.StatSyncOptions) => {
        swap(path);
        return real.lstatSync(path, options);
      },
      lstat: (path: fs.PathLike, ...rest: unknown[]) => {
        swap(path);
        return (real.lstat as (...a: unknown[]) => void)(path, ...rest);
      },
    });
    syncBuiltinESMExports();
    const check = async () => {
      const a = await conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files: [{ path: "sub/f.txt", size: 2 }] }));
      return (JSON.parse(new TextDecoder().decode(a)) as { files: ({ size: number } | null)[] }).files[0];
    };
    try {
      // Unswapped: the file there, whole.
      assert.equal((await check())?.size, 2);
      armed = true;
      const answer = await check();
      assert.equal(armed, false, "the swap was made");
      // Before: { size: 28 }, the outside file's (and that it exists).
      assert.equal(answer, null, JSON.stringify(answer));
    } finally {
      Object.assign(fs, { openSync: real.openSync, lstatSync: real.lstatSync, lstat: real.lstat });
      fs.promises.open = real.open;
      syncBuiltinESMExports();
      await conn.close();
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  });

  it("quick check: a directory swapped for a link only for the name's lstat, and back: the answer is the file's in the directory", async () => {
    const inbox = join(work, "race-inbox");
    const secret = join(work, "race-secret");
    await mkdir(join(inbox, "sub"), { recursive: true });
    await mkdir(secret);
    await writeFile(join(inbox, "sub", "f.txt"), "ok");
    await writeFile(join(secret, "f.txt"), "a longer private file: 28 B\n");
    const sink = fileSink(inbox, { crcRecords: false });
    const server = createServer();
    server.handle(FILE_CHECK_ROUTE, sink.check);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    // The name's lstat (main thread or pool) made through the link, the directory put back right after:
    // the open that confirms the answer then finds the file in the directory, as it should.
    const real = { lstatSync: fs.lstatSync, lstat: fs.lstat };
    const target = join(inbox, "sub", "f.txt");
    let armed = false;
    let swapped = false;
    const swapBack = () => {
      unlinkSync(join(inbox, "sub"));
      renameSync(join(inbox, "sub.moved"), join(inbox, "sub"));
    };
    Object.assign(fs, {
      lstatSync: (path: fs.PathLike, options?: fs.StatSyncOptions) => {
        if (!armed || String(path) !== target) return real.lstatSync(path, options);
        armed = false;
        swapped = true;
        swapForLink(join(inbox, "sub"), secret);
        try {
          return real.lstatSync(path, options);
        } finally {
          swapBack();
        }
      },
      lstat: (path: fs.PathLike, ...rest: unknown[]) => {
        if (!armed || String(path) !== target) return (real.lstat as (...a: unknown[]) => void)(path, ...rest);
        armed = false;
        swapped = true;
        swapForLink(join(inbox, "sub"), secret);
        const cb = rest.pop() as (...a: unknown[]) => void;
        (real.lstat as (...a: unknown[]) => void)(path, ...rest, (...args: unknown[]) => {
          swapBack();
          cb(...args);
        });
      },
    });
    syncBuiltinESMExports();
    const check = async () => {
      const a = await conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files: [{ path: "sub/f.txt", size: 2 }] }));
      return (JSON.parse(new TextDecoder().decode(a)) as { files: ({ size: number; crc32c?: string } | null)[] })
        .files[0];
    };
    try {
      // Unswapped: the file there, whole (its CRC32C now known to the sink: the next check lstats the name).
      const crc = crc32cHex(crc32c(new TextEncoder().encode("ok")));
      assert.deepEqual(await check(), { size: 2, crc32c: crc });
      armed = true;
      const answer = await check();
      assert.equal(swapped, true, "the swap was made");
      // Before: { size: 28 }, the outside file's (the confirming open found the file in the directory).
      assert.equal(answer?.size, 2, JSON.stringify(answer));
      assert.deepEqual(await check(), { size: 2, crc32c: crc });
    } finally {
      Object.assign(fs, { lstatSync: real.lstatSync, lstat: real.lstat });
      syncBuiltinESMExports();
      await conn.close();
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  });

  it("an upload's name looked up at its start through a directory swapped for a link: no 'already exists' for the outside name", async () => {
    const inbox = join(work, "exists-inbox");
    const secret = join(work, "exists-secret");
    await mkdir(join(inbox, "sub"), { recursive: true });
    await mkdir(secret);
    await writeFile(join(secret, "f.txt"), "there");
    const src = join(work, "exists-src.bin");
    await writeFile(src, "content");
    const sink = fileSink(inbox);
    const server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    // The swap at the name's lstat (after the directories on the way were checked).
    const lstat = fs.lstat;
    let armed = true;
    fs.lstat = ((path: fs.PathLike, ...rest: unknown[]) => {
      if (armed && String(path).endsWith("/f.txt")) {
        armed = false;
        swapForLink(join(inbox, "sub"), secret);
      }
      return (lstat as (...a: unknown[]) => void)(path, ...rest);
    }) as typeof fs.lstat;
    syncBuiltinESMExports();
    try {
      const err = await sendFile(conn, src, {
        relativePath: "sub/f.txt",
        resumeKey: "exists".padEnd(40, "k"),
      }).done.then(
        () => undefined,
        (e: Error) => e,
      );
      assert.equal(armed, false, "the swap was made");
      // Before: "sub/f.txt already exists", at once (the outside directory holds f.txt). Now refused when named.
      assert.ok(err !== undefined && !/already exists/.test(err.message), String(err));
      assert.deepEqual(readdirSync(secret), ["f.txt"]);
    } finally {
      fs.lstat = lstat;
      syncBuiltinESMExports();
      await conn.close();
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  });

  it("a bundle of files in many directories holds few of them open at once", async (t) => {
    if (!existsSync("/proc/self/fd")) return t.skip("no /proc/self/fd");
    const inbox = join(work, "many-dirs");
    await mkdir(inbox);
    /** Descriptors of this process open on directories under `inbox` when the bundle was answered. */
    let heldAtAnswer = -1;
    const sink = fileSink(inbox, {
      onBundle: () => {
        heldAtAnswer = 0;
        for (const fd of readdirSync("/proc/self/fd")) {
          let to = "";
          try {
            to = readlinkSync(`/proc/self/fd/${fd}`);
          } catch {
            // closed meanwhile (the readdir's own descriptor)
          }
          if (to.startsWith(`${inbox}/`)) heldAtAnswer++;
        }
      },
    });
    const server = createServer();
    server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const files = Array.from({ length: 200 }, (_, i) => ({
        path: `d${i}/f.txt`,
        content: new TextEncoder().encode(`file ${i}\n`),
      }));
      const body = encodeBundle(files);
      const answer = await conn.sendStream(FILE_BUNDLE_ROUTE, [body], {
        transferId: "bundle-dirs-1",
        total: body.length,
      }).done;
      for (const r of decodeBundleAnswer(answer, files.length)) assert.ok(!("error" in r), JSON.stringify(r));
      // Before: each of the 200 directories held until the bundle's end.
      assert.ok(heldAtAnswer >= 0 && heldAtAnswer <= 16, `${heldAtAnswer} directories held`);
      assert.equal(await readFile(join(inbox, "d199", "f.txt"), "utf8"), "file 199\n");
    } finally {
      await conn.close();
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  });

  describe("uploads", () => {
    let inbox: string;
    let outside: string;
    let server: Server;
    let conn: Connection;
    let sink: ReturnType<typeof fileSink>;
    /** The directory to swap at the next link of a partial of the inbox (undefined: none). */
    let swapAtLink: string | undefined;
    const linkSync = fs.linkSync;
    const link = fs.promises.link;
    const swapFirst = (from: unknown) => {
      if (swapAtLink !== undefined && String(from).startsWith(inbox)) {
        swapForLink(swapAtLink, outside);
        swapAtLink = undefined;
      }
    };

    before(async () => {
      inbox = join(work, "inbox");
      outside = join(work, "outside");
      await mkdir(inbox);
      await mkdir(outside);
      fs.linkSync = (from, to) => {
        swapFirst(from);
        linkSync(from, to);
      };
      fs.promises.link = (from, to) => {
        swapFirst(from);
        return link(from, to);
      };
      syncBuiltinESMExports();
      sink = fileSink(inbox, { partialTtlMs: 0 });
      server = createServer();
      server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
      server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
      const [url] = await server.listen("tcp://127.0.0.1:0");
      conn = await connect(url);
    });
    after(async () => {
      fs.linkSync = linkSync;
      fs.promises.link = link;
      syncBuiltinESMExports();
      await conn.close();
      await server.close({ timeoutMs: 100 });
      sink.close();
    });

    it("a single file is named in the directory checked, not through the link", async () => {
      await mkdir(join(inbox, "one"));
      const src = join(work, "one.txt");
      await writeFile(src, "uploaded one\n");
      swapAtLink = join(inbox, "one");
      const t = sendFile(conn, src, { relativePath: "one/f.txt", resumeKey: "one".padEnd(40, "k") });
      await t.done.catch(() => {});
      assert.equal(swapAtLink, undefined, "the swap was made");
      assert.deepEqual(readdirSync(outside), [], "nothing written outside the directory");
      assert.equal(await readFile(join(inbox, "one.moved", "f.txt"), "utf8"), "uploaded one\n");
    });

    it("a bundle's files (send -r) are named in the directory checked, not through the link", async () => {
      await mkdir(join(inbox, "tree", "sub"), { recursive: true });
      const files = Array.from({ length: 8 }, (_, i) => ({
        path: `tree/sub/f${i}.txt`,
        content: new TextEncoder().encode(`file ${i}\n`),
      }));
      swapAtLink = join(inbox, "tree", "sub");
      const body = encodeBundle(files);
      const answer = await conn.sendStream(FILE_BUNDLE_ROUTE, [body], {
        transferId: "bundle-swap-1",
        total: body.length,
      }).done;
      const results = decodeBundleAnswer(answer, files.length);
      assert.equal(swapAtLink, undefined, "the swap was made");
      assert.deepEqual(readdirSync(outside), [], "nothing written outside the directory");
      for (const [i, r] of results.entries()) {
        assert.ok(!("error" in r), JSON.stringify(r));
        assert.equal(await readFile(join(inbox, "tree", "sub.moved", `f${i}.txt`), "utf8"), `file ${i}\n`);
      }
      assert.ok(existsSync(join(inbox, "tree", "sub")), "the link is still there");
    });
  });
});
