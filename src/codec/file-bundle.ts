/**
 * The bundle format (docs/PROTOCOL.md §3.12.4): many small files in one
 * stream's content. Each entry is a u16 BE header length (1..
 * {@link BUNDLE_HEADER_MAX}), the header (JSON `{"name"|"path": string,
 * "size": n}`) and `size` bytes of content (0..{@link BUNDLE_FILE_MAX}); at
 * most {@link BUNDLE_MAX_FILES} entries. Pure functions and one push
 * decoder that holds at most one entry's bytes: whatever a peer sends, the
 * decoder holds at most {@link BUNDLE_HEADER_MAX} + {@link BUNDLE_FILE_MAX}
 * bytes of an entry, in a buffer that grows (doubling, from 16 KiB) as its
 * content arrives — for a moment the old and the new one, ~1.5× that at
 * most, and never more than twice what the peer sent of it — and a
 * malformed bundle is an `ERR_INVALID_ARGUMENT`.
 */
import { PointSubError } from "../errors/error.ts";

/** The file sink's bundle route: a stream of small files. */
export const FILE_BUNDLE_ROUTE = "/pointsub/file/bundle/1";
/** Files one bundle may hold. */
export const BUNDLE_MAX_FILES = 1000;
/** Largest file a bundle may hold, bytes (larger files go as streams of their own). */
export const BUNDLE_FILE_MAX = 256 * 1024;
/** Largest bundle, bytes (its declared total, headers included). */
export const BUNDLE_MAX_BYTES = 64 * 1024 * 1024;
/** Largest entry header (its JSON), bytes. */
export const BUNDLE_HEADER_MAX = 4096;

/** One file to put in a bundle: stored under `path` (a relative path, directories made) or `name` (a base name). */
export interface BundleFile {
  path?: string;
  name?: string;
  content: Uint8Array;
}

/**
 * An entry header as received: `size` checked; `path` and `name` as the
 * peer sent them (the receiver checks them, and refuses that entry alone).
 */
export interface BundleEntryHeader {
  path?: unknown;
  name?: unknown;
  size: number;
}

/** One decoded entry: its header and its content (a buffer of its own, never a view of the input). */
export interface BundleEntry {
  header: BundleEntryHeader;
  content: Uint8Array;
}

/** What the receiver did with one file of a bundle, in the bundle's order (the answer's `files`). */
export type BundleResult =
  | { name: string; path: string; size: number; crc32c: string }
  | { name: string; error: { code: string; message: string } };

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

const bad = (why: string) => new PointSubError("ERR_INVALID_ARGUMENT", `malformed bundle: ${why}`);

/**
 * A bundle's content (one buffer). Throws ERR_INVALID_ARGUMENT for a file
 * that is not a content (a Uint8Array) with a path or a name (a string), or
 * a file or header too large (the count is not checked: a receiver refuses over
 * {@link BUNDLE_MAX_FILES}).
 */
export function encodeBundle(files: readonly BundleFile[]): Uint8Array {
  if (!Array.isArray(files)) throw new PointSubError("ERR_INVALID_ARGUMENT", "encodeBundle needs an array of files");
  const heads: Uint8Array[] = [];
  let total = 0;
  for (const f of files) {
    // A string's content went in as that many zero bytes, an entry without a name or path as one its receiver refuses.
    if (!((f as BundleFile | null)?.content instanceof Uint8Array) || typeof (f.path ?? f.name) !== "string") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        "each bundle file needs a content (a Uint8Array) and a path or a name (a string)",
      );
    }
    const json = utf8.encode(
      JSON.stringify(
        f.path === undefined ? { name: f.name, size: f.content.length } : { path: f.path, size: f.content.length },
      ),
    );
    if (json.length > BUNDLE_HEADER_MAX || f.content.length > BUNDLE_FILE_MAX) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `${f.path ?? f.name}: too large for a bundle`);
    }
    heads.push(json);
    total += 2 + json.length + f.content.length;
  }
  const out = new Uint8Array(total);
  let at = 0;
  files.forEach((f, i) => {
    const json = heads[i];
    out[at] = json.length >>> 8;
    out[at + 1] = json.length & 0xff;
    out.set(json, at + 2);
    at += 2 + json.length;
    out.set(f.content, at);
    at += f.content.length;
  });
  return out;
}

/** Checks an entry header's bytes: a JSON object with a `size` in range. */
export function decodeBundleHeader(bytes: Uint8Array): BundleEntryHeader {
  let h: unknown;
  try {
    h = JSON.parse(fromUtf8.decode(bytes));
  } catch {
    throw bad("an entry header is not UTF-8 JSON");
  }
  if (typeof h !== "object" || h === null || Array.isArray(h)) throw bad("an entry header is not an object");
  const { size, path, name } = h as Record<string, unknown>;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0 || size > BUNDLE_FILE_MAX) {
    throw bad(`an entry's size must be 0..${BUNDLE_FILE_MAX}`);
  }
  return { path, name, size };
}

/**
 * Splits a bundle's bytes into entries as they arrive (push chunks of any
 * size, then {@link end}); holds at most one entry's bytes, allocated as
 * they arrive (never the size a header declares before its content came). Throws
 * ERR_INVALID_ARGUMENT for a malformed bundle (then it must not be used again).
 */
export class BundleReader {
  private phase: "length" | "header" | "content" = "length";
  private buf: Uint8Array = new Uint8Array(2);
  /** Bytes the current part needs (`buf` grows to it as they arrive). */
  private want = 2;
  private have = 0;
  private header: BundleEntryHeader | undefined;
  /** Entries decoded so far. */
  count = 0;

  /** The entries completed by `chunk`, in order. */
  *push(chunk: Uint8Array): Generator<BundleEntry> {
    let off = 0;
    for (;;) {
      if (this.phase === "content" && this.want === 0) {
        yield this.finish();
        continue;
      }
      if (off >= chunk.length) return;
      const n = Math.min(this.want - this.have, chunk.length - off);
      if (this.have + n > this.buf.length) {
        // Grown as the content arrives: a header alone (a few bytes) declaring 256 KiB allocated it all.
        const grown = new Uint8Array(Math.min(this.want, Math.max(this.have + n, 2 * this.buf.length, CONTENT_STEP)));
        grown.set(this.buf.subarray(0, this.have));
        this.buf = grown;
      }
      this.buf.set(chunk.subarray(off, off + n), this.have);
      this.have += n;
      off += n;
      if (this.have < this.want) return;
      if (this.phase === "length") {
        const len = (this.buf[0] << 8) | this.buf[1];
        if (len === 0 || len > BUNDLE_HEADER_MAX) throw bad(`header of ${len} bytes`);
        this.next("header", len);
      } else if (this.phase === "header") {
        this.header = decodeBundleHeader(this.buf);
        this.next("content", this.header.size);
      } else {
        yield this.finish();
      }
    }
  }

  /** The bundle ended: nothing may be left half-read. */
  end(): void {
    if (this.phase !== "length" || this.have !== 0) throw bad("it ends inside an entry");
  }

  private finish(): BundleEntry {
    if (this.count >= BUNDLE_MAX_FILES) throw bad(`over ${BUNDLE_MAX_FILES} files`);
    this.count++;
    const out = { header: this.header as BundleEntryHeader, content: this.buf };
    this.header = undefined;
    this.next("length", 2);
    return out;
  }

  private next(phase: BundleReader["phase"], size: number): void {
    this.phase = phase;
    this.want = size;
    // A length or header whole at once (at most 4 KiB); content as it arrives (one that comes whole: once).
    this.buf = new Uint8Array(phase === "content" ? 0 : size);
    this.have = 0;
  }
}

/** An entry's content buffer grows by at least this (and doubles) as it arrives, up to the entry's size. */
const CONTENT_STEP = 16 * 1024;

/** Decodes a whole bundle (ERR_INVALID_ARGUMENT when malformed). */
export function decodeBundle(bytes: Uint8Array): BundleEntry[] {
  const reader = new BundleReader();
  const out = [...reader.push(bytes)];
  reader.end();
  return out;
}

/**
 * A bundle's answer (`{"files": [result, …]}`, docs/PROTOCOL.md §3.12.1)
 * for a bundle of `count` files: at most one result per file, each a stored
 * file (`name`, `path` strings, `size` a non-negative integer, `crc32c` 8 hex
 * digits) or a refusal (`name`, `error.code` and `error.message` strings,
 * the message cut at 1,000 characters); else `ERR_PROTOCOL`.
 */
export function decodeBundleAnswer(answer: Uint8Array, count: number): BundleResult[] {
  const fail = (why: string) => new PointSubError("ERR_PROTOCOL", `malformed bundle answer: ${why}`);
  let o: unknown;
  try {
    o = JSON.parse(fromUtf8.decode(answer));
  } catch {
    throw fail("not UTF-8 JSON");
  }
  const files = (o as { files?: unknown } | null)?.files;
  if (!Array.isArray(files) || files.length > count) throw fail(`files must be a list of at most ${count} results`);
  return files.map((f: unknown): BundleResult => {
    const r = (typeof f === "object" && f !== null ? f : {}) as Record<string, unknown>;
    if (typeof r.name !== "string") throw fail("a result without a name");
    if (r.error !== undefined) {
      const e = (typeof r.error === "object" && r.error !== null ? r.error : {}) as Record<string, unknown>;
      if (typeof e.code !== "string" || typeof e.message !== "string") throw fail("an error without code and message");
      return { name: r.name, error: { code: e.code.slice(0, 64), message: e.message.slice(0, 1000) } };
    }
    const size = r.size;
    if (
      typeof r.path !== "string" ||
      typeof size !== "number" ||
      !Number.isSafeInteger(size) ||
      size < 0 ||
      typeof r.crc32c !== "string" ||
      !/^[0-9a-f]{8}$/.test(r.crc32c)
    ) {
      throw fail("a stored file needs path, size and crc32c");
    }
    return { name: r.name, path: r.path, size, crc32c: r.crc32c };
  });
}
