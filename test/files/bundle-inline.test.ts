/**
 * Durability none stores a bundle's entries inline (each a partial file:
 * open O_EXCL, write, close on the main thread, no promise per file), and
 * names them once the bundle was verified (a hard link on the main thread,
 * never `place`), over a real loopback socket into real files: every entry
 * whole under its name, in new directories too; an existing name fails that
 * entry only and is left as it was; no partial is left; each stored file is
 * remembered under its name and size. (Entries were once created under their
 * final names as they arrived: a receiver killed meanwhile left them cut
 * short there, `cli/serve-crash.test.ts`.)
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { type BundleResult, encodeBundle, FILE_BUNDLE_ROUTE } from "../../src/codec/file-bundle.ts";
import { type Connection, connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { type BundleStore, bundleHandler } from "../../src/node/file-bundle.ts";
import { SyncGate } from "../../src/node/file-sync-gate.ts";

describe("bundles stored inline (durability none)", () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("stores every entry through a partial, fails an existing name alone, leaves no partial", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-bundle-inline-"));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const files = Array.from({ length: 40 }, (_, i) => ({
      path: i % 3 === 0 ? `t/f${i}` : `t/d${i % 2}/f${i}`,
      content: randomFillSync(Buffer.alloc((i * 97) % 2000)),
    }));
    // One name exists already: that entry fails, the file stays as it was.
    await mkdir(join(dir, "t", "d1"), { recursive: true });
    await writeFile(join(dir, files[5].path), "kept");
    const remembered = new Map<string, number>();
    const store: BundleStore = {
      dir,
      fsync: false,
      overwrite: false,
      ready: Promise.resolve(),
      maxFileSize: 0,
      reserve: () => () => {},
      target: (h) => ({ name: String(h.path), segments: String(h.path).split("/") }),
      parents: async (segments) => {
        await mkdir(join(dir, ...segments.slice(0, -1)), { recursive: true });
        return undefined;
      },
      place: async () => {
        throw new PointSubError("ERR_HANDLER", "named by a hard link on the main thread, not by place");
      },
      syncDir: async () => {},
      remember: (path, size) => {
        remembered.set(path, size);
      },
      // The main thread throughout (a loaded machine's slow call would send entries to the pool).
      syncGate: new SyncGate({ slowMs: Number.POSITIVE_INFINITY, stallMs: Number.POSITIVE_INFINITY }),
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
    assert.equal(results.length, files.length);
    for (const [i, r] of results.entries()) {
      if (i === 5) {
        assert.ok("error" in r && r.error.code === "ERR_EXISTS", JSON.stringify(r));
        assert.equal(await readFile(join(dir, files[i].path), "utf8"), "kept");
        continue;
      }
      assert.ok(!("error" in r), JSON.stringify(r));
      const path = join(dir, files[i].path);
      assert.deepEqual(await readFile(path), files[i].content);
      assert.equal(remembered.get(path), files[i].content.length, `${files[i].path}: not remembered`);
    }
    assert.equal(remembered.has(join(dir, files[5].path)), false);
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.endsWith(".partial")),
      [],
      "partials left",
    );
  });
});
