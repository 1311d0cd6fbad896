/**
 * The file source's payloads (src/codec/file-routes.ts, docs/PROTOCOL.md
 * §3.12.2–3.12.3): encode/decode round trips, the bytes of the documented
 * examples, and arbitrary bytes give a value or one typed error (requests
 * ERR_INVALID_ARGUMENT, answers ERR_PROTOCOL), never anything else.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  decodeFileGetAnswer,
  decodeFileGetRequest,
  decodeFileListAnswer,
  decodeFileListRequest,
  encodeFileGetAnswer,
  encodeFileGetRequest,
  encodeFileListAnswer,
  encodeFileListRequest,
  FILE_LIST_MAX,
  FILE_PATH_MAX,
  type FileGetAnswer,
  type FileGetRequest,
  type FileListAnswer,
  type FileListRequest,
} from "../../src/codec/file-routes.ts";
import { isPointSubError } from "../../src/errors/error.ts";

const RUNS = 2000;
const path = fc.string({ unit: "grapheme", minLength: 1, maxLength: 40 });
const uint = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const hex8 = fc.integer({ min: 0, max: 0xffffffff }).map((n) => n.toString(16).padStart(8, "0"));
const enc = new TextEncoder();
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
/** A plain copy (fast-check's records have no prototype). */
const plain = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

/** Runs `decode` on arbitrary bytes and on arbitrary JSON: it returns or throws `code`. */
function total(decode: (b: Uint8Array) => unknown, code: string): void {
  const check = (bytes: Uint8Array) => {
    try {
      decode(bytes);
    } catch (err) {
      assert.ok(isPointSubError(err), `threw ${String(err)}`);
      assert.equal(err.code, code);
    }
  };
  fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), check), { numRuns: RUNS });
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 3 }), (v) => check(enc.encode(JSON.stringify(v)))),
    { numRuns: RUNS },
  );
  // Objects with the right keys and wrong values.
  const anyValue = fc.oneof(fc.jsonValue({ maxDepth: 2 }), path, uint, fc.constant("file"), fc.constant("dir"));
  fc.assert(
    fc.property(
      fc.dictionary(
        fc.constantFrom("path", "to", "have", "recursive", "cursor", "limit", "type", "entries", "size", "crc32c"),
        anyValue,
      ),
      (o) => check(enc.encode(JSON.stringify(o))),
    ),
    { numRuns: RUNS },
  );
}

describe("codec/file-routes", () => {
  it("list requests round-trip; limit 1..1000; paths at most 4096 bytes", () => {
    const req = fc.record(
      {
        path: fc.string({ maxLength: 40 }),
        recursive: fc.boolean(),
        cursor: path,
        limit: fc.integer({ min: 1, max: FILE_LIST_MAX }),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(req, (r: FileListRequest) => {
        assert.deepEqual(decodeFileListRequest(encodeFileListRequest(r)), plain(r));
      }),
      { numRuns: RUNS },
    );
    for (const limit of [0, FILE_LIST_MAX + 1, 1.5, -1]) {
      assert.throws(() => encodeFileListRequest({ limit }), { code: "ERR_INVALID_ARGUMENT" });
    }
    assert.throws(() => encodeFileListRequest({ path: "a".repeat(FILE_PATH_MAX + 1) }), {
      code: "ERR_INVALID_ARGUMENT",
    });
    total(decodeFileListRequest, "ERR_INVALID_ARGUMENT");
  });

  it("list answers round-trip; at most 1000 entries", () => {
    const entry = fc.record({
      path,
      type: fc.constantFrom("file" as const, "dir" as const),
      size: uint,
      mtime: fc.integer({ min: 0, max: 8.64e15 }),
    });
    const answer = fc.record(
      {
        type: fc.constantFrom("file" as const, "dir" as const),
        entries: fc.array(entry, { maxLength: 20 }),
        cursor: path,
      },
      { requiredKeys: ["type", "entries"] },
    );
    fc.assert(
      fc.property(answer, (a: FileListAnswer) =>
        assert.deepEqual(decodeFileListAnswer(encodeFileListAnswer(a)), plain(a)),
      ),
      { numRuns: RUNS },
    );
    const many = {
      type: "dir",
      entries: Array.from({ length: FILE_LIST_MAX + 1 }, () => ({ path: "a", type: "file", size: 0, mtime: 0 })),
    };
    assert.throws(() => decodeFileListAnswer(enc.encode(JSON.stringify(many))), { code: "ERR_PROTOCOL" });
    total(decodeFileListAnswer, "ERR_PROTOCOL");
  });

  it("get requests and answers round-trip", () => {
    const req = fc.record(
      { path, to: path, have: fc.record({ size: uint, crc32c: hex8 }) },
      { requiredKeys: ["path", "to"] },
    );
    fc.assert(
      fc.property(req, (r: FileGetRequest) =>
        assert.deepEqual(decodeFileGetRequest(encodeFileGetRequest(r)), plain(r)),
      ),
      { numRuns: RUNS },
    );
    const answer = fc.record(
      { path, size: uint, crc32c: hex8, resumedFrom: uint, bytesSent: uint, skipped: fc.constant(true) },
      { requiredKeys: ["path", "size", "crc32c", "resumedFrom", "bytesSent"] },
    );
    fc.assert(
      fc.property(answer, (a: FileGetAnswer) =>
        assert.deepEqual(decodeFileGetAnswer(encodeFileGetAnswer(a)), plain(a)),
      ),
      { numRuns: RUNS },
    );
    assert.throws(() => encodeFileGetRequest({ path: "", to: "a" }), { code: "ERR_INVALID_ARGUMENT" });
    assert.throws(() => encodeFileGetRequest({ path: "a", to: "a", have: { size: 1, crc32c: "ABCDEF01" } }), {
      code: "ERR_INVALID_ARGUMENT",
    });
    total(decodeFileGetRequest, "ERR_INVALID_ARGUMENT");
    total(decodeFileGetAnswer, "ERR_PROTOCOL");
  });

  it("docs/PROTOCOL.md §3.12.2–3.12.3 show what the encoders produce", () => {
    const raw = readFileSync(new URL("../../docs/PROTOCOL.md", import.meta.url), "utf8");
    const section = raw.slice(raw.indexOf("#### 3.12.2"), raw.indexOf("#### 3.12.4"));
    const blocks = section
      .split("```")
      .filter((_, i) => i % 2 === 1)
      .map((block) =>
        block
          .split("\n")
          .map((line) => line.match(/^([0-9a-f]{2}( [0-9a-f]{2})*)/)?.[1] ?? "")
          .filter((x) => x !== "")
          .join(" ")
          .replace(/ /g, ""),
      );
    const listed = encodeFileListAnswer({
      type: "dir",
      entries: [{ path: "sub/a.txt", type: "file", size: 5, mtime: 1700000000000 }],
    });
    const got = encodeFileGetAnswer({ path: "sub/a.txt", size: 5, crc32c: "9a71bb4c", resumedFrom: 0, bytesSent: 5 });
    assert.deepEqual(blocks, [
      hex(encodeFileListRequest({ path: "sub", recursive: true })) + hex(listed),
      hex(encodeFileGetRequest({ path: "sub/a.txt", to: "a.txt" })) + hex(got),
    ]);
  });

  it("the examples' JSON, as text", () => {
    assert.equal(
      hex(encodeFileListRequest({ path: "sub", recursive: true })),
      hex(enc.encode('{"path":"sub","recursive":true}')),
    );
    assert.equal(
      Buffer.from(
        encodeFileListAnswer({
          type: "dir",
          entries: [{ path: "sub/a.txt", type: "file", size: 5, mtime: 1700000000000 }],
        }),
      ).toString(),
      '{"type":"dir","entries":[{"path":"sub/a.txt","type":"file","size":5,"mtime":1700000000000}]}',
    );
    assert.equal(
      Buffer.from(encodeFileGetRequest({ path: "sub/a.txt", to: "a.txt" })).toString(),
      '{"path":"sub/a.txt","to":"a.txt"}',
    );
    assert.equal(
      Buffer.from(
        encodeFileGetAnswer({ path: "sub/a.txt", size: 5, crc32c: "9a71bb4c", resumedFrom: 0, bytesSent: 5 }),
      ).toString(),
      '{"path":"sub/a.txt","size":5,"crc32c":"9a71bb4c","resumedFrom":0,"bytesSent":5}',
    );
  });
});
