/**
 * What every connection that survives its transport shares — the pointsub
 * `ResilientConnection` and the length-prefix `LpResilientConnection`: the
 * state machine (`disconnected → connecting → connected → reconnecting → …
 * → closed`), reconnection with exponential backoff and full jitter, and the
 * offline policy for calls made while not connected (held, bounded in bytes
 * and age, or refused). Subclasses say how to connect and what to do with a
 * new connection; everything held resolves or rejects, nothing is dropped
 * silently.
 */
import type { Payload } from "../connection/types.ts";
import { thrownError } from "../errors/describe.ts";
import { PointSubError } from "../errors/error.ts";
import { Emitter, type EventMap } from "../util/emitter.ts";
import { handledRejection } from "../util/handled-rejection.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import { type BackoffStep, fullJitterBackoff } from "./backoff.ts";

/** Lifecycle of a resilient connection; `closed` is final. */
export type ResilientState = "disconnected" | "connecting" | "connected" | "reconnecting" | "closed";

/** The only transitions there are; anything else is a bug, never reachable from the public API. */
const TRANSITIONS: Readonly<Record<ResilientState, readonly ResilientState[]>> = {
  disconnected: ["connecting", "closed"],
  connecting: ["connected", "reconnecting", "closed"],
  connected: ["reconnecting", "closed"],
  reconnecting: ["connected", "closed"],
  closed: [],
};

/** Reconnection policy. */
export interface ReconnectOptions {
  /** First backoff ceiling in ms (the delay is random in [0, ceiling]; the ceiling doubles). Default 100. */
  initialDelayMs?: number;
  /** Largest backoff ceiling in ms. Default 5000. */
  maxDelayMs?: number;
  /** Connection attempts after a drop (and for the first connect) before giving up; 0 = never reconnect. Default Infinity. */
  maxAttempts?: number;
}

/** What `send` and `request` do while not connected. */
export interface OfflineOptions {
  /** `"queue"`: hold calls until connected (bounded below); `"fail"`: reject at once with ERR_OFFLINE. Default "queue". */
  policy?: "queue" | "fail";
  /** Most payload bytes held; a call beyond it is rejected with ERR_OFFLINE. Default 8 MiB. */
  maxBytes?: number;
  /** A held call older than this is rejected with ERR_OFFLINE. Default 10000 ms. */
  maxAgeMs?: number;
}

/** The events every resilient connection emits. */
export interface ReconnectingEvents {
  /** The state changed. */
  state: [to: ResilientState, from: ResilientState];
  /** A connection attempt failed (`attempt` counts from 1 since the last drop). */
  attemptFailed: [attempt: number, error: PointSubError];
  /**
   * The next connection attempt (number `attempt`, counting from 1 since
   * the last drop) starts in `delayMs` — random in [0, ceiling), the
   * ceiling doubling from `reconnect.initialDelayMs` to `maxDelayMs`.
   */
  backoff: [attempt: number, delayMs: number];
  /** Closed for good: `error` when it gave up (attempts exhausted) rather than being closed. */
  close: [error: PointSubError | undefined];
}

/** What the base needs of a connection. */
export interface Droppable {
  once(event: "close", listener: (err: PointSubError | undefined) => void): unknown;
  close(): Promise<void>;
  destroy(): void;
}

/** A call's own bounds while it is held: its deadline (`performance.now()`, 0: none) and abort signal. */
export interface HoldLimits {
  deadline?: number;
  signal?: AbortSignal | undefined;
  /** What the call is, for its error ("request to /route"). */
  what?: string;
  /**
   * A call that was in flight when its connection dropped, being sent again
   * (a keyed request): held even under offline policy "fail", which is about
   * calls made while not connected.
   */
  again?: boolean;
  /**
   * A send's, which may be fired and forgotten (as a connection's): its
   * refusal is no unhandled rejection; an awaiter still gets it.
   */
  quiet?: boolean;
  /**
   * Given how to take the call out of the queue before it runs (it rejects with ERR_CANCELLED, its bytes
   * free for other calls): a keyed request's repeat, once an earlier attempt was answered.
   */
  held?: (withdraw: () => void) => void;
}

interface Held {
  bytes: number;
  at: number;
  run: () => void;
  reject: (err: PointSubError) => void;
  /** Settled on its own (its deadline or signal): skipped, its bytes already returned. */
  gone: boolean;
}

/**
 * Bytes each held call counts against `offline.maxBytes` besides its payload:
 * what it keeps meanwhile (its entry, closures, promises and the suspended
 * calls awaiting it), measured at ~1,100-1,300 B for a send and ~2,400-2,650 B
 * for a request, an application's promise for it included (64 B before:
 * 8 MiB held 131,072 empty calls, 130-270 MB of heap).
 */
export const HELD_OVERHEAD = 1536;
/** What a held request keeps beyond a held send's {@link HELD_OVERHEAD} (its attempt's state, timer and promises). */
export const HELD_REQUEST_OVERHEAD = 1536;
/** Floors of the backoff ceilings (ms): 0 made a tight reconnect loop against a server that accepts and closes (565 a second). */
const MIN_INITIAL_DELAY_MS = 1;
const MIN_MAX_DELAY_MS = 10;

/** Throws ERR_INVALID_ARGUMENT unless `v` is undefined or a number >= `min` (finite unless `allowInfinity`). */
export function checkNumber(name: string, v: number | undefined, min: number, allowInfinity = false): void {
  if (v === undefined) return;
  if (typeof v !== "number" || Number.isNaN(v) || v < min || (!allowInfinity && !Number.isFinite(v))) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a number >= ${min}, got ${v}`);
  }
}

/**
 * ERR_INVALID_ARGUMENT for a payload that is neither bytes nor text, else undefined: checked before
 * a call is held (held, it waited out the offline policy and failed with ERR_OFFLINE, or with this
 * error only once connected).
 */
export function badPayload(p: unknown): PointSubError | undefined {
  if (typeof p === "string" || p instanceof Uint8Array) return undefined;
  return new PointSubError("ERR_INVALID_ARGUMENT", "payload must be a Uint8Array or a string");
}

/** Bytes a payload holds against `offline.maxBytes` (a string counted at its UTF-8 worst case). */
export function payloadSize(p: Payload): number {
  return typeof p === "string" ? p.length * 3 : p instanceof Uint8Array ? p.length : 0;
}

/**
 * The shared state machine, reconnection loop and offline queue. `C` is the
 * connection type; `E` the subclass's events (a superset of
 * {@link ReconnectingEvents}).
 */
/** A connection that drops within this long (or the longest backoff delay, when longer) after it opened keeps the backoff going. */
const STABLE_MS = 1000;

export abstract class Reconnecting<C extends Droppable, E extends ReconnectingEvents & EventMap<E>> extends Emitter<E> {
  private state_: ResilientState = "disconnected";
  /** The connection while connected (or being closed by close()). */
  protected conn: C | undefined;
  protected readonly initialDelayMs: number;
  protected readonly maxDelayMs: number;
  private readonly maxAttempts: number;
  private readonly policy: "queue" | "fail";
  private readonly maxBytes: number;
  private readonly maxAgeMs: number;
  private held: Held[] = [];
  private heldBytes = 0;
  /** Entries of {@link held} that settled on their own (compacted once they are half of it). */
  private heldGone = 0;
  private ageTimer: ReturnType<typeof setTimeout> | undefined;
  private waiters: { resolve: () => void; reject: (e: PointSubError) => void }[] = [];
  private sleepCancel: (() => void) | undefined;
  private closeError: PointSubError | undefined;
  /** Aborts the connection attempt under way (close() ends it at once). */
  private attemptAbort: AbortController | undefined;
  /**
   * Connections that said GOAWAY: their calls in flight finish on them while
   * new ones go to the next connection; close() closes them too.
   */
  private readonly draining = new Set<C>();
  /**
   * The backoff of this run of attempts: kept across a connection that
   * dropped soon after it opened ({@link STABLE_MS}), so a server that
   * accepts and closes at once is retried with growing delays, not in a
   * tight loop (before: ~6,000 connections a second).
   */
  private backoffStep: BackoffStep | undefined;
  /**
   * Connections in a row that dropped soon after they opened: `maxAttempts`
   * of them end the run too (a server that completes every handshake and
   * closes at once would be reconnected to for ever).
   */
  private flaps = 0;
  /** When the current connection was adopted (`performance.now()`). */
  private adoptedAt = 0;
  /** What close() gives back: the close of the connections it found. */
  private closing: Promise<void> | undefined;
  /** Events told while one is being emitted, in order ({@link tell}); undefined when none is. */
  private telling: (() => void)[] | undefined;

  /** Checks and takes the reconnection and offline policies. */
  protected constructor(reconnect: ReconnectOptions | false | undefined, offline: OfflineOptions | undefined) {
    super();
    // A string or a number was taken for the defaults: reconnect "off" or 0 reconnected, offline "fail" queued.
    const bad = (v: unknown) => v != null && typeof v !== "object";
    if ((bad(reconnect) && typeof reconnect !== "boolean") || bad(offline)) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `reconnect must be false or an object of options, offline an object (e.g. { policy: "fail" }); got ${String(bad(offline) ? offline : reconnect)}`,
      );
    }
    const r = reconnect === false ? { maxAttempts: 0 } : (reconnect ?? {});
    checkNumber("reconnect.initialDelayMs", r.initialDelayMs, 0);
    checkNumber("reconnect.maxDelayMs", r.maxDelayMs, 0);
    checkNumber("reconnect.maxAttempts", r.maxAttempts, 0, true);
    checkNumber("offline.maxBytes", offline?.maxBytes, 0);
    checkNumber("offline.maxAgeMs", offline?.maxAgeMs, 0);
    const policy = offline?.policy ?? "queue";
    if (policy !== "queue" && policy !== "fail") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `offline.policy must be "queue" or "fail", got ${String(policy)}`,
      );
    }
    this.initialDelayMs = Math.max(r.initialDelayMs ?? 100, MIN_INITIAL_DELAY_MS);
    this.maxDelayMs = Math.max(r.maxDelayMs ?? 5000, this.initialDelayMs, MIN_MAX_DELAY_MS);
    this.maxAttempts = r.maxAttempts ?? Number.POSITIVE_INFINITY;
    this.policy = policy;
    this.maxBytes = offline?.maxBytes ?? 8 * 1024 * 1024;
    this.maxAgeMs = offline?.maxAgeMs ?? 10_000;
  }

  /** One connection attempt; `signal` aborts it (close()). */
  protected abstract open(signal: AbortSignal): Promise<C>;

  /** A new connection is in use (before held calls run on it): attach listeners and routes. */
  protected abstract attachTo(conn: C): void;

  /** The current state. */
  get state(): ResilientState {
    return this.state_;
  }

  /** The connection in use while `connected` (undefined otherwise). */
  get connection(): C | undefined {
    return this.state_ === "connected" ? this.conn : undefined;
  }

  /** Resolves when connected (at once if it is); rejects with the reason once closed. */
  whenConnected(): Promise<void> {
    if (this.state_ === "connected") return Promise.resolve();
    if (this.state_ === "closed") return Promise.reject(this.closedError());
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /**
   * Closes for good: the connection gracefully, anything held rejects with
   * ERR_CONNECTION_CLOSED. A second call resolves with the first (it
   * resolved at once, while the first still drained the connection).
   */
  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    const conn = this.conn;
    this.conn = undefined;
    const draining = [...this.draining];
    this.draining.clear();
    // Kept before shutdown() tells `close`: a close() from its listener got a promise of its own, of nothing
    // (the connections already taken), resolved at once while this one still drained them.
    let closed: (all: Promise<unknown>) => void = noop;
    this.closing = new Promise<unknown>((resolve) => {
      closed = resolve;
    }).then(noop);
    this.shutdown(undefined);
    closed(Promise.all([conn?.close(), ...draining.map((d) => d.close())]));
    return this.closing;
  }

  /**
   * `conn` said GOAWAY (its server is closing): new calls go to the next
   * connection from now on (held meanwhile, offline policy), while those in
   * flight finish on it. Before: it stayed "connected" until it had drained,
   * and every call made meanwhile failed at once with ERR_GOING_AWAY.
   */
  protected retire(conn: C): void {
    if (this.conn !== conn || this.state_ === "closed") return;
    this.draining.add(conn);
    conn.once("close", () => this.draining.delete(conn));
    this.dropped(conn, undefined);
  }

  /** @internal Connects (with the reconnection policy) and resolves once connected. */
  async start(): Promise<void> {
    if (this.state_ === "closed") return Promise.reject(this.closedError()); // its signal was aborted already
    this.setState("connecting");
    void this.loop();
    return this.whenConnected();
  }

  /**
   * Holds a call of `bytes` until connected, then runs it (resolving with
   * what `run` resolves to); or rejects it per the offline policy, or when
   * `limits` (the call's deadline or signal) end it first.
   */
  protected hold<T = void>(bytes: number, run: () => T | PromiseLike<T>, limits?: HoldLimits): Promise<T> {
    const quiet = limits?.quiet === true;
    const refuse = (e: PointSubError): Promise<T> => (quiet ? handledRejection(e) : Promise.reject(e));
    if (this.state_ === "closed") return refuse(this.closedError());
    const signal = limits?.signal;
    if (signal?.aborted) return refuse(cancelled(limits?.what, signal));
    bytes += HELD_OVERHEAD;
    if (this.policy === "fail" && limits?.again !== true) {
      return refuse(new PointSubError("ERR_OFFLINE", `not connected (${this.state_}); offline policy is "fail"`));
    }
    if (this.heldBytes + bytes > this.maxBytes) {
      return refuse(
        new PointSubError("ERR_OFFLINE", `not connected and the offline queue is full (${this.maxBytes} bytes)`),
      );
    }
    const held: Promise<T> = new Promise<T>((resolve, settle) => {
      // Marked handled only when it rejects: a held call pays for no handler of its own.
      const reject = (e: unknown): void => {
        if (quiet) held.catch(noop);
        settle(e);
      };
      const deadline = limits?.deadline ?? 0;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const unbind = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const h: Held = {
        bytes,
        at: performance.now(),
        run: () => {
          unbind();
          // run() starts the call now, in the queue's order (a held request's too: it once started
          // a few microtasks later, after every held send).
          Promise.resolve(run()).then(resolve, reject);
        },
        reject: (e) => {
          unbind();
          reject(e);
        },
        gone: false,
      };
      // Ends the held call on its own: skipped when the queue is next drained or aged.
      const drop = (e: PointSubError): void => {
        if (h.gone) return;
        h.gone = true;
        this.heldBytes -= h.bytes;
        // Out of the queue soon: held calls that time out at a high rate must not pile up in it.
        if (++this.heldGone * 2 > this.held.length) {
          this.held = this.held.filter((x) => !x.gone);
          this.heldGone = 0;
        }
        h.reject(e);
      };
      const onAbort = (): void => drop(cancelled(limits?.what, signal as AbortSignal));
      signal?.addEventListener("abort", onAbort, { once: true });
      if (deadline > 0) {
        let due = false;
        const fire = (): void => {
          // Due: looked at again after this turn's I/O (a new timer runs after the poll phase). After a stall of
          // this process the timers run before the handshake that came meanwhile is read: the call failed with
          // its connection open in the socket.
          if (!due) {
            due = true;
            timer = setTimeout(fire, 0);
            return;
          }
          drop(
            new PointSubError("ERR_TIMEOUT", `${limits?.what ?? "call"} timed out while not connected`, {
              phase: "request",
            }),
          );
        };
        timer = setTimeout(fire, Math.min(MAX_TIMER_MS, Math.max(0, deadline - performance.now())));
      }
      this.held.push(h);
      this.heldBytes += bytes;
      this.armAgeTimer();
      // Only while still queued: run, aged out or rejected by a close, it is no longer counted.
      limits?.held?.(() => {
        if (this.held.includes(h)) drop(new PointSubError("ERR_CANCELLED", `${limits.what ?? "call"} withdrawn`));
      });
    });
    return held;
  }

  /** The error calls get once closed. */
  protected closedError(): PointSubError {
    return this.closeError ?? new PointSubError("ERR_CONNECTION_CLOSED", "client closed");
  }

  /** Closed for good (by close(), or giving up): wakes every wait, rejects everything held. */
  protected shutdown(error: PointSubError | undefined): void {
    if (this.state_ === "closed") return;
    this.closeError = error;
    this.setState("closed");
    this.sleepCancel?.();
    this.onShutdown();
    const failure = this.closedError();
    for (const w of this.waiters.splice(0)) w.reject(failure);
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    this.heldGone = 0;
    if (this.ageTimer !== undefined) clearTimeout(this.ageTimer);
    this.ageTimer = undefined;
    for (const h of held) if (!h.gone) h.reject(failure);
    this.attemptAbort?.abort(failure);
    this.tell("close", error);
  }

  /**
   * The caller's `signal` ends the first connect (its attempts and the
   * backoff between them) with ERR_CANCELLED; once connected it has no
   * further effect.
   */
  protected abortFirstConnect(signal: AbortSignal | undefined): void {
    if (signal === undefined) return;
    const onAbort = (): void => {
      if (this.state_ === "connecting" || this.state_ === "reconnecting" || this.state_ === "disconnected") {
        this.shutdown(cancelled("connect", signal));
      }
    };
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener("abort", onAbort, { once: true });
    const off = (to: ResilientState): void => {
      if (to !== "connected" && to !== "closed") return;
      signal.removeEventListener("abort", onAbort);
      this.events().off("state", off);
    };
    this.events().on("state", off);
  }

  /** Subclass waits that close() must end at once. */
  protected onShutdown(): void {}

  private events(): Emitter<ReconnectingEvents> {
    return this as unknown as Emitter<ReconnectingEvents>;
  }

  /**
   * Emits one of the state machine's events. A listener that throws (the application's bug) is
   * surfaced, thrown again from a microtask, the listeners after it still run (`Emitter`;
   * eventemitter3's emit stopped at it) and the state machine goes on: before, a throwing
   * `backoff` or `attemptFailed` listener ended the reconnection loop (an unhandled rejection; the
   * client stayed "reconnecting" for good, its held calls timing out), and a throwing `state` or
   * `close` listener threw out of close() before the connection was closed.
   */
  private tell<K extends keyof ReconnectingEvents>(event: K, ...args: ReconnectingEvents[K]): void {
    const emit = (): void => {
      try {
        this.events().emit(event, ...args);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    };
    // One told by a listener (close() from a `state` listener) waits until every listener heard the event
    // under way: before, the listeners after it heard `closed` and `close` first, then `reconnecting`.
    if (this.telling !== undefined) {
      this.telling.push(emit);
      return;
    }
    const queue: (() => void)[] = [emit];
    this.telling = queue;
    try {
      for (let i = 0; i < queue.length; i++) queue[i]();
    } finally {
      this.telling = undefined;
    }
  }

  /** `confirm`: the oldest held call is due, looked at again after this turn's I/O. */
  private armAgeTimer(confirm = false): void {
    if (this.ageTimer !== undefined || this.held.length === 0) return;
    // At most a timer's longest delay: a longer one fired after 1 ms, and again each ms while anything was held
    // (offline.maxAgeMs of 30 days: a busy loop and a TimeoutOverflowWarning each time). Fired early, it re-arms.
    const wait = confirm ? 0 : Math.min(MAX_TIMER_MS, Math.max(0, this.held[0].at + this.maxAgeMs - performance.now()));
    this.ageTimer = setTimeout(() => {
      this.ageTimer = undefined;
      const now = performance.now();
      // Due: looked at again after this turn's I/O (a new timer runs after the poll phase). After a stall of this
      // process the timers run before the handshake that came meanwhile is read: the held calls failed with
      // ERR_OFFLINE, their connection open in the socket.
      if (!confirm && this.held.length !== 0 && now - this.held[0].at >= this.maxAgeMs) {
        this.armAgeTimer(true);
        return;
      }
      while (this.held.length !== 0 && (this.held[0].gone || now - this.held[0].at >= this.maxAgeMs)) {
        const h = this.held.shift() as Held;
        if (h.gone) {
          this.heldGone--;
          continue;
        }
        this.heldBytes -= h.bytes;
        h.reject(new PointSubError("ERR_OFFLINE", `not connected for ${this.maxAgeMs} ms (offline.maxAgeMs)`));
      }
      this.armAgeTimer();
    }, wait);
    (this.ageTimer as { unref?: () => void }).unref?.();
  }

  private setState(to: ResilientState): void {
    const from = this.state_;
    if (from === to) return;
    if (!TRANSITIONS[from].includes(to)) throw new Error(`pointsub: invalid transition ${from} -> ${to}`);
    this.state_ = to;
    this.tell("state", to, from);
  }

  /**
   * Connects until it succeeds, the attempts run out, or it is closed;
   * `delayFirst`: the connection before dropped soon after it opened, so
   * even the first attempt waits its backoff.
   */
  private async loop(delayFirst = false): Promise<void> {
    let attempt = 0;
    for (;;) {
      if (this.state_ === "closed") return;
      if (attempt > 0 || delayFirst) {
        // Full jitter (a uniformly random delay up to the ceiling): clients cut off together do not return together.
        const step =
          this.backoffStep === undefined
            ? fullJitterBackoff(this.initialDelayMs, this.maxDelayMs)
            : this.backoffStep.next(undefined);
        this.backoffStep = step;
        this.tell("backoff", attempt + 1, step.duration);
        // A `backoff` listener closed it (or aborted the first connect's signal): no wait left running.
        if ((this.state_ as ResilientState) === "closed") return;
        await this.sleep(step.duration);
        if ((this.state_ as ResilientState) === "closed") return;
      }
      attempt++;
      let conn: C;
      const ac = new AbortController();
      this.attemptAbort = ac;
      try {
        conn = await this.open(ac.signal);
      } catch (err) {
        if ((this.state_ as ResilientState) === "closed") return; // close() ended the attempt
        const e = thrownError(err, "ERR_CONNECT");
        this.tell("attemptFailed", attempt, e);
        // Its own `retryable`: a code of the application's own (a custom transport's error) has no entry in the
        // table, and looking it up threw here, an unhandled rejection (the process ended, the client stuck connecting).
        if (!e.retryable) {
          // Bad options, a refused certificate or credentials: trying again cannot help.
          this.shutdown(e);
          return;
        }
        if (attempt >= Math.max(1, this.maxAttempts) || this.maxAttempts === 0) {
          this.shutdown(
            new PointSubError("ERR_CONNECT", `gave up after ${attempt} attempts: ${e.message}`, { cause: e }),
          );
          return;
        }
        if (this.state_ === "connecting") this.setState("reconnecting");
        continue;
      }
      if (this.attemptAbort === ac) this.attemptAbort = undefined;
      if ((this.state_ as ResilientState) === "closed") {
        conn.destroy();
        return;
      }
      this.adopt(conn);
      return;
    }
  }

  private adopt(conn: C): void {
    this.conn = conn;
    this.adoptedAt = performance.now();
    this.attachTo(conn);
    conn.once("close", (err) => this.dropped(conn, err));
    this.setState("connected");
    for (const w of this.waiters.splice(0)) w.resolve();
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    this.heldGone = 0;
    if (this.ageTimer !== undefined) clearTimeout(this.ageTimer);
    this.ageTimer = undefined;
    for (const h of held) if (!h.gone) h.run();
  }

  private dropped(conn: C, err: PointSubError | undefined): void {
    if (this.conn !== conn || this.state_ === "closed") return;
    this.conn = undefined;
    if (this.maxAttempts === 0) {
      this.shutdown(err ?? new PointSubError("ERR_CONNECTION_CLOSED", "connection closed (reconnect is off)"));
      return;
    }
    // A connection that lived a while starts a new run of attempts (the first at once); one that
    // dropped soon after it opened continues the backoff.
    const lived = performance.now() - this.adoptedAt;
    const flapped = lived < Math.max(STABLE_MS, this.maxDelayMs);
    if (!flapped) this.backoffStep = undefined;
    // Only a connection closed within STABLE_MS counts towards giving up, whatever maxDelayMs: a server's
    // idle timeout or connection age (seconds) under a long maxDelayMs is no failure — an honest client
    // whose every connection served its calls gave up after maxAttempts of them.
    if (lived >= STABLE_MS) this.flaps = 0;
    else if (++this.flaps >= Math.max(1, this.maxAttempts)) {
      this.shutdown(
        new PointSubError(
          "ERR_CONNECT",
          `gave up after ${this.flaps} connections in a row closed within ${STABLE_MS} ms of opening`,
          { cause: err },
        ),
      );
      return;
    }
    this.setState("reconnecting");
    void this.loop(flapped);
  }

  /** Waits `ms` (a backoff delay), at most a timer's longest delay: a longer one fired after 1 ms (a delay of days: at once). */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, Math.min(ms, MAX_TIMER_MS));
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.sleepCancel = done;
    });
  }
}

function noop(): void {}

/** ERR_CANCELLED for `what`, aborted by `signal`. */
function cancelled(what: string | undefined, signal: AbortSignal): PointSubError {
  return new PointSubError("ERR_CANCELLED", `${what ?? "call"} aborted`, { cause: signal.reason });
}
