/**
 * The peer's MSG, REQ and RES frames (docs/PROTOCOL.md §3.1–§3.4): a whole
 * message in one frame goes straight on; a chunked one is assembled here,
 * charged to the memory budget and its per-message window, and handed on
 * when its END arrives. Messages this side refuses are cancelled and their
 * late frames dropped (tombstones).
 */

import { Flag, FrameType, Status } from "../codec/frame.ts";
import { decodeErrorBody, readKeyBounds, readMessageLength, readRouteBounds } from "../codec/message-head.ts";
import type { VarintResult } from "../codec/varint.ts";
import { codeForErrno } from "../errors/codes.ts";
import { PointSubError } from "../errors/error.ts";
import { ASSEMBLY_OVERHEAD, type MemoryBudget } from "./budget.ts";
import type { Caller } from "./caller.ts";
import type { PendingCall } from "./calls.ts";
import type { Dispatcher } from "./dispatch.ts";
import type { ReceiveWindow } from "./flow.ts";
import { creditDue, type Link } from "./link.ts";
import type { Outbox } from "./outbox.ts";
import type { Stats } from "./stats.ts";

/**
 * Unfinished chunked messages one peer may have open here; more are refused
 * with ERR_OVERLOADED (senders keep at most MAX_OPEN_CHUNKED open, far fewer).
 * Each costs a buffer allocation, so this bounds the work a flood of cheap
 * START frames causes, whatever the budget.
 */
const MAX_OPEN_ASSEMBLIES = 1024;
/** Ids of refused messages whose remaining frames are dropped, at most this many. */
const MAX_TOMBSTONES = 4096;
/**
 * An assembly buffer holds only the first chunk (at least this much, or
 * {@link FIRST_CHUNKS} times the first chunk, never past the declared
 * length) until the peer sends more; then the whole message is allocated
 * and the bytes so far copied once. A START that declares 256 MiB and sends
 * nothing more costs 64 KiB, not a 256 MiB allocation (untouched, but V8
 * counts it as external memory; a fuzz run allocated 4.6 GiB that way).
 * Growing step by step (4x) was tried: it made the longest turn of a server
 * receiving 16 MiB messages ~3x longer. The budget is charged on the
 * declared length from the START either way.
 */
const FIRST_CAPACITY = 64 * 1024;
const FIRST_CHUNKS = 4;

/** Routes must be valid UTF-8 (docs/PROTOCOL.md §3.1): a lenient decoder would map different bytes to one route. */
const decoder = new TextDecoder("utf-8", { fatal: true });
const EMPTY_ROUTE = new Uint8Array(0);

/** A chunked message being received. */
interface Assembly {
  type: number;
  total: number;
  /**
   * The bytes so far, in a buffer that grows as they arrive (exactly
   * `total` long once complete); null when they are being discarded (a
   * cancelled call's response).
   */
  buf: Uint8Array | null;
  filled: number;
  route: string;
  /** A keyed request's idempotency key (a copy), else undefined. */
  key: Uint8Array | undefined;
  status: number;
  streamUsed: number;
  streamUnacked: number;
  /** Bytes of the memory budget this assembly holds (0 when discarding). */
  charged: number;
  /** When its last frame arrived (the connection's last input time). */
  lastFrameAt: number;
  /** Start of the current progress window (see {@link Inbound.checkProgress}). */
  windowAt: number;
  /** `filled` when that window started. */
  windowFilled: number;
}

/** Shared empty stand-in until the first chunked message (an idle connection should cost little memory). */
const NO_ASSEMBLIES: Map<number, Assembly> = new Map();

/** What the inbound side needs to know of the peer's streams. */
export interface InboundStreams {
  /** Whether the peer's stream `id` is open here. */
  hasIn(id: number): boolean;
  /** A CANCEL for one of the peer's streams; false when `id` is not one. */
  onCancel(id: number, errno: number): boolean;
}

export class Inbound {
  /** Set by the engine once the stream half exists. */
  streams: InboundStreams | undefined;
  /** Time of the input being processed (set by the engine per read). */
  now = 0;
  private assemblies: Map<number, Assembly> = NO_ASSEMBLIES;
  private assemblyBytes = 0;
  /** Ids of the peer's messages this side refused or timed out: their late frames are dropped until END. */
  private tombstones: Set<number> | undefined;
  private readonly v: VarintResult = { value: 0, next: 0 };
  private lastRouteBytes: Uint8Array = EMPTY_ROUTE;
  private lastRoute = "";
  declare private readonly link: Link;
  declare private readonly outbox: Outbox;
  declare private readonly window: ReceiveWindow;
  declare private readonly budget: MemoryBudget;
  declare private readonly stats: Stats;
  declare private readonly caller: Caller;
  /** Replaced once when a browser connection loads its dispatcher on demand (`dispatch-lazy.ts`). */
  declare dispatcher: Dispatcher;
  /** The runtime's allocator of buffers written completely before use. */
  private readonly alloc: (n: number) => Uint8Array;

  constructor(
    link: Link,
    outbox: Outbox,
    window: ReceiveWindow,
    budget: MemoryBudget,
    stats: Stats,
    caller: Caller,
    dispatcher: Dispatcher,
    alloc: (n: number) => Uint8Array,
  ) {
    this.alloc = alloc;
    this.link = link;
    this.outbox = outbox;
    this.window = window;
    this.budget = budget;
    this.stats = stats;
    this.caller = caller;
    this.dispatcher = dispatcher;
  }

  /** Chunked messages being received (in flight for a graceful close). */
  get size(): number {
    return this.assemblies.size;
  }

  /** Whether a chunked message with this id is being received. */
  has(id: number): boolean {
    return this.assemblies.size !== 0 && this.assemblies.has(id);
  }

  /** FrameSink.frameTarget for MSG/REQ/RES continuations: the assembly buffer, so bytes land in place. */
  frameTarget(type: number, id: number, length: number): Uint8Array | undefined {
    const a = this.assemblies.get(id);
    if (a === undefined || a.buf === null || a.type !== type || a.filled + length > a.total) return undefined;
    const buf = a.filled + length > a.buf.length ? this.grow(a) : a.buf;
    return buf.subarray(a.filled, a.filled + length);
  }

  /** Gives `a` a buffer of its whole declared length, with the bytes so far copied. */
  private grow(a: Assembly): Uint8Array {
    const old = a.buf as Uint8Array;
    const cap = a.total;
    let buf: Uint8Array;
    try {
      buf = this.alloc(cap);
    } catch (cause) {
      throw PointSubError.fromPeer("ERR_MESSAGE_TOO_LARGE", `cannot allocate ${a.total} bytes`, { cause });
    }
    if (a.filled > 0) buf.set(old.subarray(0, a.filled), 0);
    a.buf = buf;
    return buf;
  }

  /** A MSG, REQ or RES frame. */
  onFrame(type: number, flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    const len = end - start;
    this.window.take(len);
    if (type === FrameType.MSG && flags === (Flag.START | Flag.END)) {
      // Fast path: a whole one-way message in one frame.
      if ((id & 1) === this.link.myParity)
        throw PointSubError.fromPeer("ERR_PROTOCOL", `MSG on stream ${id} has this side's parity`);
      if (this.assemblies.size !== 0 && this.assemblies.has(id)) {
        throw PointSubError.fromPeer("ERR_PROTOCOL", `stream ${id} started twice`);
      }
      if (len > this.link.local.maxMessageSize) this.link.checkIncomingSize(len);
      this.stats.received(len);
      this.dispatcher.deliverMessage(buf.subarray(start, end));
      return;
    }
    if ((type === FrameType.RES) !== this.link.isMine(id)) {
      throw PointSubError.fromPeer(
        "ERR_PROTOCOL",
        `stream id ${id} has the wrong parity for ${type === FrameType.RES ? "RES" : "MSG/REQ"}`,
      );
    }
    if ((flags & Flag.START) !== 0) this.onStart(type, flags, id, buf, start, end);
    else this.onContinuation(type, flags, id, buf, start, end);
  }

  private onStart(type: number, flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    const dispatcher = this.dispatcher;
    if (
      (this.assemblies.size !== 0 && this.assemblies.has(id)) ||
      this.streams?.hasIn(id) === true ||
      (type === FrameType.REQ && dispatcher.serving.size !== 0 && dispatcher.serving.get(id) !== undefined)
    )
      throw PointSubError.fromPeer("ERR_PROTOCOL", `stream ${id} started twice`);
    // A new message on an id this side refused: the peer has moved on.
    if (this.tombstones !== undefined) this.tombstones.delete(id);
    const single = (flags & Flag.END) !== 0;
    const v = this.v;
    let p = start;
    let total = -1;
    if (!single) {
      readMessageLength(buf, p, end, v);
      total = v.value;
      p = v.next;
      this.link.checkIncomingSize(total);
    }
    let route = "";
    let key: Uint8Array | undefined;
    let status = Status.OK as number;
    let call: PendingCall | undefined;
    if (type === FrameType.REQ) {
      readRouteBounds(buf, p, end, v);
      route = this.decodeRoute(buf, v.value, v.next);
      p = v.next;
      if ((flags & Flag.KEYED) !== 0) {
        // A keyed request (§3.4.1): the key follows the route. Copied: `buf` may be reused.
        readKeyBounds(buf, p, end, v);
        key = buf.slice(v.value, v.next);
        p = v.next;
      }
      if (++dispatcher.openRequests > this.link.local.maxConcurrentRequests) {
        throw PointSubError.fromPeer("ERR_TOO_MANY_REQUESTS", "peer exceeded maxConcurrentRequests");
      }
    } else if (type === FrameType.RES) {
      call = this.caller.pending.get(id);
      if (call === undefined) throw PointSubError.fromPeer("ERR_PROTOCOL", `response for unknown request ${id}`);
      if (p >= end) throw PointSubError.fromPeer("ERR_PROTOCOL", "response without status");
      status = buf[p++];
      if (status !== Status.OK && status !== Status.ERROR)
        throw PointSubError.fromPeer("ERR_PROTOCOL", `bad status ${status}`);
      if (status === Status.ERROR) {
        if (!single) throw PointSubError.fromPeer("ERR_PROTOCOL", "error response must be one frame");
        const body = decodeErrorBody(buf, p, end);
        // errno is authoritative for known codes; the code string is informative.
        const err = PointSubError.fromPeer(
          codeForErrno(body.errno) ?? "ERR_HANDLER",
          body.message,
          body.retryAfterMs === undefined ? undefined : { retryAfterMs: body.retryAfterMs },
        );
        this.caller.finishCall(call);
        this.caller.settle(call, undefined, err);
        return;
      }
    }
    const data = buf.subarray(p, end);
    if (single) {
      this.link.checkIncomingSize(data.length);
      this.deliver(type, id, route, data, call, -1, key);
      return;
    }
    if (data.length > total) throw PointSubError.fromPeer("ERR_PROTOCOL", "first chunk larger than the message");
    let discard = call?.settled === true;
    if (!discard) {
      if (this.assemblyBytes + total > this.link.local.maxAssemblyBytes) {
        throw PointSubError.fromPeer("ERR_FLOW_CONTROL", "peer exceeded maxAssemblyBytes with unfinished messages");
      }
      const tooMany = this.assemblies.size >= MAX_OPEN_ASSEMBLIES;
      if (tooMany || !this.budget.tryCharge(total + ASSEMBLY_OVERHEAD)) {
        const err = tooMany
          ? PointSubError.fromPeer(
              "ERR_OVERLOADED",
              `more than ${MAX_OPEN_ASSEMBLIES} unfinished messages; retry later`,
            )
          : this.overloaded(total);
        if (call === undefined) {
          this.refuse(type, id, err);
          return;
        }
        // The response to this side's own call: give up on it, tell the
        // responder, and absorb the rest of it without storing.
        this.caller.settle(call, undefined, err);
        this.outbox.sendCancel(id, err.code);
        discard = true;
      } else {
        this.assemblyBytes += total;
      }
    }
    let target: Uint8Array | null = null;
    if (!discard) {
      try {
        // Delivered only once all `total` bytes were written into it (grown as they arrive).
        target = this.alloc(Math.min(total, Math.max(FIRST_CAPACITY, data.length * FIRST_CHUNKS)));
      } catch (cause) {
        throw PointSubError.fromPeer("ERR_MESSAGE_TOO_LARGE", `cannot allocate ${total} bytes`, { cause });
      }
      target.set(data, 0);
    }
    const a: Assembly = {
      type,
      total,
      buf: target,
      filled: data.length,
      route,
      key,
      status,
      streamUsed: end - start,
      streamUnacked: end - start,
      charged: discard ? 0 : total + ASSEMBLY_OVERHEAD,
      lastFrameAt: this.now,
      windowAt: this.now,
      windowFilled: 0,
    };
    if (this.assemblies === NO_ASSEMBLIES) this.assemblies = new Map();
    this.assemblies.set(id, a);
    this.messageCredit(id, a);
  }

  private onContinuation(type: number, flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    const a = this.assemblies.get(id);
    if (a === undefined || a.type !== type) {
      if (a === undefined && this.tombstones?.has(id) === true) {
        // A refused message's frames still in flight: dropped (connection credit was counted).
        if ((flags & Flag.END) !== 0) this.tombstones.delete(id);
        return;
      }
      throw PointSubError.fromPeer("ERR_PROTOCOL", `continuation of unknown stream ${id}`);
    }
    a.lastFrameAt = this.now;
    const len = end - start;
    if (a.filled + len > a.total)
      throw PointSubError.fromPeer("ERR_PROTOCOL", `stream ${id} overruns its declared length`);
    a.streamUsed += len;
    if (a.streamUsed > this.link.local.streamWindow)
      throw PointSubError.fromPeer("ERR_FLOW_CONTROL", `peer exceeded the window of stream ${id}`);
    a.streamUnacked += len;
    if (a.buf !== null) {
      const inPlace = buf.buffer === a.buf.buffer && buf.byteOffset + start === a.buf.byteOffset + a.filled;
      if (!inPlace) (a.filled + len > a.buf.length ? this.grow(a) : a.buf).set(buf.subarray(start, end), a.filled);
    }
    a.filled += len;
    if ((flags & Flag.END) === 0) {
      this.messageCredit(id, a);
      return;
    }
    if (a.filled !== a.total)
      throw PointSubError.fromPeer("ERR_PROTOCOL", `stream ${id} ended short of its declared length`);
    this.assemblies.delete(id);
    if (a.buf === null) {
      // Discarded response of a call already settled: its id is free now.
      const call = this.caller.pending.get(id);
      if (call !== undefined) this.caller.finishCall(call);
      return;
    }
    this.assemblyBytes -= a.total;
    this.deliver(
      type,
      id,
      a.route,
      a.buf,
      type === FrameType.RES ? this.caller.pending.get(id) : undefined,
      a.charged,
      a.key,
    );
  }

  /**
   * Hands a complete message on. `charged` is what its assembly held of the
   * budget (-1 for a single frame): a request keeps it while its handler
   * runs; anything else returns it now. `key` is a keyed request's
   * idempotency key.
   */
  private deliver(
    type: number,
    id: number,
    route: string,
    data: Uint8Array,
    call: PendingCall | undefined,
    charged = -1,
    key?: Uint8Array,
  ): void {
    this.stats.received(data.length);
    if (type === FrameType.REQ) {
      this.dispatcher.handleRequest(id, route, data, charged, key);
      return;
    }
    if (charged > 0) this.budget.release(charged);
    if (type === FrameType.MSG) {
      this.dispatcher.deliverMessage(data);
      return;
    }
    this.caller.answer(call as PendingCall, data);
  }

  private overloaded(size: number): PointSubError {
    const b = this.budget;
    return PointSubError.fromPeer(
      "ERR_OVERLOADED",
      `no memory budget for ${size} more bytes (${b.used} of ${b.limit} in use); retry later`,
    );
  }

  /**
   * Refuses the peer's message or request `id` (CANCEL with `err`'s errno);
   * its frames still in flight are dropped.
   */
  private refuse(type: number, id: number, err: PointSubError): void {
    if (type === FrameType.REQ) this.dispatcher.openRequests--;
    this.stats.error(err.code);
    this.outbox.sendCancel(id, err.code);
    this.tombstones ??= new Set();
    if (this.tombstones.size >= MAX_TOMBSTONES) {
      const oldest = this.tombstones.values().next().value as number;
      this.tombstones.delete(oldest);
    }
    this.tombstones.add(id);
  }

  /** Removes the unfinished message `id` and returns what it held of the budget; returns its type or -1. */
  drop(id: number): number {
    const a = this.assemblies.get(id);
    if (a === undefined) return -1;
    this.assemblies.delete(id);
    if (a.buf !== null) {
      this.assemblyBytes -= a.total;
      this.budget.release(a.charged);
      a.charged = 0;
    }
    return a.type;
  }

  /** Returns credit on a chunked message's own window in quarter-window steps. */
  private messageCredit(id: number, a: Assembly): void {
    if (creditDue(a.streamUnacked, this.link.local.streamWindow)) {
      this.outbox.sendCredit(id, a.streamUnacked);
      a.streamUsed -= a.streamUnacked;
      a.streamUnacked = 0;
    }
  }

  private decodeRoute(payload: Uint8Array, start: number, end: number): string {
    const last = this.lastRouteBytes;
    const n = end - start;
    if (last.length === n) {
      let same = true;
      for (let i = 0; i < n; i++) {
        if (last[i] !== payload[start + i]) {
          same = false;
          break;
        }
      }
      if (same) return this.lastRoute;
    }
    const bytes = payload.slice(start, end);
    let route: string;
    try {
      route = decoder.decode(bytes);
    } catch {
      throw PointSubError.fromPeer("ERR_PROTOCOL", "route is not UTF-8");
    }
    this.lastRouteBytes = bytes;
    this.lastRoute = route;
    return route;
  }

  /**
   * CANCEL: the peer gives up on (or refuses) a message, call or stream —
   * one of this side's (its final word on it) or one of its own.
   */
  onCancel(id: number, errno: number): void {
    const code = codeForErrno(errno) ?? "ERR_CANCELLED";
    if (this.link.isMine(id)) {
      const call = this.caller.pending.get(id);
      if (call === undefined) {
        // A chunked one-way message the receiver refused: stop sending it, reject its send.
        const kept = code === "ERR_TIMEOUT" || code === "ERR_OVERLOADED" || code === "ERR_GOING_AWAY";
        this.outbox.writer.remove(
          FrameType.MSG,
          id,
          PointSubError.fromPeer(kept ? code : "ERR_CANCELLED", "message refused by the peer"),
        );
        return;
      }
      this.drop(id);
      this.caller.cancelledByPeer(call, code);
      return;
    }
    if (this.streams?.onCancel(id, errno) === true) return;
    // About the peer's MSG or REQ.
    const reasonCode = code === "ERR_TIMEOUT" ? "ERR_TIMEOUT" : "ERR_CANCELLED";
    const type = this.drop(id);
    if (type !== -1) {
      if (type === FrameType.REQ) {
        this.dispatcher.openRequests--;
        // The answer to a requester's CANCEL is always 4004 (PROTOCOL §3.4).
        this.outbox.sendCancel(id, "ERR_CANCELLED");
      }
      return;
    }
    // A handler running: abort it; answered already: our RES ends it.
    this.dispatcher.cancelServed(id, reasonCode);
  }

  /**
   * Cancels the peer's unfinished messages that stalled (ERR_TIMEOUT, their
   * budget returned): no frame for `timeoutMs`, or, in a window of
   * `timeoutMs`, fewer bytes than `minBytesPerSecond` asks for (or than
   * what the message still lacked, when less) — one byte a frame now and
   * then does not keep a large message's memory charged. Progress counts
   * from `floor` at the earliest (reading was paused before it).
   */
  checkProgress(now: number, timeoutMs: number, floor: number, minBytesPerSecond = 0): void {
    if (this.assemblies.size === 0) return;
    const perWindow = (minBytesPerSecond * timeoutMs) / 1000;
    for (const [id, a] of this.assemblies) {
      if (a.type === FrameType.RES) continue; // this side's call: its request timeout rules
      const last = a.lastFrameAt > floor ? a.lastFrameAt : floor;
      let why: string;
      if (now - last >= timeoutMs) {
        why = `received nothing for ${now - last} ms`;
      } else {
        if (a.windowAt < floor) {
          // Nothing could arrive while reading was paused: a new window from the resume.
          a.windowAt = floor;
          a.windowFilled = a.filled;
        }
        const span = now - a.windowAt;
        if (span < timeoutMs) continue;
        const got = a.filled - a.windowFilled;
        const lacked = a.total - a.windowFilled;
        if (got >= (lacked < perWindow ? lacked : perWindow)) {
          a.windowAt = now;
          a.windowFilled = a.filled;
          continue;
        }
        why = `received ${got} bytes in ${span} ms (minProgressBytesPerSecond ${minBytesPerSecond})`;
      }
      this.drop(id);
      this.refuse(a.type, id, PointSubError.fromPeer("ERR_TIMEOUT", `message ${id} ${why}; cancelled`));
    }
  }

  /** The connection closed: drop every unfinished message. */
  teardown(): void {
    if (this.assemblies.size !== 0) for (const id of [...this.assemblies.keys()]) this.drop(id);
    this.assemblyBytes = 0;
  }
}
