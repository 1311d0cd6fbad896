/**
 * The bundle format (`codec/file-bundle.ts`, docs/PROTOCOL.md §3.12.4),
 * property-tested: any bundle of valid files round-trips exactly however its
 * bytes are split into chunks; random bytes, and valid bundles mutated (bytes
 * flipped, inserted, removed, cut), either decode or fail with
 * ERR_INVALID_ARGUMENT — never another error, never a buffer larger than one
 * entry's bound.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  BUNDLE_FILE_MAX,
  BUNDLE_HEADER_MAX,
  BUNDLE_MAX_FILES,
  type BundleFile,
  BundleReader,
  decodeBundle,
  encodeBundle,
} from "../../src/codec/file-bundle.ts";
import { isPointSubError } from "../../src/errors/error.ts";

const RUNS = 300;

const file: fc.Arbitrary<BundleFile> = fc
  .record({
    key: fc.constantFrom("name", "path"),
    label: fc.string({ unit: "grapheme", minLength: 0, maxLength: 30 }),
    content: fc.uint8Array({ maxLength: 300 }),
  })
  .map(({ key, label, content }) => (key === "name" ? { name: label, content } : { path: label, content }));

/** Split points: the bytes pushed in chunks of these sizes (cycled). */
const splits = fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 8 });

function* chunks(bytes: Uint8Array, sizes: number[]): Generator<Uint8Array> {
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = sizes[i % sizes.length];
    yield bytes.subarray(at, at + n);
    at += n;
  }
}

/** Decodes pushing `sizes`-sized chunks; each buffer handed out is checked against the entry bound. */
function decodeChunked(bytes: Uint8Array, sizes: number[]) {
  const reader = new BundleReader();
  const out = [];
  for (const c of chunks(bytes, sizes)) {
    for (const e of reader.push(c)) {
      assert.ok(e.content.length <= BUNDLE_FILE_MAX);
      out.push(e);
    }
  }
  reader.end();
  return out;
}

/** Decoding never throws anything but ERR_INVALID_ARGUMENT. */
function typedOrDecoded(bytes: Uint8Array, sizes: number[]): void {
  try {
    const entries = decodeChunked(bytes, sizes);
    assert.ok(entries.length <= BUNDLE_MAX_FILES);
  } catch (err) {
    assert.ok(isPointSubError(err), `not a PointSubError: ${String(err)}`);
    assert.equal(err.code, "ERR_INVALID_ARGUMENT");
  }
}

describe("bundle format (codec)", () => {
  it("round-trips any bundle of valid files exactly, in any chunking", () => {
    fc.assert(
      fc.property(fc.array(file, { maxLength: 20 }), splits, (files, sizes) => {
        const bytes = encodeBundle(files);
        const entries = decodeChunked(bytes, sizes);
        assert.equal(entries.length, files.length);
        files.forEach((f, i) => {
          const e = entries[i];
          assert.deepEqual(e.content, f.content);
          assert.equal(e.header.size, f.content.length);
          if (f.path === undefined) assert.equal(e.header.name, f.name);
          else assert.equal(e.header.path, f.path);
          // Content is a buffer of its own, not a view into the input.
          if (e.content.length > 0) assert.notEqual(e.content.buffer, bytes.buffer);
        });
        assert.deepEqual(decodeBundle(bytes).length, files.length);
      }),
      { numRuns: RUNS },
    );
  });

  it("random bytes: decoded or ERR_INVALID_ARGUMENT, never a crash", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), splits, typedOrDecoded), { numRuns: RUNS * 3 });
    // Header-length prefixes followed by random JSON values (the header parser's inputs).
    const enc = new TextEncoder();
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 3 }), fc.uint8Array({ maxLength: 40 }), (v, tail) => {
        const json = enc.encode(JSON.stringify(v) ?? "null");
        const bytes = new Uint8Array(2 + json.length + tail.length);
        bytes[0] = json.length >>> 8;
        bytes[1] = json.length & 0xff;
        bytes.set(json, 2);
        bytes.set(tail, 2 + json.length);
        typedOrDecoded(bytes, [bytes.length]);
      }),
      { numRuns: RUNS },
    );
  });

  it("mutated bundles (flip, insert, delete, cut): decoded or ERR_INVALID_ARGUMENT", () => {
    const mutation = fc.record({
      kind: fc.constantFrom("flip", "insert", "delete", "cut"),
      at: fc.nat(),
      byte: fc.integer({ min: 0, max: 255 }),
    });
    fc.assert(
      fc.property(
        fc.array(file, { minLength: 1, maxLength: 8 }),
        fc.array(mutation, { maxLength: 4 }),
        splits,
        (files, muts, sizes) => {
          let bytes = Array.from(encodeBundle(files));
          for (const m of muts) {
            if (bytes.length === 0) break;
            const at = m.at % bytes.length;
            if (m.kind === "flip") bytes[at] ^= m.byte || 1;
            else if (m.kind === "insert") bytes.splice(at, 0, m.byte);
            else if (m.kind === "delete") bytes.splice(at, 1);
            else bytes = bytes.slice(0, at);
          }
          typedOrDecoded(Uint8Array.from(bytes), sizes);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("bounds: header length 0 or over 4096, size over 256 KiB, over 1000 entries, a cut entry", () => {
    const fails = (bytes: Uint8Array, why: RegExp) =>
      assert.throws(
        () => decodeBundle(bytes),
        (e: unknown) => isPointSubError(e) && e.code === "ERR_INVALID_ARGUMENT" && why.test(e.message),
      );
    fails(Uint8Array.of(0, 0), /header of 0 bytes/);
    const over = BUNDLE_HEADER_MAX + 1;
    fails(Uint8Array.of(over >>> 8, over & 0xff), /header of 4097 bytes/);
    const head = new TextEncoder().encode(JSON.stringify({ name: "a", size: BUNDLE_FILE_MAX + 1 }));
    fails(Uint8Array.of(0, head.length, ...head), /size must be/);
    const one = encodeBundle([{ name: "a", content: new Uint8Array(0) }]);
    const many = new Uint8Array(one.length * (BUNDLE_MAX_FILES + 1));
    for (let i = 0; i <= BUNDLE_MAX_FILES; i++) many.set(one, i * one.length);
    fails(many, /over 1000 files/);
    assert.equal(decodeBundle(many.subarray(0, one.length * BUNDLE_MAX_FILES)).length, BUNDLE_MAX_FILES);
    const two = encodeBundle([{ name: "a", content: Uint8Array.of(1, 2, 3) }]);
    fails(two.subarray(0, two.length - 1), /ends inside an entry/);
    fails(two.subarray(0, 1), /ends inside an entry/);
    // A declared size is never allocated before its bytes arrive beyond the 256 KiB bound.
    assert.throws(() => encodeBundle([{ name: "big", content: new Uint8Array(BUNDLE_FILE_MAX + 1) }]), /too large/);
  });
});
