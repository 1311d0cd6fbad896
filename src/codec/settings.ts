import { PointSubError, protocolError } from "../errors/error.ts";
import {
  FEATURE_AUTH,
  FEATURE_IDEMPOTENCY,
  FEATURE_RESUME,
  FEATURE_STREAMS,
  MAX_FRAME_SIZE,
  MAX_HELLO_SIZE,
  MAX_WINDOW,
  MIN_FRAME_SIZE,
} from "./frame.ts";
import { readVarint, type VarintResult, varintLength, writeVarint } from "./varint.ts";

/**
 * What each side announces in its HELLO frame: the limits it enforces on what
 * it receives, and the features it supports.
 */
export interface Settings {
  /** Largest frame payload this side accepts. */
  maxFrameSize: number;
  /** Largest message (data bytes) this side accepts. */
  maxMessageSize: number;
  /** 1 when this side wants CRC32C trailers (they are on unless both sides say 0). */
  checksum: 0 | 1;
  /** Feature bits (Feature.*); unknown bits are ignored. */
  features: number;
  /** Compression codecs this side can decompress: bit `1 << (id - 1)` per codec id. */
  compression: number;
  /** Initial connection-level credit granted to the peer, in bytes. */
  connectionWindow: number;
  /** Initial per-message credit granted to the peer, in bytes. */
  streamWindow: number;
  /** Most requests the peer may have outstanding at this side. */
  maxConcurrentRequests: number;
  /** Most bytes (declared totals) of unfinished multi-frame messages the peer may have open. */
  maxAssemblyBytes: number;
  /** Most streams the peer may have open toward this side at once. */
  maxConcurrentStreams: number;
  /**
   * Largest expansion this side accepts from one COMPRESSED frame: its
   * declared decompressed length may be at most this many times its
   * compressed block's length.
   */
  maxCompressionRatio: number;
}

/** Feature bits of the HELLO `features` setting. */
export const Feature = {
  /** STREAM frames (section 3.10). */
  STREAMS: FEATURE_STREAMS,
  /** The resume query route (section 3.11). */
  RESUME: FEATURE_RESUME,
  /** This side requires an AUTH frame from the peer before any other work (section 4.1). */
  AUTH: FEATURE_AUTH,
  /**
   * This side understands keyed requests (REQ START with the KEYED flag:
   * an idempotency key after the route, section 3.4.1). Whether it also
   * deduplicates them is up to its application (an idempotency store).
   */
  IDEMPOTENCY: FEATURE_IDEMPOTENCY,
} as const;

const MIB = 1024 * 1024;

/**
 * Defaults (documented in docs/PROTOCOL.md), in HELLO key order: a setting's
 * key on the wire is its place here plus one ({@link KEYS}), so a new setting
 * goes last and none moves.
 */
export const DEFAULT_SETTINGS: Readonly<Settings> = {
  maxFrameSize: MIB, // 1
  maxMessageSize: 256 * MIB, // 2
  checksum: 1, // 3
  features: 0, // 4
  compression: 0, // 5
  connectionWindow: 16 * MIB, // 6
  streamWindow: 4 * MIB, // 7
  maxConcurrentRequests: 1024, // 8
  maxAssemblyBytes: 256 * MIB + 64 * MIB, // 9
  maxConcurrentStreams: 64, // 10
  maxCompressionRatio: 1024, // 11
};

/** Setting keys on the wire, in HELLO order (key `i + 1` names `KEYS[i]`): those of the defaults, in their order. */
export const KEYS = /* @__PURE__ */ Object.keys(DEFAULT_SETTINGS) as readonly (keyof Settings)[];

/** maxAssemblyBytes when a HELLO leaves it out: maxMessageSize + 64 MiB, at most 2^53 - 1. */
export function defaultAssemblyBytes(maxMessageSize: number): number {
  return Math.min(maxMessageSize + 64 * MIB, Number.MAX_SAFE_INTEGER);
}

/** Throws ERR_PROTOCOL/ERR_INVALID_ARGUMENT when a setting is out of range. */
export function validateSettings(s: Settings, fromPeer: boolean): void {
  const code = fromPeer ? "ERR_PROTOCOL" : "ERR_INVALID_ARGUMENT";
  const check = (ok: boolean, name: keyof Settings) => {
    if (ok) return;
    const message = `invalid setting ${name} ${s[name]}`;
    throw fromPeer ? PointSubError.fromPeer(code, message) : new PointSubError(code, message);
  };
  // Integers (a fractional window or frame size went out in the HELLO cut to an integer, and this side kept the fraction).
  const atLeast = (name: keyof Settings, min: number, max = Infinity) =>
    check(Number.isSafeInteger(s[name]) && s[name] >= min && s[name] <= max, name);
  atLeast("maxFrameSize", MIN_FRAME_SIZE, MAX_FRAME_SIZE);
  atLeast("maxMessageSize", 0);
  check(s.checksum === 0 || s.checksum === 1, "checksum");
  atLeast("connectionWindow", MIN_FRAME_SIZE, MAX_WINDOW);
  atLeast("streamWindow", MIN_FRAME_SIZE, MAX_WINDOW);
  atLeast("maxConcurrentRequests", 1);
  atLeast("maxAssemblyBytes", 0);
  atLeast("maxConcurrentStreams", 0);
  atLeast("maxCompressionRatio", 1);
}

/** Encodes settings as a HELLO payload: (varint key, varint value) pairs. */
export function encodeSettings(s: Settings): Uint8Array {
  let n = 0;
  for (let i = 0; i < KEYS.length; i++) n += varintLength(i + 1) + varintLength(s[KEYS[i]]);
  const out = new Uint8Array(n);
  let o = 0;
  for (let i = 0; i < KEYS.length; i++) {
    o = writeVarint(out, o, i + 1);
    o = writeVarint(out, o, s[KEYS[i]]);
  }
  return out;
}

/**
 * Decodes a HELLO payload. Keys missing take their defaults; unknown keys are
 * ignored (so later versions may add settings); a repeated key is an error.
 */
export function decodeSettings(payload: Uint8Array): Settings {
  if (payload.length > MAX_HELLO_SIZE) throw protocolError("HELLO too large");
  const s: Settings = { ...DEFAULT_SETTINGS };
  const seen = new Set<number>();
  const v: VarintResult = { value: 0, next: 0 };
  let o = 0;
  while (o < payload.length) {
    if (readVarint(payload, o, payload.length, 8, v) !== 1) throw protocolError("bad HELLO key");
    const key = v.value;
    if (readVarint(payload, v.next, payload.length, 8, v) !== 1) {
      throw protocolError(`bad HELLO value for key ${key}`);
    }
    o = v.next;
    if (seen.has(key)) throw protocolError(`HELLO repeats key ${key}`);
    seen.add(key);
    const name = KEYS[key - 1];
    if (name !== undefined) (s as unknown as Record<string, number>)[name] = v.value;
  }
  // A missing maxAssemblyBytes follows the announced maxMessageSize (docs/PROTOCOL.md §4).
  if (!seen.has(9)) s.maxAssemblyBytes = defaultAssemblyBytes(s.maxMessageSize);
  validateSettings(s, true);
  return s;
}
