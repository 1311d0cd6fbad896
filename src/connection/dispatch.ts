/**
 * Hands the peer's complete requests and one-way messages to the
 * application through the router (routes and middleware), and sends the
 * answers: a response, or an error response (docs/PROTOCOL.md §3.4, §3.5).
 *
 * Held messages (the seam that lets middleware slow a peer by
 * backpressure): a one-way message whose middleware chain did not reach
 * the application synchronously — a middleware awaited before `next()`,
 * e.g. `rateLimit()` waiting for tokens — is held until its chain settles.
 * While a connection holds more than {@link HOLD_MAX_MESSAGES} messages or
 * {@link HOLD_MAX_BYTES} bytes, it stops reading from that peer
 * (`ReadGate.holdMessages`), so the peer's sends queue in its TCP window
 * instead of in this side's memory; reading resumes below half of both.
 * Pausing acts between reads, so what one read brings (one BATCH frame of
 * up to maxFrameSize) is still decoded: a peer that packs more than
 * {@link HOLD_HARD_MESSAGES} messages (or {@link HOLD_HARD_BYTES}) into
 * what arrives while its messages are held ignores backpressure and is
 * closed with ERR_OVERLOADED — an honest sender (BATCH frames of at most
 * 16 KiB, 64 KiB reads) stays far below.
 */

import { encodeErrorHead, OK_HEAD } from "../codec/error-head.ts";
import { T_RES } from "../codec/frame.ts";
import { codeInfo, type ErrorCode } from "../errors/codes.ts";
import { answerableError, describeResult, describeThrown, thrownCode } from "../errors/describe.ts";
import { PointSubError, protocolError } from "../errors/error.ts";
import { keyedHold } from "../router/keyed-hold.ts";
import type { Router } from "../router/router.ts";
import type { CallContext } from "../router/types.ts";
import { nextTurn } from "../util/next-turn.ts";
import { ANSWER_SHARE, type MemoryBudget } from "./budget.ts";
import { CallTable } from "./call-table.ts";
import { ServerCall } from "./calls.ts";
import type { Connection } from "./connection.ts";
import type { Link } from "./link.ts";
import { adoptOrphan, orphanSettled } from "./orphans.ts";
import type { Outbox } from "./outbox.ts";
import { PeerCalls } from "./peer-calls.ts";
import type { ReadGate } from "./read-gate.ts";
import type { Stats } from "./stats.ts";
import { toBytes } from "./to-bytes.ts";
import type { HandlerResult, Message } from "./types.ts";

/**
 * Bytes charged per request whose handler is running, on top of its body: its call, context, promises
 * and table entries, ~1.0 KB of heap measured with an empty async handler (session 52; 512 let 1,024
 * held requests per connection keep ~2× what the budget was charged, `attack/held-requests-charge.test.ts`).
 */
export const CALL_OVERHEAD = 1024;
/**
 * Charged besides {@link CALL_OVERHEAD} for a keyed request (an idempotency key) that reaches an
 * idempotency middleware (it charges it: `keyedHold`; before, any middleware made keyed calls pay it):
 * what it holds for it while it runs — its frame, key and claim for
 * the first attempt (~1.3 KB of heap measured with `--expose-gc`), its wait (an AbortController, a timer,
 * listeners, two frames: ~3.4 KB) for a duplicate of a key still running (session 53). Before, only
 * CALL_OVERHEAD: a keyed call held ~2.5 KB (claims) to ~4.8 KB (waiting duplicates) for 1 KiB charged,
 * `attack/idempotency-charge.test.ts`.
 */
export const KEYED_OVERHEAD = 3584;
/** An answer this large or smaller may go past a full budget whatever else is past it (as small as an error). */
const SMALL_ANSWER = 512;

/**
 * Keyed requests through middleware, with their budget: the idempotency middleware charges
 * {@link KEYED_OVERHEAD} (its claim or wait) through `keyedHold` when it handles one — wherever it stands in
 * the chain (wrapped in one of the application's too), and only then (a logging middleware made keyed calls
 * pay it, `attack/keyed-charge-plain-middleware.test.ts`; a wrapped idempotency middleware held its claim or
 * wait for 1 KiB charged, `attack/keyed-charge-wrapped-idempotency.test.ts`).
 */
const keyedCalls = new WeakMap<ServerCall, MemoryBudget>();
keyedHold.charge = (ctx) => {
  const call = ctx as ServerCall;
  const budget = keyedCalls.get(call);
  keyedCalls.delete(call);
  // Released already (answered: a middleware that calls it after its call's answer): nothing to add to.
  if (budget === undefined || call.charged === 0) return;
  if (!budget.tryCharge(KEYED_OVERHEAD)) {
    throw new PointSubError(
      "ERR_OVERLOADED",
      `no memory budget for ${KEYED_OVERHEAD} more bytes (${budget.used} of ${budget.limit} in use); retry later`,
    );
  }
  call.charged += KEYED_OVERHEAD;
};

/** Budgets holding an answer charged past them (one at a time each: see {@link Dispatcher.finishHandler}). */
const pastBudget = new WeakSet<MemoryBudget>();

const EMPTY = new Uint8Array(0);
const decoder = new TextDecoder();
/** Never aborted: one-way messages cannot be cancelled. */
const NEVER: AbortSignal = new AbortController().signal;
/**
 * Promise's own `then`, called on what a handler returned (after `Promise.resolve`): a promise of
 * the handler's whose `then` throws (its own property, a subclass's) closed the session as the
 * peer's ERR_PROTOCOL. Another thenable is adopted by `Promise.resolve` (a throw there rejects).
 */
export const promiseThen = Promise.prototype.then;
/** Held messages of one connection beyond which reading from its peer pauses. */
export const HOLD_MAX_MESSAGES = 64;
/** Held message bytes of one connection beyond which reading from its peer pauses. */
export const HOLD_MAX_BYTES = 1024 * 1024;
/** Held messages of one connection at which its peer is closed with ERR_OVERLOADED. */
export const HOLD_HARD_MESSAGES = 32_768;
/** Held bytes (data plus {@link HELD_OVERHEAD} each) at which the peer is closed with ERR_OVERLOADED. */
export const HOLD_HARD_BYTES = 64 * 1024 * 1024;
/**
 * What a held message costs besides its data (its message, context, promises and the middleware's own
 * frame), charged to the budget and counted in the hard bound: ~1.1 KB of heap measured (session 52;
 * 512 let 32,768 held messages of one BATCH keep ~2× what the budget was charged).
 */
const HELD_OVERHEAD = 1024;

class IncomingMessage implements Message {
  readonly data: Uint8Array;
  constructor(data: Uint8Array) {
    this.data = data;
  }
  text(): string {
    return decoder.decode(this.data);
  }
}

/** The context middleware sees for a one-way message (made only when there is middleware). */
class MessageContext implements CallContext {
  readonly kind = "message";
  readonly route = "";
  readonly signal = NEVER;
  readonly stream = undefined;
  readonly idempotencyKey = undefined;
  readonly session: Connection;
  readonly data: Uint8Array;
  readonly message: IncomingMessage;
  readonly receivedAt: number;
  /** The chain reached the application (set by the endpoint). */
  delivered = false;
  private state_: Record<string, unknown> | undefined;
  constructor(session: Connection, message: IncomingMessage, receivedAt: number) {
    this.session = session;
    this.message = message;
    this.data = message.data;
    this.receivedAt = receivedAt;
  }
  get principal(): unknown {
    return this.session.principal;
  }
  get state(): Record<string, unknown> {
    this.state_ ??= {};
    return this.state_;
  }
}

interface Endpoints {
  message: (ctx: CallContext) => undefined;
  request: (ctx: CallContext) => HandlerResult | Promise<HandlerResult>;
  /** {@link Dispatcher.messageRefused} as a callback. */
  refused: (err: unknown) => void;
  /** One-way messages middleware holds now (see the file's comment), and their bytes. */
  held: number;
  heldBytes: number;
}

/** A server's hook for every one-way message, called before the connection's 'message' event. */
export type MessageHook = (msg: Message, conn: Connection) => void;

export { toBytes } from "./to-bytes.ts";

/**
 * Charged besides a call's own charge while its handler runs on after the call
 * ended (cancelled by the peer, or its connection closed): what a pending
 * handler holds (its promise, closures, a timer) — ~1.3 KB measured for one
 * that awaits a timer. (Here, not in budget.ts: a page's first load does not carry it.)
 */
export const ABANDONED_OVERHEAD = 1024;

/** The table of every dispatcher that served nothing yet (always empty: {@link Dispatcher.serve} replaces it). */
const NOT_SERVING = new CallTable<ServerCall>();

export class Dispatcher {
  /**
   * Handlers running for the peer's calls (requests and streams), by id: a
   * shared empty table until the first ({@link serve}: an idle session holds none).
   */
  serving: CallTable<ServerCall> = NOT_SERVING;
  /** The peer's requests and streams open here, from START until the answer is handed to the transport. */
  openRequests = 0;
  /**
   * Handlers still running for calls that ended early (the peer cancelled
   * them, or the connection closed): each keeps its charge (and
   * {@link ABANDONED_OVERHEAD}) until it settles, and a connection with
   * `maxConcurrentRequests` of them is refused new calls (ERR_OVERLOADED) —
   * a peer that starts and cancels calls whose handlers ignore the signal
   * cannot pile up handlers without bound.
   */
  get abandoned(): number {
    return (this.serving as PeerCalls<ServerCall>).abandoned?.size ?? 0;
  }
  private readonly link: Link;
  private readonly outbox: Outbox;
  private readonly stats: Stats;
  private readonly budget: MemoryBudget;
  /** The connection handlers see as `ctx.session` (its 'message' event gets one-way messages). */
  private readonly session: Connection;
  /** The router in effect: the server's, or the connection's own once it has one (set by the connection). */
  router: Router;
  private readonly onMessage: MessageHook | undefined;
  private endpoints_: Endpoints | undefined;
  /** Set by the connection: pauses reading while too many messages are held. */
  readGate: ReadGate | undefined;
  /**
   * @internal Bytes of answers handed to the writer since housekeeping last
   * looked (it resets this): each extends the time the peer has to take what
   * it is owed (`minAnswerBytesPerSecond`). Counted here, not in the writer:
   * this file is not in a page's first load.
   */
  answerEnqueued = 0;

  constructor(
    link: Link,
    outbox: Outbox,
    stats: Stats,
    budget: MemoryBudget,
    session: Connection,
    router: Router,
    onMessage: MessageHook | undefined,
  ) {
    this.link = link;
    this.outbox = outbox;
    this.stats = stats;
    this.budget = budget;
    this.session = session;
    this.router = router;
    this.onMessage = onMessage;
  }

  /**
   * What arrived in the turn a client's handshake completed (behind its
   * peer's HELLO or AUTH|ACK in one read: a welcome message, a server's
   * first request), run at the next turn in arrival order: nobody could
   * listen or add a route before `connect` resolved.
   */
  private early: (() => void)[] | undefined;
  /** What the requests held in {@link early} hold of the budget: returned if the connection closes first. */
  private earlyCharged = 0;

  /** The client's handshake completed in this turn: its messages and requests wait for the next (see {@link early}). */
  holdEarly(): void {
    const early: (() => void)[] = [];
    this.early = early;
    nextTurn(() => {
      // Torn down meanwhile: dropped, as the connection's other work.
      if (this.early !== early) return;
      this.early = undefined;
      for (const run of early) run();
    });
  }

  /** Whether what arrives now waits for the next turn ({@link holdEarly}): then {@link later} queues it. */
  get holding(): boolean {
    return this.early !== undefined;
  }

  /** Runs `run` at the next turn, with what else arrived in the turn a client's handshake completed ({@link holding}). */
  later(run: () => void): void {
    (this.early as (() => void)[]).push(run);
  }

  /** Tracks a call being served (its table made with the first). */
  serve(call: ServerCall): void {
    if (this.serving === NOT_SERVING) this.serving = new PeerCalls<ServerCall>();
    this.serving.add(call);
  }

  /** A complete one-way message from the peer. */
  deliverMessage(data: Uint8Array): void {
    if (this.early !== undefined) {
      this.early.push(() => this.deliverMessage(data));
      return;
    }
    const router = this.router;
    if (!router.hasMiddleware) {
      this.emit(new IncomingMessage(data));
      return;
    }
    const e = this.endpoints();
    if (e.held >= HOLD_HARD_MESSAGES || e.heldBytes + (e.held + 1) * HELD_OVERHEAD + data.length > HOLD_HARD_BYTES) {
      this.session.terminate(
        new PointSubError(
          "ERR_OVERLOADED",
          `peer sent more than ${e.held} one-way messages while they were held (reading was paused)`,
        ),
      );
      return;
    }
    const ctx = new MessageContext(this.session, new IncomingMessage(data), this.stats.diag.inputAt);
    const done = router.run(ctx, e.message);
    // Finished at once (delivered, or dropped by a middleware without an error): nothing to wait for.
    if (!(done instanceof Promise)) return;
    if (ctx.delivered) promiseThen.call(done, undefined, e.refused);
    else this.hold(e, done, data.length);
  }

  /** One-way messages middleware holds now (see the file's comment). */
  get heldMessages(): number {
    return this.endpoints_?.held ?? 0;
  }

  /** A middleware refused (threw for) a message: dropped, and counted. */
  private messageRefused(err: unknown): void {
    this.stats.error(answerableError(err)?.code ?? "ERR_HANDLER");
  }

  /** A message's chain is still running: held until it settles; reading pauses over the bound. */
  private hold(e: Endpoints, done: Promise<HandlerResult>, bytes: number): void {
    e.held++;
    e.heldBytes += bytes;
    // Held data is memory the peer makes this side keep: charged (past the limit if need be,
    // it is already here) so that new assemblies are refused while it is held.
    const charge = bytes + HELD_OVERHEAD;
    this.budget.force(charge);
    if (e.held > HOLD_MAX_MESSAGES || e.heldBytes > HOLD_MAX_BYTES) this.readGate?.holdMessages(true);
    const release = (): void => {
      e.held--;
      e.heldBytes -= bytes;
      this.budget.release(charge);
      if (e.held <= HOLD_MAX_MESSAGES >>> 1 && e.heldBytes <= HOLD_MAX_BYTES >>> 1) {
        this.readGate?.holdMessages(false);
      }
    };
    promiseThen.call(done, release, (err: unknown) => {
      release();
      this.messageRefused(err);
    });
  }

  private emitFromContext(ctx: CallContext): undefined {
    (ctx as MessageContext).delivered = true;
    this.emit((ctx as MessageContext).message);
    return undefined;
  }

  /**
   * The ends of the middleware chains bound to this dispatcher, and what it
   * holds for middleware, made on first use (only with middleware).
   */
  private endpoints(): Endpoints {
    this.endpoints_ ??= {
      message: (ctx) => this.emitFromContext(ctx),
      request: (ctx) => this.requestEndpoint(ctx),
      refused: (err) => this.messageRefused(err),
      held: 0,
      heldBytes: 0,
    };
    return this.endpoints_;
  }

  private emit(msg: IncomingMessage): void {
    try {
      this.onMessage?.(msg, this.session);
      this.session.emit("message", msg);
    } catch (err) {
      // A throwing listener is the application's bug: surface it, keep the connection.
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  /**
   * A complete request from the peer. `charged` is what its body holds of
   * the memory budget (-1: not charged yet, a single frame); it stays
   * charged while the handler may hold the body. `key` is the idempotency
   * key of a keyed request (docs/PROTOCOL.md §3.4.1), for the middleware
   * and the handler to see.
   */
  /**
   * A request that waited in the shell (`dispatch-lazy.ts`) while this
   * dispatcher loaded. The shell could not tell whether its id was still
   * served, so that is checked here, in arrival order: a START for an id
   * still open is the peer's protocol error, as it is once loaded
   * (`inbound.ts`), and closes the connection.
   */
  replayRequest(id: number, route: string, data: Uint8Array, charged: number, key?: Uint8Array): void {
    if (this.serving.size !== 0 && this.serving.get(id) !== undefined) {
      if (charged > 0) this.budget.release(charged);
      this.session.terminate(protocolError(`stream ${id} started twice`));
      return;
    }
    this.handleRequest(id, route, data, charged, key);
  }

  handleRequest(id: number, route: string, data: Uint8Array, charged: number, key?: Uint8Array): void {
    if (this.early !== undefined) {
      // Checked then whether its id is still served, as a request that waited in the shell.
      if (charged > 0) this.earlyCharged += charged;
      this.early.push(() => {
        if (charged > 0) this.earlyCharged -= charged;
        this.replayRequest(id, route, data, charged, key);
      });
      return;
    }
    this.stats.requestsHandled++;
    const t0 = this.stats.diag.requestStart(id, route, data.length); // diagnostics
    const router = this.router;
    const direct = !router.hasMiddleware;
    const handler = direct ? router.route(route) : undefined;
    if (direct && handler === undefined) {
      if (charged > 0) this.budget.release(charged);
      this.stats.diag.requestEnd(id, route, t0, "ERR_NO_ROUTE", data.length, 0, false); // diagnostics
      // No PointSubError (and its stack trace) per refused request: just the answer.
      this.respondError(id, "ERR_NO_ROUTE", `no handler for route ${route}`);
      return;
    }
    if (this.abandoned >= this.link.local.maxConcurrentRequests) {
      if (charged > 0) this.budget.release(charged);
      this.stats.diag.requestEnd(id, route, t0, "ERR_OVERLOADED", data.length, 0, false); // diagnostics
      this.respondError(id, "ERR_OVERLOADED", this.abandonedReason());
      return;
    }
    // Over its share of answers owed (waiting for its credit or its reading) while the budget is
    // more than half used: no more work for it (alone, a client may pipeline past its share).
    const owed = this.outbox.writer.answerQueued;
    const budget = this.budget;
    if (owed * ANSWER_SHARE > budget.limit && budget.used * 2 > budget.limit) {
      if (charged > 0) budget.release(charged);
      this.stats.diag.requestEnd(id, route, t0, "ERR_OVERLOADED", data.length, 0, false); // diagnostics
      this.respondError(id, "ERR_OVERLOADED", `${owed} bytes of answers wait for this peer to take them; retry later`);
      return;
    }
    // A body of several frames is charged already (with its assembly's overhead); a keyed call through
    // middleware is charged the idempotency middleware's claim or wait when it reaches it (keyedHold).
    const more = charged < 0 ? data.length + CALL_OVERHEAD : 0;
    if (more !== 0) {
      if (!this.budget.tryCharge(more)) {
        if (charged > 0) budget.release(charged);
        const b = this.budget;
        this.stats.diag.requestEnd(id, route, t0, "ERR_OVERLOADED", data.length, 0, false); // diagnostics
        this.respondError(
          id,
          "ERR_OVERLOADED",
          `no memory budget for ${more} more bytes (${b.used} of ${b.limit} in use); retry later`,
        );
        return;
      }
      charged = Math.max(charged, 0) + more;
    }
    // One object is the request, its handler's context and the middleware's: one allocation per call.
    const call = new ServerCall("request", this.session, route, id, data, key);
    call.charged = charged;
    call.startedAt = t0; // diagnostics
    call.routed = direct; // its route's handler runs (diagnostics; a handler's ERR_RATE_LIMITED: finishHandler)
    if (key !== undefined && !direct) keyedCalls.set(call, budget); // the idempotency middleware charges its hold
    let result: HandlerResult | Promise<HandlerResult>;
    let pending: Promise<HandlerResult> | undefined;
    try {
      result = direct
        ? (handler as NonNullable<typeof handler>)(call, call)
        : router.run(call, this.endpoints().request);
      // Read here, where a throw is the handler's failure: a `then` getter or a Proxy that throws, a
      // `then` that throws or calls back twice (another thenable than a promise is adopted by one)
      // closed the session as the peer's ERR_PROTOCOL.
      if (
        result !== null &&
        typeof result === "object" &&
        typeof (result as Promise<HandlerResult>).then === "function"
      ) {
        pending = Promise.resolve(result);
      }
    } catch (err) {
      this.finishHandler(call, undefined, err, true);
      return;
    }
    if (pending !== undefined) {
      // Only a call still running can be cancelled: track it from here.
      this.serve(call);
      promiseThen.call(
        pending,
        (value) => this.finishHandler(call, value, undefined, false),
        (err) => this.finishHandler(call, undefined, err, true),
      );
    } else {
      this.finishHandler(call, result as HandlerResult, undefined, false);
    }
  }

  /**
   * A handler (request or stream) finished: answer the peer. Returns the
   * code of the error answered in place of its result (undefined: its
   * result was sent, or the call had ended).
   */
  finishHandler(call: ServerCall, value: HandlerResult, err: unknown, failed: boolean): ErrorCode | undefined {
    if (call.done) {
      this.handlerSettled(call);
      return undefined; // cancelled, or the connection closed
    }
    call.done = true;
    if (failed) {
      // ERR_RATE_LIMITED tells the caller its handler did not run (it retries): one a handler threw
      // (a limit it met downstream) is its failure, not this server's refusal.
      // Its own PointSubError as it is, when it can be sent so (answerableError).
      const own = answerableError(err);
      const e =
        own !== undefined && (own.code !== "ERR_RATE_LIMITED" || !call.routed)
          ? own
          : new PointSubError(
              "ERR_HANDLER",
              `handler for ${call.route} failed: ${thrownCode(err)}${describeThrown(err)}`,
            );
      // A hint that is no number (changed by the handler: a BigInt threw in its encoding) is not sent.
      const retry: unknown = e.retryAfterMs;
      return this.answerError(call, e.code, e.message, typeof retry === "number" ? retry : undefined);
    }
    let data: Uint8Array;
    try {
      data = value === undefined ? EMPTY : toBytes(value, "handler result");
    } catch {
      // The handler's bug, not the caller's argument (it was told ERR_INVALID_ARGUMENT).
      const what = describeResult(value);
      return this.answerError(
        call,
        "ERR_HANDLER",
        `handler for ${call.route} returned ${what}, not a Uint8Array, a string or undefined`,
      );
    }
    const peer = this.link.peer;
    // Over the caller's maxMessageSize, or chunked and over its whole assembly budget (it would wait for ever).
    if (
      data.length > peer.maxMessageSize ||
      (data.length > this.link.msgSingleMax - 1 && data.length > peer.maxAssemblyBytes)
    ) {
      // The setting that refuses it, by name (as a request's or message's, caller.ts `tooLarge`), not both.
      const name = data.length > peer.maxMessageSize ? "maxMessageSize" : "maxAssemblyBytes";
      return this.answerError(
        call,
        "ERR_MESSAGE_TOO_LARGE",
        `response of ${data.length} bytes exceeds the caller's ${name} of ${peer[name]}`,
      );
    }
    if (data.length <= this.link.msgSingleMax - 1 && this.outbox.writer.trySendNow(T_RES, call.id, OK_HEAD, data)) {
      this.stats.sent(data.length);
      this.ended(call, undefined, data.length); // diagnostics
      this.releaseCall(call);
      this.serving.delete(call.id);
      this.openRequests--;
      return undefined;
    }
    // Queued: the request's charge stays (plus the answer, when it is other
    // memory) until the answer is handed to the transport, so answers a peer
    // does not take (no credit, no reading) count against the budget.
    if (data.length !== 0 && data.buffer !== call.data.buffer) {
      const budget = this.budget;
      if (!budget.tryCharge(data.length)) {
        const large = data.length > SMALL_ANSWER;
        if (large && pastBudget.has(budget)) {
          // The budget is full, and holds an answer past it already: peers that read nothing must not make
          // this side hold their answers past the budget (pipelined requests are all admitted before any
          // answer exists). This one gets ERR_OVERLOADED in place of the answer (the handler ran: with an
          // idempotency key a retry gets the stored answer, when the store kept it). One answer at a time
          // may go past the budget, whatever its size: one larger than the whole budget still gets out.
          return this.answerError(
            call,
            "ERR_OVERLOADED",
            `the answer to ${call.route} (${data.length} bytes) does not fit the memory budget (${budget.used} of ${budget.limit} bytes in use) while it waits to be sent; retry later`,
          );
        }
        budget.force(data.length); // small (no larger than an error), or the one answer past the budget
        if (large) {
          pastBudget.add(budget);
          call.pastBudget = true;
        }
      }
      call.charged += data.length;
    }
    this.stats.sent(data.length);
    this.ended(call, undefined, data.length); // diagnostics
    this.serve(call);
    this.answerEnqueued += OK_HEAD.length + data.length;
    this.outbox.writeBody(T_RES, call.id, OK_HEAD, data, () => {
      this.serving.delete(call.id);
      this.openRequests--;
      // Handed to the transport: the next answer may go past the budget (this one's charge stays until
      // the transport wrote it, which a peer that stops reading may put off as long as it stays).
      if (call.pastBudget) {
        call.pastBudget = false;
        pastBudget.delete(this.budget);
      }
      // Its frames went out as views of `data`: while the transport holds any of them, the
      // whole buffer stays in memory (a peer that stops reading near the end would pin it
      // uncharged), so the charge is returned once the transport has written them — when
      // it can tell (`Transport.idle`; the others hold what they are given only until a drain).
      if (this.readGate?.transport.idle === undefined) {
        this.releaseCall(call);
        return;
      }
      const w = this.outbox.writer;
      const release = (): void => this.releaseCall(call);
      if (w.releases.length === 0) w.releases = [release];
      else w.releases.push(release);
    });
    return undefined;
  }

  /** Answers `call` (its handler done) with an error in place of its result; returns the error's code. */
  private answerError(call: ServerCall, code: ErrorCode, message: string, retryAfterMs?: number): ErrorCode {
    this.releaseCall(call);
    this.serving.delete(call.id);
    this.ended(call, code, 0); // diagnostics
    this.respondError(call.id, code, message, retryAfterMs);
    return code;
  }

  /** The end of a request's middleware chain: its route's handler, or ERR_NO_ROUTE. */
  private requestEndpoint(ctx: CallContext): HandlerResult | Promise<HandlerResult> {
    const call = ctx as ServerCall;
    // Ended (cancelled, timed out, connection closed) while a middleware awaited — the idempotency middleware
    // claiming its key: not started. It ran with its signal aborted already, and one that only listens for
    // "abort" never settled (its key claimed, its charge and slot held, for ever).
    if (call.done && call.signal.aborted) throw call.signal.reason;
    const handler = this.router.route(call.route);
    if (handler === undefined) throw PointSubError.fromPeer("ERR_NO_ROUTE", `no handler for route ${call.route}`);
    call.routed = true; // diagnostics, and a handler's ERR_RATE_LIMITED (finishHandler)
    return handler(call, call);
  }

  /** Answers call `id` with an error response (with its retry-after hint when there is one, §3.5). */
  respondError(id: number, errCode: ErrorCode, message: string, retryAfterMs?: number): void {
    this.stats.error(errCode);
    const head = encodeErrorHead(codeInfo(errCode).errno, errCode, message, retryAfterMs);
    this.answerEnqueued += head.length;
    // The request stays open (counted against maxConcurrentRequests) until
    // its answer is handed to the transport: a peer that does not read can
    // make this side hold at most that many answers.
    this.outbox.writeBody(T_RES, id, head, EMPTY, () => this.closeRequest());
  }

  /** One of the peer's requests or streams is no longer open here. */
  closeRequest(): void {
    this.openRequests--;
  }

  /** Diagnostics: the peer's request `call` ended (streams publish their own end). */
  private ended(call: ServerCall, code: ErrorCode | undefined, bytesOut: number): void {
    if (call.kind === "request") {
      this.stats.diag.requestEnd(call.id, call.route, call.startedAt, code, call.data.length, bytesOut, call.routed);
    }
  }

  /** Returns what a call held of the budget while its handler ran. */
  releaseCall(call: ServerCall): void {
    if (call.charged !== 0) {
      this.budget.release(call.charged);
      call.charged = 0;
      if (call.pastBudget) {
        call.pastBudget = false;
        pastBudget.delete(this.budget);
      }
    }
  }

  /**
   * `call` ends now, before its handler settled (its signal is aborted next):
   * what the handler holds stays charged, with {@link ABANDONED_OVERHEAD}, until
   * it settles ({@link handlerSettled}).
   */
  abandon(call: ServerCall): void {
    // Only a call that was served (its handler returned a promise) is abandoned: the table is this dispatcher's own.
    const served = this.serving as PeerCalls<ServerCall>;
    served.abandoned ??= new Set();
    if (served.abandoned.has(call)) return;
    served.abandoned.add(call);
    this.budget.force(ABANDONED_OVERHEAD);
    call.charged += ABANDONED_OVERHEAD;
  }

  /**
   * A served call ends early (`code`: cancelled, connection closed): a handler
   * still running keeps what it holds charged until it settles (a peer that
   * cancels, or closes and reconnects, leaves no handler uncharged); an
   * answered call returns its charge now.
   */
  private endServed(call: ServerCall, code: ErrorCode): void {
    if (!call.done) {
      this.ended(call, code, 0); // diagnostics
      this.abandon(call);
    } else this.releaseCall(call);
    call.done = true;
  }

  /** The handler of a call that had ended (cancelled, connection closed) settled: what it held is returned. */
  handlerSettled(call: ServerCall): void {
    (this.serving as PeerCalls<ServerCall>).abandoned?.delete(call);
    if (call.outlives !== 0) orphanSettled(this.budget, call);
    this.releaseCall(call);
  }

  /** Why a call is refused while {@link abandoned} is at its bound. */
  abandonedReason(): string {
    return `${this.abandoned} handlers of cancelled calls still run for this connection; retry later`;
  }

  /** The peer cancelled its request `id` while its handler runs; false when no handler runs for it. */
  cancelServed(id: number, reasonCode: "ERR_TIMEOUT" | "ERR_CANCELLED"): boolean {
    if (this.early !== undefined) {
      // Its request may be held (`holdEarly`): cancelled once it started, as a handler running is.
      this.early.push(() => this.cancelServed(id, reasonCode));
      return true;
    }
    const call = this.serving.get(id);
    if (call === undefined) return false;
    // Built only when a handler runs (a CANCEL for an unknown id costs no error object).
    const reason = PointSubError.fromPeer(reasonCode, "cancelled by the caller");
    this.serving.delete(id);
    const answered = call.done;
    this.endServed(call, reason.code);
    call.abort(reason);
    // An answer still queued is dropped. A handler still running has none: no scan of the
    // queued answers (a peer owed many, cancelling its running calls, made each CANCEL O(queued)).
    if (answered) this.outbox.writer.remove(T_RES, id, reason);
    this.openRequests--;
    // The handler saw the requester's reason; the answer is always 4004 (PROTOCOL §3.4).
    this.outbox.sendCancel(id, "ERR_CANCELLED");
    return true;
  }

  /**
   * The connection closed: every running handler sees its signal aborted
   * with `failure` — but for keyed calls the idempotency middleware runs,
   * which run on for a grace period, within a bound (`orphans.ts`).
   */
  teardown(failure: PointSubError): void {
    this.early = undefined;
    // Requests held for the next turn are dropped with the connection: their charges go back.
    this.budget.release(this.earlyCharged);
    this.earlyCharged = 0;
    if (this.serving.size === 0) return;
    // Orphans only of a server's sessions (a client's connection that serves keyed calls ends them with it)
    // and only while their handler runs (one that finished has only its answer left to send).
    const server = this.link.myParity === 0;
    for (const call of this.serving.values()) {
      const running = !call.done;
      this.endServed(call, failure.code);
      const grace = call.outlives;
      if (grace === 0 || !running || !server || !adoptOrphan(this.budget, call, grace, failure)) call.abort(failure);
    }
    this.serving.clear();
  }
}
