/**
 * Payloads of the file source's request routes (docs/PROTOCOL.md §3.12.2,
 * §3.12.3): listing a served directory and asking for a file. JSON objects,
 * as the quick-check route's; these functions check their shape and bounds.
 * A request that is not well formed is `ERR_INVALID_ARGUMENT` (the handler
 * answers with it); an answer that is not is `ERR_PROTOCOL`. Paths are
 * checked for their shape here (a string of at most {@link FILE_PATH_MAX}
 * bytes); the server checks them against its directory.
 */
import { PointSubError } from "../errors/error.ts";

/** The listing route (a request). */
export const FILE_LIST_ROUTE = "/pointsub/file/list/1";
/** The download route (a request; the file comes back as a stream to the asker's file route). */
export const FILE_GET_ROUTE = "/pointsub/file/get/1";
/** Most entries one listing answer holds (a request may ask for fewer). */
export const FILE_LIST_MAX = 1000;
/** Longest path (UTF-8 bytes) in these payloads. */
export const FILE_PATH_MAX = 4096;
/** Longest cursor (characters). */
const CURSOR_MAX = FILE_PATH_MAX + 64;

/** A listing request: the directory (or file) to list, from the served root; everything under it with `recursive`. */
export interface FileListRequest {
  /** Relative path, `/`-separated; absent or empty: the served directory itself. */
  path?: string;
  /** Files of the whole tree under `path` (directories are not listed then). */
  recursive?: boolean;
  /** Continue after this point (the `cursor` of the previous answer). */
  cursor?: string;
  /** Entries wanted, 1 to {@link FILE_LIST_MAX} (default the maximum). */
  limit?: number;
}

/** One listed file or directory. */
export interface FileListEntry {
  /** Path from the served root, `/`-separated. */
  path: string;
  type: "file" | "dir";
  /** Bytes (0 for a directory). */
  size: number;
  /** Modification time, ms since the epoch. */
  mtime: number;
}

/** A listing answer. */
export interface FileListAnswer {
  /** What the requested path is: a directory (its entries follow) or a file (listed alone). */
  type: "file" | "dir";
  entries: FileListEntry[];
  /** Present when there is more: send it back as `cursor` for the next entries. */
  cursor?: string;
}

/** What the asker already holds under the target name (the server skips the file when it holds the same). */
export interface FileHave {
  size: number;
  /** CRC32C, 8 hex digits. */
  crc32c: string;
}

/** A download request. */
export interface FileGetRequest {
  /** The file, from the served root. */
  path: string;
  /** Where the asker stores it: sent back as the stream's `meta.path` (relative, `/`-separated). */
  to: string;
  /** The asker's file under `to`, when it has one of the size the listing gave. */
  have?: FileHave;
}

/** A download answer: after the asker's file route stored the file (or right away when skipped). */
export interface FileGetAnswer {
  path: string;
  size: number;
  crc32c: string;
  /** Offset the transfer resumed from (0: from the start). */
  resumedFrom: number;
  /** Content bytes the server streamed for this request. */
  bytesSent: number;
  /** True when the asker already held the same file: nothing was sent. */
  skipped?: boolean;
}

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

type Fail = (why: string) => PointSubError;
const requestFail: Fail = (why) => new PointSubError("ERR_INVALID_ARGUMENT", `malformed file request: ${why}`);
const answerFail: Fail = (why) => new PointSubError("ERR_PROTOCOL", `malformed file answer: ${why}`);

function parse(bytes: Uint8Array, fail: Fail): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(dec.decode(bytes));
  } catch {
    throw fail("not UTF-8 JSON");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw fail("not a JSON object");
  return v as Record<string, unknown>;
}

const isUint = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;

function path(v: unknown, what: string, fail: Fail, allowEmpty = false): string {
  if (typeof v !== "string") throw fail(`${what} must be a string`);
  if (v.length === 0 && !allowEmpty) throw fail(`${what} is empty`);
  if (enc.encode(v).length > FILE_PATH_MAX) throw fail(`${what} is over ${FILE_PATH_MAX} bytes`);
  return v;
}

function type(v: unknown, fail: Fail): "file" | "dir" {
  if (v !== "file" && v !== "dir") throw fail('type must be "file" or "dir"');
  return v;
}

function crc(v: unknown, fail: Fail): string {
  if (typeof v !== "string" || !/^[0-9a-f]{8}$/.test(v)) throw fail("crc32c must be 8 lowercase hex digits");
  return v;
}

function uint(v: unknown, what: string, fail: Fail): number {
  if (!isUint(v)) throw fail(`${what} must be a non-negative integer`);
  return v;
}

/** The latest time a Date holds (ms since 1970): a listing's mtime past it is no time at all. */
const MAX_DATE_MS = 8.64e15;

function mtime(v: unknown): number {
  const n = uint(v, "mtime", answerFail);
  if (n > MAX_DATE_MS) throw answerFail(`mtime ${n} is past the latest date (${MAX_DATE_MS} ms)`);
  return n;
}

const bytes = (o: object) => enc.encode(JSON.stringify(o));

export function encodeFileListRequest(r: FileListRequest): Uint8Array {
  return bytes(decodeFileListRequest(bytes(r)));
}

export function decodeFileListRequest(b: Uint8Array): FileListRequest {
  const o = parse(b, requestFail);
  const r: FileListRequest = {};
  if (o.path !== undefined) r.path = path(o.path, "path", requestFail, true);
  if (o.recursive !== undefined) {
    if (typeof o.recursive !== "boolean") throw requestFail("recursive must be true or false");
    r.recursive = o.recursive;
  }
  if (o.cursor !== undefined) {
    if (typeof o.cursor !== "string" || o.cursor.length > CURSOR_MAX) throw requestFail("bad cursor");
    r.cursor = o.cursor;
  }
  if (o.limit !== undefined) {
    if (!isUint(o.limit) || o.limit < 1 || o.limit > FILE_LIST_MAX) {
      throw requestFail(`limit must be 1 to ${FILE_LIST_MAX}`);
    }
    r.limit = o.limit;
  }
  return r;
}

export function encodeFileListAnswer(a: FileListAnswer): Uint8Array {
  return bytes(a.cursor === undefined ? { type: a.type, entries: a.entries } : a);
}

export function decodeFileListAnswer(b: Uint8Array): FileListAnswer {
  const o = parse(b, answerFail);
  if (!Array.isArray(o.entries) || o.entries.length > FILE_LIST_MAX) throw answerFail("entries must be a list");
  const entries = o.entries.map((e: unknown): FileListEntry => {
    if (typeof e !== "object" || e === null) throw answerFail("an entry is not an object");
    const x = e as Record<string, unknown>;
    return {
      path: path(x.path, "path", answerFail),
      type: type(x.type, answerFail),
      size: uint(x.size, "size", answerFail),
      mtime: mtime(x.mtime),
    };
  });
  const a: FileListAnswer = { type: type(o.type, answerFail), entries };
  if (o.cursor !== undefined) {
    if (typeof o.cursor !== "string" || o.cursor.length === 0 || o.cursor.length > CURSOR_MAX) {
      throw answerFail("bad cursor");
    }
    a.cursor = o.cursor;
  }
  return a;
}

export function encodeFileGetRequest(r: FileGetRequest): Uint8Array {
  return bytes(decodeFileGetRequest(bytes(r)));
}

export function decodeFileGetRequest(b: Uint8Array): FileGetRequest {
  const o = parse(b, requestFail);
  const r: FileGetRequest = { path: path(o.path, "path", requestFail), to: path(o.to, "to", requestFail) };
  if (o.have !== undefined) {
    if (typeof o.have !== "object" || o.have === null) throw requestFail("have must be an object");
    const h = o.have as Record<string, unknown>;
    r.have = { size: uint(h.size, "have.size", requestFail), crc32c: crc(h.crc32c, requestFail) };
  }
  return r;
}

export function encodeFileGetAnswer(a: FileGetAnswer): Uint8Array {
  return bytes(a);
}

export function decodeFileGetAnswer(b: Uint8Array): FileGetAnswer {
  const o = parse(b, answerFail);
  const a: FileGetAnswer = {
    path: path(o.path, "path", answerFail),
    size: uint(o.size, "size", answerFail),
    crc32c: crc(o.crc32c, answerFail),
    resumedFrom: uint(o.resumedFrom, "resumedFrom", answerFail),
    bytesSent: uint(o.bytesSent, "bytesSent", answerFail),
  };
  if (o.skipped !== undefined) {
    if (typeof o.skipped !== "boolean") throw answerFail("skipped must be true or false");
    if (o.skipped) a.skipped = true;
  }
  return a;
}
