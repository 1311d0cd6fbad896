/**
 * A bundle's group commit (durability fsync), over a real loopback socket:
 * every entry is written first, then all of them are fsynced together (one
 * fsync per file, none before the whole bundle arrived), then named, then
 * each directory fsynced once, and only then answered. The store's fsync
 * seam holds the calls: while they are held nothing is named and no answer
 * comes; an fsync that fails fails its entry only (its partial removed).
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { writeSync } from "node:fs";
import { link, mkdir, mkdtemp, readdir, readFile, rm, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { type BundleResult, encodeBundle, FILE_BUNDLE_ROUTE } from "../../src/codec/file-bundle.ts";
import { type Connection, connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { type BundleStore, bundleHandler } from "../../src/node/file-bundle.ts";
import { until } from "../helpers/wait.ts";

describe("bundles: group commit of the fsyncs (durability fsync)", () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("writes every entry, then fsyncs them together, then names them, syncs each directory once, then answers", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-bundle-commit-"));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const files = Array.from({ length: 50 }, (_, i) => ({
      path: `t/d${i % 2}/f${i}`,
      content: randomFillSync(Buffer.alloc(1 + ((i * 331) % 3000))),
    }));
    const events: string[] = [];
    let written = 0;
    let holding = true;
    const held: (() => void)[] = [];
    const fds: number[] = [];
    const dirSyncs: string[] = [];
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
        return [];
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
      write: async (fd, content) => {
        writeSync(fd, content);
        written++;
        events.push("write");
      },
      // The disk's fsync: held until the test lets it go; entry 7's fails (EIO).
      sync: (fd) => {
        events.push("fsync");
        fds.push(fd);
        return new Promise<void>((resolve, reject) => {
          const release = () => (fd === fds[7] ? reject(Object.assign(new Error("EIO"), { code: "EIO" })) : resolve());
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
    // The fsyncs start once the whole bundle was written (none before), several at once.
    await until(() => held.length > 1);
    assert.equal(written, files.length);
    assert.equal(events.indexOf("fsync"), files.length, "no fsync before the last entry was written");
    // While they are held: nothing named, no directory synced, no answer.
    await new Promise((r) => setImmediate(r));
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
    assert.equal(new Set(fds).size, files.length, "each file's own descriptor");
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
});
