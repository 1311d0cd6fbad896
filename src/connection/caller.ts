/**
 * Calls this side makes (docs/PROTOCOL.md §3.4): requests and streams
 * waiting for their answer, the queue of calls over the peer's
 * maxConcurrentRequests, deadlines (one timer per connection) and aborts.
 */
import { F_KEYED, FEATURE_IDEMPOTENCY, T_REQ, T_STREAM } from "../codec/frame.ts";
import { encodeKeyedHead, idempotencyKeyBytes } from "../codec/message-head.ts";
import type { ErrorCode } from "../errors/codes.ts";
import { PointSubError } from "../errors/error.ts";
import { checkSignal } from "../errors/signal.ts";
import { Queue } from "../util/queue.ts";
import { CallTable } from "./call-table.ts";
import type { PendingCall } from "./calls.ts";
import type { Link } from "./link.ts";
import type { Outbox } from "./outbox.ts";
import type { Stats } from "./stats.ts";
import { streamEngine } from "./stream-engine.ts";
import { toBytes } from "./to-bytes.ts";
import type { Payload, RequestOptions } from "./types.ts";

/** Checks a request's idempotency key (1..64 bytes) before it is sent: the resilient client refuses one at once rather than hold it. */
export { idempotencyKeyBytes };

/** What the caller needs to hear about streams (the stream half, once created). */
export interface CallerStreams {
  /** This side gave up on its stream `id`: stop the producer. */
  stopOut(id: number, err: PointSubError): void;
  /**
   * The peer's final frame for call `id` arrived: a stream's (its slot is
   * free), or a request's (its request slot may be what a stream waits for).
   */
  streamAnswered(id: number): void;
  /**
   * A graceful close began (`drain.ts`): streams waiting for a slot fail
   * now with ERR_GOING_AWAY (nothing was sent for them), not when a slot
   * frees or the close ends.
   */
  refuseWaiting?(): void;
}

/**
 * Calls with a timeout made in this synchronous run, their deadline not yet
 * set, each followed by its caller (shared by every connection: a
 * connection holds no list or closure for them): {@link stampDeadlines}
 * reads the clock once for all of them (a clock read costs ~150 ns on a
 * virtual machine's kvm-clock, as much as the rest of a request's own work).
 */
const unstamped: (PendingCall | Caller)[] = [];

/**
 * The calls made in the synchronous run that just ended get their deadlines
 * from one clock read: a timeout counts from the end of the run that made
 * the request (when its bytes go to the transport), so it may fire that
 * run's duration late, never early. Calls settled meanwhile (a closed
 * connection's among them) are skipped.
 */
function stampDeadlines(): void {
  const now = performance.now();
  for (let i = 0; i < unstamped.length; i += 2) {
    const call = unstamped[i] as PendingCall;
    if (call.settled) continue;
    call.deadline = now + call.timeoutMs;
    (unstamped[i + 1] as Caller).armDeadline(call.deadline);
  }
  unstamped.length = 0;
}

/** A call's `timeoutMs` that is not a number >= 0 (a request's, a ping's, a close's): ERR_INVALID_ARGUMENT. */
const badTimeoutError = (ms: number): PointSubError =>
  new PointSubError("ERR_INVALID_ARGUMENT", `invalid timeoutMs ${ms}`);
/** {@link badTimeoutError}, rejected. */
export const badTimeout = (ms: number): Promise<never> => Promise.reject(badTimeoutError(ms));

/**
 * ERR_MESSAGE_TOO_LARGE (counted) for a message of `size` data bytes, sent after `head` bytes of prefix
 * (a request's route and key), the peer would refuse: over its maxMessageSize, or too large for one
 * frame with that prefix and over its maxAssemblyBytes (a request's route made it chunked: it waited
 * for assembly credit that never came, until its timeout, or for ever).
 */
export function tooLarge(link: Link, stats: Stats, size: number, head: number): PointSubError | undefined {
  const peer = link.peer;
  const single = link.msgSingleMax - head;
  if (size <= peer.maxMessageSize && (size <= single || size <= peer.maxAssemblyBytes)) return undefined;
  stats.error("ERR_MESSAGE_TOO_LARGE");
  // The peer's setting, by name (before: the largest size it takes, which with maxAssemblyBytes 0, no
  // chunked message, was this side's own one-frame size, given as the peer's limit).
  const name = size > peer.maxMessageSize ? "maxMessageSize" : "maxAssemblyBytes";
  return new PointSubError(
    "ERR_MESSAGE_TOO_LARGE",
    `message of ${size} bytes exceeds the peer's ${name} of ${peer[name]}`,
  );
}

export class Caller {
  /** Calls written to the wire and not yet answered, by id. */
  readonly pending = new CallTable<PendingCall>();
  /**
   * @internal Calls waiting for one of the peer's maxConcurrentRequests
   * slots (created when the first has to wait); a graceful close refuses
   * them (`drain.ts`).
   */
  waiting: Queue<PendingCall> | undefined;
  /** Set by the engine: the stream half, when there is one. */
  streams: CallerStreams | undefined;
  /** Set by the engine: no call waiting for a slot starts any more (closing or closed). */
  closed = false;
  /** @internal (read by `request-progress.ts`) */
  declare readonly outbox: Outbox;
  declare private readonly link: Link;
  declare private readonly stats: Stats;
  /** The default timeout of a request (and of a stream's answer after its END, `stream-out.ts`). */
  declare readonly requestTimeoutMs: number;
  /** The default timeout grows by a second per this many payload bytes (requestBytesPerSecond). */
  declare readonly bytesPerSecond: number;

  private deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * The armed timer's deadline (`performance.now()`); undefined when none. Not
   * Infinity: a field that holds only non-integers is a number box in every
   * connection, one that may hold undefined boxes only while armed.
   */
  private deadlineAt: number | undefined;

  /** Created with the connection's first call: the outbox shares its table of calls (ids in use) from then on. */
  constructor(outbox: Outbox, link: Link, stats: Stats, requestTimeoutMs: number, bytesPerSecond: number) {
    this.outbox = outbox;
    outbox.pending = this.pending;
    this.link = link;
    this.stats = stats;
    this.requestTimeoutMs = requestTimeoutMs;
    this.bytesPerSecond = bytesPerSecond;
  }

  /** Calls in flight or waiting. */
  get size(): number {
    return this.pending.size + (this.waiting?.length ?? 0);
  }

  /**
   * Starts a request (its payload and route checked, its size against the
   * peer's limits with the route and key that precede it); resolves to the
   * response bytes. With `options.idempotencyKey` the key is checked
   * (1..64 bytes) and, when the peer announced `Feature.IDEMPOTENCY`, sent
   * after the route (a keyed REQ, docs/PROTOCOL.md §3.4.1).
   */
  request(route: string, payload: Payload, options: RequestOptions): Promise<Uint8Array> {
    const signal = options.signal;
    // (What the executor throws rejects the promise: the checks fail the call, none throws at its caller.)
    return new Promise<Uint8Array>((resolve, reject) => {
      const data = toBytes(payload, "payload");
      let head = this.outbox.routeHead(route);
      let startFlags = 0;
      if (options.idempotencyKey !== undefined) {
        const key = idempotencyKeyBytes(options.idempotencyKey);
        if ((this.link.peer.features & FEATURE_IDEMPOTENCY) !== 0) {
          head = encodeKeyedHead(head, key);
          startFlags = F_KEYED;
        }
      }
      const big = tooLarge(this.link, this.stats, data.length, head.length);
      if (big) throw big;
      checkSignal(options);
      if (signal?.aborted)
        throw new PointSubError("ERR_CANCELLED", `request to ${route} aborted`, { cause: signal.reason });
      const base = this.requestTimeoutMs;
      const timeoutMs =
        options.timeoutMs ?? (base === 0 ? 0 : base + Math.ceil((data.length * 1000) / this.bytesPerSecond));
      // NaN or negative meant no timeout at all.
      if (!(timeoutMs >= 0)) throw badTimeoutError(timeoutMs);
      this.stats.requestsSent++;
      this.stats.sent(data.length);
      const call: PendingCall = {
        id: 0,
        type: T_REQ,
        route,
        head,
        startFlags,
        data,
        resolve,
        reject,
        deadline: 0,
        timeoutMs,
        ms: options.timeoutMs,
        signal,
        onAbort: undefined,
        settled: false,
        started: false,
      };
      this.stats.diag.callStart(call); // diagnostics
      if (timeoutMs > 0 && unstamped.push(call, this) === 2) queueMicrotask(stampDeadlines);
      if (signal !== undefined) {
        call.onAbort = () =>
          this.abandon(
            call,
            new PointSubError("ERR_CANCELLED", `request to ${route} aborted`, { cause: signal.reason }),
          );
        signal.addEventListener("abort", call.onAbort, { once: true });
      }
      if (this.pending.size >= this.link.peer.maxConcurrentRequests) {
        this.waiting ??= new Queue();
        this.waiting.push(call);
      } else this.startCall(call);
    });
  }

  private startCall(call: PendingCall): void {
    call.id = this.outbox.allocId();
    call.started = true;
    this.pending.add(call);
    this.outbox.writeBody(T_REQ, call.id, call.head, call.data, undefined, call.startFlags);
  }

  /** Settles a call with an error from this side (timeout, abort) and tells the peer. */
  abandon(call: PendingCall, err: PointSubError): void {
    if (call.settled) return;
    this.settle(call, undefined, err);
    if (call.type === T_STREAM) {
      // Stops the producer, which sends CANCEL; the id waits for the receiver's final frame.
      if (call.started) this.streams?.stopOut(call.id, err);
      return;
    }
    if (!call.started) {
      this.waiting?.remove((c) => c === call);
      return;
    }
    const where = this.outbox.writer.remove(T_REQ, call.id, err);
    if (where === "queued") {
      // Never sent: its id is free (and a request or stream waiting for its slot goes on).
      this.finishCall(call);
      return;
    }
    // Sent (wholly or partly): the id stays reserved until the peer's final frame.
    this.outbox.sendCancel(call.id, err.code);
  }

  /**
   * Request timeouts share one timer per connection, armed for the earliest
   * deadline: no timer is created or cleared per request.
   */
  armDeadline(deadline: number): void {
    if (this.deadlineAt !== undefined && deadline >= this.deadlineAt) return;
    clearTimeout(this.deadlineTimer);
    this.deadlineAt = deadline;
    // At most 2^31 - 1 ms (~24.8 days): a longer delay fires at once, and the sweep re-armed it every 1 ms.
    this.deadlineTimer = setTimeout(
      () => this.sweepDeadlines(),
      Math.min(0x7fffffff, Math.max(0, deadline - performance.now())),
    );
  }

  private sweepDeadlines(confirmed?: boolean): void {
    this.deadlineTimer = undefined;
    this.deadlineAt = undefined;
    const now = performance.now();
    const expired: PendingCall[] = [];
    let next = Infinity;
    const visit = (call: PendingCall) => {
      if (call.settled || call.deadline === 0) return;
      // Still moving at its deadline (a slow link): given another (request-progress.ts, with the stream
      // engine: a body or answer in frames loads it).
      if (call.deadline > now || streamEngine()?.moving(this, call)) next = Math.min(next, call.deadline);
      else expired.push(call);
    };
    for (const call of this.pending.values()) visit(call);
    this.waiting?.forEach(visit);
    if (expired.length !== 0 && !confirmed) {
      // Due: looked at again after this turn's I/O (a new timer runs after the poll phase): after a stall
      // of this process (a long GC, a busy loop) timers run before the answers that came meanwhile are read.
      this.deadlineAt = now;
      this.deadlineTimer = setTimeout(() => this.sweepDeadlines(true), 0);
      return;
    }
    for (const call of expired) {
      this.abandon(
        call,
        new PointSubError("ERR_TIMEOUT", `request to ${call.route} timed out after ${call.timeoutMs} ms`, {
          phase: "request",
        }),
      );
    }
    if (next !== Infinity) this.armDeadline(next);
  }

  /** Hands the caller its answer or error (once; later calls do nothing). */
  settle(call: PendingCall, data: Uint8Array | undefined, err: PointSubError | undefined): void {
    if (call.settled) return;
    call.settled = true;
    // (A request with a signal has its onAbort from its start; a stream's has none: removing undefined is a no-op.)
    call.signal?.removeEventListener("abort", call.onAbort as () => void);
    const d = this.stats.diag; // diagnostics (streams publish their own end)
    if (d.ch.callEnd.hasSubscribers && call.type === T_REQ) d.publishCallEnd(call, data, err);
    if (err !== undefined) {
      this.stats.requestsFailed++;
      this.stats.error(err.code);
      call.reject(err);
    } else {
      this.stats.requestsSucceeded++;
      call.resolve(data as Uint8Array);
    }
  }

  /** The peer sent the final frame for `call`: its id is free again. */
  finishCall(call: PendingCall): void {
    this.pending.delete(call.id);
    this.streams?.streamAnswered(call.id);
    // A body still going out in frames (they load the stream engine) is stopped (request-progress.ts).
    if (call.type !== T_STREAM && this.outbox.writer.chunkedPending !== 0) streamEngine()?.stopBody(this, call);
    this.startWaiting();
  }

  /** A response arrived for `call`: free its id and resolve it. */
  answer(call: PendingCall, data: Uint8Array): void {
    this.finishCall(call);
    this.settle(call, data, undefined);
  }

  /** The peer refused or cancelled call `call` with `code` (its CANCEL). */
  cancelledByPeer(call: PendingCall, code: ErrorCode): void {
    const kept = code === "ERR_TIMEOUT" || code === "ERR_OVERLOADED" || code === "ERR_GOING_AWAY";
    const err = PointSubError.fromPeer(kept ? code : "ERR_CANCELLED", `request to ${call.route} cancelled by the peer`);
    if (call.type === T_REQ) this.outbox.writer.remove(T_REQ, call.id, err);
    this.finishCall(call);
    this.settle(call, undefined, err);
  }

  private startWaiting(): void {
    const waiting = this.waiting;
    // Closing: they stay queued for the close's refusal (drain.ts) or the teardown.
    if (waiting === undefined || this.closed) return;
    while (waiting.length !== 0 && this.pending.size < this.link.peer.maxConcurrentRequests) {
      const call = waiting.shift() as PendingCall;
      if (!call.settled) this.startCall(call);
    }
  }

  /** The connection closed: every call fails with `failure`. */
  teardown(failure: PointSubError): void {
    this.closed = true;
    clearTimeout(this.deadlineTimer);
    for (const call of this.pending.values()) this.settle(call, undefined, failure);
    this.pending.clear();
    for (const call of this.waiting?.drain() ?? []) this.settle(call, undefined, failure);
  }
}
