/**
 * What precedes a message's data inside MSG/REQ/RES frames
 * (docs/PROTOCOL.md §3.2–§3.4): the declared length of a chunked message,
 * a request's route, a response's status byte and an error response's body.
 */
import { PointSubError, protocolError } from "../errors/error.ts";
import { readU16 } from "./bytes.ts";
import { MAX_IDEMPOTENCY_KEY, MAX_RETRY_AFTER_MS, MAX_ROUTE } from "./frame.ts";
import { readVarint, type VarintResult, varintLength, writeVarint } from "./varint.ts";

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/**
 * Throws ERR_INVALID_ARGUMENT unless `route` is a non-empty string of
 * Unicode text: an unpaired surrogate would go out as U+FFFD, and two
 * routes would name one (docs/PROTOCOL.md §3.1).
 */
export function checkRoute(route: string): void {
  if (typeof route !== "string" || route.length === 0 || !route.isWellFormed()) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "route must be a non-empty string of Unicode text");
  }
}

/** A request's route head: varint length, then the route as UTF-8. Throws ERR_INVALID_ARGUMENT for a bad route. */
export function encodeRouteHead(route: string): Uint8Array {
  checkRoute(route);
  const bytes = utf8.encode(route);
  if (bytes.length > MAX_ROUTE) throw new PointSubError("ERR_INVALID_ARGUMENT", `route longer than ${MAX_ROUTE} bytes`);
  const head = new Uint8Array(varintLength(bytes.length) + bytes.length);
  head.set(bytes, writeVarint(head, 0, bytes.length));
  return head;
}

/**
 * Finds the route in a REQ START at `buf[p..end)`: sets `v.value` to where
 * its bytes start and `v.next` to where they end (the data begins there).
 * Leaves the UTF-8 decoding to the caller (which caches the last route).
 */
export function readRouteBounds(buf: Uint8Array, p: number, end: number, v: VarintResult): void {
  if (readVarint(buf, p, end, 2, v) !== 1 || v.value === 0 || v.value > MAX_ROUTE) {
    throw protocolError("bad route length");
  }
  const routeEnd = v.next + v.value;
  if (routeEnd > end) throw protocolError("route runs past the frame");
  v.value = v.next;
  v.next = routeEnd;
}

/**
 * An idempotency key as bytes (a string is UTF-8), checked to be 1..64
 * bytes. Throws ERR_INVALID_ARGUMENT otherwise.
 */
export function idempotencyKeyBytes(key: string | Uint8Array): Uint8Array {
  let bytes: Uint8Array;
  if (typeof key === "string") bytes = utf8.encode(key);
  else if (key instanceof Uint8Array) bytes = key;
  else throw new PointSubError("ERR_INVALID_ARGUMENT", "idempotencyKey must be a string or a Uint8Array");
  if (bytes.length === 0 || bytes.length > MAX_IDEMPOTENCY_KEY) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `idempotencyKey must be 1..${MAX_IDEMPOTENCY_KEY} bytes, not ${bytes.length}`,
    );
  }
  return bytes;
}

/**
 * The head of a keyed request (REQ START with flag KEYED, §3.4.1): the
 * route head, then `varint keyLength` (1..64) and the key. `key` must
 * already be checked ({@link idempotencyKeyBytes}).
 */
export function encodeKeyedHead(routeHead: Uint8Array, key: Uint8Array): Uint8Array {
  if (key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `idempotency key of ${key.length} bytes`);
  }
  const head = new Uint8Array(routeHead.length + 1 + key.length);
  head.set(routeHead, 0);
  head.set(key, writeVarint(head, routeHead.length, key.length));
  return head;
}

/**
 * Finds the idempotency key of a keyed REQ START at `buf[p..end)` (right
 * after the route): sets `v.value` to where its bytes start and `v.next`
 * to where they end (the data begins there). ERR_PROTOCOL for a length
 * outside 1..64 or a key running past the frame.
 */
export function readKeyBounds(buf: Uint8Array, p: number, end: number, v: VarintResult): void {
  if (readVarint(buf, p, end, 1, v) !== 1 || v.value === 0 || v.value > MAX_IDEMPOTENCY_KEY) {
    throw protocolError("bad idempotency key length");
  }
  const keyEnd = v.next + v.value;
  if (keyEnd > end) throw protocolError("idempotency key runs past the frame");
  v.value = v.next;
  v.next = keyEnd;
}

/** Reads the declared total length of a chunked message (START frame without END) at `p`. */
export function readMessageLength(buf: Uint8Array, p: number, end: number, v: VarintResult): void {
  if (readVarint(buf, p, end, 8, v) !== 1) throw protocolError("bad message length");
}

/** What an error response says. `code` is the sender's name for it; `errno` is authoritative. */
export interface ErrorBody {
  errno: number;
  code: string;
  message: string;
  /** Present when the sender said when to retry (ms from when it answered); absent in the short form. */
  retryAfterMs?: number;
}

/**
 * Decodes an error response's body (after the status byte) from
 * `buf[p..end)`: both the short form and the one with a trailing
 * `retryAfterMs` varint (at most 5 bytes, at most {@link MAX_RETRY_AFTER_MS}).
 * Bytes after the fields it knows are ignored (room for later fields, as
 * older decoders ignore `retryAfterMs`).
 */
export function decodeErrorBody(buf: Uint8Array, p: number, end: number): ErrorBody {
  if (p + 2 > end) throw protocolError("error response too short");
  const errno = readU16(buf, p);
  p += 2;
  const v: VarintResult = { value: 0, next: 0 };
  const readText = (): string => {
    if (readVarint(buf, p, end, 2, v) !== 1 || v.next + v.value > end) {
      throw protocolError("bad error response text");
    }
    const s = fromUtf8.decode(buf.subarray(v.next, v.next + v.value));
    p = v.next + v.value;
    return s;
  };
  const code = readText();
  const message = readText();
  if (p === end) return { errno, code, message };
  if (readVarint(buf, p, end, 5, v) !== 1 || v.value > MAX_RETRY_AFTER_MS) {
    throw protocolError("bad error response retryAfterMs");
  }
  return { errno, code, message, retryAfterMs: v.value };
}
