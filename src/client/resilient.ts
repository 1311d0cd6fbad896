/**
 * A client connection that survives its transport: a state machine
 * (`disconnected → connecting → connected → reconnecting → … → closed`),
 * reconnection with exponential backoff and full jitter, an explicit
 * offline policy for calls made while not connected, and retries of
 * requests lost with a dropped connection — only under an idempotency key
 * the server deduplicates, so a handler never runs twice — and of requests
 * a rate limit refused before their handler ran (after its `retryAfterMs`).
 */
import { EventEmitter } from "eventemitter3";
import type { Connection } from "../connection/connection.ts";
import type { Handler, Message, Payload, RequestOptions } from "../connection/types.ts";
import { codeInfo } from "../errors/codes.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import type { Middleware, ResumeLookup } from "../router/types.ts";
import type { StreamHandler } from "../stream/types.ts";
import type { Address } from "../transport/transport.ts";
import { type BackoffStep, fullJitterBackoff, fullJitterDelay } from "./backoff.ts";
import { type ConnectOptions, connect } from "./connect.ts";

/** Lifecycle of a {@link ResilientConnection}; `closed` is final. */
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

/** Options of {@link connectResilient}: those of `connect`, plus the policies. */
export interface ResilientOptions extends ConnectOptions {
  /** Reconnection policy, or `false` for none (a drop closes for good). */
  reconnect?: ReconnectOptions | false;
  /** Offline policy. */
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
   * implies `retry`). Default false: it fails with the drop's error.
   */
  retry?: boolean;
  /**
   * Time allowed for each attempt of a retryable request (`retry` or an
   * `idempotencyKey`): an attempt that gets no answer within it is given up
   * with ERR_TIMEOUT and the request is sent again under the same key —
   * counted against `retries`, within the overall `timeoutMs`. Safe because
   * the key makes the server run the handler at most once: a repeat of a
   * request still running waits for it, a repeat of a finished one gets its
   * stored answer. Default: none (one attempt may take the whole deadline).
   */
  attemptTimeoutMs?: number;
}

/** Events of a {@link ResilientConnection}. */
export interface ResilientEvents {
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
  /** A one-way message from the server. */
  message: [msg: Message];
  /** Closed for good: `error` when it gave up (attempts exhausted) rather than being closed. */
  close: [error: PointSubError | undefined];
}

/** HELLO feature bit of a peer that deduplicates keyed requests (docs/PROTOCOL.md §4). */
const IDEMPOTENCY_FEATURE = 0x8;
/** Longest retry-after hint a request waits out; a longer one is the caller's to handle. */
const MAX_RATE_WAIT_MS = 60_000;
const LOST: ReadonlySet<string> = new Set(["ERR_CONNECTION_CLOSED", "ERR_GOING_AWAY", "ERR_KEEPALIVE"]);
const utf8 = new TextEncoder();

interface Held {
  bytes: number;
  at: number;
  run: () => void;
  reject: (err: PointSubError) => void;
}

function check(name: string, v: number | undefined, min: number, allowInfinity = false): void {
  if (v === undefined) return;
  if (Number.isNaN(v) || v < min || (!allowInfinity && !Number.isFinite(v))) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a number >= ${min}, got ${v}`);
  }
}

/**
 * One logical connection to one server, kept up across drops. Calls made
 * while it reconnects follow the offline policy; everything resolves or
 * rejects, nothing is dropped silently. Obtain one with {@link connectResilient}.
 */
export class ResilientConnection extends EventEmitter<ResilientEvents> {
  private state_: ResilientState = "disconnected";
  private conn: Connection | undefined;
  private readonly address: Address;
  private readonly options: ResilientOptions;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly maxAttempts: number;
  private readonly policy: "queue" | "fail";
  private readonly maxBytes: number;
  private readonly maxAgeMs: number;
  private readonly retries: number;
  private readonly routes: ((c: Connection) => void)[] = [];
  private held: Held[] = [];
  private heldBytes = 0;
  private ageTimer: ReturnType<typeof setTimeout> | undefined;
  private waiters: { resolve: () => void; reject: (e: PointSubError) => void }[] = [];
  private sleepCancel: (() => void) | undefined;
  /** Requests waiting out a server's retry-after hint (ended at once by close). */
  private readonly rateWaits = new Set<() => void>();
  private closeError: PointSubError | undefined;

  /** @internal Use {@link connectResilient}. */
  constructor(address: Address, options: ResilientOptions) {
    super();
    const r = options.reconnect === false ? { maxAttempts: 0 } : (options.reconnect ?? {});
    check("reconnect.initialDelayMs", r.initialDelayMs, 0);
    check("reconnect.maxDelayMs", r.maxDelayMs, 0);
    check("reconnect.maxAttempts", r.maxAttempts, 0, true);
    check("offline.maxBytes", options.offline?.maxBytes, 0);
    check("offline.maxAgeMs", options.offline?.maxAgeMs, 0);
    check("retries", options.retries, 0);
    const policy = options.offline?.policy ?? "queue";
    if (policy !== "queue" && policy !== "fail") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `offline.policy must be "queue" or "fail", got ${String(policy)}`,
      );
    }
    this.address = address;
    this.options = options;
    this.initialDelayMs = r.initialDelayMs ?? 100;
    this.maxDelayMs = Math.max(r.maxDelayMs ?? 5000, this.initialDelayMs);
    this.maxAttempts = r.maxAttempts ?? Number.POSITIVE_INFINITY;
    this.policy = policy;
    this.maxBytes = options.offline?.maxBytes ?? 8 * 1024 * 1024;
    this.maxAgeMs = options.offline?.maxAgeMs ?? 10_000;
    this.retries = options.retries ?? 2;
  }

  /** The current state. */
  get state(): ResilientState {
    return this.state_;
  }

  /** The connection in use while `connected` (undefined otherwise). */
  get connection(): Connection | undefined {
    return this.state_ === "connected" ? this.conn : undefined;
  }

  /** Resolves when connected (at once if it is); rejects with the reason once closed. */
  whenConnected(): Promise<void> {
    if (this.state_ === "connected") return Promise.resolve();
    if (this.state_ === "closed") return Promise.reject(this.closedError());
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Serves requests from the server on every connection this client makes. */
  handle(route: string, handler: Handler): this {
    return this.onEach((c) => c.handle(route, handler));
  }

  /** Serves streams from the server on every connection this client makes. */
  handleStream(route: string, handler: StreamHandler, options: { resume?: ResumeLookup } = {}): this {
    return this.onEach((c) => c.handleStream(route, handler, options));
  }

  /** Middleware for what the server sends, on every connection this client makes. */
  use(mw: Middleware): this {
    return this.onEach((c) => c.use(mw));
  }

  private onEach(apply: (c: Connection) => void): this {
    this.routes.push(apply);
    if (this.conn !== undefined && this.state_ === "connected") apply(this.conn);
    return this;
  }

  /** Sends a one-way message now, or when connected (offline policy). At most once: never repeated after a drop. */
  send(payload: Payload): Promise<void> {
    const c = this.connection;
    if (c !== undefined) return c.send(payload);
    return this.hold(size(payload), () => this.send(payload));
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
    const timeoutMs = options.timeoutMs ?? this.options.requestTimeoutMs ?? 30_000;
    const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Number.POSITIVE_INFINITY;
    const retry = options.retry === true || options.idempotencyKey !== undefined;
    const { retry: _, attemptTimeoutMs, ...rest } = options;
    const key = options.idempotencyKey ?? (retry ? randomKey() : undefined);
    if (attemptTimeoutMs !== undefined && !(attemptTimeoutMs > 0)) {
      return Promise.reject(
        new PointSubError("ERR_INVALID_ARGUMENT", `attemptTimeoutMs must be > 0 (got ${attemptTimeoutMs})`),
      );
    }
    const perAttempt = retry ? (attemptTimeoutMs ?? 0) : 0;
    return this.attempt(
      route,
      payload,
      { ...rest, idempotencyKey: key },
      deadline,
      retry ? 0 : this.retries,
      0,
      perAttempt,
    );
  }

  private async attempt(
    route: string,
    payload: Payload,
    options: RequestOptions,
    deadline: number,
    tries: number,
    limited: number,
    perAttempt = 0,
  ): Promise<Uint8Array> {
    let c = this.connection;
    if (c === undefined) {
      await this.hold(size(payload), noop);
      c = this.connection;
      if (c === undefined) return this.attempt(route, payload, options, deadline, tries, limited, perAttempt);
    }
    const left = deadline === Number.POSITIVE_INFINITY ? 0 : deadline - Date.now();
    if (deadline !== Number.POSITIVE_INFINITY && left <= 0) {
      throw new PointSubError("ERR_TIMEOUT", `request to ${route} timed out (overall deadline, ${tries} retries)`, {
        phase: "request",
      });
    }
    const keyed = options.idempotencyKey !== undefined && (c.peerSettings.features & IDEMPOTENCY_FEATURE) !== 0;
    // A retryable request's attempt may be given less than what is left (attemptTimeoutMs).
    const attemptMs = perAttempt > 0 && (left === 0 || perAttempt < left) ? perAttempt : left;
    try {
      return await c.request(route, payload, { ...options, timeoutMs: attemptMs });
    } catch (err) {
      const e = toPointSubError(err, "ERR_CONNECTION_CLOSED");
      if (e.code === "ERR_RATE_LIMITED") {
        await this.rateLimited(e, deadline, limited);
        return this.attempt(route, payload, options, deadline, tries, limited + 1, perAttempt);
      }
      // Only this attempt's own time ran out (not the overall deadline): the same key again.
      const attemptTimedOut = e.code === "ERR_TIMEOUT" && attemptMs !== left && Date.now() < deadline;
      if (!keyed || tries >= this.retries || !(LOST.has(e.code) || attemptTimedOut) || this.state_ === "closed") {
        throw e;
      }
      return this.attempt(route, payload, options, deadline, tries + 1, limited, perAttempt);
    }
  }

  /**
   * The server's rate limit refused a request (before its handler ran):
   * waits `max(retryAfterMs, backoff)` for retry number `limited + 1`, or
   * rethrows `e` when retries are used up or the wait would pass `deadline`.
   */
  private async rateLimited(e: PointSubError, deadline: number, limited: number): Promise<void> {
    if (limited >= this.retries || this.state_ === "closed") throw e;
    const wait = Math.max(e.retryAfterMs ?? 0, fullJitterDelay(limited, this.initialDelayMs, this.maxDelayMs));
    // A hint past the deadline, or longer than a client should sit on a call, goes to the caller.
    if (Date.now() + wait >= deadline || wait > MAX_RATE_WAIT_MS) throw e;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.rateWaits.delete(done);
        resolve();
      };
      const t = setTimeout(done, wait);
      (t as { unref?: () => void }).unref?.();
      this.rateWaits.add(done);
    });
    if ((this.state_ as ResilientState) === "closed") throw this.closedError();
  }

  /** Holds a call until connected, or rejects it per the offline policy. */
  private hold(bytes: number, run: () => unknown): Promise<void> {
    if (this.state_ === "closed") return Promise.reject(this.closedError());
    if (this.policy === "fail") {
      return Promise.reject(
        new PointSubError("ERR_OFFLINE", `not connected (${this.state_}); offline policy is "fail"`),
      );
    }
    if (this.heldBytes + bytes > this.maxBytes) {
      return Promise.reject(
        new PointSubError("ERR_OFFLINE", `not connected and the offline queue is full (${this.maxBytes} bytes)`),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const h: Held = {
        bytes,
        at: Date.now(),
        run: () => {
          Promise.resolve(run()).then(() => resolve(), reject);
        },
        reject,
      };
      this.held.push(h);
      this.heldBytes += bytes;
      this.armAgeTimer();
    });
  }

  private armAgeTimer(): void {
    if (this.ageTimer !== undefined || this.held.length === 0) return;
    const wait = Math.max(0, this.held[0].at + this.maxAgeMs - Date.now());
    this.ageTimer = setTimeout(() => {
      this.ageTimer = undefined;
      const now = Date.now();
      while (this.held.length !== 0 && now - this.held[0].at >= this.maxAgeMs) {
        const h = this.held.shift() as Held;
        this.heldBytes -= h.bytes;
        h.reject(new PointSubError("ERR_OFFLINE", `not connected for ${this.maxAgeMs} ms (offline.maxAgeMs)`));
      }
      this.armAgeTimer();
    }, wait);
    (this.ageTimer as { unref?: () => void }).unref?.();
  }

  private flushHeld(): void {
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    if (this.ageTimer !== undefined) clearTimeout(this.ageTimer);
    this.ageTimer = undefined;
    for (const h of held) h.run();
  }

  private setState(to: ResilientState): void {
    const from = this.state_;
    if (from === to) return;
    if (!TRANSITIONS[from].includes(to)) throw new Error(`pointsub: invalid transition ${from} -> ${to}`);
    this.state_ = to;
    this.emit("state", to, from);
  }

  /** @internal Connects (with the reconnection policy) and resolves once connected. */
  async start(): Promise<void> {
    this.setState("connecting");
    void this.loop();
    return this.whenConnected();
  }

  /** Connects until it succeeds, the attempts run out, or the client is closed. */
  private async loop(): Promise<void> {
    let attempt = 0;
    let backoff: BackoffStep | undefined;
    for (;;) {
      if (this.state_ === "closed") return;
      if (attempt > 0) {
        // Full jitter (a uniformly random delay up to the ceiling): clients cut off together do not return together.
        backoff =
          backoff === undefined ? fullJitterBackoff(this.initialDelayMs, this.maxDelayMs) : backoff.next(undefined);
        this.emit("backoff", attempt + 1, backoff.duration);
        await this.sleep(backoff.duration);
        if ((this.state_ as ResilientState) === "closed") return;
      }
      attempt++;
      let conn: Connection;
      try {
        conn = await connect(this.address, this.options);
      } catch (err) {
        const e = toPointSubError(err, "ERR_CONNECT");
        this.emit("attemptFailed", attempt, e);
        if (!codeInfo(e.code).retryable) {
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
      if ((this.state_ as ResilientState) === "closed") {
        conn.destroy();
        return;
      }
      this.adopt(conn);
      return;
    }
  }

  private adopt(conn: Connection): void {
    this.conn = conn;
    for (const apply of this.routes) apply(conn);
    conn.on("message", (m) => this.emit("message", m));
    conn.once("close", (err) => this.dropped(conn, err));
    this.setState("connected");
    for (const w of this.waiters.splice(0)) w.resolve();
    this.flushHeld();
  }

  private dropped(conn: Connection, err: PointSubError | undefined): void {
    if (this.conn !== conn || this.state_ === "closed") return;
    this.conn = undefined;
    if (this.maxAttempts === 0) {
      this.shutdown(err ?? new PointSubError("ERR_CONNECTION_CLOSED", "connection closed (reconnect is off)"));
      return;
    }
    this.setState("reconnecting");
    void this.loop();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.sleepCancel = done;
    });
  }

  private closedError(): PointSubError {
    return this.closeError ?? new PointSubError("ERR_CONNECTION_CLOSED", "client closed");
  }

  private shutdown(error: PointSubError | undefined): void {
    if (this.state_ === "closed") return;
    this.closeError = error;
    this.setState("closed");
    this.sleepCancel?.();
    for (const wake of [...this.rateWaits]) wake();
    const failure = this.closedError();
    for (const w of this.waiters.splice(0)) w.reject(failure);
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    if (this.ageTimer !== undefined) clearTimeout(this.ageTimer);
    for (const h of held) h.reject(failure);
    this.emit("close", error);
  }

  /** Closes for good: the connection gracefully, anything held rejects with ERR_CONNECTION_CLOSED. */
  async close(): Promise<void> {
    const conn = this.conn;
    this.conn = undefined;
    this.shutdown(undefined);
    if (conn !== undefined) await conn.close();
  }
}

function noop(): void {}

function size(p: Payload): number {
  return typeof p === "string" ? p.length * 3 : p instanceof Uint8Array ? p.length : 0;
}

/** A random idempotency key (16 bytes as 32 hex characters). */
function randomKey(): Uint8Array {
  const id = globalThis.crypto.randomUUID().replaceAll("-", "");
  return utf8.encode(id);
}

/**
 * Connects to `address` and keeps the connection up: resolves once the
 * first connection is established (retrying it under the reconnection
 * policy), rejects with ERR_CONNECT when the attempts run out.
 */
export async function connectResilient(address: Address, options: ResilientOptions = {}): Promise<ResilientConnection> {
  const rc = new ResilientConnection(address, options);
  await rc.start();
  return rc;
}
