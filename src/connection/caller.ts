/**
 * Calls this side makes (docs/PROTOCOL.md §3.4): requests and streams
 * waiting for their answer, the queue of calls over the peer's
 * maxConcurrentRequests, deadlines (one timer per connection) and aborts.
 */
import { Flag, FrameType } from "../codec/frame.ts";
import { encodeKeyedHead, idempotencyKeyBytes } from "../codec/message-head.ts";
import { Feature } from "../codec/settings.ts";
import type { ErrorCode } from "../errors/codes.ts";
import { PointSubError } from "../errors/error.ts";
import { Queue } from "../util/queue.ts";
import { CallTable } from "./call-table.ts";
import type { PendingCall } from "./calls.ts";
import type { Link } from "./link.ts";
import type { Outbox } from "./outbox.ts";
import type { Stats } from "./stats.ts";
import type { RequestOptions } from "./types.ts";

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
 * Bytes a second a request timed by default must move (its body out, its
 * answer in) to have its deadline set again: as the receiver's own floor
 * for a message it assembles (`minProgressBytesPerSecond`, 1 KiB/s).
 */
const PROGRESS_FLOOR = 1024;

/**
 * The calls made in the synchronous run that just ended get their deadlines
 * from one clock read: a timeout counts from the end of the run that made
 * the request (when its bytes go to the transport), so it may fire that
 * run's duration late, never early. Calls settled meanwhile (a closed
 * connection's among them) are skipped.
 */
function stampDeadlines(): void {
  const now = Date.now();
  for (let i = 0; i < unstamped.length; i += 2) {
    const call = unstamped[i] as PendingCall;
    if (call.settled) continue;
    call.deadline = now + call.timeoutMs;
    (unstamped[i + 1] as Caller).armDeadline(call.deadline);
  }
  unstamped.length = 0;
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
  declare private readonly outbox: Outbox;
  declare private readonly link: Link;
  declare private readonly stats: Stats;
  /** The default timeout of a request (and of a stream's answer after its END, `stream-out.ts`). */
  declare readonly requestTimeoutMs: number;
  /** The default timeout grows by a second per this many payload bytes (requestBytesPerSecond). */
  declare readonly bytesPerSecond: number;
  /**
   * Set by the engine: bytes of the answer to call `id` received so far
   * while it arrives in frames (0: none yet, or whole).
   */
  answerBytes: (id: number) => number = () => 0;
  /**
   * Requests timed by default that reached a deadline: their body's bytes
   * handed over and answer's bytes received then, and where the stream was
   * once all of the body was handed over (-1: not yet), and when they started ({@link moved}).
   */
  private bodies: WeakMap<PendingCall, { body: number; got: number; end: number; start: number }> | undefined;
  private deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * The armed timer's deadline (`Date.now()`); undefined when none. Not
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
   * Starts a request (its route head encoded, its size checked); resolves
   * to the response bytes. With `options.idempotencyKey` the key is checked
   * (1..64 bytes) and, when the peer announced `Feature.IDEMPOTENCY`, sent
   * after the route (a keyed REQ, docs/PROTOCOL.md §3.4.1).
   */
  request(route: string, head: Uint8Array, data: Uint8Array, options: RequestOptions): Promise<Uint8Array> {
    let startFlags = 0;
    if (options.idempotencyKey !== undefined) {
      try {
        const key = idempotencyKeyBytes(options.idempotencyKey);
        if ((this.link.peer.features & Feature.IDEMPOTENCY) !== 0) {
          head = encodeKeyedHead(head, key);
          startFlags = Flag.KEYED;
        }
      } catch (err) {
        return Promise.reject(err);
      }
    }
    const signal = options.signal;
    if (signal?.aborted) {
      return Promise.reject(
        new PointSubError("ERR_CANCELLED", `request to ${route} aborted`, { cause: signal.reason }),
      );
    }
    const base = this.requestTimeoutMs;
    const timeoutMs =
      options.timeoutMs ?? (base === 0 ? 0 : base + Math.ceil((data.length * 1000) / this.bytesPerSecond));
    // NaN or negative meant no timeout at all.
    if (!(timeoutMs >= 0)) {
      return Promise.reject(new PointSubError("ERR_INVALID_ARGUMENT", `invalid timeoutMs ${timeoutMs}`));
    }
    this.stats.requestsSent++;
    this.stats.sent(data.length);
    return new Promise<Uint8Array>((resolve, reject) => {
      const call: PendingCall = {
        id: 0,
        type: FrameType.REQ,
        route,
        head,
        startFlags,
        data,
        resolve,
        reject,
        deadline: 0,
        timeoutMs,
        mark: options.timeoutMs === undefined ? 0 : -1,
        signal,
        onAbort: undefined,
        settled: false,
        started: false,
      };
      this.stats.diag.callStart(call); // diagnostics
      if (timeoutMs > 0 && unstamped.push(call, this) === 2) queueMicrotask(stampDeadlines);
      if (signal !== undefined) {
        call.onAbort = () => {
          this.abandon(
            call,
            new PointSubError("ERR_CANCELLED", `request to ${route} aborted`, { cause: signal.reason }),
          );
        };
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
    this.outbox.writeBody(FrameType.REQ, call.id, call.head, call.data, undefined, call.startFlags);
  }

  /** Settles a call with an error from this side (timeout, abort) and tells the peer. */
  abandon(call: PendingCall, err: PointSubError): void {
    if (call.settled) return;
    this.settle(call, undefined, err);
    if (call.type === FrameType.STREAM) {
      // Stops the producer, which sends CANCEL; the id waits for the receiver's final frame.
      if (call.started) this.streams?.stopOut(call.id, err);
      return;
    }
    if (!call.started) {
      this.waiting?.remove((c) => c === call);
      return;
    }
    const where = this.outbox.writer.remove(FrameType.REQ, call.id, err);
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
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer);
    this.deadlineAt = deadline;
    // At most 2^31 - 1 ms (~24.8 days): a longer delay fires at once, and the sweep re-armed it every 1 ms.
    this.deadlineTimer = setTimeout(
      () => this.sweepDeadlines(),
      Math.min(0x7fffffff, Math.max(0, deadline - Date.now())),
    );
  }

  private sweepDeadlines(): void {
    this.deadlineTimer = undefined;
    this.deadlineAt = undefined;
    const now = Date.now();
    const expired: PendingCall[] = [];
    let next = Infinity;
    const visit = (call: PendingCall) => {
      if (call.settled || call.deadline === 0) return;
      if (call.deadline <= now) expired.push(call);
      else if (call.deadline < next) next = call.deadline;
    };
    for (const call of this.pending.values()) visit(call);
    this.waiting?.forEach(visit);
    for (const call of expired) {
      if (call.mark >= 0 && call.started && this.moved(call, now)) {
        call.deadline = now + call.timeoutMs;
        if (call.deadline < next) next = call.deadline;
        continue;
      }
      this.abandon(
        call,
        new PointSubError("ERR_TIMEOUT", `request to ${call.route} timed out after ${call.timeoutMs} ms`, {
          phase: "request",
        }),
      );
    }
    if (next !== Infinity) this.armDeadline(next);
  }

  /**
   * Whether request `call`, timed by default, moved lately: bytes of its
   * body handed to the transport (a large body goes out in frames as the
   * link takes them) or of its answer received since its deadline was last
   * set, at least {@link PROGRESS_FLOOR} bytes a second over that time; or,
   * its body handed over but not all acknowledged by the pacer's probes, an
   * acknowledgement in the last quarter of that time (the transport's
   * buffers hold much of a body on a slow link: it arrives as they drain).
   * So `requestTimeoutMs` counts from when body and answer stopped moving: a
   * large request or answer over a slow link (5 MB at 100 KB/s) is not cut
   * while it moves, and one delivered at once to a slow handler, or one
   * that stalls or trickles, still times out.
   */
  private moved(call: PendingCall, now: number): boolean {
    const w = this.outbox.writer;
    const sent = w.sentOf(FrameType.REQ, call.id);
    const body = sent < 0 ? call.data.length : sent;
    const got = this.answerBytes(call.id);
    this.bodies ??= new WeakMap();
    const was = this.bodies.get(call);
    // Where the stream is once all of the body was handed over (an upper bound of its end).
    const end = sent >= 0 ? -1 : (was?.end ?? -1) >= 0 ? (was as { end: number }).end : w.position;
    // When it started: its first deadline less its timeout (read before any deadline was set again).
    const start = was?.start ?? call.deadline - call.timeoutMs;
    this.bodies.set(call, { body, got, end, start });
    const period = call.timeoutMs + now - call.deadline;
    const floor = (period * PROGRESS_FLOOR) / 1000;
    // Handed over since (before the first deadline: since the start), and received.
    const moved = (was === undefined ? (sent >= 0 ? body : 0) : body - was.body) + (got - (was?.got ?? 0));
    if (moved > 0 && moved >= floor) return true;
    // Acknowledgements of the stream up to where the body ended: that end is where the stream was when it
    // was seen handed over whole, so later bulk may follow it there — counted only while the body could
    // still be arriving at the floor's rate (a small request behind another transfer's bulk is not).
    const pacer = w.pacer;
    return (
      pacer !== undefined &&
      (end < 0 || pacer.acked < end) &&
      pacer.ackedAt >= performance.now() - period / 4 &&
      now - start < (call.data.length * 1000) / PROGRESS_FLOOR
    );
  }

  /** Hands the caller its answer or error (once; later calls do nothing). */
  settle(call: PendingCall, data: Uint8Array | undefined, err: PointSubError | undefined): void {
    if (call.settled) return;
    call.settled = true;
    if (call.onAbort !== undefined) call.signal?.removeEventListener("abort", call.onAbort);
    const d = this.stats.diag; // diagnostics (streams publish their own end)
    if (d.ch.callEnd.hasSubscribers && call.type === FrameType.REQ) d.publishCallEnd(call, data, err);
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
    if (call.type !== FrameType.STREAM && this.outbox.writer.chunkedPending !== 0) this.stopBody(call);
    this.startWaiting();
  }

  /**
   * The answer came while the request's body was still being sent (a
   * responder may answer early, docs/PROTOCOL.md §3.4): stop sending it and,
   * when its START went out, end this side's direction with CANCEL(id, 4004).
   */
  private stopBody(call: PendingCall): void {
    const err = new PointSubError("ERR_CANCELLED", `the peer answered the request to ${call.route} early`);
    if (this.outbox.writer.removeChunked(FrameType.REQ, call.id, err) === "started") {
      this.outbox.sendCancel(call.id, "ERR_CANCELLED");
    }
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
    if (call.type === FrameType.REQ) this.outbox.writer.remove(FrameType.REQ, call.id, err);
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
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer);
    for (const call of this.pending.values()) this.settle(call, undefined, failure);
    this.pending.clear();
    for (const call of this.waiting?.drain() ?? []) this.settle(call, undefined, failure);
  }
}
