/**
 * Rate limiting: token buckets per session (or per principal) and global,
 * for requests, one-way messages and bytes. A request over a limit is
 * refused before its handler runs with ERR_RATE_LIMITED and a
 * `retryAfterMs` hint (it crosses the wire, docs/PROTOCOL.md §3.5; the
 * resilient client waits that long and retries). A one-way message over a
 * limit is not refused: it waits for its tokens (dropped only if its
 * session closes meanwhile and the global limit has none for it), and while
 * its connection holds too many waiting messages the connection stops
 * reading from that peer (`connection/dispatch.ts`, "held messages"), so a
 * flood is slowed by TCP backpressure with bounded memory.
 *
 * The path of a call within its limits is arithmetic on a clock reading
 * shared by the calls of one task: no promise, closure or allocation of
 * its own.
 */
import * as v from "valibot";
import { PointSubError } from "../errors/error.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import { type Clock, monotonicClock, perTaskClock, TokenBucket } from "../util/token-bucket.ts";
import type { CallContext, HandlerResult, Middleware } from "./types.ts";

/** One limit: a sustained rate and the burst allowed on top of it. */
export interface RateLimitRule {
  /** Sustained rate: requests, messages or bytes per second (> 0). */
  perSecond: number;
  /** Most taken at once after a quiet spell (>= 1). Default: one second's worth (`perSecond`, at least 1). */
  burst?: number;
}

/** Limits of one scope (a session, a principal, or everyone). Each is optional. */
export interface RateLimits {
  /** Requests per second (streams are not counted: flow control paces them). */
  requests?: RateLimitRule;
  /** One-way messages per second. */
  messages?: RateLimitRule;
  /** Bytes per second of request and message data together. */
  bytes?: RateLimitRule;
}

/** Options of {@link rateLimit}. At least one limit must be given. */
export interface RateLimitOptions {
  /** Limits of each session — or of each key, with {@link key}. */
  session?: RateLimits;
  /** Limits shared by every session this middleware serves. */
  global?: RateLimits;
  /**
   * Buckets by this key (e.g. the principal) instead of by session: the
   * sessions of one key share its `session` limits. Keyed state is kept in
   * a map bounded by {@link maxKeys}.
   */
  key?: (ctx: CallContext) => string;
  /**
   * Most keys kept with {@link key} (default 10,000). When full, keys
   * whose buckets refilled are forgotten first (nothing is lost), then the
   * oldest keys without waiting messages (they start again with a full
   * burst), down to 7/8 of maxKeys at once: new keys cost amortized O(1).
   */
  maxKeys?: number;
}

/** Counters of a {@link RateLimiter}. */
export interface RateLimitStats {
  /** Requests refused with ERR_RATE_LIMITED. */
  refused: number;
  /** Messages that had to wait for tokens. */
  delayed: number;
  /** Messages waiting now. */
  waiting: number;
  /**
   * Messages dropped: waiting when their session closed (a hang-up, an error,
   * an idle close; a graceful one past 8,192 waiting), over the global limit
   * then (each also counted as an ERR_RATE_LIMITED
   * error in the closed session's own `stats()`; not in the server's `stats()`,
   * which took the session's totals when it closed). A session this side closed gracefully
   * (`server.close()`, `closeSession`) drops none.
   */
  dropped: number;
  /** Keys kept now (with `key`; 0 otherwise: session state lives in a WeakMap). */
  keys: number;
}

/** The {@link rateLimit} middleware, with its counters. */
export interface RateLimiter extends Middleware {
  stats(): RateLimitStats;
}

/** The buckets of one scope; undefined where that limit is not set. */
interface Buckets {
  readonly requests: TokenBucket | undefined;
  readonly messages: TokenBucket | undefined;
  readonly bytes: TokenBucket | undefined;
}

/** A message waiting for tokens. */
interface Waiter {
  readonly bytes: number;
  readonly session: CallContext["session"];
  /** True: dropped (its session closed, the global limit had no tokens for it). */
  readonly resolve: (dropped: boolean) => void;
}

/** The state of one session (or key): its buckets and its waiting messages, in arrival order. */
interface Lane extends Buckets {
  waiting: Waiter[] | undefined;
  /** Messages let go by the timer whose chain did not go on yet (a microtask away): later ones wait behind them. */
  releasing: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * Messages of sessions their peer closed that may wait for the global limit's tokens, all such sessions
 * together (and their data bytes): beyond, they are dropped. Each is charged to the memory budget while it
 * waits (its data and 1 KiB, `connection/dispatch.ts`).
 */
const ORPHANS = 8192;
const ORPHAN_BYTES = 8 * 1024 * 1024;

const num = () => v.number("must be a number");
const rule = v.optional(
  v.strictObject(
    {
      perSecond: v.pipe(num(), v.finite("must be finite"), v.gtValue(0, "must be > 0")),
      burst: v.optional(v.pipe(num(), v.finite("must be finite"), v.minValue(1, "must be >= 1"))),
    },
    "must be an object { perSecond, burst? } with no other fields",
  ),
);
const limits = v.optional(
  v.strictObject(
    { requests: rule, messages: rule, bytes: rule },
    "must be an object with requests, messages and/or bytes",
  ),
);
const schema = v.strictObject(
  {
    session: limits,
    global: limits,
    key: v.optional(v.function("must be a function")),
    maxKeys: v.optional(v.pipe(num(), v.safeInteger("must be an integer"), v.minValue(1, "must be >= 1"))),
  },
  "must be an object with session, global, key and/or maxKeys",
);

/** Throws ERR_INVALID_ARGUMENT naming the first invalid field, e.g. `session.requests.perSecond must be > 0 (got 0)`. */
function check(o: RateLimitOptions): void {
  const r = v.safeParse(schema, o);
  if (!r.success) {
    const issue = r.issues[0];
    const path = issue.path?.map((p) => String(p.key)).join(".") ?? "options";
    // A missing or unknown field is reported with its object's message: "perSecond must be an object { perSecond, burst? }".
    // (A field given that is no object is that object's issue too, expecting "Object": its message is right.)
    const field = issue.type === "strict_object" && issue.path !== undefined && issue.expected !== "Object";
    const what =
      field && issue.expected === "never"
        ? "is not an option"
        : `${field ? "is required" : issue.message} (got ${String(issue.input)})`;
    throw new PointSubError("ERR_INVALID_ARGUMENT", `rateLimit: ${path} ${what}`);
  }
  const any = (l: RateLimits | undefined) => l?.requests ?? l?.messages ?? l?.bytes;
  if (any(o.session) === undefined && any(o.global) === undefined) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "rateLimit: give at least one limit in session or global");
  }
}

function bucket(r: RateLimitRule | undefined, clock: Clock): TokenBucket | undefined {
  return r === undefined ? undefined : new TokenBucket(r.perSecond, r.burst ?? Math.max(1, r.perSecond), clock);
}

function lane(l: RateLimits | undefined, clock: Clock): Lane {
  return {
    requests: bucket(l?.requests, clock),
    messages: bucket(l?.messages, clock),
    bytes: bucket(l?.bytes, clock),
    waiting: undefined,
    releasing: 0,
    timer: undefined,
  };
}

/** Ms until one unit of `unit` and `bytes` bytes can be taken from `b` (0: now). */
function delayOf(b: Buckets, unit: TokenBucket | undefined, bytes: number, now: number): number {
  const d = unit === undefined ? 0 : unit.delay(1, now);
  const e = b.bytes === undefined || bytes === 0 ? 0 : b.bytes.delay(bytes, now);
  return d > e ? d : e;
}

function consume(b: Buckets, unit: TokenBucket | undefined, bytes: number, now: number): void {
  unit?.consume(1, now);
  if (b.bytes !== undefined && bytes !== 0) b.bytes.consume(bytes, now);
}

/**
 * Takes one unit of `unit` and `bytes` bytes from `b` when both are there
 * and returns true; else takes nothing and returns false. On false,
 * `undo`'s (a lane whose tokens this call already took) are given back.
 */
function takeAll(b: Buckets, unit: TokenBucket | undefined, bytes: number, now: number, undo?: Buckets): boolean {
  const u = unit === undefined ? 0 : unit.take(1, now);
  if (u === 0) {
    const by = b.bytes === undefined || bytes === 0 ? 0 : b.bytes.take(bytes, now);
    if (by === 0) return true;
    unit?.refund(1);
  }
  if (undo !== undefined) {
    undo.requests?.refund(1);
    if (undo.bytes !== undefined && bytes !== 0) undo.bytes.refund(bytes);
  }
  return false;
}

/** True when forgetting `l` changes nothing: no waiters and every bucket full. */
function idle(l: Lane, now: number): boolean {
  if ((l.waiting !== undefined && l.waiting.length !== 0) || l.releasing !== 0) return false;
  for (const b of [l.requests, l.messages, l.bytes]) if (b !== undefined && b.available(now) < b.burst) return false;
  return true;
}

/**
 * A middleware that limits the rate of requests, one-way messages and
 * bytes per session (or per `key`) and globally. Use it first
 * (`server.use(rateLimit({ session: { requests: { perSecond: 100 } } }))`)
 * so that refused calls cost nothing further.
 *
 * - A **request** over a limit is refused before the rest of the chain and
 *   the handler run: ERR_RATE_LIMITED (retryable) with `retryAfterMs`, the
 *   time until its tokens are there. Refused requests take no tokens.
 *   Because the handler never ran, retrying is always safe; the resilient
 *   client does so after `max(retryAfterMs, its backoff)`.
 * - A **one-way message** over a limit waits for its tokens, in arrival
 *   order per session (or key), then goes on. While a connection holds
 *   more than 64 waiting messages or 1 MiB of them, it stops reading from
 *   that peer until half of them went on: a flooding peer is slowed by
 *   backpressure (its `send`s queue, then wait for its TCP window), and
 *   this side holds a bounded amount. When a session closes, its own
 *   limit no longer holds its waiting messages (charged to its buckets,
 *   into debt), the global limit does: after the peer's graceful close they
 *   wait for its tokens (at most ORPHANS messages of all such sessions);
 *   after a hang-up, an error or an idle close those it has no tokens for
 *   are dropped (`stats().dropped`). A graceful close of this side
 *   (`server.close()`, `closeSession`) drops none: it waits for them while
 *   the peer keeps the connection (up to its timeout), and those left when
 *   the session closes go on then.
 * - An amount larger than a bucket's burst is let through when the bucket
 *   is full and leaves it in debt, so one large message or request is never
 *   refused forever, and the long-run byte rate holds.
 * - Streams pass through (flow control already paces them).
 *
 * State: per-session buckets live in a WeakMap keyed by the session's
 * connection, so they go with the session; with `key`, in a map bounded by
 * `maxKeys`. Throws ERR_INVALID_ARGUMENT naming the field for invalid
 * options.
 */
export function rateLimit(options: RateLimitOptions): RateLimiter {
  check(options);
  // One clock read per task: the requests of one socket read share it.
  const clock = perTaskClock(monotonicClock);
  const g = lane(options.global, clock);
  const perSession = options.session;
  const gl = options.global;
  // What is limited at all: the rest passes with no lookup.
  const sessionRequests = perSession?.requests !== undefined || perSession?.bytes !== undefined;
  const requestsLimited = sessionRequests || gl?.requests !== undefined || gl?.bytes !== undefined;
  const messagesLimited =
    perSession?.messages !== undefined ||
    perSession?.bytes !== undefined ||
    gl?.messages !== undefined ||
    gl?.bytes !== undefined;
  const keyOf = options.key;
  const maxKeys = options.maxKeys ?? 10_000;
  const bySession = new WeakMap<object, Lane>();
  const byKey = new Map<string, Lane>();
  const stats: RateLimitStats = { refused: 0, delayed: 0, waiting: 0, dropped: 0, keys: 0 };

  // The calls of one socket read come from one session: the last lookup is kept.
  let lastSession: object | undefined;
  let lastLane: Lane | undefined;
  const laneOf = (ctx: CallContext): Lane => {
    if (keyOf === undefined) {
      const session = ctx.session;
      if (session === lastSession) return lastLane as Lane;
      let l = bySession.get(session);
      if (l === undefined) {
        l = lane(perSession, clock);
        bySession.set(session, l);
      }
      lastSession = session;
      lastLane = l;
      return l;
    }
    const k = keyOf(ctx);
    let l = byKey.get(k);
    if (l === undefined) {
      if (byKey.size >= maxKeys) evict();
      l = lane(perSession, clock);
      byKey.set(k, l);
    }
    return l;
  };

  /**
   * Makes room: forgets idle keys, else the oldest with no message waiting or on its way, down to
   * 7/8 of maxKeys, so that a stream of new keys costs one scan per maxKeys / 8 keys, not one each.
   */
  const evict = (): void => {
    const now = clock();
    for (const [k, l] of byKey) if (idle(l, now)) byKey.delete(k);
    const target = maxKeys - Math.max(1, maxKeys >>> 3);
    for (const [k, l] of byKey) {
      if (byKey.size <= target) break;
      if ((l.waiting === undefined || l.waiting.length === 0) && l.releasing === 0) byKey.delete(k);
    }
  };

  /** Lets waiting messages of `l` go on while their tokens are there; re-arms its timer otherwise. */
  const pump = (l: Lane): void => {
    l.timer = undefined;
    const q = l.waiting as Waiter[];
    let i = 0;
    while (i < q.length) {
      const w = q[i];
      const now = clock();
      const global = delayOf(g, g.messages, w.bytes, now);
      let dropped = false;
      if (w.session.state !== "closed") {
        const wait = Math.max(delayOf(l, l.messages, w.bytes, now), global);
        if (wait > 0) {
          arm(l, wait);
          break;
        }
        consume(l, l.messages, w.bytes, now);
        consume(g, g.messages, w.bytes, now);
      } else if (closedByUs.has(w.session)) {
        // A session this side closed gracefully (server.close(), closeSession): the close waited for them while
        // the peer kept the connection (a pointsub peer ends it once both GOAWAYs crossed); they go on now,
        // charged to the global buckets only as far as these have tokens. Dropped, a graceful server.close()
        // lost a client's messages at once (35 of 40, with a 10 s timeout).
        consume(l, l.messages, w.bytes, now);
        if (global <= 0) consume(g, g.messages, w.bytes, now);
      } else {
        // Closed otherwise: its own line no longer holds them (charged into debt, so a key's long-run rate
        // holds), the global limit does. Before, they all went on at once: a peer that sent a BATCH of 12,000
        // tiny messages and hung up had them served past a global limit of 100/s in 1.6 s (and each such
        // connection as many again). The peer's own graceful close (its GOAWAY): they wait for the global
        // tokens, in order, up to ORPHANS messages or ORPHAN_BYTES of all such sessions together, and are
        // dropped beyond (dropping them all lost a client's `send`s before its `close()`). A hang-up, an error
        // or an idle close: those the global limit has no tokens for now are dropped.
        const patient = orphaned.has(w.session);
        if (global > 0) {
          if (patient && orphans <= ORPHANS && orphanBytes <= ORPHAN_BYTES) {
            arm(l, global);
            break;
          }
          dropped = true;
          stats.dropped++;
        } else {
          consume(l, l.messages, w.bytes, now);
          consume(g, g.messages, w.bytes, now);
        }
        if (patient) {
          orphans--;
          orphanBytes -= w.bytes;
        }
      }
      i++;
      l.releasing++;
      w.resolve(dropped);
    }
    stats.waiting -= i;
    q.splice(0, i);
  };

  /**
   * The lines each session's messages waited in, woken by its close (one listener per session, added when
   * one of its messages first waits). Every line: with `key`, one session's messages may wait in several
   * (a key per topic; a key's line forgotten and made again), and only its first was woken before — the
   * others' messages waited for their tokens after the session was gone.
   */
  const linesOf = new WeakMap<object, Set<Lane>>();
  /**
   * Sessions closed gracefully by a close this side started: no error, and not the peer's GOAWAY (closeReason
   * "peer closing" or "peer: <reason>") nor an idle close (which does not wait for held messages).
   */
  const closedByUs = new WeakSet<object>();
  /** Sessions the peer closed gracefully (its GOAWAY, no error): their messages wait for the global limit. */
  const orphaned = new WeakSet<object>();
  /** Their messages (and bytes) still waiting: bounded by ORPHANS, ORPHAN_BYTES. */
  let orphans = 0;
  let orphanBytes = 0;
  const wakeOnClose = (session: CallContext["session"], l: Lane): void => {
    let lines = linesOf.get(session);
    if (lines === undefined) {
      const mine = new Set<Lane>();
      lines = mine;
      linesOf.set(session, mine);
      session.once("close", (error) => {
        const why = session.closeReason;
        const peer = /^(peer: |peer closing$)/.test(why);
        if (error === undefined && peer) {
          orphaned.add(session);
          for (const x of mine) {
            for (const w of x.waiting ?? []) {
              if (w.session !== session) continue;
              orphans++;
              orphanBytes += w.bytes;
            }
          }
        } else if (
          // Ours also when it ran out of time waiting for them (they were all dropped: 212 of 300 on a
          // server.close({ timeoutMs: 300 })), or the peer hung up meanwhile: its reason is then ours, not the code.
          !peer &&
          why !== "idle" &&
          why !== error?.code &&
          (error?.code ?? "ERR_CONNECTION_CLOSED") === "ERR_CONNECTION_CLOSED"
        )
          closedByUs.add(session);
        for (const x of mine) {
          if (x.waiting === undefined || x.waiting.length === 0) continue;
          if (x.timer !== undefined) clearTimeout(x.timer);
          pump(x);
        }
        mine.clear();
      });
    } else if (lines.has(l)) return;
    // Bounded: lines with nothing waiting are let go once a session has used many.
    if (lines.size >= 64) for (const x of lines) if (x.waiting === undefined || x.waiting.length === 0) lines.delete(x);
    lines.add(l);
  };

  const arm = (l: Lane, wait: number): void => {
    // At most a timer's longest (a longer delay fires after 1 ms): pump finds it early and arms again.
    l.timer = setTimeout(pump, Math.min(wait, MAX_TIMER_MS), l);
    (l.timer as { unref?: () => void }).unref?.();
  };

  const mw = ((ctx: CallContext, next: () => Promise<HandlerResult>): HandlerResult | Promise<HandlerResult> => {
    const kind = ctx.kind;
    if (kind === "stream") return next();
    const bytes = ctx.data.length;
    if (kind === "request") {
      if (!requestsLimited) return next();
      // The engine's reading of when these bytes arrived: no clock read of our own.
      const rx = ctx.receivedAt;
      const now = rx > 0 ? rx : clock();
      const l = sessionRequests ? laneOf(ctx) : g;
      // Within the limits (the usual case): one refill and one subtraction per bucket.
      if (takeAll(l, l.requests, bytes, now) && (l === g || takeAll(g, g.requests, bytes, now, l))) return next();
      const wait = Math.max(delayOf(l, l.requests, bytes, now), l === g ? 0 : delayOf(g, g.requests, bytes, now));
      stats.refused++;
      throw PointSubError.fromPeer("ERR_RATE_LIMITED", `rate limit exceeded for ${ctx.route}; retry in ${wait} ms`, {
        retryAfterMs: Math.max(1, wait),
      });
    }
    if (!messagesLimited) return next();
    const l = laneOf(ctx);
    // A one-way message: on at once when nothing waits ahead of it and its tokens are there.
    let wait = 0;
    if ((l.waiting === undefined || l.waiting.length === 0) && l.releasing === 0) {
      const rx = ctx.receivedAt;
      const now = rx > 0 ? rx : clock();
      wait = Math.max(delayOf(l, l.messages, bytes, now), delayOf(g, g.messages, bytes, now));
      if (wait === 0) {
        consume(l, l.messages, bytes, now);
        consume(g, g.messages, bytes, now);
        return next();
      }
    }
    // Wait in line; the dispatcher counts the message as held (reading pauses over its bound).
    stats.delayed++;
    stats.waiting++;
    l.waiting ??= [];
    const q = l.waiting;
    const held = new Promise<boolean>((resolve) => {
      q.push({ bytes, session: ctx.session, resolve });
    });
    wakeOnClose(ctx.session, l);
    // A line that is not empty has its timer armed; only messages let go are a microtask away (wait 1 ms).
    if (l.timer === undefined) arm(l, wait === 0 ? 1 : wait);
    return held.then((dropped) => {
      l.releasing--;
      if (!dropped) return next();
      throw new PointSubError(
        "ERR_RATE_LIMITED",
        `one-way message to ${ctx.route} dropped: its session closed while it waited for the global limit`,
      );
    });
  }) as RateLimiter;
  mw.stats = () => ({ ...stats, keys: byKey.size });
  return mw;
}
