/**
 * Authentication of the cluster's bus messages with a shared secret (the
 * cluster's `secret` option). A sealed message is
 *
 * ```
 * magic (4: ff 70 73 01) | tag (32) | sent at (8, float64 ms) | sequence (8, float64) | flags (1)
 *   | node id length (1) | node id | incarnation length (1) | incarnation | the message (wire.ts)
 * ```
 *
 * `tag` is HMAC-SHA256 under the secret over the subject (its length, 4
 * bytes, then its UTF-8) and every byte of the message but the tag itself,
 * so a message is bound to the subject it was published on (one for node
 * `a` replayed on node `b`'s subject fails). The magic read as an unsealed
 * message's header length is over 64 KiB: a node without a secret (or of
 * an earlier version) drops a sealed message as malformed, and a node with
 * one drops every unsealed message.
 *
 * Against replay, each receiver accepts a message only within
 * {@link REPLAY_WINDOW_MS} of the time it was sent (on the sender's clock)
 * and only once: per sender process (node id and incarnation) it keeps the
 * highest sequence number seen and which of the {@link SEQ_WINDOW} before it
 * it has seen. Past the time window, a sender's state can be forgotten: any
 * of its messages is too old by then. A `bye` left with the workers' relay
 * as the node's will (published when the worker dies, any time later) is
 * flagged and exempt from both: it removes only the incarnation that left
 * it, which is dead by then.
 *
 * One secret is shared by every node: it tells members from others on the
 * bus, not one member from another (a node holding it can sign as any node).
 */
import { createHmac, createSecretKey, type KeyObject, timingSafeEqual } from "node:crypto";

/** First bytes of a sealed message (the last one its version). */
const MAGIC = Uint8Array.of(0xff, 0x70, 0x73, 0x01);
const TAG_BYTES = 32;
/** Bytes before the node id: magic, tag, time, sequence, flags. */
const FIXED = 4 + TAG_BYTES + 8 + 8 + 1;
/** Most bytes a seal adds to a message (node id and incarnation at most 32 characters each). */
export const SEAL_OVERHEAD = FIXED + 1 + 32 + 1 + 32;
/**
 * How far a message's send time may be from the receiver's clock, in ms: older ones are taken for replays,
 * and nodes' clocks must agree within it (NTP keeps them within milliseconds).
 */
export const REPLAY_WINDOW_MS = 30_000;
/** Sequence numbers behind a sender's highest one still accepted (once each): messages overtaking others. */
const SEQ_WINDOW = 1024;
/** Sender processes tracked: past it, those not heard from within the time window are forgotten (then the oldest). */
const MAX_SENDERS = 4096;
/** Shortest secret, in bytes: 128 bits. */
export const MIN_SECRET_BYTES = 16;
const FLAG_WILL = 1;

/**
 * A cluster secret: one, or several (the first signs, any verifies). To rotate without cutting nodes off:
 * every node `[old, next]`, then `[next, old]`, then `next`.
 */
export type ClusterSecret = string | Uint8Array | readonly (string | Uint8Array)[];

/** Why a message was dropped. */
export type Rejection =
  /** No seal, on a node with a secret. */
  | "unsigned"
  /** A seal that does not verify under this node's secret (another secret, or a forgery). */
  | "bad-signature"
  /** Sealed, on a node without a secret. */
  | "signed"
  /** Seen before, or sent too long ago (or on a clock too far from this one). */
  | "replayed";

export type Opened =
  | { readonly ok: true; readonly node: string; readonly will: boolean; readonly message: Uint8Array }
  | { readonly ok: false; readonly why: Rejection; readonly node?: string; readonly skewMs?: number };

interface Window {
  hi: number;
  readonly bits: Uint32Array;
  last: number;
}

const utf8 = new TextEncoder();
const ascii = new TextDecoder("latin1");

/** Whether `data` is a sealed message (whatever its version). */
export function isSealed(data: Uint8Array): boolean {
  return data.length >= 4 && data[0] === MAGIC[0] && data[1] === MAGIC[1] && data[2] === MAGIC[2];
}

/** The node id a sealed message says it is from (not verified: for diagnostics), if it has one. */
export function sealedBy(data: Uint8Array): string | undefined {
  const len = data[FIXED];
  return isSealed(data) && len !== undefined && len <= 32 && FIXED + 1 + len <= data.length
    ? ascii.decode(data.subarray(FIXED + 1, FIXED + 1 + len))
    : undefined;
}

/** The secret(s) as keys, or throws a message saying what is wrong. */
export function secretKeys(secret: ClusterSecret): Uint8Array[] {
  const list = typeof secret === "string" || secret instanceof Uint8Array ? [secret] : secret;
  if (!Array.isArray(list) || list.length === 0)
    throw new Error("secret: a string, bytes, or a non-empty list of them");
  return list.map((s: unknown) => {
    const key = typeof s === "string" ? utf8.encode(s) : s instanceof Uint8Array ? s : undefined;
    if (key === undefined) throw new Error("secret: a string, bytes, or a non-empty list of them");
    if (key.length < MIN_SECRET_BYTES) {
      throw new Error(`secret: at least ${MIN_SECRET_BYTES} bytes (128 bits; e.g. 32 random bytes in hex)`);
    }
    return key;
  });
}

/** Signs this node's messages and checks everyone's, under a shared secret. */
export class BusAuth {
  /** Copies of the secret(s): an application zeroing the bytes it gave must not change what this node signs with. */
  private readonly keys: KeyObject[];
  private readonly id: Uint8Array;
  private seq = 0;
  private readonly senders = new Map<string, Window>();

  constructor(secret: ClusterSecret, node: string, incarnation: string) {
    this.keys = secretKeys(secret).map((key) => createSecretKey(key));
    const n = utf8.encode(node);
    const k = utf8.encode(incarnation);
    this.id = new Uint8Array(2 + n.length + k.length);
    this.id[0] = n.length;
    this.id.set(n, 1);
    this.id[1 + n.length] = k.length;
    this.id.set(k, 2 + n.length);
  }

  /** `message` sealed for `subject`; `will`: a bye published on this node's behalf later (no time window). */
  seal(subject: string, message: Uint8Array, will = false): Uint8Array {
    const out = new Uint8Array(FIXED + this.id.length + message.length);
    out.set(MAGIC, 0);
    const view = new DataView(out.buffer);
    view.setFloat64(4 + TAG_BYTES, Date.now());
    view.setFloat64(4 + TAG_BYTES + 8, this.seq++);
    out[FIXED - 1] = will ? FLAG_WILL : 0;
    out.set(this.id, FIXED);
    out.set(message, FIXED + this.id.length);
    out.set(tag(this.keys[0], subject, out), 4);
    return out;
  }

  /** What `data`, read on `subject`, carries, if it is sealed under the secret, in time and new. */
  open(subject: string, data: Uint8Array, now = Date.now()): Opened {
    if (!isSealed(data)) return { ok: false, why: "unsigned" };
    if (data[3] !== MAGIC[3] || data.length < FIXED + 2) return { ok: false, why: "bad-signature" };
    const nodeLen = data[FIXED];
    const incAt = FIXED + 1 + nodeLen;
    if (nodeLen > 32 || incAt >= data.length || data[incAt] > 32 || incAt + 1 + data[incAt] > data.length) {
      return { ok: false, why: "bad-signature" };
    }
    const node = ascii.decode(data.subarray(FIXED + 1, incAt));
    const got = data.subarray(4, 4 + TAG_BYTES);
    if (!this.keys.some((key) => timingSafeEqual(tag(key, subject, data), got))) {
      return { ok: false, why: "bad-signature", node };
    }
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const at = view.getFloat64(4 + TAG_BYTES);
    const seq = view.getFloat64(4 + TAG_BYTES + 8);
    const will = (data[FIXED - 1] & FLAG_WILL) !== 0;
    const message = data.subarray(incAt + 1 + data[incAt]);
    if (will) return { ok: true, node, will, message };
    const skewMs = now - at;
    if (!(Math.abs(skewMs) <= REPLAY_WINDOW_MS) || !Number.isSafeInteger(seq) || seq < 0) {
      return { ok: false, why: "replayed", node, skewMs };
    }
    if (!this.fresh(ascii.decode(data.subarray(FIXED, incAt + 1 + data[incAt])), seq, now)) {
      return { ok: false, why: "replayed", node };
    }
    return { ok: true, node, will, message };
  }

  /** True the first time sender `who` (its id and incarnation) is seen with sequence number `seq`. */
  private fresh(who: string, seq: number, now: number): boolean {
    let w = this.senders.get(who);
    if (w === undefined) {
      if (this.senders.size >= MAX_SENDERS) {
        for (const [k, s] of this.senders) if (now - s.last > 2 * REPLAY_WINDOW_MS) this.senders.delete(k);
        if (this.senders.size >= MAX_SENDERS) this.senders.delete(this.senders.keys().next().value as string);
      }
      w = { hi: seq, bits: new Uint32Array(SEQ_WINDOW / 32), last: now };
      this.senders.set(who, w);
    } else if (seq > w.hi) {
      if (seq - w.hi >= SEQ_WINDOW) w.bits.fill(0);
      else for (let s = w.hi + 1; s <= seq; s++) w.bits[(s % SEQ_WINDOW) >>> 5] &= ~(1 << (s & 31));
      w.hi = seq;
    } else if (seq <= w.hi - SEQ_WINDOW) return false;
    const word = (seq % SEQ_WINDOW) >>> 5;
    const bit = 1 << (seq & 31);
    if ((w.bits[word] & bit) !== 0) return false;
    w.bits[word] |= bit;
    w.last = now;
    return true;
  }
}

/** HMAC-SHA256 under `key` of the subject and `data` but its tag. */
function tag(key: KeyObject, subject: string, data: Uint8Array): Uint8Array {
  const s = utf8.encode(subject);
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, s.length);
  return createHmac("sha256", key)
    .update(len)
    .update(s)
    .update(data.subarray(0, 4))
    .update(data.subarray(4 + TAG_BYTES))
    .digest();
}
