/**
 * The heads of responses (docs/PROTOCOL.md §3.4), in a file of their
 * own: only a responder writes them (the request dispatcher, which comes with
 * the stream engine); `message-head.ts` decodes them.
 */
import { writeU16 } from "./bytes.ts";
import { MAX_REASON_BYTES, MAX_RETRY_AFTER_MS, STATUS_ERROR, STATUS_OK } from "./frame.ts";
import { varintLength, writeVarint } from "./varint.ts";

/** The head of an OK response: the status byte alone. */
export const OK_HEAD: Uint8Array = new Uint8Array([STATUS_OK]);

const utf8 = new TextEncoder();
/** The error codes' UTF-8, encoded once each (a fixed set of ASCII names). */
const codeBytes = new Map<string, Uint8Array>();

/**
 * The UTF-8 length of `text` cut at {@link MAX_REASON_BYTES} bytes at a
 * character boundary (what `encodeInto` writes into that many bytes): an
 * error head is then allocated once, at its size, and the message encoded
 * in place — a hostile peer makes a server answer many errors.
 */
export function reasonLength(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    let w = c < 0x80 ? 1 : c < 0x800 ? 2 : 3;
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        w = 4;
        i++;
      }
    }
    if (n + w > MAX_REASON_BYTES) break;
    n += w;
  }
  return n;
}

/**
 * The head of an error response: status ERROR, errno (u16), varint+code,
 * varint+message and, when `retryAfterMs` is given, a trailing varint of it
 * (rounded up to whole ms, at most {@link MAX_RETRY_AFTER_MS}).
 */
export function encodeErrorHead(errno: number, code: string, message: string, retryAfterMs?: number): Uint8Array {
  let c = codeBytes.get(code);
  if (c === undefined) {
    c = utf8.encode(code);
    if (codeBytes.size < 256) codeBytes.set(code, c);
  }
  const n = reasonLength(message);
  const retry =
    retryAfterMs === undefined || !(retryAfterMs >= 0) ? -1 : Math.min(Math.ceil(retryAfterMs), MAX_RETRY_AFTER_MS);
  const head = new Uint8Array(
    1 + 2 + varintLength(c.length) + c.length + varintLength(n) + n + (retry < 0 ? 0 : varintLength(retry)),
  );
  head[0] = STATUS_ERROR;
  let p = writeU16(head, 1, errno);
  p = writeVarint(head, p, c.length);
  head.set(c, p);
  p = writeVarint(head, p + c.length, n);
  utf8.encodeInto(message.length > n ? message.slice(0, n) : message, head.subarray(p, p + n));
  if (retry >= 0) writeVarint(head, p + n, retry);
  return head;
}
