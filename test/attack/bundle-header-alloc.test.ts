/**
 * A bundle entry's header made the receiver allocate the content's whole
 * declared size at once (up to 256 KiB) before any of it came: a peer
 * sending only headers (31 bytes each) into 64 streams per connection made
 * 16 MiB per connection, outside its memory budget (8 connections of 64
 * such bundles into a sink: +129 MiB of ArrayBuffers). The decoder now grows
 * an entry's buffer as its content arrives (from 16 KiB, doubling, up to
 * the declared size): the same bundles hold +9 MiB. Decoded content is the
 * same however the bytes are cut.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BUNDLE_FILE_MAX, BundleReader, encodeBundle } from "../../src/codec/file-bundle.ts";

describe("attack: bundle entry headers declaring large contents", () => {
  it("a header alone does not allocate the declared size", () => {
    const header = new TextEncoder().encode(JSON.stringify({ path: "x", size: BUNDLE_FILE_MAX }));
    const start = new Uint8Array(2 + header.length + 1);
    start[0] = header.length >> 8;
    start[1] = header.length & 0xff;
    start.set(header, 2);
    start[start.length - 1] = 7;
    const before = process.memoryUsage().arrayBuffers;
    const readers: BundleReader[] = [];
    for (let i = 0; i < 256; i++) {
      const r = new BundleReader();
      assert.equal([...r.push(start)].length, 0);
      readers.push(r);
    }
    const grew = process.memoryUsage().arrayBuffers - before;
    // Before: 256 x 256 KiB = 64 MiB held for 256 x 32 bytes received.
    assert.ok(grew < 16 * 1024 * 1024, `256 headers held ${grew} bytes`);
    assert.equal(readers.length, 256);
  });

  it("entries cut anywhere decode to the bytes sent", () => {
    const files = [0, 1, 5000, 16 * 1024, 16 * 1024 + 1, 100_000, BUNDLE_FILE_MAX].map((n, i) => ({
      path: `f${i}`,
      content: Uint8Array.from({ length: n }, (_, j) => (j * 31 + i) & 0xff),
    }));
    const bytes = encodeBundle(files);
    for (const cut of [1, 7, 4096, 16 * 1024 + 3, 70_000, bytes.length]) {
      const r = new BundleReader();
      const got = [];
      for (let off = 0; off < bytes.length; off += cut) got.push(...r.push(bytes.subarray(off, off + cut)));
      r.end();
      assert.equal(got.length, files.length, `cut ${cut}`);
      for (let i = 0; i < files.length; i++) {
        assert.equal(got[i].header.size, files[i].content.length);
        assert.deepEqual(got[i].content, files[i].content, `cut ${cut}, entry ${i}`);
      }
    }
  });
});
