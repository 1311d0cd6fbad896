/**
 * A client connection that survives its transport: a state machine
 * (`disconnected → connecting → connected → reconnecting → … → closed`),
 * reconnection with exponential backoff and full jitter, an explicit
 * offline policy for calls made while not connected, and retries of
 * requests lost with a dropped connection — only under an idempotency key
 * the server deduplicates, so a handler never runs twice — and of requests
 * a rate limit refused before their handler ran (after its `retryAfterMs`).
 */
import { idempotencyKeyBytes } from "../connection/caller.ts";
import type { Connection } from "../connection/connection.ts";
import type { Handler, Message, Payload, RequestOptions } from "../connection/types.ts";
import { UNSENT } from "../connection/unsent.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import { badOptions } from "../errors/options.ts";
import { checkSignal } from "../errors/signal.ts";
import type { Middleware, ResumeLookup } from "../router/types.ts";
import type { StreamHandler } from "../stream/types.ts";
import { newTransferId } from "../transfer/transfer-id.ts";
import type { Address } from "../transport/transport.ts";
import { handledRejection } from "../util/handled-rejection.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import { fullJitterDelay } from "./backoff.ts";
import { type ConnectOptions, connect } from "./connect.ts";
import {
  badPayload,
  checkNumber,
  HELD_REQUEST_OVERHEAD,
  type HoldLimits,
  type OfflineOptions,
  payloadSize,
  Reconnecting,
  type ReconnectingEvents,
  type ReconnectOptions,
  type ResilientState,
} from "./reconnecting.ts";

export type { OfflineOptions, ReconnectOptions, ResilientState } from "./reconnecting.ts";

/** Options of {@link connectResilient}: those of `connect`, plus the policies. */
export interface ResilientOptions extends ConnectOptions {
  /** Reconnection policy, or `false` for none (a drop closes for good). Default: on, with {@link ReconnectOptions}' defaults. */
  reconnect?: ReconnectOptions | false;
  /** What calls do while not connected. Default: queued, with {@link OfflineOptions}' defaults. */
  offline?: OfflineOptions;
  /**
   * Attempts beyond the first for a request lost with its connection
   * (ERR_CONNECTION_CLOSED, ERR_GOING_AWAY, ERR_KEEPALIVE). Only requests
   * marked retryable are retried — with an `idempotencyKey` of the caller's,
   * or `retry: true` (a key is generated) — and only to a server that
   * understands keys; the server must deduplicate them (its idempotency
   * middleware) for a handler never to run twice. Default 2.
   *
   * A request the server refused with ERR_RATE_LIMITED (its handler did
   * not run, so any request may repeat) is retried up to as many times,
   * counted apart, after `max(retryAfterMs, backoff)` (the reconnection
   * backoff, full jitter) — unless that would pass the request's overall
   * deadline or exceed 60 s: then, as with `retries: 0`, the caller gets
   * the ERR_RATE_LIMITED error with its `retryAfterMs`. `close()` ends
   * such waits at once (ERR_CONNECTION_CLOSED).
   */
  retries?: number;
}

/** Options of {@link ResilientConnection.request}. */
export interface ResilientRequestOptions extends RequestOptions {
  /**
   * Retry this request if its connection drops before the answer (under a
   * generated idempotency key unless `idempotencyKey` is given; giving one
   * implies `retry`), when the server deduplicates keys (its idempotency
   * middleware; else the drop's error, "not retried": a repeat could run
   * the handler twice). Default false: it fails with the drop's error.
   */
  retry?: boolean;
  /**
   * Time allowed for each attempt of a retryable request (`retry` or an
   * `idempotencyKey`): when an attempt gets no answer within it, the
   * request is sent again under the same key — counted against `retries`,
   * within the overall `timeoutMs` — and the attempt is left running (not
   * cancelled: that would abort its handler); the first answer wins, and
   * the last attempt waits until the overall deadline. Safe because the key
   * makes the server run the handler at most once: a repeat of a request
   * still running waits for it, a repeat of a finished one gets its stored
   * answer. To a server that does not deduplicate keys (no idempotency
   * middleware: its HELLO lacks features bit 16) nothing is sent twice: an
   * attempt that runs out fails with ERR_TIMEOUT, "not retried". Default:
   * none (one attempt may take the whole deadline).
   */
  attemptTimeoutMs?: number;
}

/** Events of a {@link ResilientConnection}: the state machine's, and messages. */
export interface ResilientEvents extends ReconnectingEvents {
  /** A one-way message from the server. */
  message: [msg: Message];
}

/**
 * HELLO feature bit of a peer that runs a keyed request's handler at most once per key (an
 * idempotency middleware: docs/PROTOCOL.md §3.4.1, §4; a copy of `DEDUPLICATES_FEATURE` of router/idempotency.ts, see client.ts).
 * Bit 8 (it understands keys) is not enough: a server without the middleware would run each attempt.
 */
const DEDUPLICATES_FEATURE = 0x10;
/** Longest retry-after hint a request waits out; a longer one is the caller's to handle. */
const MAX_RATE_WAIT_MS = 60_000;
const NO_DEDUP =
  "the server does not deduplicate keyed requests, so a repeat could run its handler twice; give it createServer({ idempotency: true }) or use(idempotency())";
/** Retryable error `e` of a keyed request not sent again, because a repeat could run its handler twice: says why. */
function notRetried(e: PointSubError): PointSubError {
  let err = e;
  // One given a code of the application's own (which the constructor refuses: it threw ERR_INVALID_ARGUMENT
  // at the caller) goes as it is.
  try {
    err = new PointSubError(e.code, `${e.message} (not retried: ${NO_DEDUP})`, {
      cause: e,
      phase: e.phase,
      retryAfterMs: e.retryAfterMs,
    });
  } catch {}
  NOT_RETRIED.add(err);
  return err;
}
/** Errors made by {@link notRetried}. */
const NOT_RETRIED = new WeakSet<object>();
const LOST: ReadonlySet<string> = new Set(["ERR_CONNECTION_CLOSED", "ERR_GOING_AWAY", "ERR_KEEPALIVE"]);
/**
 * Errors a connection closed with (its calls in flight failed with them), of any code: a drop with a
 * retryable one (the server's ERR_SLOW_PEER or ERR_OVERLOADED GOAWAY, an ERR_CHECKSUM) loses a keyed request
 * as much as ERR_CONNECTION_CLOSED does. Before, only the codes of {@link LOST} were retried: a keyed
 * request pending at such a drop failed with it, and the reconnected client never sent it again.
 */
const DROPS = new WeakSet<object>();
/**
 * Whether `e` says the attempt was lost with its connection (so a keyed request may go again). Its own
 * `retryable`: a close error given a code of the application's own (`terminate`) has none in the codes'
 * table, and looking it up threw a TypeError, which the request rejected with.
 */
function lost(e: PointSubError): boolean {
  return LOST.has(e.code) || (DROPS.has(e) && e.retryable);
}
/** Errors that are a request's last word (a repeat's, its retries done): not retried again. */
const FINAL = new WeakSet<object>();
/**
 * Requests (their options object, shared by all their attempts) answered by one attempt (a response, or
 * the handler's error: {@link serverAnswer}) while a repeat
 * still waited for a connection (a GOAWAY: the first attempt finished on the draining one): that repeat
 * is never sent. Before, it went out once reconnected, nobody awaiting it, and a server without the key
 * (a restart's new store) ran the handler a second time.
 */
const ANSWERED = new WeakSet<object>();
/**
 * How to take a request's repeat (by its options object) out of the offline queue while it waits there.
 * Once the request is answered it leaves at once: before, it kept its payload counted against
 * `offline.maxBytes` (and in memory) until the next connection, and new calls were refused ERR_OFFLINE.
 */
const HELD_REPEAT = new WeakMap<object, () => void>();
/** `request` was answered: a repeat of it held for the next connection is not sent, and leaves the queue now. */
function answered(request: object): void {
  ANSWERED.add(request);
  HELD_REPEAT.get(request)?.();
}
/**
 * Whether `e`, an attempt's error, is the server's answer to a keyed request: an error its idempotency
 * store keeps (the handler ran and failed: not retryable, nor a cancel, a missing route or a refusal),
 * not a loss. A repeat would get it again, or, on a server without that store (a restart), run the handler again.
 */
function serverAnswer(e: unknown): boolean {
  if (!(e instanceof PointSubError) || DROPS.has(e)) return false;
  const c = e.code;
  return c !== "ERR_CANCELLED" && c !== "ERR_NO_ROUTE" && c !== "ERR_UNAUTHORIZED" && !e.retryable;
}
const utf8 = new TextEncoder();
/** How a send is held: its refusal is no unhandled rejection. */
const QUIET: HoldLimits = { quiet: true };

/**
 * One logical connection to one server, kept up across drops. Calls made
 * while it reconnects follow the offline policy; everything resolves or
 * rejects, nothing is dropped silently. Obtain one with {@link connectResilient}.
 */
export class ResilientConnection extends Reconnecting<Connection, ResilientEvents> {
  private readonly address: Address;
  private readonly options: ResilientOptions;
  private readonly retries: number;
  private readonly routes: ((c: Connection) => void)[] = [];
  /** Requests waiting out a server's retry-after hint (ended at once by close). */
  private readonly rateWaits = new Set<() => void>();

  /** @internal Use {@link connectResilient}. */
  constructor(address: Address, options: ResilientOptions) {
    super(options.reconnect, options.offline);
    checkNumber("retries", options.retries, 0);
    checkSignal(options);
    this.address = address;
    this.options = options;
    this.retries = options.retries ?? 2;
    this.abortFirstConnect(options.signal);
  }

  protected open(signal: AbortSignal): Promise<Connection> {
    // The caller's signal ends the first connect (abortFirstConnect, which aborts this one's).
    return connect(this.address, { ...this.options, signal });
  }

  protected attachTo(conn: Connection): void {
    for (const apply of this.routes) apply(conn);
    conn.on("message", (m) => this.emit("message", m));
    conn.once("goaway", () => this.retire(conn));
    // Emitted before the calls it failed see their error (their rejections run after it).
    conn.once("close", (err) => {
      if (err !== undefined) DROPS.add(err);
    });
  }

  protected override onShutdown(): void {
    for (const wake of [...this.rateWaits]) wake();
  }

  /**
   * Serves requests from the server on every connection this client makes.
   * Throws ERR_INVALID_ARGUMENT at once (connected or not) for an empty
   * route or a handler that is not a function, and keeps nothing of it.
   */
  handle(route: string, handler: Handler): this {
    checkRoute(route);
    checkFunction(handler, "handler");
    return this.onEach((c) => c.handle(route, handler));
  }

  /** Serves streams from the server on every connection this client makes (checked at once, as {@link handle}). */
  handleStream(route: string, handler: StreamHandler, options: { resume?: ResumeLookup } = {}): this {
    checkRoute(route);
    checkFunction(handler, "handler");
    return this.onEach((c) => c.handleStream(route, handler, options));
  }

  /** Middleware for what the server sends, on every connection this client makes (checked at once, as {@link handle}). */
  use(mw: Middleware): this {
    checkFunction(mw, "middleware");
    return this.onEach((c) => c.use(mw));
  }

  /**
   * Applies `apply` to the connection in use, then keeps it for every later
   * one. Arguments are checked before (the callers): a registration that
   * threw was kept before, and threw again inside the reconnection — an
   * unhandled rejection, the client "reconnecting" for good with its new
   * connection open and unused, every call timing out.
   */
  private onEach(apply: (c: Connection) => void): this {
    if (this.connection !== undefined) apply(this.connection);
    this.routes.push(apply);
    return this;
  }

  /**
   * Sends a one-way message now, or when connected (offline policy). At
   * most once: never repeated after a drop. As a connection's `send`, it may
   * be left unawaited: a refusal is no unhandled rejection.
   */
  send(payload: Payload): Promise<void> {
    const c = this.connection;
    if (c !== undefined) return c.send(payload);
    const bad = badPayload(payload);
    if (bad !== undefined) return handledRejection(bad);
    return this.hold(payloadSize(payload), () => this.send(payload), QUIET);
  }

  /**
   * Calls `route` on the server. While not connected the call follows the
   * offline policy; a call lost with its connection is retried (see
   * {@link ResilientOptions.retries}) under the same idempotency key, within
   * `timeoutMs` overall.
   */
  request(
    route: string,
    payload: Payload = new Uint8Array(0),
    options: ResilientRequestOptions = {},
  ): Promise<Uint8Array> {
    const bad = badPayload(payload);
    if (bad !== undefined) return Promise.reject(bad);
    // Null threw a raw TypeError at the caller.
    const notOptions = badOptions(options);
    if (notOptions !== undefined) return Promise.reject(notOptions);
    const timeoutMs = options.timeoutMs ?? this.defaultTimeout(payload);
    if (!(timeoutMs >= 0)) {
      // NaN or negative meant no deadline at all (as the connection's own request refuses it).
      return Promise.reject(new PointSubError("ERR_INVALID_ARGUMENT", `invalid timeoutMs ${timeoutMs}`));
    }
    const deadline = timeoutMs > 0 ? performance.now() + timeoutMs : Number.POSITIVE_INFINITY;
    const retry = options.retry === true || options.idempotencyKey !== undefined;
    const { retry: _, attemptTimeoutMs, ...rest } = options;
    const key = options.idempotencyKey ?? (retry ? randomKey() : undefined);
    if (attemptTimeoutMs !== undefined && !(attemptTimeoutMs > 0)) {
      return Promise.reject(
        new PointSubError("ERR_INVALID_ARGUMENT", `attemptTimeoutMs must be > 0 (got ${attemptTimeoutMs})`),
      );
    }
    // Checked now, not when sent: a call held while offline keeps its key uncharged.
    if (options.idempotencyKey !== undefined) {
      try {
        idempotencyKeyBytes(options.idempotencyKey);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    try {
      checkSignal(options);
    } catch (err) {
      return Promise.reject(err);
    }
    if (options.signal?.aborted === true) {
      return Promise.reject(
        new PointSubError("ERR_CANCELLED", `request to ${route} aborted`, { cause: options.signal.reason }),
      );
    }
    const perAttempt = retry ? (attemptTimeoutMs ?? 0) : 0;
    // No retry counted yet, keyed or not (a request without a key is never sent again: it has none to be
    // deduplicated by). Before, one without started at `retries`, and its ERR_TIMEOUT said "(3 attempts)".
    return this.attempt(route, payload, { ...rest, idempotencyKey: key }, deadline, 0, 0, perAttempt);
  }

  /**
   * The overall time of a request given no `timeoutMs`: `requestTimeoutMs`
   * plus its payload at `requestBytesPerSecond`, as a connection's own
   * default (counted from the call, and again from the end of each attempt, or from a held call's run past it:
   * {@link attempt}); 0: none.
   */
  private defaultTimeout(payload: Payload): number {
    const base = this.options.requestTimeoutMs ?? 30_000;
    const rate = this.options.requestBytesPerSecond ?? 10 * 1024 * 1024;
    return base === 0 ? 0 : base + Math.ceil((payloadSize(payload) * 1000) / rate);
  }

  private async attempt(
    route: string,
    payload: Payload,
    options: RequestOptions,
    deadline: number,
    tries: number,
    limited: number,
    perAttempt = 0,
    prev?: PointSubError,
    unsent = false,
  ): Promise<Uint8Array> {
    if (prev !== undefined && ANSWERED.has(options)) {
      throw new PointSubError("ERR_CANCELLED", `request to ${route} answered already: repeat not sent`);
    }
    const c = this.connection;
    if (c === undefined) {
      const what = `request to ${route}`;
      // A repeat (`prev`: why) of a request that was in flight, or one a graceful close refused unsent
      // (`unsent`), was made while connected: it waits for the next connection whatever the offline policy.
      const limits = {
        deadline: Number.isFinite(deadline) ? deadline : 0,
        signal: options.signal,
        what,
        again: prev !== undefined || unsent,
        held: prev === undefined ? undefined : (withdraw: () => void) => HELD_REPEAT.set(options, withdraw),
      };
      // Run once connected, in the order the calls were held: the attempt starts its request at once
      // (before, it went out after every held send, a few microtasks late).
      return this.hold(
        payloadSize(payload) + HELD_REQUEST_OVERHEAD,
        () =>
          this.attempt(
            route,
            payload,
            options,
            // Its default deadline (no timeoutMs) passed: the connection came in time while this process stalled
            // (the hold's deadline looks again after the turn's I/O). Counted again from now, as after an attempt.
            options.timeoutMs === undefined && deadline <= performance.now()
              ? performance.now() + this.defaultTimeout(payload)
              : deadline,
            tries,
            limited,
            perAttempt,
            prev,
            unsent,
          ),
        limits,
      );
    }
    const left = deadline === Number.POSITIVE_INFINITY ? 0 : deadline - performance.now();
    if (deadline !== Number.POSITIVE_INFINITY && left <= 0) {
      throw new PointSubError("ERR_TIMEOUT", `request to ${route} timed out (overall deadline, ${tries} retries)`, {
        phase: "request",
      });
    }
    const keyed = options.idempotencyKey !== undefined && (c.peerSettings.features & DEDUPLICATES_FEATURE) !== 0;
    // A repeat goes only to a server that deduplicates: the new connection may reach another (a restart without
    // the middleware, a balancer in front of mixed servers).
    if (prev !== undefined && !keyed) throw notRetried(prev);
    // A retryable request's attempt may be given less than what is left (attemptTimeoutMs).
    const attemptMs = perAttempt > 0 && (left === 0 || perAttempt < left) ? perAttempt : left;
    /** Whether this attempt's request was given all the time left (its deadline is the caller's). */
    let whole = true;
    try {
      if (keyed && attemptMs !== left && tries < this.retries) {
        const ran = new PointSubError("ERR_TIMEOUT", `request to ${route}: no answer within attemptTimeoutMs`, {
          phase: "request",
        });
        return await this.repeatAfter(
          c.request(route, payload, { ...options, timeoutMs: left }),
          attemptMs,
          () => this.attempt(route, payload, options, deadline, tries + 1, limited, perAttempt, ran),
          options,
        );
      }
      // The last of a keyed request's attempts waits for the overall deadline (the earlier ones do).
      const ms = keyed ? left : attemptMs;
      whole = ms === left;
      // Given no timeoutMs: timed as the connection's own default, which a body or answer still moving over
      // a slow link does not run out (a fixed deadline cut a 5 MB body at 100 KB/s at 30 s).
      if (options.timeoutMs === undefined && perAttempt === 0 && deadline !== Number.POSITIVE_INFINITY) {
        return await c.request(route, payload, options);
      }
      return await c.request(route, payload, { ...options, timeoutMs: ms });
    } catch (err) {
      if (FINAL.has(err as object)) throw err;
      let e = toPointSubError(err, "ERR_CONNECTION_CLOSED");
      // The connection named the time left as measured ("timed out after 299.83 ms" for a timeoutMs of 300).
      if (whole && e.code === "ERR_TIMEOUT" && e.phase === "request" && options.timeoutMs !== undefined) {
        const attempts = tries > 0 ? ` (${tries + 1} attempts)` : "";
        e = new PointSubError("ERR_TIMEOUT", `request to ${route} timed out after ${options.timeoutMs} ms${attempts}`, {
          cause: e,
          phase: "request",
        });
      }
      // Given no timeoutMs: the overall deadline counts again from the end of an attempt that ran longer.
      if (options.timeoutMs === undefined && deadline !== Number.POSITIVE_INFINITY)
        deadline = Math.max(deadline, performance.now() + this.defaultTimeout(payload));
      // Nothing was sent for it (its connection closed gracefully while it waited for a request slot, drain.ts):
      // any request may go again, on the next connection; counted with the rate-limited ones.
      if (UNSENT.has(e) && limited < this.retries && this.state !== "closed")
        return this.attempt(route, payload, options, deadline, tries, limited + 1, perAttempt, prev, true);
      if (e.code === "ERR_RATE_LIMITED") {
        await this.rateLimited(e, deadline, limited, options.signal);
        return this.attempt(route, payload, options, deadline, tries, limited + 1, perAttempt, prev);
      }
      // Only this attempt's own time ran out (not the overall deadline): the same key again.
      const attemptTimedOut = e.code === "ERR_TIMEOUT" && attemptMs !== left && performance.now() < deadline;
      const gone = lost(e);
      if (!keyed || tries >= this.retries || !(gone || attemptTimedOut) || this.state === "closed") {
        if (keyed || options.idempotencyKey === undefined || !(gone || attemptTimedOut)) throw e;
        throw notRetried(e);
      }
      return this.attempt(route, payload, options, deadline, tries + 1, limited, perAttempt, e);
    }
  }

  /**
   * A keyed attempt (`call`) whose own time, `ms` (attemptTimeoutMs), ends
   * before the overall deadline: then the request goes again under the same
   * key (`repeat`, the next attempt) and this one is left running. A CANCEL
   * would abort its handler and free the key, so that the repeat ran the
   * handler again (and again at each attempt's end: it could never finish);
   * the server's store makes the repeat wait for it instead. The first
   * answer wins (a response, or this attempt's error that the store keeps:
   * {@link serverAnswer}); another error counts once both have one (the repeat's: its own
   * retries are done), so an answer still coming on this attempt is not
   * lost to the repeat's error (the store's waitMs, an offline policy).
   */
  private repeatAfter(
    call: Promise<Uint8Array>,
    ms: number,
    repeat: () => Promise<Uint8Array>,
    request: object,
  ): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      let done = false;
      let repeated = false;
      /** What failed so far: this attempt (its error), the repeat (its error). */
      let callError: { e: unknown } | undefined;
      let repeatError: { e: unknown } | undefined;
      /** Both failed: the repeat's error — or, when the repeat was never sent ("not retried"), this attempt's loss. */
      const both = (): unknown => {
        const r = (repeatError as { e: unknown }).e;
        const c = (callError as { e: unknown }).e;
        return NOT_RETRIED.has(r as object) ? notRetried(toPointSubError(c, "ERR_CONNECTION_CLOSED")) : r;
      };
      const win = (v: Uint8Array): void => {
        if (done) return;
        done = true;
        // A repeat still held for the next connection is not sent ({@link ANSWERED}).
        answered(request);
        clearTimeout(t);
        resolve(v);
      };
      const lose = (e: unknown): void => {
        done = true;
        if (typeof e === "object" && e !== null) FINAL.add(e);
        reject(e);
      };
      const t = setTimeout(
        () => {
          if (done) return;
          repeated = true;
          repeat().then(win, (e: unknown) => {
            if (done) return;
            repeatError = { e };
            if (callError !== undefined) lose(both()); // else this attempt may still answer
          });
        },
        Math.min(ms, MAX_TIMER_MS),
      );
      call.then(win, (e: unknown) => {
        if (done) return;
        if (!repeated) {
          done = true;
          clearTimeout(t);
          reject(e); // the caller's catch decides on a retry, as for any attempt
          return;
        }
        // The handler's own error is this request's answer, as a response is: a repeat still held for the next
        // connection is not sent. Before, the caller waited for it, and a restarted server ran the handler again.
        if (serverAnswer(e)) {
          answered(request);
          lose(e);
          return;
        }
        callError = { e };
        if (repeatError !== undefined) lose(both());
      });
    });
  }

  /**
   * The server's rate limit refused a request (before its handler ran):
   * waits `max(retryAfterMs, backoff)` for retry number `limited + 1`, or
   * rethrows `e` when retries are used up or the wait would pass `deadline`.
   */
  private async rateLimited(
    e: PointSubError,
    deadline: number,
    limited: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    if (limited >= this.retries || this.state === "closed" || signal?.aborted === true) throw e;
    const wait = Math.max(e.retryAfterMs ?? 0, fullJitterDelay(limited, this.initialDelayMs, this.maxDelayMs));
    // A hint past the deadline, or longer than a client should sit on a call, goes to the caller.
    if (performance.now() + wait >= deadline || wait > MAX_RATE_WAIT_MS) throw e;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.rateWaits.delete(done);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const t = setTimeout(done, wait);
      (t as { unref?: () => void }).unref?.();
      this.rateWaits.add(done);
      signal?.addEventListener("abort", done, { once: true });
    });
    if ((this.state as ResilientState) === "closed") throw this.closedError();
    if (signal !== undefined && isAborted(signal)) {
      throw new PointSubError("ERR_CANCELLED", "request aborted while waiting out the server's rate limit", {
        cause: signal.reason,
      });
    }
  }
}

/** Whether `signal` is aborted (a call: TypeScript keeps its narrowing of `aborted` across an await). */
function isAborted(signal: AbortSignal): boolean {
  return signal.aborted;
}

/** ERR_INVALID_ARGUMENT unless `route` is a non-empty string: a connection's check (router/check.ts, which client/ may not import). */
function checkRoute(route: unknown): void {
  if (typeof route !== "string" || route.length === 0) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "route must be a non-empty string");
  }
}

/** ERR_INVALID_ARGUMENT unless `fn` is a function (`what`: "handler", "middleware"), as a connection checks. */
function checkFunction(fn: unknown, what: string): void {
  if (typeof fn !== "function") throw new PointSubError("ERR_INVALID_ARGUMENT", `${what} must be a function`);
}

/**
 * A random idempotency key (16 bytes as 32 hex characters), from getRandomValues: a browser has
 * randomUUID in secure contexts only (not on a page served over plain http).
 */
function randomKey(): Uint8Array {
  return utf8.encode(newTransferId());
}

/**
 * Connects to `address` and keeps the connection up: resolves once the
 * first connection is established (retrying it under the reconnection
 * policy), rejects with ERR_CONNECT when the attempts run out.
 */
export async function connectResilient(address: Address, options: ResilientOptions = {}): Promise<ResilientConnection> {
  // Null (the browser entry passes it on) threw a raw TypeError in the constructor.
  const bad = badOptions(options, "connectResilient");
  if (bad !== undefined) throw bad;
  const rc = new ResilientConnection(address, options);
  await rc.start();
  return rc;
}
