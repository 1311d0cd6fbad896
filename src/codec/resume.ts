/**
 * Resume query and answer, the request and response bodies of the built-in
 * route `/pointsub/resume/1` (docs/PROTOCOL.md §3.11).
 */
import { protocolError } from "../errors/error.ts";
import { readU32, writeU32 } from "./bytes.ts";
import { readVarint, type VarintResult, varintLength, writeVarint } from "./varint.ts";

const utf8 = new TextEncoder();
/**
 * Strict: a route or transfer id that is not UTF-8 is a bad query (§3.11), never decoded leniently,
 * and a leading U+FEFF is kept: two different byte strings must not name one route or transfer (§3.1).
 */
const fromUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

import { RESUME_ROUTE } from "./frame.ts";

export { RESUME_ROUTE };

/** Where a resumable receiver stands on a transfer: content bytes it holds and their CRC32C. */
export interface ResumePoint {
  offset: number;
  crc: number;
}

/** A resume query: which transfer, to which stream route. */
export interface ResumeQuery {
  route: string;
  transferId: string;
}

/** Query: varint+route, varint+transfer id (both UTF-8). */
export function encodeResumeQuery(q: ResumeQuery): Uint8Array {
  const r = utf8.encode(q.route);
  const t = utf8.encode(q.transferId);
  const out = new Uint8Array(varintLength(r.length) + r.length + varintLength(t.length) + t.length);
  let p = writeVarint(out, 0, r.length);
  out.set(r, p);
  p = writeVarint(out, p + r.length, t.length);
  out.set(t, p);
  return out;
}

/** Decodes a resume query; ERR_PROTOCOL when malformed. */
export function decodeResumeQuery(q: Uint8Array): ResumeQuery {
  const v: VarintResult = { value: 0, next: 0 };
  const bad = () => protocolError("bad resume query");
  if (readVarint(q, 0, q.length, 2, v) !== 1 || v.next + v.value > q.length) throw bad();
  const routeBytes = q.subarray(v.next, v.next + v.value);
  const p = v.next + v.value;
  if (readVarint(q, p, q.length, 2, v) !== 1 || v.next + v.value !== q.length) throw bad();
  try {
    return { route: fromUtf8.decode(routeBytes), transferId: fromUtf8.decode(q.subarray(v.next)) };
  } catch {
    throw bad();
  }
}

/** Answer: varint offset, then the CRC32C of those bytes (u32). */
export function encodeResumeAnswer(point: ResumePoint): Uint8Array {
  const out = new Uint8Array(varintLength(point.offset) + 4);
  writeU32(out, writeVarint(out, 0, point.offset), point.crc);
  return out;
}

/** Decodes a resume answer; ERR_PROTOCOL when malformed. */
export function decodeResumeAnswer(a: Uint8Array): ResumePoint {
  const v: VarintResult = { value: 0, next: 0 };
  if (readVarint(a, 0, a.length, 8, v) !== 1 || v.next + 4 !== a.length) {
    throw protocolError("bad resume answer");
  }
  return { offset: v.value, crc: readU32(a, v.next) };
}

/**
 * Asks a peer where a transfer stands: `request` sends the query on
 * {@link RESUME_ROUTE} and resolves to the answer (`Connection.queryResume`,
 * which loads this with the stream engine: resuming is for streams).
 */
export async function askResume(
  request: (route: string, payload: Uint8Array) => Promise<Uint8Array>,
  route: string,
  transferId: string,
): Promise<ResumePoint> {
  return decodeResumeAnswer(await request(RESUME_ROUTE, encodeResumeQuery({ route, transferId })));
}
