/**
 * `pointsub send -r`'s record of a tree's small files (src/cli/tree-record.ts):
 * a re-run of a tree the server holds whole takes each unchanged file's
 * CRC32C from the record (an lstat) instead of reading it; a file changed
 * since — even at the same size with its mtime put back — is read and sent
 * again; a record that is not one is ignored and written anew. Bytes read
 * counted in the CLI child (/proc/self/io `rchar`, printed at its exit).
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { lstatSync, readFileSync, type Stats, statSync, utimesSync, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { SETTLED_MS, TreeRecord } from "../../src/cli/tree-record.ts";
import { CLI_MAIN, type ServeProcess, startServeProcess } from "../helpers/serve-process.ts";

const KiB = 1024;
const FILES = 100;
const SIZE = 48 * KiB;
const HOOK = join(import.meta.dirname, "../helpers/rchar-at-exit.ts");
const OTHER_BOOT = join(import.meta.dirname, "../helpers/other-boot.ts");
/** The directory the in-process tests' files are read in (an identity of none: the record compares it only). */
const DIR = { dev: 1, ino: 1 };

/**
 * `record` with the row of `target` made to say that `st` is the file whose CRC32C it holds (its CRC kept):
 * what a change the record cannot see (a write through a shared memory map to a page already dirty, which
 * Linux gives no new time) leaves (its format: tree-record.ts).
 */
function misrecord(record: Buffer, target: string, st: Stats): Buffer {
  const { rowsAt, count } = header(record);
  // The rows (six f64s each, this machine's order), then the targets in row order.
  const rows = new Float64Array(
    record.buffer.slice(record.byteOffset + rowsAt, record.byteOffset + rowsAt + count * 48),
  );
  let at = rowsAt + count * 48;
  for (let r = 0; r < count; r++) {
    const len = record.readUInt16LE(at);
    if (record.toString("utf8", at + 2, at + 2 + len) === target) {
      rows.set([st.dev, st.ino, st.size, st.mtimeMs, st.ctimeMs], 6 * r + 1);
      record.set(new Uint8Array(rows.buffer), rowsAt);
      return record;
    }
    at += 2 + len;
  }
  throw new Error(`${target} is not in the record`);
}

/** A record's root and file count (its format: tree-record.ts). */
function header(record: Buffer): { root: string; count: number; rowsAt: number } {
  const rootAt = 18 + record.readUInt8(17) + 4;
  const rootEnd = rootAt + record.readUInt32LE(rootAt - 4);
  return { root: record.toString("utf8", rootAt, rootEnd), count: record.readUInt32LE(rootEnd), rowsAt: rootEnd + 4 };
}

describe("send -r: the record of a tree's small files", () => {
  let work: string;
  let tree: string;
  let serve: ServeProcess;
  const state = process.env.POINTSUB_STATE_DIR;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-tree-record-"));
    // This process's records (TreeRecord below) in the test's own state directory, not the user's (64 kept there:
    // theirs were evicted by a run of this test, and one more file left in it).
    process.env.POINTSUB_STATE_DIR = join(work, "state-here");
    tree = join(work, "photos");
    await mkdir(join(tree, "sub"), { recursive: true });
    for (let i = 0; i < FILES; i++) {
      await writeFile(join(tree, i % 2 === 0 ? "sub" : "", `f${i}.bin`), randomFillSync(Buffer.alloc(SIZE)));
    }
    // Recorded only once settled (a change within the file system's timestamp granularity could go unseen).
    await sleep(SETTLED_MS + 100);
    serve = await startServeProcess(["--dir", join(work, "inbox"), "--overwrite"]);
    // The CLI once before the bytes are counted: with Node's compile cache cold (a fresh CI machine, sources
    // changed), the first send compiled the sources and the re-run read the cache, ~3.3 MB of the 4.8 MB.
    const warm = join(work, "warm");
    await mkdir(warm);
    await writeFile(join(warm, "w.bin"), "w");
    assert.equal((await send(serve.url, warm)).code, 0);
  });
  after(async () => {
    if (state === undefined) delete process.env.POINTSUB_STATE_DIR;
    else process.env.POINTSUB_STATE_DIR = state;
    await serve?.stop();
    await rm(work, { recursive: true, force: true });
  });

  const send = (to = serve.url, dir = tree, preload: string[] = [], extra: string[] = []) =>
    new Promise<{ code: number | null; out: string; err: string; read: number }>((resolve) => {
      const argv = [...preload, "--import", HOOK, CLI_MAIN, "send", "-r", dir, "--to", to, ...extra];
      const child = spawn(process.execPath, argv, {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, POINTSUB_STATE_DIR: join(work, "state") },
      });
      let out = "";
      let err = "";
      child.stdout.on("data", (d) => (out += d));
      child.stderr.on("data", (d) => (err += d));
      child.on("close", (code) => resolve({ code, out, err, read: Number(/^rchar (\d+)$/m.exec(err)?.[1]) }));
    });
  const recordFile = async () => {
    const dir = join(work, "state", "trees");
    const names = (await readdir(dir)).filter((n) => n.endsWith("-photos.rec"));
    assert.equal(names.length, 1, `one record: ${names}`);
    return join(dir, names[0]);
  };

  it("a re-run reads none of the files it recorded; a file changed at the same size and mtime is sent again", async () => {
    const first = await send();
    assert.equal(first.code, 0, first.err);
    assert.match(first.out, new RegExp(`${FILES} of ${FILES} files sent`));
    const record = await readFile(await recordFile());
    assert.equal(record.toString("latin1", 0, 4), "PSTR");
    assert.deepEqual(header(record), { root: tree, count: FILES, rowsAt: header(record).rowsAt });

    const rerun = await send();
    assert.equal(rerun.code, 0, rerun.err);
    assert.match(rerun.out, new RegExp(`0 of ${FILES} files sent.*${FILES} skipped`));
    // The first send read the tree (4.8 MB); the re-run none of it (before: all of it again, for the CRCs).
    assert.ok(
      first.read - rerun.read >= FILES * SIZE * 0.9,
      `the send read ${first.read} bytes, the re-run ${rerun.read}`,
    );

    // Same size, its mtime put back: its ctime moved, so it is read, found different, and sent.
    const changed = join(tree, "sub", "f10.bin");
    const before = statSync(changed);
    // Its times to the nanosecond (Node's utimes takes them as a double number of seconds): touch -r.
    const ref = join(work, "times-of-f10");
    execFileSync("touch", ["-r", changed, ref]);
    const content = randomFillSync(Buffer.alloc(SIZE));
    await writeFile(changed, content);
    execFileSync("touch", ["-m", "-r", ref, changed]);
    assert.equal(statSync(changed).mtimeMs, before.mtimeMs);
    const again = await send();
    assert.equal(again.code, 0, again.err);
    assert.match(again.out, new RegExp(`1 of ${FILES} files sent.*${FILES - 1} skipped`));
    assert.match(again.out, /photos\/sub\/f10\.bin: sent/);
    assert.deepEqual(await readFile(join(work, "inbox", "photos", "sub", "f10.bin")), content);
  });

  it("a record that is not one is ignored: the files are read, and the record written anew", async () => {
    const file = await recordFile();
    // Cut short: its count promises more files than it holds.
    await writeFile(file, (await readFile(file)).subarray(0, 200));
    const ignored = await send();
    assert.equal(ignored.code, 0, ignored.err);
    assert.match(ignored.out, new RegExp(`0 of ${FILES} files sent.*${FILES} skipped`));
    assert.ok(ignored.read >= FILES * SIZE * 0.9, `files read again: ${ignored.read} bytes`);
    const record = await readFile(file);
    // (f10.bin changed less than SETTLED_MS ago: not recorded yet.)
    assert.ok(header(record).count >= FILES - 1, "written anew");
  });

  it("a record written in another boot of the machine is not trusted: the files are read", async () => {
    // A crash can leave a file's new bytes under its old identity (fdatasync does not journal its new times).
    const rerun = await send();
    assert.equal(rerun.code, 0, rerun.err);
    const rebooted = await send(serve.url, tree, ["--import", OTHER_BOOT]);
    assert.equal(rebooted.code, 0, rebooted.err);
    assert.match(rebooted.out, new RegExp(`0 of ${FILES} files sent.*${FILES} skipped`));
    // The files read again (before: none, the record trusted after a reboot as before it).
    assert.ok(
      rebooted.read - rerun.read >= FILES * SIZE * 0.9,
      `this boot's re-run read ${rerun.read} bytes, the rebooted one ${rebooted.read}`,
    );
  });

  it("a send to another server reads the files as they are found (the record is of the last server's)", async () => {
    const other = await startServeProcess(["--dir", join(work, "inbox2")]);
    try {
      const sent = await send(other.url);
      assert.equal(sent.code, 0, sent.err);
      assert.match(sent.out, new RegExp(`${FILES} of ${FILES} files sent`));
      // Read by the walk, as a new tree's files (not looked up, then read again when their bundle was made).
      assert.ok(sent.read >= FILES * SIZE * 0.9, `read ${sent.read} bytes`);
      const rerun = await send(other.url);
      assert.match(rerun.out, new RegExp(`0 of ${FILES} files sent.*${FILES} skipped`));
      assert.ok(sent.read - rerun.read >= FILES * SIZE * 0.9, `the re-run read ${rerun.read} bytes`);
    } finally {
      await other.stop();
    }
  });

  it("a record that cannot be put in place leaves nothing written aside", async () => {
    const dir = join(work, "state-here", "trees");
    const first = TreeRecord.load(join(work, "blocked"), "tcp://127.0.0.1:1");
    first.noteRead("blocked/f1.bin", SIZE, 7, DIR);
    first.save();
    const [name] = (await readdir(dir)).filter((n) => n.includes("blocked"));
    // Its place taken by a directory (as a full disk fails the write): the rename fails.
    await rm(join(dir, name));
    await mkdir(join(dir, name, "x"), { recursive: true });
    const second = TreeRecord.load(join(work, "blocked"), "tcp://127.0.0.1:1");
    second.noteRead("blocked/f1.bin", SIZE, 8, DIR);
    second.save();
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.includes("blocked")),
      [name],
      "no record left aside (before: one per failed run, never removed)",
    );
  });

  it("a record found as it was is not written again but marked used (the 64 kept are the most recently used)", async () => {
    // The tree's files settled before the suite's sends: a run reads one, the next finds it and records its identity.
    const st = lstatSync(join(tree, "f1.bin"));
    const first = TreeRecord.load(join(work, "used"), "tcp://127.0.0.1:1");
    first.noteRead("used/f1.bin", st.size, 7, DIR);
    first.save();
    const second = TreeRecord.load(join(work, "used"), "tcp://127.0.0.1:1");
    assert.equal(second.lookup("used/f1.bin", st, DIR), 7);
    second.save();
    const dir = join(work, "state-here", "trees");
    const [name] = (await readdir(dir)).filter((n) => n.includes("used"));
    const long = new Date("2001-01-01T00:00:00Z");
    utimesSync(join(dir, name), long, long);
    const again = TreeRecord.load(join(work, "used"), "tcp://127.0.0.1:1");
    assert.equal(again.lookup("used/f1.bin", st, DIR), 7);
    const inode = statSync(join(dir, name)).ino;
    again.save();
    const after = statSync(join(dir, name));
    assert.equal(after.ino, inode, "not written again (same file)");
    assert.ok(after.mtimeMs > long.getTime() + 1e9, "marked used");
  });

  it("a record of another byte order, or naming a file twice, is no record", async () => {
    const st = lstatSync(join(tree, "f1.bin"));
    const load = () => TreeRecord.load(join(work, "order"), "tcp://127.0.0.1:1");
    const first = load();
    first.noteRead("order/aa", st.size, 7, DIR);
    first.noteRead("order/ab", st.size, 8, DIR);
    first.save();
    const dir = join(work, "state-here", "trees");
    const [name] = (await readdir(dir)).filter((n) => n.includes("order"));
    const path = join(dir, name);
    const good = readFileSync(path);
    const kept = load();
    assert.equal(kept.lookup("order/ab", st, DIR), 8, "as written: read back");
    // 1.0 in the other byte order (a record carried over from a machine of the other order).
    const swapped = Buffer.from(good);
    swapped.set(Buffer.from(good.subarray(5, 13)).reverse(), 5);
    writeFileSync(path, swapped);
    assert.equal(load().known, false, "another byte order");
    // The second target spelled as the first: one name, two rows.
    const twice = Buffer.from(good);
    twice.set(Buffer.from("order/aa"), twice.length - "order/ab".length);
    writeFileSync(path, twice);
    assert.equal(load().known, false, "a file named twice");
  });

  it("a file read by a run is trusted only when its mtime and ctime are SETTLED_MS older than that run's start", async () => {
    // Settled long before (the tree's), and changed just now: both read by one run.
    const st = lstatSync(join(tree, "f1.bin"));
    const recent = join(work, "recent.bin");
    await writeFile(recent, "x".repeat(SIZE));
    const fresh = TreeRecord.load(join(work, "elsewhere"), "tcp://127.0.0.1:1");
    assert.equal(fresh.known, false);
    fresh.noteRead("elsewhere/f1.bin", SIZE, 7, DIR);
    fresh.noteRead("elsewhere/f3.bin", st.size, 9, DIR);
    fresh.save();
    assert.equal((await readdir(join(work, "state-here", "trees"))).filter((n) => n.includes("elsewhere")).length, 1);
    assert.equal(TreeRecord.load(join(work, "elsewhere"), "tcp://127.0.0.1:2").known, false, "another server's");
    const loaded = TreeRecord.load(join(work, "elsewhere"), "tcp://127.0.0.1:1");
    assert.equal(loaded.known, true);
    assert.equal(
      loaded.lookup("elsewhere/f1.bin", lstatSync(recent), DIR),
      undefined,
      "changed within SETTLED_MS of the read",
    );
    // Another size is not the file read.
    assert.equal(loaded.lookup("elsewhere/f3.bin", { ...st, size: st.size + 1 } as typeof st, DIR), undefined);
    // Another directory in its place is not the one it was read in (the identity a run gives its files' directories).
    assert.equal(loaded.lookup("elsewhere/f3.bin", st, { dev: 1, ino: 2 }), undefined);
    assert.equal(loaded.lookup("elsewhere/f3.bin", st, { dev: 2, ino: 1 }), undefined);
    assert.equal(loaded.lookup("elsewhere/f3.bin", st, DIR), 9);
    // Another identity (here: another size) is not the recorded file.
    assert.equal(loaded.lookup("elsewhere/f3.bin", { ...st, size: st.size + 1 } as typeof st, DIR), undefined);
  });

  it("--checksum reads every file: one changed in a way the record cannot see is sent, skipped without it", async () => {
    // The record of this server (the last send's was another's), then with the files' identities.
    for (let i = 0; i < 2; i++) assert.equal((await send()).code, 0);
    const file = join(tree, "sub", "f20.bin");
    const content = randomFillSync(Buffer.alloc(SIZE));
    await writeFile(file, content);
    const path = await recordFile();
    await writeFile(path, misrecord(await readFile(path), "photos/sub/f20.bin", lstatSync(file)));
    const stored = join(work, "inbox", "photos", "sub", "f20.bin");

    const trusted = await send();
    assert.equal(trusted.code, 0, trusted.err);
    assert.match(trusted.out, new RegExp(`0 of ${FILES} files sent.*${FILES} skipped`));
    assert.notDeepEqual(await readFile(stored), content, "the record trusted: the change unseen");

    const checked = await send(serve.url, tree, [], ["--checksum"]);
    assert.equal(checked.code, 0, checked.err);
    assert.match(checked.out, new RegExp(`1 of ${FILES} files sent.*${FILES - 1} skipped`));
    assert.match(checked.out, /photos\/sub\/f20\.bin: sent/);
    assert.deepEqual(await readFile(stored), content);
    // Every file read (the record not used), as a send with no record reads them.
    assert.ok(checked.read - trusted.read >= FILES * SIZE * 0.9, `read ${checked.read}, trusting ${trusted.read}`);
  });

  it("a directory put in the place of the one a run read is not taken for it: its files are read and sent", async () => {
    // Files of the same names and sizes, other bytes, all settled: `mv swap swap.old && mv other swap` moves
    // two directories, and no time of the files in them (Linux sets the ctime of a renamed file, not of its
    // directory's files). Before, the run after the one that read swap/ took the other directory's files for
    // them (same size, times older than that run's start) and skipped them all, its record saying so from then on.
    const swap = join(work, "swap");
    const other = join(work, "other");
    // The same through a symbolic link named as the tree (`send -r current` after `ln -sfn v2 current`).
    const link = join(work, "current");
    const [v1, v2] = [join(work, "v1"), join(work, "v2")];
    for (const d of [swap, other, v1, v2]) {
      await mkdir(join(d, "sub"), { recursive: true });
      for (const n of ["a.bin", "b.bin", join("sub", "c.bin")])
        await writeFile(join(d, n), randomFillSync(Buffer.alloc(2 * KiB)));
    }
    await sleep(SETTLED_MS + 100);
    const first = await send(serve.url, swap);
    assert.equal(first.code, 0, first.err);
    assert.match(first.out, /3 of 3 files sent/);
    await rename(swap, join(work, "swap.old"));
    await rename(other, swap);
    const rerun = await send(serve.url, swap);
    assert.equal(rerun.code, 0, rerun.err);
    assert.match(rerun.out, /3 of 3 files sent/);
    for (const n of ["a.bin", "b.bin", join("sub", "c.bin")]) {
      assert.deepEqual(await readFile(join(work, "inbox", "swap", n)), await readFile(join(swap, n)), n);
    }

    await symlink(v1, link);
    assert.match((await send(serve.url, link)).out, /3 of 3 files sent/);
    await rm(link);
    await symlink(v2, link);
    const relinked = await send(serve.url, link);
    assert.equal(relinked.code, 0, relinked.err);
    assert.match(relinked.out, /3 of 3 files sent/);
    for (const n of ["a.bin", "b.bin", join("sub", "c.bin")]) {
      assert.deepEqual(await readFile(join(work, "inbox", "current", n)), await readFile(join(v2, n)), n);
    }
  });
});
