/**
 * The head of an error response (docs/PROTOCOL.md §3.4), in a file of its
 * own: only a responder writes one (the request dispatcher, which comes with
 * the stream engine); `message-head.ts` decodes them.
 */
import { writeU16 } from "./bytes.ts";
import { encodeReason } from "./control.ts";
import { Status } from "./frame.ts";
import { MAX_RETRY_AFTER_MS } from "./message-head.ts";
import { varintLength, writeVarint } from "./varint.ts";

const utf8 = new TextEncoder();

/**
 * The head of an error response: status ERROR, errno (u16), varint+code,
 * varint+message and, when `retryAfterMs` is given, a trailing varint of it
 * (rounded up to whole ms, at most {@link MAX_RETRY_AFTER_MS}).
 */
export function encodeErrorHead(errno: number, code: string, message: string, retryAfterMs?: number): Uint8Array {
  const c = utf8.encode(code);
  const text = encodeReason(message);
  const retry =
    retryAfterMs === undefined || !(retryAfterMs >= 0) ? -1 : Math.min(Math.ceil(retryAfterMs), MAX_RETRY_AFTER_MS);
  const head = new Uint8Array(
    1 +
      2 +
      varintLength(c.length) +
      c.length +
      varintLength(text.length) +
      text.length +
      (retry < 0 ? 0 : varintLength(retry)),
  );
  head[0] = Status.ERROR;
  let p = writeU16(head, 1, errno);
  p = writeVarint(head, p, c.length);
  head.set(c, p);
  p = writeVarint(head, p + c.length, text.length);
  head.set(text, p);
  if (retry >= 0) writeVarint(head, p + text.length, retry);
  return head;
}
