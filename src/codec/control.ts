/**
 * Payloads of the control frames (docs/PROTOCOL.md §2, §3.5–§3.8): the
 * connection preface, CANCEL, CREDIT, PING and GOAWAY. Each decoder checks
 * the whole payload and throws ERR_PROTOCOL for anything malformed.
 */
import { protocolError } from "../errors/error.ts";
import { readU16, writeU16 } from "./bytes.ts";
import { CANCEL_LENGTH, MAGIC, MAX_REASON_BYTES, MAX_WINDOW, PING_LENGTH, PREFACE_LENGTH } from "./frame.ts";
import { readVarint, type VarintResult, varintLength, writeVarint } from "./varint.ts";

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** The connection preface: magic "PSUB", lowest and highest protocol version spoken. */
export function encodePreface(minVersion: number, maxVersion: number): Uint8Array {
  const out = new Uint8Array(PREFACE_LENGTH);
  out.set(MAGIC, 0);
  out[4] = minVersion;
  out[5] = maxVersion;
  return out;
}

/** CANCEL: the errno (u16) saying why a message, call or stream is abandoned. */
export function encodeCancel(errno: number): Uint8Array {
  const out = new Uint8Array(CANCEL_LENGTH);
  writeU16(out, 0, errno);
  return out;
}

/** Decodes a CANCEL payload to its errno. */
export function decodeCancel(payload: Uint8Array): number {
  if (payload.length !== CANCEL_LENGTH) throw protocolError("CANCEL payload must be 2 bytes");
  return readU16(payload, 0);
}

/** CREDIT: a varint number of bytes (1..2^31-1) the receiver takes again. */
export function encodeCredit(n: number): Uint8Array {
  const out = new Uint8Array(varintLength(n));
  writeVarint(out, 0, n);
  return out;
}

/** Decodes a CREDIT payload; `v` is scratch space (callers on hot paths reuse one). */
export function decodeCredit(payload: Uint8Array, v: VarintResult = { value: 0, next: 0 }): number {
  if (
    readVarint(payload, 0, payload.length, 5, v) !== 1 ||
    v.next !== payload.length ||
    v.value === 0 ||
    v.value > MAX_WINDOW
  ) {
    throw protocolError("bad CREDIT");
  }
  return v.value;
}

/** PING: 8 opaque bytes the answer echoes; pointsub puts a float64 sequence number there. */
export function encodePing(seq: number): Uint8Array {
  const out = new Uint8Array(PING_LENGTH);
  new DataView(out.buffer).setFloat64(0, seq);
  return out;
}

/** Checks a PING payload's size; returns the float64 it carries. */
export function decodePing(payload: Uint8Array): number {
  if (payload.length !== PING_LENGTH) throw protocolError("PING payload must be 8 bytes");
  return new DataView(payload.buffer, payload.byteOffset, PING_LENGTH).getFloat64(0);
}

/** A GOAWAY's content: errno 0 for a graceful close, else the error that ends the connection. */
export interface GoAway {
  errno: number;
  reason: string;
}

/**
 * GOAWAY: errno (u16) then the reason as UTF-8, at most {@link MAX_REASON_BYTES}
 * bytes, cut at a character boundary (never half a character).
 */
export function encodeGoAway(errno: number, reason: string): Uint8Array {
  const head = reason.length > MAX_REASON_BYTES ? reason.slice(0, MAX_REASON_BYTES) : reason;
  const out = new Uint8Array(2 + Math.min(head.length * 3, MAX_REASON_BYTES));
  writeU16(out, 0, errno);
  return out.subarray(0, 2 + utf8.encodeInto(head, out.subarray(2)).written);
}

/** Decodes a GOAWAY payload. */
export function decodeGoAway(payload: Uint8Array): GoAway {
  if (payload.length < 2) throw protocolError("GOAWAY too short");
  return { errno: readU16(payload, 0), reason: fromUtf8.decode(payload.subarray(2)) };
}
