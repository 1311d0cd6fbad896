import { PointSubError, protocolError } from "../errors/error.ts";
import { readU32, writeU32 } from "./bytes.ts";
import { MAX_ROUTE } from "./frame.ts";
import { readVarint, type VarintResult, varintLength, writeVarint } from "./varint.ts";

/** Size of a STREAM END frame's trailer: varint content length is followed by this u32 CRC32C. */
export const STREAM_CRC_LENGTH = 4;

/** Longest route, in UTF-8 bytes. */
export const MAX_ROUTE_BYTES = MAX_ROUTE;
/** Longest stream metadata, in UTF-8 bytes. */
export const MAX_META_BYTES = 4096;

/** What a STREAM START frame declares before its data (docs/PROTOCOL.md §3.10). */
export interface StreamHead {
  /** Content length from byte 0, when known. */
  total: number | undefined;
  /** Content offset of the first byte this stream carries (resume); 0 normally. */
  offset: number;
  /** CRC32C of content bytes 0..offset (only meaningful when offset > 0). */
  prefixCrc: number;
  route: string;
  /** Compression codec id of COMPRESSED frames (0: none). */
  codec: number;
  /** Metadata: a UTF-8 JSON object (empty: none). */
  meta: Uint8Array;
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });
/** A route's: a leading U+FEFF is kept (two different byte strings never name one route, §3.1; the resume query's too). */
const routeUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Encodes the START prefix. Throws ERR_INVALID_ARGUMENT for a route or metadata over their limits. */
export function encodeStreamHead(h: StreamHead): Uint8Array {
  const route = utf8.encode(h.route);
  if (route.length === 0 || route.length > MAX_ROUTE_BYTES) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `route must be 1..${MAX_ROUTE_BYTES} bytes`);
  }
  if (h.meta.length > MAX_META_BYTES) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `stream metadata over ${MAX_META_BYTES} bytes`);
  }
  const totalField = h.total === undefined ? 0 : h.total + 1;
  const n =
    varintLength(totalField) +
    varintLength(h.offset) +
    (h.offset > 0 ? 4 : 0) +
    varintLength(route.length) +
    route.length +
    1 +
    varintLength(h.meta.length) +
    h.meta.length;
  const out = new Uint8Array(n);
  let p = writeVarint(out, 0, totalField);
  p = writeVarint(out, p, h.offset);
  if (h.offset > 0) p = writeU32(out, p, h.prefixCrc);
  p = writeVarint(out, p, route.length);
  out.set(route, p);
  p += route.length;
  out[p++] = h.codec;
  p = writeVarint(out, p, h.meta.length);
  out.set(h.meta, p);
  return out;
}

/**
 * Decodes the START prefix from `buf[start..end)`; returns it and where the
 * data begins. Its `meta` is a view of `buf` (decode it before `buf` is
 * reused): a copy was an ArrayBuffer per stream a peer opens.
 */
export function decodeStreamHead(buf: Uint8Array, start: number, end: number): { head: StreamHead; dataStart: number } {
  const v: VarintResult = { value: 0, next: 0 };
  const bad = (what: string) => protocolError(`bad STREAM start: ${what}`);
  if (readVarint(buf, start, end, 8, v) !== 1) throw bad("total");
  const total = v.value === 0 ? undefined : v.value - 1;
  if (readVarint(buf, v.next, end, 8, v) !== 1) throw bad("offset");
  const offset = v.value;
  let p = v.next;
  let prefixCrc = 0;
  if (offset > 0) {
    if (p + 4 > end) throw bad("prefix CRC");
    prefixCrc = readU32(buf, p);
    p += 4;
  }
  if (total !== undefined && offset > total) throw bad("offset past total");
  if (readVarint(buf, p, end, 2, v) !== 1 || v.value === 0 || v.value > MAX_ROUTE_BYTES) throw bad("route length");
  if (v.next + v.value > end) throw bad("route runs past the frame");
  let route: string;
  try {
    route = routeUtf8.decode(buf.subarray(v.next, v.next + v.value));
  } catch {
    throw bad("route is not UTF-8");
  }
  p = v.next + v.value;
  if (p >= end) throw bad("codec");
  const codec = buf[p++];
  if (readVarint(buf, p, end, 3, v) !== 1 || v.value > MAX_META_BYTES) throw bad("metadata length");
  if (v.next + v.value > end) throw bad("metadata runs past the frame");
  const meta = buf.subarray(v.next, v.next + v.value);
  return { head: { total, offset, prefixCrc, route, codec, meta }, dataStart: v.next + v.value };
}

/** Encodes a STREAM END payload: content length from byte 0 and CRC32C of all of it. */
export function encodeStreamEnd(length: number, crc: number): Uint8Array {
  const out = new Uint8Array(varintLength(length) + STREAM_CRC_LENGTH);
  writeU32(out, writeVarint(out, 0, length), crc);
  return out;
}

/** Decodes a STREAM END payload. */
export function decodeStreamEnd(buf: Uint8Array, start: number, end: number): { length: number; crc: number } {
  const v: VarintResult = { value: 0, next: 0 };
  if (readVarint(buf, start, end, 8, v) !== 1 || v.next + STREAM_CRC_LENGTH !== end) {
    throw protocolError("bad STREAM end trailer");
  }
  return { length: v.value, crc: readU32(buf, v.next) };
}

/** Encodes stream metadata (a plain object) as UTF-8 JSON; empty for none. */
export function encodeMeta(meta: Readonly<Record<string, unknown>> | undefined): Uint8Array {
  if (meta === undefined || Object.keys(meta).length === 0) return new Uint8Array(0);
  return utf8.encode(JSON.stringify(meta));
}

/** Decodes stream metadata; throws ERR_PROTOCOL if it is not a JSON object. */
export function decodeMeta(bytes: Uint8Array): Record<string, unknown> {
  if (bytes.length === 0) return {};
  let v: unknown;
  try {
    v = JSON.parse(fromUtf8.decode(bytes));
  } catch {
    throw protocolError("stream metadata is not UTF-8 JSON");
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    throw protocolError("stream metadata is not a JSON object");
  }
  return v as Record<string, unknown>;
}
