import type { ErrorCode } from "../errors/codes.ts";
import type { Publisher } from "./publisher.ts";
import { SIZE_CLASSES, type SizeClass, sizeClassIndex } from "./size-class.ts";

/** The error map of every connection that counted no error yet (never written). */
const NO_ERRORS: ReadonlyMap<ErrorCode, number> = new Map();

/** Counters for one size class in one direction. */
export interface ClassCounters {
  messages: number;
  bytes: number;
}

/** A snapshot of a connection's (or a server's summed) counters. */
export interface StatsSnapshot {
  /** Messages and data bytes sent per size class (one-way messages, requests and responses). */
  sent: Record<SizeClass, ClassCounters>;
  /** Messages and data bytes received per size class. */
  received: Record<SizeClass, ClassCounters>;
  requests: {
    /** Requests this side made, streams included (a stream is a call its receiver's handler answers). */
    sent: number;
    /** ...of which answered successfully. */
    succeeded: number;
    /** ...of which failed (any typed error). */
    failed: number;
    /** Requests the peer made that this side handled, streams included. */
    handled: number;
    /** Requests in flight now (both directions). */
    inFlight: number;
  };
  /** Streams sent and received (content bytes, before compression). */
  streams: { sent: number; received: number; bytesSent: number; bytesReceived: number };
  /**
   * Compression by algorithm, this side's outgoing STREAM frames sent with it: content bytes before and
   * after (every frame's: one under 4 KiB goes raw, the same before and after), frames of 4 KiB and more
   * compressed, and sent raw because they did not compress (or `auto` skipped them).
   */
  compression: Record<string, CompressionCounters>;
  /** Errors raised, by code. */
  errors: Partial<Record<ErrorCode, number>>;
  /** Frames and bytes on the wire (headers and checksums included). */
  wire: { framesOut: number; bytesOut: number; framesIn: number; bytesIn: number };
}

/** Bytes before and after one compression algorithm. */
export interface CompressionCounters {
  bytesBefore: number;
  bytesAfter: number;
  compressed: number;
  raw: number;
}

function emptyClasses(): Record<SizeClass, ClassCounters> {
  const r = {} as Record<SizeClass, ClassCounters>;
  for (const c of SIZE_CLASSES) r[c] = { messages: 0, bytes: 0 };
  return r;
}

/** Mutable counters behind {@link StatsSnapshot}; flat arrays keep the hot path cheap. */
export class Stats {
  // Plain arrays of numbers: cheaper per connection than typed arrays.
  /**
   * Per size class: messages sent [0..5), bytes sent [5..10), messages received [10..15), bytes received [15..20);
   * then streams sent, received, their bytes sent, received [20..24) (a literal: shared until first written).
   */
  readonly counts = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
  requestsSent = 0;
  requestsSucceeded = 0;
  requestsFailed = 0;
  requestsHandled = 0;
  /** Errors by code (a shared empty map until the first: most connections count none). */
  private errors = NO_ERRORS as Map<ErrorCode, number>;
  /** Compression counters by codec, created on first use (by the stream engine's `countCompression`): an idle connection holds none. */
  compression: Record<string, CompressionCounters> | undefined;
  /** The connection's diagnostics publisher (every part that counts also publishes through it). */
  declare readonly diag: Publisher;

  constructor(diag: Publisher) {
    this.diag = diag;
  }

  sent(size: number): void {
    const i = sizeClassIndex(size);
    this.counts[i]++;
    this.counts[5 + i] += size;
    if (this.diag.ch.message.hasSubscribers) this.diag.publishMessage("out", size, SIZE_CLASSES[i]);
  }

  received(size: number): void {
    const i = sizeClassIndex(size);
    this.counts[10 + i]++;
    this.counts[15 + i] += size;
    if (this.diag.ch.message.hasSubscribers) this.diag.publishMessage("in", size, SIZE_CLASSES[i]);
  }

  /** Messages (one-way, requests and responses) sent so far. */
  get messagesSent(): number {
    const c = this.counts;
    return c[0] + c[1] + c[2] + c[3] + c[4];
  }

  /** Messages received so far. */
  get messagesReceived(): number {
    const c = this.counts;
    return c[10] + c[11] + c[12] + c[13] + c[14];
  }

  /** Changes whenever application data moves either way (messages, stream bytes): idle detection. */
  activity(): number {
    return this.messagesSent + this.messagesReceived + this.counts[22] + this.counts[23];
  }

  error(code: ErrorCode): void {
    if (this.errors === NO_ERRORS) this.errors = new Map();
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
    if (this.diag.ch.error.hasSubscribers) this.diag.publishError(code);
  }

  snapshot(inFlight: number, wire: StatsSnapshot["wire"]): StatsSnapshot {
    // Every class is set below, in SIZE_CLASSES' order.
    const sent = {} as Record<SizeClass, ClassCounters>;
    const received = {} as Record<SizeClass, ClassCounters>;
    const c = this.counts;
    SIZE_CLASSES.forEach((k, i) => {
      sent[k] = { messages: c[i], bytes: c[5 + i] };
      received[k] = { messages: c[10 + i], bytes: c[15 + i] };
    });
    return {
      sent,
      received,
      requests: {
        sent: this.requestsSent,
        succeeded: this.requestsSucceeded,
        failed: this.requestsFailed,
        handled: this.requestsHandled,
        inFlight,
      },
      streams: { sent: c[20], received: c[21], bytesSent: c[22], bytesReceived: c[23] },
      compression: copyCompression(this.compression),
      errors: Object.fromEntries(this.errors),
      wire,
    };
  }
}

function copyCompression(c: Record<string, CompressionCounters> | undefined): Record<string, CompressionCounters> {
  const out: Record<string, CompressionCounters> = {};
  if (c === undefined) return out;
  for (const k in c) out[k] = { ...c[k] };
  return out;
}

/** An all-zero snapshot. */
export function emptyStats(): StatsSnapshot {
  return {
    sent: emptyClasses(),
    received: emptyClasses(),
    requests: { sent: 0, succeeded: 0, failed: 0, handled: 0, inFlight: 0 },
    streams: { sent: 0, received: 0, bytesSent: 0, bytesReceived: 0 },
    compression: {},
    errors: {},
    wire: { framesOut: 0, bytesOut: 0, framesIn: 0, bytesIn: 0 },
  };
}

/** Adds `s` into `out`, in place (a server folds each closed session into its totals this way). */
export function addStats(out: StatsSnapshot, s: StatsSnapshot): void {
  for (const c of SIZE_CLASSES) {
    out.sent[c].messages += s.sent[c].messages;
    out.sent[c].bytes += s.sent[c].bytes;
    out.received[c].messages += s.received[c].messages;
    out.received[c].bytes += s.received[c].bytes;
  }
  out.requests.sent += s.requests.sent;
  out.requests.succeeded += s.requests.succeeded;
  out.requests.failed += s.requests.failed;
  out.requests.handled += s.requests.handled;
  out.requests.inFlight += s.requests.inFlight;
  out.streams.sent += s.streams.sent;
  out.streams.received += s.streams.received;
  out.streams.bytesSent += s.streams.bytesSent;
  out.streams.bytesReceived += s.streams.bytesReceived;
  for (const [name, c] of Object.entries(s.compression)) {
    const o = out.compression[name] ?? { bytesBefore: 0, bytesAfter: 0, compressed: 0, raw: 0 };
    o.bytesBefore += c.bytesBefore;
    o.bytesAfter += c.bytesAfter;
    o.compressed += c.compressed;
    o.raw += c.raw;
    out.compression[name] = o;
  }
  for (const [k, v] of Object.entries(s.errors) as [ErrorCode, number][]) out.errors[k] = (out.errors[k] ?? 0) + v;
  out.wire.framesOut += s.wire.framesOut;
  out.wire.bytesOut += s.wire.bytesOut;
  out.wire.framesIn += s.wire.framesIn;
  out.wire.bytesIn += s.wire.bytesIn;
}

/** Adds snapshots together (for a server's total); `base` is not modified. */
export function sumStats(list: readonly StatsSnapshot[], base?: StatsSnapshot): StatsSnapshot {
  const out = emptyStats();
  if (base !== undefined) addStats(out, base);
  for (const s of list) addStats(out, s);
  return out;
}
