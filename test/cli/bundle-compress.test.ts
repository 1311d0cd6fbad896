/**
 * `send` with `compress auto` probes its bundles as a stream probes its
 * chunks: after a bundle went raw (incompressible), the next ones skip the
 * probe (1, 2, 4 … of them); a bundle that compressed resets it. Each probe
 * is a synchronous compression of a sample with a new context.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import zlib from "node:zlib";

/**
 * The synchronous compressions (the probes: bundles' frames compress on the thread pool), counted
 * while `counting`: node:zlib's functions wrapped before the library is loaded (its codecs keep them).
 */
let counting = false;
let probeCalls = 0;
{
  const z = zlib as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const n of ["zstdCompressSync", "deflateRawSync", "gzipSync", "brotliCompressSync"]) {
    const f = z[n];
    if (typeof f !== "function") continue;
    z[n] = (...a: unknown[]) => {
      if (counting) probeCalls++;
      return f(...a);
    };
  }
  // (The library imports node:zlib as a namespace: its bindings follow the module object now.)
  syncBuiltinESMExports();
}
const { BundleCompression, sendCommand } = await import("../../src/cli/send.ts");
const { createServer, FILE_BUNDLE_ROUTE, FILE_CHECK_ROUTE, FILE_ROUTE, fileSink } = await import("../../src/index.ts");

describe("send: compress auto across bundles", () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-bundle-compress-"));
  });
  after(() => rm(work, { recursive: true, force: true }));

  it("skips the probe of the bundles after incompressible ones (backoff), probes again after a compressible one", () => {
    const c = new BundleCompression();
    const seq: string[] = [];
    // Every probed bundle goes raw: skip 1, then 2, then 4 …
    for (let i = 0; i < 12; i++) {
      const mode = c.next();
      seq.push(mode);
      if (mode === "auto") c.result(false);
    }
    assert.deepEqual(seq, ["auto", "off", "auto", "off", "off", "auto", "off", "off", "off", "off", "auto", "off"]);
    c.result(true);
    assert.equal(c.next(), "auto");
    assert.equal(c.next(), "auto", "a compressible bundle: every bundle probed again");
  });

  it("a send of 12 bundles of random files probes a few of them, and every file arrives", async () => {
    const src = join(work, "random");
    await mkdir(src);
    // 60 KiB each (bundled: at most 64 KiB), 17 per 1 MiB bundle: 12 bundles.
    const count = 17 * 12;
    for (let i = 0; i < count; i++) await writeFile(join(src, `r${i}.bin`), randomFillSync(Buffer.alloc(60 * 1024)));
    const inbox = join(work, "inbox");
    const sink = fileSink(inbox, { durability: "none" });
    const server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    server.handle(FILE_CHECK_ROUTE, sink.check);
    let bundles = 0;
    server.handleStream(FILE_BUNDLE_ROUTE, (stream, ctx) => {
      bundles++;
      return sink.bundle(stream, ctx);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const out = process.stdout.write;
    counting = true;
    try {
      // Its JSON lines are not this test's output.
      process.stdout.write = (() => true) as typeof process.stdout.write;
      await sendCommand([src], { to: url, compress: "auto", retries: 0, resume: true, recursive: true, json: true });
    } finally {
      process.stdout.write = out;
      counting = false;
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
    assert.equal(bundles, 12);
    assert.equal((await readdir(join(inbox, "random"))).length, count);
    // Before: every bundle probed its chunks (48 probes here); now the first four bundles (in flight at
    // once, no verdict yet: 16) and few after.
    assert.ok(probeCalls >= 1 && probeCalls <= 24, `probes: ${probeCalls} for 12 bundles`);
  });
});
