/**
 * The peer's MSG, REQ and RES frames (docs/PROTOCOL.md §3.1–§3.4): a whole
 * message in one frame goes straight on; a chunked one is assembled by
 * `assembly.ts` (code that comes with the stream engine: the frame router
 * holds a connection's frames from its first chunked one on until that is
 * loaded) and handed on here when its END arrives.
 */

import {
  F_END,
  F_KEYED,
  F_START,
  FRAME_TYPE_NAMES,
  STATUS_ERROR,
  STATUS_OK,
  T_MSG,
  T_REQ,
  T_RES,
} from "../codec/frame.ts";
import { decodeErrorBody, readKeyBounds, readMessageLength, readRouteBounds } from "../codec/message-head.ts";
import type { VarintResult } from "../codec/varint.ts";
import { codeForErrno } from "../errors/codes.ts";
import { PointSubError, protocolError } from "../errors/error.ts";
import type { Assemblies } from "./assembly.ts";
import type { MemoryBudget } from "./budget.ts";
import { NO_CALLS } from "./call-table.ts";
import type { Caller } from "./caller.ts";
import type { PendingCall } from "./calls.ts";
import type { Dispatcher } from "./dispatch.ts";
import type { ReceiveWindow } from "./flow.ts";
import { creditDue, type Link } from "./link.ts";
import type { Outbox } from "./outbox.ts";
import type { Stats } from "./stats.ts";

/** Routes must be valid UTF-8 (docs/PROTOCOL.md §3.1): a lenient decoder would map different bytes to one route (a leading U+FEFF is kept: stripped, "\uFEFF/x" named "/x"). */
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const EMPTY_ROUTE = new Uint8Array(0);

/** Varints read here (one for every connection: read and used with no call between). */
const SCRATCH: VarintResult = { value: 0, next: 0 };

/** What the inbound side needs to know of the peer's streams. */
export interface InboundStreams {
  /** Whether the peer's stream `id` is open here. */
  hasIn(id: number): boolean;
  /** A CANCEL for one of the peer's streams; false when `id` is not one. */
  onCancel(id: number, errno: number): boolean;
}

/**
 * The last route decoded, shared by every connection (a copy of its bytes):
 * a server's sessions mostly call the same few routes, and an idle session
 * keeps no buffer and string of its own.
 */
let lastRouteBytes: Uint8Array = EMPTY_ROUTE;
const NO_CALLER = { pending: NO_CALLS } as unknown as Caller;
let lastRoute = "";

/**
 * @internal `performance.now()` of the input being processed, set by the
 * connection per read (what chunked messages being received stamp their
 * frames with): one for every connection, as input is processed one read
 * at a time — a field per connection was a number box in each.
 */
export const inputTime = { now: 0 };

export class Inbound implements ReceiveWindow {
  /** Set by the engine once the stream half exists. */
  streams: InboundStreams | undefined;
  /**
   * The chunked messages being received, made from the stream engine by the
   * frame router on the first chunked frame (it holds frames until then).
   */
  chunked: Assemblies | undefined;
  /** @internal What `assembly.ts` uses too. */
  declare readonly link: Link;
  declare readonly outbox: Outbox;
  declare readonly budget: MemoryBudget;
  declare readonly stats: Stats;
  /**
   * This side's calls: until it made one (the connection creates its caller
   * then), a stand-in with only the always-empty table, which is all this
   * side reads of a caller without a call in it.
   */
  caller: Caller = NO_CALLER;
  /** Replaced once when a browser connection loads its dispatcher on demand (`dispatch-lazy.ts`). */
  declare dispatcher: Dispatcher;
  /** The runtime's allocator of buffers written completely before use. */
  declare readonly alloc: (n: number) => Uint8Array;

  constructor(
    link: Link,
    outbox: Outbox,
    budget: MemoryBudget,
    stats: Stats,
    dispatcher: Dispatcher,
    alloc: (n: number) => Uint8Array,
  ) {
    this.alloc = alloc;
    this.link = link;
    this.outbox = outbox;
    this.budget = budget;
    this.stats = stats;
    this.dispatcher = dispatcher;
  }

  /** The connection window (flow.ts): received data bytes not yet returned as CREDIT, and those not yet acknowledged. */
  private used = 0;
  private unacked = 0;

  take(len: number): void {
    this.used += len;
    const window = this.link.local.connectionWindow;
    if (this.used > window) throw PointSubError.fromPeer("ERR_FLOW_CONTROL", "peer exceeded the connection window");
    this.unacked += len;
    if (creditDue(this.unacked, window)) {
      this.outbox.sendCredit(0, this.unacked);
      this.used -= this.unacked;
      this.unacked = 0;
    }
  }

  /** Chunked messages being received (in flight for a graceful close). */
  get size(): number {
    return this.chunked?.size ?? 0;
  }

  /** Whether a chunked message with this id is being received. */
  has(id: number): boolean {
    return this.chunked?.has(id) === true;
  }

  /**
   * Whether the peer's id is open here (docs/PROTOCOL.md §2.2): a chunked
   * message being received, a stream, or a request not yet answered — a
   * START of any type on it is the peer's protocol error.
   */
  private isOpen(id: number): boolean {
    const serving = this.dispatcher.serving;
    return this.has(id) || this.streams?.hasIn(id) === true || (serving.size !== 0 && serving.get(id) !== undefined);
  }

  /** A MSG, REQ or RES frame. */
  onFrame(type: number, flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    const len = end - start;
    this.take(len);
    // A RES answers one of this side's ids; MSG and REQ start on the peer's.
    if ((type === T_RES) !== this.link.isMine(id)) {
      throw protocolError(`${FRAME_TYPE_NAMES[type]} frame on stream ${id}: wrong parity`);
    }
    if (type === T_MSG && flags === (F_START | F_END)) {
      // Fast path: a whole one-way message in one frame.
      if (this.isOpen(id)) throw protocolError(`stream ${id} started twice`);
      if (len > this.link.local.maxMessageSize) this.link.checkIncomingSize(len);
      this.stats.received(len);
      this.dispatcher.deliverMessage(buf.subarray(start, end));
      return;
    }
    if ((flags & F_START) !== 0) this.onStart(type, flags, id, buf, start, end);
    else (this.chunked as Assemblies).continuation(type, flags, id, buf, start, end);
  }

  private onStart(type: number, flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    const dispatcher = this.dispatcher;
    if (this.isOpen(id)) throw protocolError(`stream ${id} started twice`);
    // A new message on an id this side refused: the peer has moved on.
    this.chunked?.started(id);
    const single = (flags & F_END) !== 0;
    const v = SCRATCH;
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
    let call: PendingCall | undefined;
    if (type === T_REQ) {
      readRouteBounds(buf, p, end, v);
      route = this.decodeRoute(buf, v.value, v.next);
      p = v.next;
      if ((flags & F_KEYED) !== 0) {
        // A keyed request (§3.4.1): the key follows the route. Copied: `buf` may be reused.
        readKeyBounds(buf, p, end, v);
        key = buf.slice(v.value, v.next);
        p = v.next;
      }
      if (++dispatcher.openRequests > this.link.local.maxConcurrentRequests) {
        throw PointSubError.fromPeer("ERR_TOO_MANY_REQUESTS", "peer exceeded maxConcurrentRequests");
      }
    } else if (type === T_RES) {
      call = this.caller.pending.get(id);
      if (call === undefined) throw protocolError(`response for unknown request ${id}`);
      if (p >= end) throw protocolError("response without status");
      const status = buf[p++];
      if (status !== STATUS_OK && status !== STATUS_ERROR) throw protocolError(`bad status ${status}`);
      if (status === STATUS_ERROR) {
        if (!single) throw protocolError("error response must be one frame");
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
    (this.chunked as Assemblies).start(type, id, total, route, key, call, data, end - start);
  }

  /**
   * Hands a complete message on. `charged` is what its assembly held of the
   * budget (-1 for a single frame): a request keeps it while its handler
   * runs; anything else returns it now. `key` is a keyed request's
   * idempotency key. @internal (`assembly.ts` delivers through it.)
   */
  deliver(
    type: number,
    id: number,
    route: string,
    data: Uint8Array,
    call: PendingCall | undefined,
    charged = -1,
    key?: Uint8Array,
  ): void {
    this.stats.received(data.length);
    if (type === T_REQ) {
      this.dispatcher.handleRequest(id, route, data, charged, key);
      return;
    }
    if (charged > 0) this.budget.release(charged);
    if (type === T_MSG) {
      this.dispatcher.deliverMessage(data);
      return;
    }
    this.caller.answer(call as PendingCall, data);
  }

  /** Removes the unfinished message `id` and returns what it held of the budget; returns its type or -1. */
  drop(id: number): number {
    return this.chunked === undefined ? -1 : this.chunked.drop(id);
  }

  private decodeRoute(payload: Uint8Array, start: number, end: number): string {
    const last = lastRouteBytes;
    const n = end - start;
    if (last.length === n) {
      let same = true;
      for (let i = 0; i < n; i++) {
        if (last[i] !== payload[start + i]) {
          same = false;
          break;
        }
      }
      if (same) return lastRoute;
    }
    const bytes = payload.slice(start, end);
    let route: string;
    try {
      route = decoder.decode(bytes);
    } catch {
      throw protocolError("route is not UTF-8");
    }
    lastRouteBytes = bytes;
    lastRoute = route;
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
        // A chunked one-way message the receiver refused: stop sending it, reject its send. Only for an
        // id in use, and only in the chunked queue (a CANCEL is never about a single-frame one): a flood
        // of CANCELs for made-up ids scanned every queued answer, then the chunked queue, each.
        if (!this.outbox.uses(id)) return;
        const kept = code === "ERR_TIMEOUT" || code === "ERR_OVERLOADED" || code === "ERR_GOING_AWAY";
        this.outbox.writer.removeChunked(
          T_MSG,
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
      if (type === T_REQ) {
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
   * from `floor` at the earliest (reading was paused before it). Not
   * `confirmed` (a tick): true, cancelling none, once one is due, for a
   * check after this turn's I/O (as the streams' checks).
   */
  checkProgress(now: number, timeoutMs: number, floor: number, minBytesPerSecond: number, confirmed: boolean): boolean {
    return this.chunked?.checkProgress(now, timeoutMs, floor, minBytesPerSecond, confirmed) === true;
  }

  /** The connection closed: drop every unfinished message. */
  teardown(): void {
    this.chunked?.teardown();
  }
}
