/**
 * Attack test (real loopback socket): a peer sends bundles faster than the
 * receiver's disk writes them. What a session's bundles hold waiting for
 * the disk is bounded (4 MiB per session): the handler stops reading, so
 * each stream's window stops its sender, and the bytes the server received
 * stay bounded (windows + 4 MiB + one entry per stream) while the disk is
 * stalled — and once the disk moves again every file is stored whole.
 */
import assert from "node:assert/strict";
import { writeSync } from "node:fs";
import { link, mkdtemp, readdir, readFile, rm, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { BUNDLE_FILE_MAX, FILE_BUNDLE_ROUTE } from "../../src/codec/file-bundle.ts";
import { type Connection, connect, createServer, type Server } from "../../src/index.ts";
import {
  type BundleEntryWriter,
  type BundleStore,
  bundleHandler,
  bundlePendingBytes,
} from "../../src/node/file-bundle.ts";
import { sleep, until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
/** Bundles at once, each larger than a stream's 4 MiB window (so its sender must wait for credit). */
const BUNDLES = 3;
const ENTRY = BUNDLE_FILE_MAX;
const PER_BUNDLE = 32; // 32 × 256 KiB: 8 MiB of content per bundle
const STREAM_WINDOW = 4 * MiB;

/** The content of entry `i` of bundle `b`: a byte pattern the test checks after. */
const fill = (b: number, i: number) => Buffer.alloc(ENTRY, (b * PER_BUNDLE + i) & 0xff);

/** A bundle's bytes, produced entry by entry as the sender pulls (the sender never holds them all). */
function* bundleSource(b: number): Generator<Uint8Array> {
  for (let i = 0; i < PER_BUNDLE; i++) {
    const head = Buffer.from(JSON.stringify({ name: `b${b}-${i}`, size: ENTRY }));
    yield Buffer.concat([Buffer.from([head.length >> 8, head.length & 0xff]), head]);
    yield fill(b, i);
  }
}
const bundleLength = (() => {
  let n = 0;
  for (const c of bundleSource(0)) n += c.length;
  return n;
})();

describe("bundles: a peer faster than the disk", () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("holds at most 4 MiB per session waiting for the disk: reading pauses, then everything is stored", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-bundle-bound-"));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    // A disk that does not move until the test lets it.
    let stalled = true;
    const waiting: (() => void)[] = [];
    let written = 0;
    const slowDisk: BundleEntryWriter = async (fd, content) => {
      while (stalled) await new Promise<void>((r) => waiting.push(r));
      writeSync(fd, content);
      written++;
    };
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
      write: slowDisk,
    };
    const handler = bundleHandler(store);
    const sessions = new Set<object>();
    const server: Server = createServer();
    cleanup.push(() => server.close({ timeoutMs: 100 }));
    server.handleStream(FILE_BUNDLE_ROUTE, (stream, ctx) => {
      if (ctx.session !== undefined) sessions.add(ctx.session);
      return handler(stream, ctx);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn: Connection = await connect(url);
    cleanup.push(() => conn.destroy());

    let done = 0;
    const transfers = Array.from({ length: BUNDLES }, (_, b) => {
      const t = conn.sendStream(FILE_BUNDLE_ROUTE, bundleSource(b), { total: bundleLength });
      return t.done.then((res) => {
        done++;
        return res;
      });
    });
    // Wait until the sender is stopped: what the server received (wire bytes) no longer grows.
    const received = () => server.stats().wire.bytesIn;
    await until(() => received() > 4 * MiB);
    for (let last = -1; received() !== last; ) {
      last = received();
      await sleep(300);
    }
    const pending = [...sessions].map((s) => bundlePendingBytes(s));
    assert.equal(pending.length, 1, "one session");
    assert.equal(written, 0, "the disk is stalled");
    assert.ok(pending[0].now <= 4 * MiB, `pending ${pending[0].now}`);
    assert.ok(pending[0].peak <= 4 * MiB, `peak ${pending[0].peak}`);
    // The session's bound is what stopped it (each bundle alone would store 8 entries, 2 MiB, at once).
    assert.ok(pending[0].now >= 3 * MiB, `pending ${pending[0].now}`);
    // Held by the server: each stream's unread window, the 4 MiB waiting for the disk, one entry being
    // assembled per stream (and frame headers) — far less than the 24 MiB the peer wanted to send.
    const bound = BUNDLES * STREAM_WINDOW + 4 * MiB + BUNDLES * (BUNDLE_FILE_MAX + 4 * KiB) + 256 * KiB;
    assert.ok(received() <= bound, `received ${received()} > ${bound}`);
    console.log(`# stalled: received ${received()} (bound ${bound}), pending peak ${pending[0].peak}`);
    assert.ok(received() < BUNDLES * bundleLength);
    assert.equal(done, 0);

    // The disk moves again: every bundle completes, every file whole.
    stalled = false;
    for (const wake of waiting.splice(0)) wake();
    await Promise.all(transfers);
    assert.equal(written, BUNDLES * PER_BUNDLE);
    assert.ok(bundlePendingBytes([...sessions][0]).peak <= 4 * MiB);
    const names = (await readdir(dir)).filter((n) => !n.endsWith(".partial"));
    assert.equal(names.length, BUNDLES * PER_BUNDLE);
    assert.deepEqual(await readFile(join(dir, "b1-3")), fill(1, 3));
    assert.deepEqual(await readFile(join(dir, `b${BUNDLES - 1}-${PER_BUNDLE - 1}`)), fill(BUNDLES - 1, PER_BUNDLE - 1));
  });
});
