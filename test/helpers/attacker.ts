/**
 * Hostile-peer toolkit: builds pointsub frames byte by byte from
 * docs/PROTOCOL.md (valid ones, and ones broken on purpose, with a correct
 * CRC32C recomputed after the damage so that it reaches the logic behind the
 * checksum), mutates them, parses what a server answers, and drives a raw
 * TCP peer through the handshake.
 *
 * Everything here is written from the wire format, not from the encoder in
 * src/ (only CRC32C is shared), so that the attacks keep working while the
 * implementation changes, and so that a bug in the encoder cannot hide the
 * same bug in the decoder. Used by scripts/attack/ and by regression tests:
 *
 * ```ts
 * const peer = await connectPeer({ port, read: "parse" });
 * peer.write(concat(req(1, "/echo/1.0.0", utf8("a")), req(0x80000001, "/echo/1.0.0", utf8("b"))));
 * ```
 */

import { createRequire } from "node:module";
import net from "node:net";
import zlib from "node:zlib";
import { crc32c, setCrc32cImplementation } from "../../src/codec/crc32c.ts";
import { crc32cCombine } from "../../src/codec/crc32c-combine.ts";

// ------------------------------------------------------------ wire constants

/** Frame types (high nibble), docs/PROTOCOL.md §2.1. */
export const T = {
  HELLO: 0x0,
  MSG: 0x1,
  REQ: 0x2,
  RES: 0x3,
  CANCEL: 0x4,
  CREDIT: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  BATCH: 0x8,
  STREAM: 0x9,
  AUTH: 0xa,
} as const;

/** Frame flags (low nibble). */
export const F = { START: 0x1, END: 0x2, ACK: 0x1, COMPRESSED: 0x4 } as const;

export const TYPE_NAMES = [
  "HELLO",
  "MSG",
  "REQ",
  "RES",
  "CANCEL",
  "CREDIT",
  "PING",
  "GOAWAY",
  "BATCH",
  "STREAM",
  "AUTH",
];

/** Errnos of docs/PROTOCOL.md §7 (the ones an attacker sends or expects back). */
export const ERRNO: Readonly<Record<number, string>> = {
  0: "OK",
  1001: "ERR_TIMEOUT",
  1002: "ERR_CONNECTION_CLOSED",
  1003: "ERR_CONNECT",
  1004: "ERR_KEEPALIVE",
  2001: "ERR_FLOW_CONTROL",
  2002: "ERR_TOO_MANY_REQUESTS",
  2003: "ERR_OVERLOADED",
  2004: "ERR_SLOW_PEER",
  2005: "ERR_QUOTA",
  3001: "ERR_PROTOCOL",
  3002: "ERR_CHECKSUM",
  3003: "ERR_VERSION",
  3004: "ERR_FRAME_TOO_LARGE",
  4001: "ERR_MESSAGE_TOO_LARGE",
  4002: "ERR_NO_ROUTE",
  4003: "ERR_HANDLER",
  4004: "ERR_CANCELLED",
  4005: "ERR_INVALID_ARGUMENT",
  4006: "ERR_UNSUPPORTED_URL",
  4007: "ERR_GOING_AWAY",
  4008: "ERR_SOURCE",
  4009: "ERR_COMPRESSION",
  4010: "ERR_RESUME",
  4011: "ERR_UNAUTHORIZED",
  4012: "ERR_EXISTS",
};

/** Name of an errno (`errno:<n>` for ones §7 does not list). */
export function errnoName(errno: number): string {
  return ERRNO[errno] ?? `errno:${errno}`;
}

export const MAGIC = [0x50, 0x53, 0x55, 0x42] as const;
export const ECHO_ROUTE = "/echo/1.0.0";
export const RESUME_ROUTE = "/pointsub/resume/1";
export const FILE_ROUTE = "/pointsub/file/1.0.0";

/** HELLO settings (docs/PROTOCOL.md §4), by name, in key order 1..11. */
export interface WireSettings {
  maxFrameSize: number;
  maxMessageSize: number;
  checksum: number;
  features: number;
  compression: number;
  connectionWindow: number;
  streamWindow: number;
  maxConcurrentRequests: number;
  maxAssemblyBytes: number;
  maxConcurrentStreams: number;
  /** Key 11: largest declared length / block length of one COMPRESSED frame the sender of the HELLO accepts. */
  maxCompressionRatio: number;
}

export const SETTING_KEYS: readonly (keyof WireSettings)[] = [
  "maxFrameSize",
  "maxMessageSize",
  "checksum",
  "features",
  "compression",
  "connectionWindow",
  "streamWindow",
  "maxConcurrentRequests",
  "maxAssemblyBytes",
  "maxConcurrentStreams",
  "maxCompressionRatio",
];

const MIB = 1024 * 1024;

/** The §4 defaults (maxAssemblyBytes: maxMessageSize + 64 MiB). */
export const WIRE_DEFAULTS: Readonly<WireSettings> = {
  maxFrameSize: MIB,
  maxMessageSize: 256 * MIB,
  checksum: 1,
  features: 0,
  compression: 0,
  connectionWindow: 16 * MIB,
  streamWindow: 4 * MIB,
  maxConcurrentRequests: 1024,
  maxAssemblyBytes: 256 * MIB + 64 * MIB,
  maxConcurrentStreams: 64,
  maxCompressionRatio: 1024,
};

/** What an attacker announces by default: streams, resume and every codec, so every code path is open. */
export const ATTACKER_SETTINGS: Readonly<WireSettings> = { ...WIRE_DEFAULTS, features: 3, compression: 0xf };

// ------------------------------------------------------------------- bytes

const EMPTY = new Uint8Array(0);
const textEncoder = new TextEncoder();

export function utf8(s: string): Uint8Array {
  return textEncoder.encode(s);
}

/**
 * Makes {@link crc32c} use `@node-rs/crc32` (the project's optional native
 * CRC32C) for inputs of 256 bytes and more, as the library's Node entry
 * point does; returns false when it is not installed.
 */
export function useNativeCrc32c(): boolean {
  try {
    const mod = createRequire(import.meta.url)("@node-rs/crc32") as {
      crc32c(input: Uint8Array, initial?: number): number;
    };
    if (mod.crc32c(utf8("123456789")) !== 0xe3069283) return false;
    setCrc32cImplementation(mod.crc32c, "@node-rs/crc32", 256);
    return true;
  } catch {
    return false;
  }
}

/** Concatenates byte arrays into one new array. */
export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Minimal unsigned LEB128 of any integer up to 2^53 − 1. */
export function varint(value: number): Uint8Array {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`varint of ${value}`);
  const out: number[] = [];
  let v = value;
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Uint8Array.from(out);
}

/** A non-minimal (padded) varint of `value`: `extra` more bytes than needed (a protocol error to receive). */
export function paddedVarint(value: number, extra: number): Uint8Array {
  const v = varint(value);
  const out = new Uint8Array(v.length + extra);
  out.set(v);
  for (let i = 0; i < v.length + extra - 1; i++) out[i] |= 0x80;
  return out;
}

export function u16(n: number): Uint8Array {
  return Uint8Array.of((n >>> 8) & 0xff, n & 0xff);
}

export function u32(n: number): Uint8Array {
  return Uint8Array.of((n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/** Reads a varint at `pos` (at most `max` bytes); undefined when incomplete or invalid. */
export function readVarintAt(
  buf: Uint8Array,
  pos: number,
  end: number,
  max: number,
): { value: number; next: number } | undefined {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < max && pos + i < end; i++) {
    const b = buf[pos + i];
    value += (b & 0x7f) * scale;
    if ((b & 0x80) === 0) return { value, next: pos + i + 1 };
    scale *= 128;
  }
  return undefined;
}

// ------------------------------------------------------------------ frames

/** Options of {@link frame}: how to break it. */
export interface FrameOptions {
  /** CRC trailer: true (correct, the default), false (none: checksums off), or an explicit value. */
  crc?: boolean | number;
  /** Raw bytes to use for the stream id field instead of its minimal varint. */
  idBytes?: Uint8Array;
  /** Raw bytes to use for the length field instead of the payload's length. */
  lengthBytes?: Uint8Array;
}

/** The header of a frame: type|flags, varint id, varint length. */
export function header(type: number, flags: number, id: number, length: number): Uint8Array {
  return concat(Uint8Array.of(((type & 0xf) << 4) | (flags & 0xf)), varint(id >>> 0), varint(length));
}

/** One frame: header, payload and (by default) its correct CRC32C. */
export function frame(type: number, flags: number, id: number, payload: Uint8Array, o: FrameOptions = {}): Uint8Array {
  const head = concat(
    Uint8Array.of(((type & 0xf) << 4) | (flags & 0xf)),
    o.idBytes ?? varint(id >>> 0),
    o.lengthBytes ?? varint(payload.length),
  );
  const crc = o.crc ?? true;
  const out = new Uint8Array(head.length + payload.length + (crc === false ? 0 : 4));
  out.set(head, 0);
  out.set(payload, head.length);
  if (crc !== false) {
    const value = crc === true ? crc32c(out.subarray(0, head.length + payload.length)) : crc;
    out.set(u32(value), head.length + payload.length);
  }
  return out;
}

/** A frame without CRC trailer, as it appears inside a BATCH. */
export function inner(type: number, flags: number, id: number, payload: Uint8Array): Uint8Array {
  return frame(type, flags, id, payload, { crc: false });
}

/** Rewrites the last 4 bytes of `bytes` as the CRC32C of everything before them (in place). */
export function recomputeCrc(bytes: Uint8Array): Uint8Array {
  if (bytes.length >= 4) bytes.set(u32(crc32c(bytes.subarray(0, bytes.length - 4))), bytes.length - 4);
  return bytes;
}

/** Appends the CRC32C of `bytes` (turns a batch-inner frame into a standalone one). */
export function withCrc(bytes: Uint8Array): Uint8Array {
  return concat(bytes, u32(crc32c(bytes)));
}

/** The 6-byte preface. */
export function preface(minVersion = 1, maxVersion = 1): Uint8Array {
  return Uint8Array.of(...MAGIC, minVersion, maxVersion);
}

/** A HELLO payload from named settings, or from raw (key, value) pairs (repeats, unknown keys...). */
export function helloPayload(settings: Partial<WireSettings> | readonly (readonly [number, number])[]): Uint8Array {
  const pairs: (readonly [number, number])[] = [];
  if (Array.isArray(settings)) {
    pairs.push(...(settings as readonly (readonly [number, number])[]));
  } else {
    const s = { ...ATTACKER_SETTINGS, ...(settings as Partial<WireSettings>) };
    SETTING_KEYS.forEach((k, i) => {
      pairs.push([i + 1, s[k]]);
    });
  }
  return concat(...pairs.flatMap(([k, v]) => [varint(k), varint(v)]));
}

export function hello(settings: Partial<WireSettings> | readonly (readonly [number, number])[] = {}): Uint8Array {
  return frame(T.HELLO, 0, 0, helloPayload(settings));
}

/** Preface and HELLO: what a well-behaved client sends first. */
export function handshake(settings: Partial<WireSettings> = {}): Uint8Array {
  return concat(preface(), hello(settings));
}

/** Decodes a HELLO payload (missing keys take their defaults); undefined if malformed. */
export function decodeHello(payload: Uint8Array): WireSettings | undefined {
  const s: WireSettings = { ...WIRE_DEFAULTS };
  let assembly = false;
  let pos = 0;
  while (pos < payload.length) {
    const k = readVarintAt(payload, pos, payload.length, 8);
    if (k === undefined) return undefined;
    const v = readVarintAt(payload, k.next, payload.length, 8);
    if (v === undefined) return undefined;
    pos = v.next;
    const name = SETTING_KEYS[k.value - 1];
    if (name !== undefined) s[name] = v.value;
    if (k.value === 9) assembly = true;
  }
  if (!assembly) s.maxAssemblyBytes = s.maxMessageSize + 64 * MIB;
  return s;
}

// -------------------------------------------------------- message builders

/** A one-way message in one frame (START|END). */
export function msg(id: number, data: Uint8Array, o?: FrameOptions): Uint8Array {
  return frame(T.MSG, F.START | F.END, id, data, o);
}

/** The START frame of a chunked message of `total` data bytes (MSG, REQ or RES); `route` for REQ, status for RES. */
export function chunkStart(
  type: number,
  id: number,
  total: number,
  data: Uint8Array,
  extra: { route?: string; status?: number } = {},
  o?: FrameOptions,
): Uint8Array {
  const parts: Uint8Array[] = [varint(total)];
  if (type === T.REQ) parts.push(routeBytes(extra.route ?? ECHO_ROUTE));
  if (type === T.RES) parts.push(Uint8Array.of(extra.status ?? 0));
  parts.push(data);
  return frame(type, F.START, id, concat(...parts), o);
}

/** A continuation frame of a chunked message (flags 0, or END). */
export function chunk(type: number, id: number, data: Uint8Array, end: boolean, o?: FrameOptions): Uint8Array {
  return frame(type, end ? F.END : 0, id, data, o);
}

/** `varint length` + UTF-8 route (1..1024 bytes when valid). */
export function routeBytes(route: string): Uint8Array {
  const r = utf8(route);
  return concat(varint(r.length), r);
}

/** A request in one frame (START|END). */
export function req(id: number, route: string, data: Uint8Array, o?: FrameOptions): Uint8Array {
  return frame(T.REQ, F.START | F.END, id, concat(routeBytes(route), data), o);
}

/** A whole request of any size as frames: one frame when it fits `maxFrame`, else START, middles, END. */
export function requestFrames(id: number, route: string, data: Uint8Array, maxFrame: number): Uint8Array[] {
  const r = routeBytes(route);
  if (r.length + data.length <= maxFrame) return [req(id, route, data)];
  const total = varint(data.length);
  const first = maxFrame - r.length - total.length;
  const out = [chunkStart(T.REQ, id, data.length, data.subarray(0, first), { route })];
  for (let p = first; p < data.length; p += maxFrame) {
    const end = Math.min(data.length, p + maxFrame);
    out.push(chunk(T.REQ, id, data.subarray(p, end), end === data.length));
  }
  return out;
}

/** A response in one frame: status OK and data. */
export function res(id: number, data: Uint8Array, o?: FrameOptions): Uint8Array {
  return frame(T.RES, F.START | F.END, id, concat(Uint8Array.of(0), data), o);
}

/** An error response (§3.5). */
export function resError(id: number, errno: number, code: string, message: string): Uint8Array {
  const c = utf8(code);
  const m = utf8(message);
  return frame(
    T.RES,
    F.START | F.END,
    id,
    concat(Uint8Array.of(1), u16(errno), varint(c.length), c, varint(m.length), m),
  );
}

export function cancel(id: number, errno = 4004, o?: FrameOptions): Uint8Array {
  return frame(T.CANCEL, 0, id, u16(errno), o);
}

export function credit(id: number, n: number, o?: FrameOptions): Uint8Array {
  return frame(T.CREDIT, 0, id, varint(n), o);
}

export function ping(data: Uint8Array = new Uint8Array(8), ack = false, o?: FrameOptions): Uint8Array {
  return frame(T.PING, ack ? F.ACK : 0, 0, data, o);
}

export function goaway(errno = 0, reason = "", o?: FrameOptions): Uint8Array {
  return frame(T.GOAWAY, 0, 0, concat(u16(errno), utf8(reason)), o);
}

/** A BATCH of frames given without their CRC (see {@link inner}). */
export function batch(inners: readonly Uint8Array[], o?: FrameOptions): Uint8Array {
  return frame(T.BATCH, 0, 0, concat(...inners), o);
}

// ----------------------------------------------------------------- streams

/** Codec ids of STREAM START (§3.10) and their HELLO bit `1 << (id - 1)`. */
export const CODEC = { none: 0, "deflate-raw": 1, gzip: 2, zstd: 3, brotli: 4 } as const;
export type CodecName = "deflate-raw" | "gzip" | "zstd" | "brotli";
export const CODEC_NAMES: readonly CodecName[] = ["deflate-raw", "gzip", "zstd", "brotli"];

/** Fields of a STREAM START payload (§3.10). */
export interface StreamHeadFields {
  /** Content length, or undefined when unknown (sent as total + 1, or 0). */
  total?: number;
  offset?: number;
  prefixCrc?: number;
  route: string;
  codec?: number;
  /** A JSON object (encoded), raw bytes, or nothing. */
  meta?: Readonly<Record<string, unknown>> | Uint8Array;
}

export function streamHead(h: StreamHeadFields): Uint8Array {
  const offset = h.offset ?? 0;
  const meta =
    h.meta === undefined
      ? EMPTY
      : h.meta instanceof Uint8Array
        ? h.meta
        : Object.keys(h.meta).length === 0
          ? EMPTY
          : utf8(JSON.stringify(h.meta));
  return concat(
    varint(h.total === undefined ? 0 : h.total + 1),
    varint(offset),
    offset > 0 ? u32(h.prefixCrc ?? 0) : EMPTY,
    routeBytes(h.route),
    Uint8Array.of(h.codec ?? 0),
    varint(meta.length),
    meta,
  );
}

export function streamStart(id: number, h: StreamHeadFields, data: Uint8Array = EMPTY, o?: FrameOptions): Uint8Array {
  return frame(T.STREAM, F.START, id, concat(streamHead(h), data), o);
}

export function streamData(id: number, payload: Uint8Array, compressed = false, o?: FrameOptions): Uint8Array {
  return frame(T.STREAM, compressed ? F.COMPRESSED : 0, id, payload, o);
}

/** STREAM END: content length from byte 0 and CRC32C of all of it. */
export function streamEnd(id: number, length: number, contentCrc: number, o?: FrameOptions): Uint8Array {
  return frame(T.STREAM, F.END, id, concat(varint(length), u32(contentCrc)), o);
}

// ------------------------------------------------------------- compression

/**
 * How a COMPRESSED frame's payload is laid out. `length-prefixed`
 * (docs/PROTOCOL.md §3.10): `varint decompressed length` (1..4 bytes), then
 * one codec block. `plain`: the block alone (the layout before the
 * declared length; kept to attack older builds). Adapt
 * {@link compressedPayload} if the format changes again.
 */
export type CompressedFormat = "plain" | "length-prefixed";

/**
 * Reads docs/PROTOCOL.md's text and says which COMPRESSED layout §3.10
 * describes: length-prefixed when its Data item (up to the next top-level
 * bullet, its field table included) mentions a varint length before the
 * block.
 */
export function detectCompressedFormat(protocolMd: string): CompressedFormat {
  const start = protocolMd.indexOf("### 3.10");
  const end = protocolMd.indexOf("### 3.11", start + 1);
  const section = start < 0 ? protocolMd : protocolMd.slice(start, end < 0 ? undefined : end);
  const data = /\*\s+\*\*Data\*\*[\s\S]*?(?=\n\*\s+\*\*|$)/.exec(section)?.[0] ?? "";
  return /varint|decompressed length|uncompressed length|decompresses to/i.test(data) ? "length-prefixed" : "plain";
}

/** Compresses synchronously with node:zlib at its strongest settings (bombs want the best ratio). */
export function compressBlock(codec: CodecName, content: Uint8Array, effort: "best" | "fast" = "best"): Uint8Array {
  const best = effort === "best";
  switch (codec) {
    case "deflate-raw":
      return zlib.deflateRawSync(content, { level: best ? 9 : 1 });
    case "gzip":
      return zlib.gzipSync(content, { level: best ? 9 : 1 });
    case "brotli":
      return zlib.brotliCompressSync(content, {
        params: {
          [zlib.constants.BROTLI_PARAM_QUALITY]: best ? 11 : 1,
          [zlib.constants.BROTLI_PARAM_SIZE_HINT]: content.length,
        },
      });
    case "zstd": {
      const z = zlib as unknown as Record<string, unknown>;
      const fn = z.zstdCompressSync as ((d: Uint8Array, o?: object) => Buffer) | undefined;
      if (fn === undefined) throw new Error("this Node.js has no zstd");
      const c = zlib.constants as unknown as Record<string, number>;
      return fn(content, { params: { [c.ZSTD_c_compressionLevel]: best ? 19 : 1 } });
    }
  }
}

/**
 * The payload of one COMPRESSED STREAM frame carrying `content`, in the
 * given layout. `declaredLength` (length-prefixed only) lets the frame lie
 * about its decompressed size.
 */
export function compressedPayload(
  codec: CodecName,
  content: Uint8Array,
  format: CompressedFormat,
  declaredLength = content.length,
  effort: "best" | "fast" = "best",
): Uint8Array {
  const block = compressBlock(codec, content, effort);
  return format === "plain" ? block : concat(varint(declaredLength), block);
}

const bombs = new Map<string, Uint8Array>();

/**
 * The COMPRESSED payload of `size` zero bytes (usually the receiver's
 * maxFrameSize), declaring `declaredLength`, cached. deflate/gzip reach
 * ~1015:1 on 1 MiB (just within the default maxCompressionRatio of 1024),
 * zstd ~20,000:1 and brotli ~75,000:1 (far beyond it). See
 * {@link compressedBomb} for bombs shaped against a receiver's limits.
 */
export function bombPayload(
  codec: CodecName,
  size: number,
  format: CompressedFormat,
  declaredLength = size,
): Uint8Array {
  const key = `${codec}/${size}/${format}/${declaredLength}`;
  let p = bombs.get(key);
  if (p === undefined) {
    p = compressedPayload(codec, new Uint8Array(size), format, declaredLength);
    bombs.set(key, p);
  }
  return p;
}

/**
 * Shapes of COMPRESSED frames against a receiver's maxFrameSize (F) and
 * maxCompressionRatio (R), in the length-prefixed layout, and what §3.10
 * says the receiver does with each ({@link BOMB_EXPECT}):
 *
 * - `within`: honest and as dense as allowed: F bytes (mostly zeros, a random
 *   prefix just long enough that the block is ≥ F / R), declared F. Accepted;
 *   charged F to the stream window; inflated only as the reader reads.
 * - `beyond`: declares more than R × block: F zeros (zstd, brotli: honest,
 *   ~20,000:1 and more), or for deflate/gzip, whose best is ~1015:1 at 1 MiB,
 *   fewer zeros than declared. The connection is closed with ERR_COMPRESSION
 *   before anything is inflated.
 * - `over-max-frame`: honest, within R, but declares F + 1: ERR_PROTOCOL, closed.
 * - `zero`: declares 0: ERR_PROTOCOL, closed.
 * - `bad-varint`: a 5-byte length varint: ERR_PROTOCOL, closed.
 * - `lie-small`: declares little (≤ 64 KiB, within R) but the block inflates
 *   to 16 × F: the stream fails with ERR_PROTOCOL (connection stays open);
 *   the receiver must stop inflating at the declared length.
 * - `lie-big`: declares F (within R) but the block (random data) inflates to
 *   ~F / R: the stream fails with ERR_PROTOCOL.
 * - `garbage`: declares F / 2 (within R), the block is random bytes: the
 *   stream fails with ERR_PROTOCOL.
 */
export type BombKind =
  | "within"
  | "beyond"
  | "over-max-frame"
  | "zero"
  | "bad-varint"
  | "lie-small"
  | "lie-big"
  | "garbage";

/** What the receiver must do with each {@link BombKind}: accept it, close the connection (GOAWAY errno), or fail the stream (errno). */
export const BOMB_EXPECT: Readonly<Record<BombKind, { accept: true } | { goaway: number } | { streamError: number }>> =
  {
    within: { accept: true },
    beyond: { goaway: 4009 },
    "over-max-frame": { goaway: 3001 },
    zero: { goaway: 3001 },
    "bad-varint": { goaway: 3001 },
    "lie-small": { streamError: 3001 },
    "lie-big": { streamError: 3001 },
    garbage: { streamError: 3001 },
  };

/** One shaped COMPRESSED payload (see {@link BombKind}). */
export interface CompressedBomb {
  kind: BombKind;
  codec: CodecName;
  /** The frame payload: varint declared length, then the block. */
  payload: Uint8Array;
  /** The declared decompressed length (NaN for bad-varint). */
  declared: number;
  block: number;
  /** What the block really inflates to (undefined: it does not decompress). */
  inflatesTo: number | undefined;
  /** CRC32C of the real content (for honest frames: what END must carry). */
  crc: number;
  /** Stream window charge on the receiver: max(payload, declared). */
  windowCost: number;
}

const shaped = new Map<string, CompressedBomb>();

/**
 * A COMPRESSED payload of the given {@link BombKind} for a receiver with
 * `maxFrameSize` and `ratio` (its maxCompressionRatio), cached per process.
 * Deterministic (fixed seed).
 */
export function compressedBomb(
  codec: CodecName,
  kind: BombKind,
  limits: { maxFrameSize: number; ratio: number },
): CompressedBomb {
  const F = limits.maxFrameSize;
  const R = limits.ratio;
  const key = `${codec}/${kind}/${F}/${R}`;
  const hit = shaped.get(key);
  if (hit !== undefined) return hit;
  const r = xorshift(0x5eed + F + R + kind.length * 31 + codec.length);
  /** `size` bytes, zeros after a random prefix long enough that the block is ≥ size / R. */
  const dense = (size: number): { content: Uint8Array; block: Uint8Array } => {
    let prefix = 0;
    for (let i = 0; ; i++) {
      const content = new Uint8Array(size);
      content.set(randomBytes(r, Math.min(size, prefix)));
      const block = compressBlock(codec, content);
      if (size <= block.length * R || prefix >= size || i > 20) return { content, block };
      prefix += Math.ceil(size / R) - block.length + 16;
    }
  };
  let declared: number;
  let declaredBytes: Uint8Array;
  let block: Uint8Array;
  let inflatesTo: number | undefined;
  let crc = 0;
  switch (kind) {
    case "within":
    case "over-max-frame": {
      const d = dense(kind === "within" ? F : F + 1);
      block = d.block;
      declared = d.content.length;
      inflatesTo = declared;
      crc = crc32c(d.content);
      break;
    }
    case "beyond": {
      // Largest count of zeros whose block still leaves F beyond R × block.
      let n = F;
      block = compressBlock(codec, new Uint8Array(n));
      while (F <= block.length * R && n > 64) {
        n = Math.floor(n / 2);
        block = compressBlock(codec, new Uint8Array(n));
      }
      declared = F;
      inflatesTo = n;
      crc = crc32c(new Uint8Array(n));
      break;
    }
    case "zero":
    case "bad-varint": {
      const d = dense(Math.min(F, 4096));
      block = d.block;
      declared = kind === "zero" ? 0 : Number.NaN;
      inflatesTo = d.content.length;
      crc = crc32c(d.content);
      break;
    }
    case "lie-small": {
      const n = 16 * F;
      block = compressBlock(codec, new Uint8Array(n));
      declared = Math.max(1, Math.min(64 * 1024, F, block.length * R));
      inflatesTo = n;
      break;
    }
    case "lie-big": {
      const content = randomBytes(r, Math.max(64, Math.ceil(F / R) + 64));
      block = compressBlock(codec, content);
      declared = Math.min(F, block.length * R);
      inflatesTo = content.length;
      crc = crc32c(content);
      break;
    }
    case "garbage": {
      block = randomBytes(r, Math.max(64, Math.ceil(F / 2 / R) + 64));
      declared = Math.min(Math.floor(F / 2), block.length * R);
      inflatesTo = undefined;
      break;
    }
  }
  if (kind === "bad-varint") declaredBytes = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f);
  else declaredBytes = varint(declared);
  const payload = concat(declaredBytes, block);
  const out: CompressedBomb = {
    kind,
    codec,
    payload,
    declared,
    block: block.length,
    inflatesTo,
    crc,
    windowCost: Number.isNaN(declared) ? payload.length : Math.max(payload.length, declared),
  };
  shaped.set(key, out);
  return out;
}

// ------------------------------------------------------ reading the answer

/** A frame received from the server. `payload` is undefined for frames over the reader's keep limit. */
export interface ParsedFrame {
  type: number;
  flags: number;
  id: number;
  length: number;
  payload: Uint8Array | undefined;
  /** Arrived inside a BATCH. */
  batched: boolean;
}

/**
 * Incremental parser of what a pointsub peer sends: preface, then frames
 * with CRC trailers (not verified), BATCH frames unpacked. Payloads larger
 * than `keepMax` are skipped without buffering (only their header is
 * reported), so a 16 MiB response costs nothing to read past.
 */
export class FrameReader {
  preface: Uint8Array | undefined;
  framesIn = 0;
  bytesIn = 0;
  /** Set when the bytes made no sense (the reader then ignores the rest). */
  broken: string | undefined;
  private readonly onFrame: (f: ParsedFrame) => void;
  private readonly keepMax: number;
  private readonly checksum: boolean;
  private buf: Uint8Array = EMPTY;
  private skip = 0;

  constructor(onFrame: (f: ParsedFrame) => void, options: { keepMax?: number; checksum?: boolean } = {}) {
    this.onFrame = onFrame;
    this.keepMax = options.keepMax ?? 64 * 1024;
    this.checksum = options.checksum ?? true;
  }

  push(chunk: Uint8Array): void {
    this.bytesIn += chunk.length;
    if (this.broken !== undefined) return;
    let c = chunk;
    if (this.skip > 0) {
      const n = Math.min(this.skip, c.length);
      this.skip -= n;
      c = c.subarray(n);
      if (c.length === 0) return;
    }
    let data = this.buf.length === 0 ? c : concat(this.buf, c);
    let pos = 0;
    if (this.preface === undefined) {
      if (data.length < 6) {
        this.buf = data.slice();
        return;
      }
      this.preface = data.slice(0, 6);
      pos = 6;
    }
    while (pos < data.length) {
      const start = pos;
      const b0 = data[pos];
      const id = readVarintAt(data, pos + 1, data.length, 5);
      if (id === undefined) {
        if (data.length - pos > 10) {
          this.fail("bad id varint");
          return;
        }
        break;
      }
      const len = readVarintAt(data, id.next, data.length, 4);
      if (len === undefined) {
        if (data.length - id.next > 4) {
          this.fail("bad length varint");
          return;
        }
        break;
      }
      const total = len.next - start + len.value + (this.checksum ? 4 : 0);
      const type = b0 >> 4;
      if (len.value > this.keepMax && type !== T.BATCH) {
        this.framesIn++;
        this.onFrame({ type, flags: b0 & 0xf, id: id.value, length: len.value, payload: undefined, batched: false });
        const have = data.length - start;
        if (have >= total) {
          pos = start + total;
          continue;
        }
        this.skip = total - have;
        pos = data.length;
        break;
      }
      if (data.length - start < total) break;
      const payload = data.subarray(len.next, len.next + len.value);
      pos = start + total;
      this.framesIn++;
      if (type === T.BATCH) this.unbatch(payload);
      else this.onFrame({ type, flags: b0 & 0xf, id: id.value, length: len.value, payload, batched: false });
      if (this.broken !== undefined) return;
    }
    this.buf = pos >= data.length ? EMPTY : data.slice(pos);
    data = EMPTY;
  }

  private unbatch(p: Uint8Array): void {
    let pos = 0;
    while (pos < p.length) {
      const b0 = p[pos];
      const id = readVarintAt(p, pos + 1, p.length, 5);
      const len = id === undefined ? undefined : readVarintAt(p, id.next, p.length, 4);
      if (id === undefined || len === undefined || len.next + len.value > p.length) {
        this.fail("bad BATCH");
        return;
      }
      const payload = p.subarray(len.next, len.next + len.value);
      this.onFrame({ type: b0 >> 4, flags: b0 & 0xf, id: id.value, length: len.value, payload, batched: true });
      pos = len.next + len.value;
    }
  }

  private fail(why: string): void {
    this.broken = why;
    this.buf = EMPTY;
  }
}

/** The errno and reason of a GOAWAY payload. */
export function parseGoaway(payload: Uint8Array): { errno: number; reason: string } {
  const errno = payload.length >= 2 ? (payload[0] << 8) | payload[1] : -1;
  return { errno, reason: new TextDecoder().decode(payload.subarray(2)) };
}

/** The body of an error response after its status byte (§3.5): errno, code and message. */
export function parseErrorBody(body: Uint8Array): { errno: number; code: string; message: string } {
  const dec = new TextDecoder();
  const errno = body.length >= 2 ? (body[0] << 8) | body[1] : -1;
  const code = readVarintAt(body, 2, body.length, 2);
  const codeEnd = code === undefined ? body.length : Math.min(body.length, code.next + code.value);
  const msg = readVarintAt(body, codeEnd, body.length, 2);
  return {
    errno,
    code: code === undefined ? "" : dec.decode(body.subarray(code.next, codeEnd)),
    message: msg === undefined ? "" : dec.decode(body.subarray(msg.next, Math.min(body.length, msg.next + msg.value))),
  };
}

/** The errno of a CANCEL payload. */
export function parseCancel(payload: Uint8Array): number {
  return payload.length >= 2 ? (payload[0] << 8) | payload[1] : -1;
}

/** A RES START payload: status, and for errors the errno; `data` is what follows the status byte. */
export function parseResStart(
  flags: number,
  payload: Uint8Array,
): { status: number; errno: number; data: Uint8Array; total: number | undefined } {
  let p = 0;
  let total: number | undefined;
  if ((flags & F.END) === 0) {
    const t = readVarintAt(payload, 0, payload.length, 8);
    total = t?.value;
    p = t?.next ?? payload.length;
  }
  const status = payload[p] ?? -1;
  const errno = status === 1 && p + 3 <= payload.length ? (payload[p + 1] << 8) | payload[p + 2] : 0;
  return { status, errno, data: payload.subarray(p + 1), total };
}

// ---------------------------------------------------------------- a peer

/** Credit the server granted to this peer (§3.6), from its HELLO and its CREDIT frames. */
export class CreditLedger {
  conn: number;
  private readonly window: number;
  private readonly streams = new Map<number, number>();
  private waiters: (() => void)[] = [];

  constructor(peer: WireSettings) {
    this.conn = peer.connectionWindow;
    this.window = peer.streamWindow;
  }

  /** Starts tracking a chunked message or stream on `id` (its window). */
  open(id: number): void {
    this.streams.set(id, this.window);
  }

  close(id: number): void {
    this.streams.delete(id);
  }

  /** Credit available for a frame of `id` (the smaller of the connection's and the stream's). */
  available(id: number): number {
    const s = this.streams.get(id);
    return s === undefined ? this.conn : Math.min(this.conn, s);
  }

  /**
   * Spends `n` bytes of connection credit and `streamN` (default `n`) of
   * stream `id`'s window: a COMPRESSED frame costs its payload on the
   * connection and max(payload, declared length) on the stream (§3.10).
   */
  spend(id: number, n: number, streamN = n): void {
    this.conn -= n;
    const s = this.streams.get(id);
    if (s !== undefined) this.streams.set(id, s - streamN);
  }

  /** Stream credit left on `id` (undefined when not tracked). */
  streamLeft(id: number): number | undefined {
    return this.streams.get(id);
  }

  /** A CREDIT frame arrived. */
  grant(id: number, n: number): void {
    if (id === 0) this.conn += n;
    else {
      const s = this.streams.get(id);
      if (s !== undefined) this.streams.set(id, s + n);
    }
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves on the next CREDIT frame (or after `ms`). */
  changed(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

/** Options of {@link connectPeer}. */
export interface PeerOptions {
  port: number;
  /** Always 127.0.0.1 unless told otherwise. */
  host?: string;
  /** What to send on connecting: preface and HELLO (default), the preface only, or nothing. */
  handshake?: "full" | "preface" | "none";
  /** This peer's HELLO settings (over {@link ATTACKER_SETTINGS}). */
  settings?: Partial<WireSettings>;
  /**
   * After the handshake: parse every frame (tracking credit and GOAWAY),
   * discard the bytes unparsed, or stop reading altogether (the socket is
   * paused once the server's HELLO arrived, so its writes back up).
   */
  read?: "parse" | "discard" | "paused";
  /** Wait for the server's preface and HELLO before resolving (default: with a full handshake). */
  waitForHello?: boolean;
  /** Called for every parsed frame (read "parse"). */
  onFrame?: (f: ParsedFrame) => void;
  /** Bytes buffered in the socket beyond which {@link Peer.send} waits for 'drain'. Default 1 MiB. */
  highWater?: number;
  timeoutMs?: number;
}

/** A raw peer connected to a pointsub server. */
export interface Peer {
  socket: net.Socket;
  /** The server's settings (once its HELLO arrived). */
  server: WireSettings | undefined;
  credit: CreditLedger | undefined;
  /** The GOAWAY the server sent, if any. */
  goaway: { errno: number; reason: string } | undefined;
  reader: FrameReader;
  readonly closed: Promise<void>;
  readonly isClosed: boolean;
  bytesOut: number;
  /** Writes without waiting; false once the connection is gone. */
  write(bytes: Uint8Array): boolean;
  /** Writes, then waits for 'drain' when over the high-water mark; false once the connection is gone. */
  send(bytes: Uint8Array): Promise<boolean>;
  /** Resolves on the socket's next 'drain' or 'close' (one shared listener however many wait). */
  drained(): Promise<void>;
  destroy(): void;
}

/** Connects a raw peer to a server on loopback and (by default) completes the handshake. */
export function connectPeer(o: PeerOptions): Promise<Peer> {
  const host = o.host ?? "127.0.0.1";
  const mode = o.handshake ?? "full";
  const readMode = o.read ?? "parse";
  const highWater = o.highWater ?? MIB;
  const waitForHello = o.waitForHello ?? mode === "full";
  return new Promise<Peer>((resolve, reject) => {
    const socket = net.connect({ port: o.port, host, noDelay: true });
    let settled = false;
    let closedFlag = false;
    let helloResolve: (() => void) | undefined;
    let drainP: Promise<void> | undefined;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      socket.destroy();
      reject(new Error(`connect/handshake to ${host}:${o.port} timed out`));
    }, o.timeoutMs ?? 10_000);
    const peer: Peer = {
      socket,
      server: undefined,
      credit: undefined,
      goaway: undefined,
      reader: new FrameReader((f) => {
        if (f.type === T.HELLO && peer.server === undefined && f.payload !== undefined) {
          peer.server = decodeHello(f.payload);
          if (peer.server !== undefined) peer.credit = new CreditLedger(peer.server);
          helloResolve?.();
        } else if (f.type === T.CREDIT && f.payload !== undefined) {
          const n = readVarintAt(f.payload, 0, f.payload.length, 5);
          if (n !== undefined) peer.credit?.grant(f.id, n.value);
        } else if (f.type === T.GOAWAY && f.payload !== undefined && peer.goaway === undefined) {
          peer.goaway = parseGoaway(f.payload);
        }
        o.onFrame?.(f);
      }),
      closed: new Promise<void>((r) => socket.once("close", () => r())),
      get isClosed() {
        return closedFlag;
      },
      bytesOut: 0,
      write(bytes) {
        if (closedFlag || socket.destroyed || !socket.writable) return false;
        peer.bytesOut += bytes.length;
        socket.write(bytes);
        return true;
      },
      async send(bytes) {
        if (!peer.write(bytes)) return false;
        if (socket.writableLength > highWater) await peer.drained();
        return !closedFlag;
      },
      drained() {
        if (drainP === undefined) {
          drainP = new Promise<void>((r) => {
            const done = () => {
              socket.off("drain", done);
              socket.off("close", done);
              drainP = undefined;
              r();
            };
            socket.on("drain", done);
            socket.on("close", done);
          });
        }
        return drainP;
      },
      destroy() {
        socket.destroy();
      },
    };
    socket.on("error", () => {});
    socket.once("close", () => {
      closedFlag = true;
      clearTimeout(timer);
      if (!settled) {
        settled = true;
        reject(new Error("closed during the handshake"));
      }
    });
    socket.once("end", () => {
      closedFlag = true;
      socket.destroy();
    });
    let helloSeen = false;
    socket.on("data", (c: Buffer) => {
      if (readMode === "discard" && helloSeen) {
        peer.reader.bytesIn += c.length;
        return;
      }
      peer.reader.push(c);
    });
    const ready = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(peer);
    };
    helloResolve = () => {
      helloSeen = true;
      if (readMode === "paused") socket.pause();
      if (waitForHello) ready();
    };
    socket.once("connect", () => {
      if (mode === "full") peer.write(handshake(o.settings));
      else if (mode === "preface") peer.write(preface());
      if (!waitForHello) {
        if (readMode === "paused" && mode !== "full") socket.pause();
        ready();
      }
    });
  });
}

// --------------------------------------------------------------- mutation

/** A deterministic PRNG (xorshift32): the same seed gives the same attack. */
export type Rng = () => number;

export function xorshift(seed: number): Rng {
  let x = seed | 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

export function randInt(r: Rng, n: number): number {
  return Math.floor(r() * n);
}

export function pick<X>(r: Rng, xs: readonly X[]): X {
  return xs[Math.floor(r() * xs.length)];
}

export function randomBytes(r: Rng, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 256) | 0;
  return out;
}

/** Where the fields of a frame lie (parsed from its own bytes); undefined if its header is unreadable. */
export function frameLayout(
  bytes: Uint8Array,
): { idStart: number; lenStart: number; payloadStart: number; payloadEnd: number } | undefined {
  const id = readVarintAt(bytes, 1, bytes.length, 5);
  if (id === undefined) return undefined;
  const len = readVarintAt(bytes, id.next, bytes.length, 4);
  if (len === undefined) return undefined;
  return { idStart: 1, lenStart: id.next, payloadStart: len.next, payloadEnd: len.next + len.value };
}

/** Byte-level mutation operators of {@link mutateFrame}. */
export const MUTATIONS = [
  "flip-type-flags",
  "random-flags",
  "type-swap",
  "flip-id",
  "id-collide",
  "id-special",
  "id-overlong",
  "flip-length",
  "length-huge",
  "length-lie",
  "flip-payload",
  "byte-payload",
  "shrink",
  "extend",
  "insert-byte",
  "delete-byte",
  "truncate-raw",
  "zero-payload",
] as const;
export type MutationName = (typeof MUTATIONS)[number];

/** A transfer id a file sink accepts: 40 characters of [A-Za-z0-9_-]. */
export function transferId(r: Rng): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
  let s = "";
  for (let i = 0; i < 40; i++) s += alphabet[randInt(r, alphabet.length)];
  return s;
}

/** Ids that share CallTable slots with `id` (same low bits modulo 2^k, same parity). */
export function collidingId(id: number, r: Rng): number {
  const k = 1 + randInt(r, 31);
  return (id + 2 ** k) % 2 ** 32 || 1;
}

const INTERESTING = [0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x40];

/**
 * Applies one frame-aware mutation to a frame (with or without CRC trailer:
 * `hasCrc`). Unless `keepCrcWrong`, the CRC is recomputed over the mutated
 * bytes so that the damage reaches the checks behind the checksum.
 */
export function mutateFrame(
  frameBytes: Uint8Array,
  r: Rng,
  options: { hasCrc?: boolean; recrc?: boolean; op?: MutationName } = {},
): { bytes: Uint8Array; op: MutationName } {
  const hasCrc = options.hasCrc ?? true;
  const recrc = options.recrc ?? true;
  const op = options.op ?? pick(r, MUTATIONS);
  const body = hasCrc ? frameBytes.subarray(0, frameBytes.length - 4) : frameBytes;
  const lay = frameLayout(body);
  let out: Uint8Array = body.slice();
  if (lay === undefined || out.length === 0) {
    out = concat(out, randomBytes(r, 1 + randInt(r, 8)));
  } else {
    const payload = body.subarray(lay.payloadStart, Math.min(body.length, lay.payloadEnd));
    const head0 = body[0];
    const id = readVarintAt(body, lay.idStart, body.length, 5)?.value ?? 1;
    const rebuild = (b0: number, idBytes: Uint8Array, lenBytes: Uint8Array | undefined, p: Uint8Array) =>
      concat(Uint8Array.of(b0), idBytes, lenBytes ?? varint(p.length), p);
    switch (op) {
      case "flip-type-flags":
        out[0] ^= 1 << randInt(r, 8);
        break;
      case "random-flags":
        out[0] = (head0 & 0xf0) | randInt(r, 16);
        break;
      case "type-swap":
        out[0] = (randInt(r, 16) << 4) | (head0 & 0x0f);
        break;
      case "flip-id":
        out[lay.idStart + randInt(r, lay.lenStart - lay.idStart)] ^= 1 << randInt(r, 8);
        break;
      case "id-collide":
        out = rebuild(head0, varint(collidingId(id, r)), undefined, payload);
        break;
      case "id-special":
        out = rebuild(
          head0,
          varint(pick(r, [0, 2, 0xffffffff, 0xfffffffe, 0x80000001, 0x40000001, (id ^ 1) >>> 0, randInt(r, 2 ** 32)])),
          undefined,
          payload,
        );
        break;
      case "id-overlong":
        out = rebuild(
          head0,
          r() < 0.5 ? paddedVarint(id, 1 + randInt(r, 2)) : varint(2 ** 32 + id),
          undefined,
          payload,
        );
        break;
      case "flip-length":
        out[lay.lenStart + randInt(r, lay.payloadStart - lay.lenStart)] ^= 1 << randInt(r, 8);
        break;
      case "length-huge":
        out = rebuild(
          head0,
          varint(id),
          pick(r, [
            varint(0x0fffffff),
            varint(16 * MIB),
            varint(MIB + 1),
            Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f),
            paddedVarint(payload.length, 1),
          ]),
          payload,
        );
        break;
      case "length-lie": {
        const delta = pick(r, [-4, -1, 1, 4, 100]);
        out = rebuild(head0, varint(id), varint(Math.max(0, payload.length + delta)), payload);
        break;
      }
      case "flip-payload":
        if (payload.length === 0) out[0] ^= 1 << randInt(r, 8);
        else
          for (let i = 0; i < 1 + randInt(r, 3); i++)
            out[lay.payloadStart + randInt(r, payload.length)] ^= 1 << randInt(r, 8);
        break;
      case "byte-payload":
        if (payload.length > 0) out[lay.payloadStart + randInt(r, Math.min(payload.length, 16))] = pick(r, INTERESTING);
        break;
      case "shrink":
        out = rebuild(head0, varint(id), undefined, payload.subarray(0, randInt(r, payload.length + 1)));
        break;
      case "extend":
        out = rebuild(head0, varint(id), undefined, concat(payload, randomBytes(r, 1 + randInt(r, 64))));
        break;
      case "insert-byte": {
        const at = randInt(r, payload.length + 1);
        out = rebuild(
          head0,
          varint(id),
          undefined,
          concat(payload.subarray(0, at), Uint8Array.of(pick(r, INTERESTING)), payload.subarray(at)),
        );
        break;
      }
      case "delete-byte": {
        if (payload.length === 0) break;
        const at = randInt(r, payload.length);
        out = rebuild(head0, varint(id), undefined, concat(payload.subarray(0, at), payload.subarray(at + 1)));
        break;
      }
      case "truncate-raw":
        out = out.subarray(0, randInt(r, out.length)).slice();
        break;
      case "zero-payload":
        out = rebuild(head0, varint(id), undefined, new Uint8Array(payload.length));
        break;
    }
  }
  if (!hasCrc) return { bytes: out, op };
  const withTrailer = concat(out, new Uint8Array(4));
  if (recrc) recomputeCrc(withTrailer);
  else withTrailer.set(frameBytes.subarray(frameBytes.length - 4), out.length);
  return { bytes: withTrailer, op };
}

// ------------------------------------------------------ template generator

/** A frame the generator produced: bytes, what it is, how it was mutated. */
export interface FuzzFrame {
  bytes: Uint8Array;
  template: string;
  /** The byte-level mutation applied, if any. */
  mutation: MutationName | undefined;
  /** The CRC was left wrong on purpose. */
  badCrc: boolean;
  /**
   * A hostile value went into it at the template level (a reused, colliding
   * or wrong-parity id, bogus credit, an impossible total, a bad route...).
   */
  hostile: boolean;
}

/** Knobs of {@link FrameFuzzer}. */
export interface FuzzOptions {
  /** Probability that a frame gets a byte-level mutation. */
  mutateRate: number;
  /** Probability that a mutated frame's CRC is recomputed. */
  recrcRate: number;
  /** Routes for REQ; the first is the echo route. */
  routes: readonly string[];
  /** Stream routes. */
  streamRoutes: readonly string[];
  /** The server's settings (its maxFrameSize etc.). */
  server: WireSettings;
  /** COMPRESSED payload layout. */
  compressedFormat: CompressedFormat;
  /**
   * 0..1 (default 1): how often the templates pick values likely to end the
   * connection at once (reused ids, wrong parity, bogus credit, impossible
   * totals, RES from a client...). Low values keep connections alive longer,
   * so the fuzz reaches state built up over many frames.
   */
  hostility?: number;
}

interface OpenChunked {
  type: number;
  id: number;
  total: number;
  sent: number;
}

interface OpenStream {
  id: number;
  codec: number;
  /** Declared content length, if any (a well-behaved sender keeps to it). */
  total: number | undefined;
  sent: number;
  crc: number;
  /** Stream window spent so far (the fuzzer reads no CREDIT: a well-behaved sender ends the stream before it runs out). */
  charged: number;
}

interface FuzzBlock {
  /** Content length (what an honest frame adds to the stream). */
  length: number;
  /** CRC32C of the content. */
  crc: number;
  payload: Uint8Array;
  /** Stream window charge: max(payload, declared length). */
  cost: number;
  /** A hostile shape (beyond the ratio, a lie...), see {@link BombKind}; undefined for honest blocks. */
  kind: BombKind | undefined;
}

const fuzzBlockCache = new Map<string, { honest: FuzzBlock[]; hostile: FuzzBlock[] }>();

const HOSTILE_BOMBS: readonly BombKind[] = [
  "beyond",
  "over-max-frame",
  "zero",
  "bad-varint",
  "lie-small",
  "lie-big",
  "garbage",
];

/**
 * COMPRESSED payloads per codec for the fuzzer (computed once per process).
 * Honest: a `within` bomb (maxFrameSize declared, as dense as the ratio
 * allows), random (incompressible) content and zeros of assorted sizes.
 * Hostile: every other {@link BombKind}. For an unknown codec id: garbage.
 */
function fuzzBlocks(
  codec: number,
  server: WireSettings,
  format: CompressedFormat,
): { honest: FuzzBlock[]; hostile: FuzzBlock[] } {
  const key = `${codec}/${server.maxFrameSize}/${server.maxCompressionRatio}/${format}`;
  let sets = fuzzBlockCache.get(key);
  if (sets !== undefined) return sets;
  const honest: FuzzBlock[] = [];
  const hostile: FuzzBlock[] = [];
  const r = xorshift(codec * 7 + 1);
  const name = CODEC_NAMES[codec - 1];
  const limits = { maxFrameSize: server.maxFrameSize, ratio: server.maxCompressionRatio };
  if (name === undefined) {
    for (let i = 0; i < 4; i++) {
      const payload = concat(varint(1 + randInt(r, 4096)), randomBytes(r, 40));
      hostile.push({ length: 0, crc: 0, payload, cost: payload.length, kind: "garbage" });
    }
    sets = { honest: hostile, hostile };
    fuzzBlockCache.set(key, sets);
    return sets;
  }
  if (format === "length-prefixed") {
    const w = compressedBomb(name, "within", limits);
    honest.push({ length: w.declared, crc: w.crc, payload: w.payload, cost: w.windowCost, kind: undefined });
    for (const kind of HOSTILE_BOMBS) {
      const b = compressedBomb(name, kind, limits);
      hostile.push({ length: b.inflatesTo ?? 0, crc: b.crc, payload: b.payload, cost: b.windowCost, kind });
    }
  } else {
    const payload = bombPayload(name, server.maxFrameSize, format);
    hostile.push({
      length: server.maxFrameSize,
      crc: crc32c(new Uint8Array(server.maxFrameSize)),
      payload,
      cost: server.maxFrameSize,
      kind: "beyond",
    });
  }
  for (let i = 0; i < 5; i++) {
    const content = i < 2 ? randomBytes(r, 1 + randInt(r, 4000)) : new Uint8Array(1 + randInt(r, 9000));
    const payload = compressedPayload(name, content, format, content.length, "fast");
    honest.push({
      length: content.length,
      crc: crc32c(content),
      payload,
      cost: Math.max(payload.length, content.length),
      kind: undefined,
    });
  }
  sets = { honest, hostile };
  fuzzBlockCache.set(key, sets);
  return sets;
}

const ROUTE_SAMPLES = ["/nope", "", "/echo/1.0.0\u0000", "\u00ff", "/".repeat(1025)];

/**
 * Generates a connection's worth of frames from valid templates (every
 * frame type and flag combination, chunked messages with declared totals,
 * streams with every codec, batches), with hostile parameter choices
 * (duplicate ids, ids that collide modulo powers of two, bogus credit,
 * huge declared lengths, random flags) and byte-level mutations on top.
 * Deterministic for a seed.
 */
export class FrameFuzzer {
  readonly r: Rng;
  private readonly o: FuzzOptions;
  /** Scales every choice that is likely to be fatal to the connection (0: valid traffic, 1: hostile). */
  private readonly h: number;
  private nextId = 1;
  private readonly recent: number[] = [];
  private readonly chunked: OpenChunked[] = [];
  private readonly streams: OpenStream[] = [];
  private readonly usedColliding = new Set<number>();

  constructor(seed: number, options: FuzzOptions) {
    this.r = xorshift(seed);
    this.o = options;
    this.h = options.hostility ?? 1;
  }

  /** Whether a hostile choice went into the frame being generated. */
  private hostileUsed = false;

  /** True with probability `p` scaled by the hostility. */
  private hostile(p: number): boolean {
    const yes = this.r() < p * this.h;
    if (yes) this.hostileUsed = true;
    return yes;
  }

  /** Next frame (possibly a BATCH of several). */
  next(): FuzzFrame {
    this.hostileUsed = false;
    const f = this.nextFrame();
    f.hostile = this.hostileUsed || f.hostile;
    return f;
  }

  private nextFrame(): FuzzFrame {
    const r = this.r;
    if (r() < 0.06) {
      const n = 1 + randInt(r, 8);
      const parts: Uint8Array[] = [];
      let mutation: MutationName | undefined;
      for (let i = 0; i < n; i++) {
        const t = this.template();
        let b = t.bytes.subarray(0, t.bytes.length - 4);
        if (r() < this.o.mutateRate / 2) {
          const m = mutateFrame(b, r, { hasCrc: false });
          b = m.bytes;
          mutation = m.op;
        }
        parts.push(b);
      }
      if (this.hostile(0.01)) parts.push(inner(pick(r, [T.HELLO, T.BATCH]), 0, 0, randomBytes(r, 3)));
      const bad = this.hostile(0.02);
      return {
        bytes: batch(parts, bad ? { crc: randInt(r, 2 ** 32) } : {}),
        template: "BATCH",
        mutation,
        badCrc: bad,
        hostile: false,
      };
    }
    const t = this.template();
    if (r() < this.o.mutateRate) {
      const recrc = r() < this.o.recrcRate;
      const m = mutateFrame(t.bytes, r, { recrc });
      return { bytes: m.bytes, template: t.name, mutation: m.op, badCrc: !recrc, hostile: false };
    }
    return { bytes: t.bytes, template: t.name, mutation: undefined, badCrc: false, hostile: false };
  }

  /** An id for a new message: usually fresh, sometimes reused, colliding or of the wrong parity. */
  private newId(): number {
    const r = this.r;
    if (this.recent.length === 0 || !this.hostile(0.22)) {
      const id = this.nextId;
      this.nextId = (this.nextId + 2) % 2 ** 32 || 1;
      this.recent.push(id);
      if (this.recent.length > 32) this.recent.shift();
      return id;
    }
    const x = r();
    if (x < 0.45) return pick(r, this.recent);
    if (x < 0.8) return collidingId(pick(r, this.recent), r);
    return pick(r, [0, 2, 0xffffffff, 0xfffffffe, randInt(r, 2 ** 32)]);
  }

  /** Stops sending on `id` (it was cancelled). */
  private forget(id: number): void {
    const c = this.chunked.findIndex((x) => x.id === id);
    if (c >= 0) this.chunked.splice(c, 1);
    const st = this.streams.findIndex((x) => x.id === id);
    if (st >= 0) this.streams.splice(st, 1);
  }

  /** A fresh id that shares CallTable slots with a recent one (not fatal in itself). */
  private collidingFreshId(): number {
    if (this.recent.length === 0) return this.newId();
    // Far above the sequential ids (2^20..2^31 apart), and never twice.
    for (let tries = 0; tries < 8; tries++) {
      const id = (pick(this.r, this.recent) + 2 ** (20 + randInt(this.r, 12))) % 2 ** 32;
      if (!this.usedColliding.has(id)) {
        this.usedColliding.add(id);
        return id;
      }
    }
    return this.newId();
  }

  private total(): number {
    const r = this.r;
    if (!this.hostile(0.3)) return 1 + randInt(r, 70_000);
    return pick(r, [
      0,
      this.o.server.maxMessageSize,
      this.o.server.maxMessageSize + 1,
      this.o.server.maxAssemblyBytes,
      2 ** 32,
      2 ** 53 - 1,
      16 * MIB,
      randInt(r, 2 ** 31),
    ]);
  }

  private data(max = 300): Uint8Array {
    return randomBytes(this.r, randInt(this.r, max));
  }

  private route(): string {
    const r = this.r;
    if (!this.hostile(0.1)) return pick(r, this.o.routes);
    return pick(r, ROUTE_SAMPLES);
  }

  private template(): { bytes: Uint8Array; name: string } {
    const r = this.r;
    const x = r();
    if (x < 0.14) {
      const id = r() < 0.1 ? this.collidingFreshId() : this.newId();
      return { bytes: msg(id, this.data()), name: "MSG" };
    }
    if (x < 0.34) {
      const id = r() < 0.1 ? this.collidingFreshId() : this.newId();
      const route = this.route();
      const rb = utf8(route);
      const body = route.length > 0 && rb.length <= 1024 ? routeBytes(route) : concat(varint(rb.length), rb);
      return { bytes: frame(T.REQ, F.START | F.END, id, concat(body, this.data())), name: "REQ" };
    }
    if (x < 0.44) return this.chunkedFrame();
    if (x < 0.5) {
      if (!this.hostile(1)) return this.streamFrame();
      const id = r() < 0.8 ? 2 * (1 + randInt(r, 64)) : this.newId();
      const flags = pick(r, [F.START | F.END, F.START, 0, F.END]);
      return { bytes: frame(T.RES, flags, id, concat(Uint8Array.of(pick(r, [0, 1, 2])), this.data(64))), name: "RES" };
    }
    if (x < 0.56) {
      const id = r() < 0.6 && this.recent.length > 0 ? pick(r, this.recent) : this.newId();
      const errno = pick(r, [4004, 1001, 4008, 0, 3001, 65535, randInt(r, 65536)]);
      // A well-behaved sender stops sending on an id it cancelled; a hostile one goes on.
      if (!this.hostile(0.5)) this.forget(id);
      return { bytes: this.hostile(0.05) ? frame(T.CANCEL, 0, id, this.data(5)) : cancel(id, errno), name: "CANCEL" };
    }
    if (x < 0.64) {
      const id = r() < 0.4 ? 0 : r() < 0.5 && this.recent.length > 0 ? pick(r, this.recent) : this.newId();
      const n = this.hostile(0.4)
        ? pick(r, [2 ** 31 - 1, 2 ** 31, 2 ** 32, 0])
        : pick(r, [1, 16384, 1 + randInt(r, 2 ** 24)]);
      return { bytes: this.hostile(0.05) ? frame(T.CREDIT, 0, id, this.data(7)) : credit(id, n), name: "CREDIT" };
    }
    if (x < 0.7) {
      const ok = !this.hostile(0.05);
      return { bytes: ping(randomBytes(r, ok ? 8 : randInt(r, 16)), r() < 0.3), name: "PING" };
    }
    if (x < 0.705 && this.hostile(1)) {
      return { bytes: goaway(pick(r, [0, 0, 3001, 4004, 65535]), "fuzz"), name: "GOAWAY" };
    }
    if (x < 0.71 && this.hostile(1)) {
      return { bytes: hello(r() < 0.5 ? {} : [[1, 0]]), name: "HELLO" };
    }
    return this.streamFrame();
  }

  private chunkedFrame(): { bytes: Uint8Array; name: string } {
    const r = this.r;
    const open = this.chunked;
    if (open.length > 0 && r() < 0.6) {
      const i = randInt(r, open.length);
      const c = open[i];
      const left = c.total - c.sent;
      const n = this.hostile(0.15)
        ? randInt(r, 4096)
        : Math.min(left, randInt(r, Math.min(this.o.server.maxFrameSize, 8192) + 1));
      const end = this.hostile(0.1) || c.sent + n >= c.total;
      c.sent += n;
      if (end) open.splice(i, 1);
      return { bytes: chunk(c.type, c.id, new Uint8Array(n), end), name: end ? "CHUNK-END" : "CHUNK" };
    }
    const type = pick(r, [T.MSG, T.REQ, T.REQ]);
    const id = r() < 0.1 ? this.collidingFreshId() : this.newId();
    const total = this.total();
    const first = new Uint8Array(Math.min(total, randInt(r, 2048)));
    const bytes = chunkStart(type, id, total, first, { route: this.route() });
    if (open.length < 64 && total < 2 ** 31) open.push({ type, id, total, sent: first.length });
    return { bytes, name: "CHUNK-START" };
  }

  /** A COMPRESSED payload: usually honest, hostile shapes (bombs beyond the ratio, lies) scaled by the hostility. */
  private compressed(codec: number): FuzzBlock {
    const sets = fuzzBlocks(codec, this.o.server, this.o.compressedFormat);
    return pick(this.r, this.hostile(0.15) ? sets.hostile : sets.honest);
  }

  private streamFrame(): { bytes: Uint8Array; name: string } {
    const r = this.r;
    const open = this.streams;
    // A well-behaved sender stays within maxConcurrentStreams; a hostile one opens more.
    if (open.length === 0 || (r() < 0.25 && (open.length < 16 || this.hostile(0.5)))) {
      const id = r() < 0.1 ? this.collidingFreshId() : this.newId();
      const codec = r() < 0.6 ? 0 : this.hostile(0.2) ? pick(r, [5, 255]) : pick(r, [1, 2, 3, 4]);
      const total = r() < 0.5 ? undefined : this.hostile(0.2) ? 2 ** 53 - 2 : pick(r, [0, 1 + randInt(r, 100_000)]);
      const offset = this.hostile(0.1) ? pick(r, [1, 5, 2 ** 40]) : 0;
      const meta = !this.hostile(0.2)
        ? { transferId: transferId(r), name: pick(r, ["a.bin", "../../etc/x", "\u0000", ".", "ok.txt"]) }
        : r() < 0.5
          ? randomBytes(r, randInt(r, 20))
          : utf8(pick(r, ["[]", "null", "{", '"x"', "{}"]));
      const route = this.hostile(0.1) ? pick(r, ["/nope", "\u00ff"]) : pick(r, this.o.streamRoutes);
      const bytes = streamStart(
        id,
        { total, offset, prefixCrc: randInt(r, 2 ** 32), route, codec, meta },
        this.data(64),
      );
      if (open.length < 64)
        open.push({ id, codec, total: this.hostile(0.3) ? undefined : total, sent: 0, crc: 0, charged: bytes.length });
      return { bytes, name: "STREAM-START" };
    }
    const i = randInt(r, open.length);
    const s = open[i];
    const x = r();
    if (x < 0.15) {
      open.splice(i, 1);
      const bad = this.hostile(0.3);
      return {
        bytes: streamEnd(s.id, bad ? s.sent + 1 : s.sent, bad ? randInt(r, 2 ** 32) : s.crc),
        name: "STREAM-END",
      };
    }
    const room = s.total === undefined ? Number.POSITIVE_INFINITY : s.total - s.sent;
    // Without reading CREDIT, a well-behaved sender ends a stream before its window runs out; a hostile one overruns it.
    const windowLeft = this.o.server.streamWindow - s.charged;
    if (x < 0.5 && s.codec !== 0) {
      const b = this.compressed(s.codec);
      if (b.kind === undefined && b.length > room) return this.streamFrame();
      if (b.cost > windowLeft && !this.hostile(0.3)) {
        open.splice(i, 1);
        return { bytes: streamEnd(s.id, s.sent, s.crc), name: "STREAM-END" };
      }
      s.charged += b.cost;
      s.sent += b.length;
      s.crc = crc32cCombine(s.crc, b.crc, b.length);
      return {
        bytes: streamData(s.id, b.payload, true),
        name: b.kind === undefined ? "STREAM-COMPRESSED" : `STREAM-COMPRESSED-${b.kind}`,
      };
    }
    let d = this.data(r() < 0.1 ? 20_000 : 600);
    if (d.length > room) d = d.subarray(0, room);
    if (d.length > windowLeft && !this.hostile(0.3)) {
      open.splice(i, 1);
      return { bytes: streamEnd(s.id, s.sent, s.crc), name: "STREAM-END" };
    }
    s.charged += d.length;
    s.sent += d.length;
    s.crc = crc32c(d, s.crc);
    return { bytes: streamData(s.id, d, this.hostile(0.05)), name: "STREAM-DATA" };
  }
}
