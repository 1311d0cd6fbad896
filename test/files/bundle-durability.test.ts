/**
 * A bundle's durability (durability fsync), over a real loopback socket:
 * one fsync per file, through the store's fsync seam, which holds the
 * calls — while they are held nothing is named, no directory synced and no
 * answer comes; an fsync that fails fails its entry only (its partial
 * removed); each directory named into is fsynced once, after every file's
 * fsync, before the answer. The fsyncs start once every file of the bundle
 * was written (no create waits behind an fsync), and the files waiting for
 * theirs (each an open descriptor) stay bounded: a 1,000-file bundle
 * fsyncs what it wrote when UNSYNCED_MAX wait. SYNCING (16) fsyncs of a
 * bundle are in flight at once.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { fstatSync, readdirSync, writeSync } from "node:fs";
import { link, mkdir, mkdtemp, readdir, readFile, rm, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { type BundleResult, encodeBundle, FILE_BUNDLE_ROUTE } from "../../src/codec/file-bundle.ts";
import { type Connection, connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { type BundleStore, bundleHandler, SYNCING, UNSYNCED_MAX } from "../../src/node/file-bundle.ts";
import { until } from "../helpers/wait.ts";

describe("bundles: a receipt only after durability (durability fsync)", () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("fsyncs each file before naming any, syncs each directory once after, then answers", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-bundle-commit-"));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const files = Array.from({ length: 50 }, (_, i) => ({
      path: `t/d${i % 2}/f${i}`,
      content: randomFillSync(Buffer.alloc(1 + ((i * 331) % 3000))),
    }));
    const events: string[] = [];
    let holding = true;
    const held: (() => void)[] = [];
    const fds: number[] = [];
    const dirSyncs: string[] = [];
    let partialsAtFirstSync = -1;
    const store: BundleStore = {
      dir,
      fsync: true,
      overwrite: false,
      ready: Promise.resolve(),
      maxFileSize: 0,
      reserve: () => () => {},
      target: (h) => ({ name: String(h.path), segments: String(h.path).split("/") }),
      parents: async (segments) => {
        await mkdir(join(dir, ...segments.slice(0, -1)), { recursive: true });
        return undefined;
      },
      place: async (partial, finalPath) => {
        try {
          await link(partial, finalPath);
        } catch (err) {
          if ((err as { code?: unknown }).code === "EEXIST") throw new PointSubError("ERR_EXISTS", "exists");
          throw err;
        }
        await unlink(partial);
      },
      syncDir: async (path) => {
        dirSyncs.push(path);
        events.push("syncDir");
      },
      remember: () => {},
      // The disk's fsync: held until the test lets it go; file 7's fails (EIO).
      sync: (fd) => {
        if (fds.length === 0) {
          const partials = readdirSync(dir).filter((n) => n.endsWith(".partial"));
          partialsAtFirstSync = partials.length;
          // Named from the process id, time and a counter (no Web Crypto to load), as the sink's sweep knows them.
          for (const n of partials) assert.match(n, /^\.b[0-9a-z]+_[0-9a-z]+_[0-9a-z]+-\d+\.partial$/);
        }
        events.push("fsync");
        fds.push(fd);
        // File 7's (sizes are distinct): the fsyncs run in the order the files were written.
        const fails = fstatSync(fd).size === files[7].content.length;
        return new Promise<void>((resolve, reject) => {
          const release = () => (fails ? reject(Object.assign(new Error("EIO"), { code: "EIO" })) : resolve());
          if (holding) held.push(release);
          else release();
        });
      },
    };
    const server: Server = createServer();
    cleanup.push(() => server.close({ timeoutMs: 100 }));
    server.handleStream(FILE_BUNDLE_ROUTE, bundleHandler(store));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn: Connection = await connect(url);
    cleanup.push(() => conn.destroy());

    const body = encodeBundle(files);
    let answered = false;
    const done = conn.sendStream(FILE_BUNDLE_ROUTE, [body], { total: body.length }).done.then((res) => {
      answered = true;
      return res;
    });
    // SYNCING fsyncs are waiting (the bundle's files were all written first), no more.
    await until(() => held.length >= SYNCING);
    // While they are held: nothing named, no directory synced, no answer.
    await new Promise((r) => setImmediate(r));
    assert.equal(held.length, SYNCING, "fsyncs in flight at once");
    assert.deepEqual(
      (await readdir(dir, { recursive: true })).filter((n) => /f\d+$/.test(n)),
      [],
      "named before durable",
    );
    assert.deepEqual(dirSyncs, []);
    assert.equal(answered, false);
    holding = false;
    for (const release of held.splice(0)) release();
    const results = (JSON.parse(new TextDecoder().decode(await done)) as { files: BundleResult[] }).files;
    assert.equal(fds.length, files.length, "exactly one fsync per file");
    assert.equal(partialsAtFirstSync, files.length, "the first fsync began before every file was written");
    for (const [i, r] of results.entries()) {
      if (i === 7) assert.ok("error" in r && r.error.code === "ERR_HANDLER", JSON.stringify(r));
      else assert.ok(!("error" in r), JSON.stringify(r));
    }
    for (const [i, f] of files.entries()) {
      if (i !== 7) assert.deepEqual(await readFile(join(dir, f.path)), f.content);
    }
    await assert.rejects(readFile(join(dir, files[7].path)), { code: "ENOENT" });
    // Each directory named into fsynced once, after every fsync, before the answer.
    assert.deepEqual([...dirSyncs].sort(), [join(dir, "t", "d0"), join(dir, "t", "d1")]);
    assert.equal(events.filter((e) => e === "fsync").length, files.length);
    assert.ok(events.lastIndexOf("fsync") < events.indexOf("syncDir"));
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.endsWith(".partial")),
      [],
      "no partial left",
    );
  });

  it("keeps at most UNSYNCED_MAX written files waiting for their fsync (a 1,000-file bundle)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-bundle-unsynced-"));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const files = Array.from({ length: 1000 }, (_, i) => ({ name: `f${i}`, content: Buffer.from(`file ${i}`) }));
    let written = 0;
    let synced = 0;
    let most = 0;
    const store: BundleStore = {
      dir,
      fsync: true,
      overwrite: false,
      ready: Promise.resolve(),
      maxFileSize: 0,
      reserve: () => () => {},
      target: (h) => ({ name: String(h.name), segments: [String(h.name)] }),
      parents: async () => undefined,
      place: async (partial, finalPath) => {
        await link(partial, finalPath);
        await unlink(partial);
      },
      syncDir: async () => {},
      remember: () => {},
      write: async (fd, content) => {
        writeSync(fd, content);
        written++;
        most = Math.max(most, written - synced);
      },
      sync: async () => {
        await new Promise((r) => setImmediate(r));
        synced++;
      },
    };
    const server: Server = createServer();
    cleanup.push(() => server.close({ timeoutMs: 100 }));
    server.handleStream(FILE_BUNDLE_ROUTE, bundleHandler(store));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn: Connection = await connect(url);
    cleanup.push(() => conn.destroy());
    const body = encodeBundle(files);
    const res = await conn.sendStream(FILE_BUNDLE_ROUTE, [body], { total: body.length }).done;
    const results = (JSON.parse(new TextDecoder().decode(res)) as { files: BundleResult[] }).files;
    assert.equal(results.filter((r) => "error" in r).length, 0);
    assert.equal(synced, files.length, "one fsync per file");
    assert.ok(most <= UNSYNCED_MAX, `${most} files waited for their fsync at once`);
    assert.ok(most >= UNSYNCED_MAX / 2, `fsynced in batches of ${most}, not a bundle's worth`);
    assert.equal(await readFile(join(dir, "f999"), "utf8"), "file 999");
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.endsWith(".partial")),
      [],
    );
  });
});
