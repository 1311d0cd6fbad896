/**
 * Where the bundle handler's small file operations run (`SyncGate`): on the
 * main thread while the disk is fast, on the thread pool while it is slow —
 * and not after one slow call (a descheduled process on a loaded machine),
 * which sent whole transfers to the pool. Then the thread-pool fallback
 * itself, forced, over a real loopback socket: every file stored whole,
 * per-file refusals as on the main thread, nothing left behind.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { link, mkdir, mkdtemp, readdir, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { type BundleResult, encodeBundle, FILE_BUNDLE_ROUTE } from "../../src/codec/file-bundle.ts";
import { type Connection, connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { type BundleStore, bundleHandler } from "../../src/node/file-bundle.ts";
import { SyncGate } from "../../src/node/file-sync-gate.ts";

describe("SyncGate", () => {
  it("stays on the main thread after one slow call (a descheduled process), not after a slow disk", () => {
    const g = new SyncGate({ slowMs: 1, stallMs: 20, backoffMs: 1000 });
    let now = 0;
    const call = (ms: number) => {
      now += ms;
      g.record(ms, now);
    };
    call(5);
    assert.equal(g.mainThread(now), true, "one slow call among fast ones");
    for (let i = 0; i < 20; i++) call(0.05);
    call(3);
    call(0.05);
    call(4);
    call(0.05);
    assert.equal(g.mainThread(now), true, "two slow calls of the last eight");
    call(2);
    call(2);
    assert.equal(g.mainThread(now), false, "four slow calls of the last eight: the disk is slow");
    assert.equal(g.switches, 1);
    assert.equal(g.mainThread(now + 999), false, "backing off");
    assert.equal(g.mainThread(now + 1000), true, "tried again after the back-off");
    // A clean history: one slow call after the back-off does not switch again.
    call(2);
    assert.equal(g.mainThread(now), true);
  });

  it("switches at once when one call stalls", () => {
    const g = new SyncGate({ stallMs: 20 });
    g.record(25, 25);
    assert.equal(g.mainThread(26), false);
    assert.equal(g.switches, 1);
  });
});

/** A gate that never lets a call run on the main thread: the thread-pool fallback, forced. */
class PoolOnly extends SyncGate {
  override mainThread(): boolean {
    return false;
  }
}

describe("bundles on the thread pool (the slow-disk fallback, forced)", () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  for (const fsync of [true, false]) {
    it(`stores every file whole and refuses per file as on the main thread (${fsync ? "fsync" : "durability none"})`, async () => {
      const dir = await mkdtemp(join(tmpdir(), "pointsub-bundle-pool-"));
      cleanup.push(() => rm(dir, { recursive: true, force: true }));
      await mkdir(join(dir, "t"), { recursive: true });
      await writeFile(join(dir, "t", "taken"), "mine");
      let placedViaStore = 0;
      const store: BundleStore = {
        dir,
        fsync,
        overwrite: false,
        ready: Promise.resolve(),
        maxFileSize: 0,
        reserve: () => () => {},
        target: (h) => {
          const path = String(h.path);
          if (path.includes("..")) throw new Error("refused");
          return { name: path, segments: path.split("/") };
        },
        parents: async (segments) => {
          await mkdir(join(dir, ...segments.slice(0, -1)), { recursive: true });
          return undefined;
        },
        place: async (partial, finalPath) => {
          placedViaStore++;
          try {
            await link(partial, finalPath);
          } catch (err) {
            if ((err as { code?: unknown }).code === "EEXIST") throw new PointSubError("ERR_EXISTS", "exists");
            throw err;
          }
          await unlink(partial);
        },
        syncDir: async () => {},
        remember: () => {},
        syncGate: new PoolOnly(),
      };
      const handler = bundleHandler(store);
      const server: Server = createServer();
      cleanup.push(() => server.close({ timeoutMs: 100 }));
      server.handleStream(FILE_BUNDLE_ROUTE, handler);
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const conn: Connection = await connect(url);
      cleanup.push(() => conn.destroy());

      const files = Array.from({ length: 40 }, (_, i) => ({
        path: `t/d${i % 3}/f${i}`,
        content: randomFillSync(Buffer.alloc(1 + ((i * 997) % 5000))),
      }));
      const body = encodeBundle([...files, { path: "t/taken", content: Buffer.from("theirs") }]);
      const res = await conn.sendStream(FILE_BUNDLE_ROUTE, [body], { total: body.length }).done;
      const results = (JSON.parse(new TextDecoder().decode(res)) as { files: BundleResult[] }).files;
      assert.equal(results.length, files.length + 1);
      assert.ok(results.slice(0, files.length).every((r) => !("error" in r)));
      const last = results[files.length];
      assert.ok("error" in last && last.error.code === "ERR_EXISTS", JSON.stringify(last));
      for (const f of files) assert.deepEqual(await readFile(join(dir, f.path)), f.content);
      assert.equal(await readFile(join(dir, "t", "taken"), "utf8"), "mine");
      // Each file was named through the store's (asynchronous) place, never linkSync (with durability
      // none too: its entries go through partials, never straight under their names).
      assert.equal(placedViaStore, files.length + 1);
      assert.deepEqual(
        (await readdir(dir)).filter((n) => n.endsWith(".partial")),
        [],
      );
    });
  }
});
