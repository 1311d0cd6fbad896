/**
 * What crosses the cluster's bus: one message is a 4-byte big-endian
 * header length, a JSON header, then the payload bytes (a broadcast's or
 * sendTo's message, or a page of session infos). The bus is the operator's
 * own engine, yet every message read from it is checked: a malformed one
 * (too short, header over {@link MAX_HEADER_BYTES}, not JSON, unknown type,
 * a field of another type, a message id over {@link MAX_ID_CHARS}) is
 * dropped and counted, never thrown.
 */

/** Longest JSON header read from the bus. */
export const MAX_HEADER_BYTES = 64 * 1024;
/**
 * Longest message id (`i`) read from the bus, in characters: a node's are
 * `<node id>:<incarnation>:<n>.<random>`, under 90. Each node remembers the last
 * 8,192 ids against duplicates: ids of 64 KiB from a publisher on the bus
 * were 512 MiB of them.
 */
export const MAX_ID_CHARS = 128;

/** A heartbeat: the node is alive, its URLs and session count. `hello` asks the others for theirs at once. */
export interface Heartbeat {
  readonly t: "hb" | "hello";
  readonly n: string;
  readonly urls: string[];
  readonly sessions: number;
  /**
   * The sender's echo key (its incarnation and probe number): a node that
   * reads its own key back knows the engine still carries its messages.
   * Optional: older nodes send none.
   */
  readonly k?: string;
  /**
   * When the sender's incarnation started (`Date.now()` on its clock): a
   * claim its node made before that was made by an earlier process under
   * the same id. Optional: older nodes send none.
   */
  readonly since?: number;
}
/** A node leaves (graceful close). */
export interface Bye {
  readonly t: "bye";
  readonly n: string;
  /**
   * The leaving node's incarnation: a bye of another incarnation than the one the member announces now (an
   * earlier process of a node restarted under the same id) is ignored. Optional: older nodes send none.
   */
  readonly k?: string;
}
/** A broadcast from node `n`, message id `i`, optional named filter `f` with argument `a`. */
export interface BroadcastHeader {
  readonly t: "bc";
  readonly n: string;
  readonly i: string;
  readonly f?: string;
  readonly a?: string;
  /** The sender's highWaterMark (`"inf"`: Infinity, which JSON has not). */
  readonly hw?: number | "inf";
  readonly sl?: "skip" | "disconnect";
}
/** A sendTo from node `n` (request id `i`) for session `s` of the receiving node. */
export interface SendHeader {
  readonly t: "to";
  readonly n: string;
  readonly i: string;
  readonly s: string;
}
/**
 * The answer to request `i`: done, or failed with `code` and `message`. `n`:
 * the answering node (the one the request went to; older nodes send none).
 */
export interface AckHeader {
  readonly t: "ack";
  readonly n?: string;
  readonly i: string;
  readonly code?: string;
  readonly message?: string;
}
/**
 * Node `n` asks for the receiving node's sessions (request `i`), one page
 * from cursor `c` (0: the first, which takes the list; then the `c` of the
 * page before). Without `c` (older nodes) every page is sent at once.
 */
export interface InfoRequest {
  readonly t: "info";
  readonly n: string;
  readonly i: string;
  readonly c?: number;
}
/**
 * A page of session infos (JSON array in the payload) answering request `i`;
 * `last` on the final page. `c`: the cursor to ask for the next page with
 * (present when the page was asked for with a cursor).
 */
export interface InfoPage {
  readonly t: "infos";
  readonly n: string;
  readonly i: string;
  readonly last: boolean;
  readonly c?: number;
}

export type BusHeader = Heartbeat | Bye | BroadcastHeader | SendHeader | AckHeader | InfoRequest | InfoPage;

const TYPES = new Set(["hb", "hello", "bye", "bc", "to", "ack", "info", "infos"]);
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });
const EMPTY = new Uint8Array(0);

/** One bus message: header and payload. */
export function encode(header: BusHeader, payload: Uint8Array = EMPTY): Uint8Array {
  const h = utf8.encode(JSON.stringify(header));
  const out = new Uint8Array(4 + h.length + payload.length);
  new DataView(out.buffer).setUint32(0, h.length);
  out.set(h, 4);
  out.set(payload, 4 + h.length);
  return out;
}

/** A bus message's header and payload (a view), or undefined for anything malformed. */
export function decode(data: Uint8Array): { header: BusHeader; payload: Uint8Array } | undefined {
  if (data.length < 4) return undefined;
  const len = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0);
  if (len > MAX_HEADER_BYTES || 4 + len > data.length) return undefined;
  let header: unknown;
  try {
    header = JSON.parse(fromUtf8.decode(data.subarray(4, 4 + len)));
  } catch {
    return undefined;
  }
  if (typeof header !== "object" || header === null) return undefined;
  const h = header as Record<string, unknown>;
  if (typeof h.t !== "string" || !TYPES.has(h.t)) return undefined;
  if ((h.t !== "ack" || h.n !== undefined) && typeof h.n !== "string") return undefined;
  if (h.t !== "hb" && h.t !== "hello" && h.t !== "bye" && (typeof h.i !== "string" || h.i.length > MAX_ID_CHARS)) {
    return undefined;
  }
  if (h.t === "to" && typeof h.s !== "string") return undefined;
  // A named filter is called with the argument as it came: a number or an object was a TypeError in it.
  if (
    h.t === "bc" &&
    ((h.f !== undefined && typeof h.f !== "string") || (h.a !== undefined && typeof h.a !== "string"))
  ) {
    return undefined;
  }
  if ((h.t === "hb" || h.t === "hello") && (!Array.isArray(h.urls) || typeof h.sessions !== "number")) {
    return undefined;
  }
  return { header: h as unknown as BusHeader, payload: data.subarray(4 + len) };
}
