/**
 * A bundle's durability (durability fsync), over a real loopback socket:
 * one fsync per file, through the store's fsync seam, which holds the
 * calls — while they are held nothing is named, no directory synced and no
 * answer comes; an fsync that fails fails its entry only (its partial
 * removed); each directory named into is fsynced once, after every file's
 * fsync, before the answer. (A group commit — every entry written, then all
 * fsynced together — was measured no faster on this machine: see
 * docs/ARCHITECTURE.md.)
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { link, mkdir, mkdtemp, readdir, readFile, rm, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { type BundleResult, encodeBundle, FILE_BUNDLE_ROUTE } from "../../src/codec/file-bundle.ts";
import { type Connection, connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { type BundleStore, bundleHandler } from "../../src/node/file-bundle.ts";
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
      // The disk's fsync: held until the test lets it go; the 8th call fails (EIO).
      sync: (fd) => {
        events.push("fsync");
        fds.push(fd);
        const call = fds.length - 1;
        return new Promise<void>((resolve, reject) => {
          const release = () => (call === 7 ? reject(Object.assign(new Error("EIO"), { code: "EIO" })) : resolve());
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
    // Several fsyncs are waiting.
    await until(() => held.length > 1);
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
