/**
 * A multi-node client (the seeds' PointSub client): connections pooled per
 * node, per-route node lists, "send to the closest node" by measured
 * round-trip time with failover and a circuit breaker per node, and
 * content-addressed routing (XOR distance of SHA-256 digests, Kademlia-style)
 * with optional fan-out.
 */
import type { Connection } from "../connection/connection.ts";
import { checkConnectionOptions } from "../connection/options.ts";
import type { Payload, RequestOptions } from "../connection/types.ts";
import { UNSENT } from "../connection/unsent.ts";
import { thrownError } from "../errors/describe.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import { badOptions } from "../errors/options.ts";
import { checkSignal } from "../errors/signal.ts";
import type { Address } from "../transport/transport.ts";
import { refuseCredentials } from "../transport/url-credentials.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import { type ConnectOptions, connect } from "./connect.ts";
import { Pool, type Pooled, type PoolOptions } from "./pool.ts";

/** Circuit breaker of each node. */
export interface BreakerOptions {
  /** Consecutive failures that open the breaker (the node is skipped). Default 1. */
  failureThreshold?: number;
  /** First time a node stays skipped, in ms; doubles on each failed probe up to `maxCooldownMs`. Default 1000. */
  cooldownMs?: number;
  /** Longest time a node stays skipped, in ms. Default 30000. */
  maxCooldownMs?: number;
}

/** Options of {@link Client}: connection options for every node, plus the pool and breaker. */
export interface ClientOptions extends ConnectOptions {
  /** Connections per node and in all, and when they are opened and closed. Default: {@link PoolOptions}' defaults. */
  pool?: PoolOptions;
  /** When a failing node is skipped, and for how long. Default: {@link BreakerOptions}' defaults. */
  breaker?: BreakerOptions;
  /** Pings each connection this often, in ms, to keep RTTs current (0: only at connect). Default 5000. */
  rttProbeMs?: number;
}

/** Options of {@link Client.requestClosest}. */
export interface ClosestOptions extends RequestOptions {
  /**
   * Content-addressed routing: order the nodes by XOR distance between
   * SHA-256 of this key and SHA-256 of each node's id (its address as
   * given), instead of by round-trip time. `true` uses the payload as key.
   */
  key?: Uint8Array | string | true;
  /** Send to this many of the closest healthy nodes at once and take the first answer. Default 1. */
  fanout?: number;
}

/** What the client knows about one node. */
export interface NodeInfo {
  readonly address: string;
  /** Smoothed RTT over its pooled connections (ms), undefined until measured. */
  readonly rtt: number | undefined;
  /** `closed`: used; `open`: skipped until `retryAt`; `half-open`: the next call probes it. */
  readonly breaker: "closed" | "open" | "half-open";
  readonly failures: number;
  readonly connections: number;
}

interface NodeHealth {
  failures: number;
  openUntil: number;
  cooldown: number;
  rtt: number | undefined;
  /** Half-open and a call is probing it: other calls skip it until that attempt ends (one probe, not a burst). */
  probing?: boolean;
}

/** Errors that say the node (or the way to it) failed, not the call: fail over to the next node. */
const NODE_FAILURES: ReadonlySet<string> = new Set([
  "ERR_CONNECT",
  "ERR_CONNECTION_CLOSED",
  "ERR_GOING_AWAY",
  "ERR_KEEPALIVE",
  "ERR_POOL_EXHAUSTED",
  "ERR_SLOW_PEER",
]);
/** Errors of a call that do not show its node works ({@link Client.run}): nothing was answered, or "overloaded". */
const NOT_TOLD: ReadonlySet<string> = new Set(["ERR_TIMEOUT", "ERR_CANCELLED", "ERR_OVERLOADED"]);
/** Node failures of calls that were sent (their handler may have run): not failed over unless keyed. */
const MAYBE_RAN = new WeakSet<PointSubError>();
/**
 * Of those, the ones lost on a node that does not deduplicate keyed requests (its HELLO lacks
 * features bit 16: no idempotency middleware): a keyed call is not failed over either.
 */
const UNGUARDED = new WeakSet<PointSubError>();
/**
 * Connects that failed with another code than {@link NODE_FAILURES}' — a node at its connection limit
 * (ERR_OVERLOADED), one that never answered the handshake (ERR_TIMEOUT): the node's failure too, and
 * the call was never sent, so it goes on to the next node.
 */
const NOT_CONNECTED = new WeakSet<PointSubError>();
/**
 * Connect failures that are the node's, not the caller's (a refused credential or version is the caller's);
 * ERR_PROTOCOL: no pointsub there (a ws:// node's upgrade refused with a 4xx: its path is not served);
 * ERR_UNSUPPORTED_URL: a multiaddr no transport of the client's libp2p node dials (a QUIC node from a node
 * without QUIC), which `addNode` cannot tell: the other nodes may still be reached.
 */
const CONNECT_RETRYABLE: ReadonlySet<string> = new Set([
  "ERR_OVERLOADED",
  "ERR_TIMEOUT",
  "ERR_PROTOCOL",
  "ERR_UNSUPPORTED_URL",
]);
/** A keyed call's repeat refused by this side: the next node does not deduplicate (see `run`). */
const NOT_REPEATED = new WeakSet<PointSubError>();
/** Failures already counted against their node's breaker ({@link Client.failed}). */
const COUNTED = new WeakSet<object>();
/** Connects under way that a call's wait for them, bounded by requestTimeoutMs, counted as their node's failure. */
const TIMED_OUT = new WeakSet<Promise<Pooled>>();
/** A connect's failure, once its wait was counted ({@link TIMED_OUT}): not counted again. */
const countedAlready = (err: unknown): void => {
  if (typeof err === "object" && err !== null) COUNTED.add(err);
};
/**
 * HELLO feature bit of a node that runs a keyed request's handler at most once per key (docs/PROTOCOL.md
 * §3.4.1): a copy of router/idempotency.ts's `DEDUPLICATES_FEATURE`, as in resilient.ts — exported from
 * codec/settings.ts it lands, with its export, in a browser page's first load (+3 B over the budget).
 */
const DEDUPLICATES_FEATURE = 0x10;

const utf8 = new TextEncoder();

/** What a call on a closed client fails with. */
function closedError(): PointSubError {
  return new PointSubError("ERR_CONNECTION_CLOSED", "client closed");
}

function nodeKey(address: Address): string {
  return typeof address === "string" ? address : address.toString();
}

/** SHA-256 by webcrypto; a browser has crypto.subtle in secure contexts only (not on a page served over plain http). */
async function sha256(data: Uint8Array): Promise<Uint8Array> {
  const subtle = globalThis.crypto?.subtle;
  if (subtle === undefined) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      "routing by key needs crypto.subtle (SHA-256), which a browser gives secure contexts only (https, localhost)",
    );
  }
  return new Uint8Array(await subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
}

/** Compares two XOR distances (big-endian byte strings of equal length). */
function compareDistance(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}

function checkInt(name: string, v: number | undefined, min: number): void {
  if (v !== undefined && (!Number.isFinite(v) || v < min)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a number >= ${min}, got ${v}`);
  }
}

/**
 * A client of many nodes. Node lists are per route; calls go through a
 * connection pool; `requestClosest` picks a node and fails over.
 */
export class Client {
  private readonly options: ClientOptions;
  private readonly pool: Pool;
  private readonly routes = new Map<string, string[]>();
  /** Per node: how many routes list it. */
  private readonly listed = new Map<string, number>();
  /** Nodes some route lists: their breaker and RTT (a node no route lists has none: nothing reads it). */
  private readonly health = new Map<string, NodeHealth>();
  private readonly failureThreshold: number;
  private readonly cooldownMs: number;
  private readonly maxCooldownMs: number;
  private readonly rttProbeMs: number;
  /** The connections' `requestTimeoutMs` (0: none): what a call without a `timeoutMs` of its own waits for a connection at most. */
  private readonly requestTimeoutMs: number;
  /** The address of each node some route lists or the pool holds (what `open` connects to). */
  private readonly addresses = new Map<string, Address>();
  private probeTimer: ReturnType<typeof setInterval> | undefined;
  /** Nodes being connected to only to measure them. */
  private readonly measuring = new Set<string>();
  private closed = false;

  constructor(options: ClientOptions = {}) {
    // Null (the browser entry passes it on) threw a raw TypeError below.
    const bad = badOptions(options, "Client");
    if (bad !== undefined) throw bad;
    // A string or a number was taken for the defaults: breaker "off" kept the breaker on.
    for (const [name, v] of [
      ["breaker", options.breaker],
      ["pool", options.pool],
    ] as const) {
      if (v != null && typeof v !== "object") {
        throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be an object of options (got ${String(v)})`);
      }
    }
    // The options of every connection it opens: a bad one failed each call, not the construction.
    checkConnectionOptions(options);
    const b = options.breaker ?? {};
    checkInt("breaker.failureThreshold", b.failureThreshold, 1);
    checkInt("breaker.cooldownMs", b.cooldownMs, 0);
    checkInt("breaker.maxCooldownMs", b.maxCooldownMs, 0);
    checkInt("rttProbeMs", options.rttProbeMs, 0);
    this.options = options;
    this.failureThreshold = b.failureThreshold ?? 1;
    this.cooldownMs = b.cooldownMs ?? 1000;
    this.maxCooldownMs = Math.max(b.maxCooldownMs ?? 30_000, this.cooldownMs);
    this.rttProbeMs = options.rttProbeMs ?? 5000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.pool = new Pool(
      options.pool ?? {},
      (node, signal) => this.open(node, signal),
      (node) => this.prune(node),
    );
  }

  /** Connects to `node`; `signal` (the pool's closing) aborts it, as the options' own signal does. */
  private async open(node: string, signal: AbortSignal): Promise<Connection> {
    const own = this.options.signal;
    const conn = await connect(this.addresses.get(node) ?? node, {
      ...this.options,
      signal: own === undefined ? signal : AbortSignal.any([own, signal]),
    });
    // A first RTT sample right away: "closest" needs one before the first call.
    conn.ping({ timeoutMs: 5000 }).then(
      () => this.noteRtt(node, conn),
      () => {},
    );
    // Not after close() (the pool destroys this connection): no probe timer left running.
    if (!this.closed) this.armProbe();
    return conn;
  }

  /**
   * Adds `address` to the nodes serving `route` (once). An address no transport of the runtime serves
   * fails here with ERR_UNSUPPORTED_URL, as `connect` would (before, it was listed and each call failed);
   * a URL with credentials (`user:password@`) with ERR_INVALID_ARGUMENT: node names are shown.
   */
  addNode(route: string, address: Address): this {
    const target = this.options.runtime?.transports.resolve(address).address;
    if (target instanceof URL) refuseCredentials(target);
    const key = nodeKey(address);
    this.addresses.set(key, address);
    const list = this.routes.get(route) ?? [];
    if (!list.includes(key)) {
      list.push(key);
      this.listed.set(key, (this.listed.get(key) ?? 0) + 1);
    }
    this.routes.set(route, list);
    return this;
  }

  /** Removes `address` from the nodes serving `route`. */
  removeNode(route: string, address: Address): this {
    const key = nodeKey(address);
    const list = this.routes.get(route);
    if (list !== undefined) {
      const i = list.indexOf(key);
      if (i >= 0) {
        list.splice(i, 1);
        this.unlist(key);
      }
      if (list.length === 0) this.routes.delete(route);
    }
    return this;
  }

  /** The nodes serving `route`, with what the client knows about each. */
  nodes(route: string): NodeInfo[] {
    return (this.routes.get(route) ?? []).map((a) => this.info(a));
  }

  /** Forgets every node of `route`. */
  clearNodes(route: string): this {
    const list = this.routes.get(route);
    this.routes.delete(route);
    for (const key of list ?? []) this.unlist(key);
    return this;
  }

  /** `key` left a route's list: once no route lists it, its health goes, and its address once the pool holds nothing of it. */
  private unlist(key: string): void {
    const n = (this.listed.get(key) ?? 1) - 1;
    if (n > 0) {
      this.listed.set(key, n);
      return;
    }
    this.listed.delete(key);
    this.health.delete(key);
    this.prune(key);
  }

  /**
   * Forgets what is kept for `node` when no route lists it and the pool holds nothing of it. Before,
   * every address ever listed or called kept its address, health and pool entries (about 460 bytes
   * of heap per address) and the RTT probe visited each of them.
   */
  private prune(node: string): void {
    if (this.listed.has(node) || this.pool.has(node)) return;
    this.addresses.delete(node);
    this.health.delete(node);
  }

  private info(address: string): NodeInfo {
    const h = this.healthOf(address);
    const now = performance.now();
    const breaker = h.failures < this.failureThreshold ? "closed" : now < h.openUntil ? "open" : "half-open";
    return { address, rtt: h.rtt, breaker, failures: h.failures, connections: this.pool.connections(address).length };
  }

  private healthOf(address: string): NodeHealth {
    let h = this.health.get(address);
    if (h === undefined) {
      h = { failures: 0, openUntil: 0, cooldown: this.cooldownMs, rtt: undefined };
      // Kept only for a node some route lists (one removed meanwhile leaves nothing behind).
      if (this.listed.has(address)) this.health.set(address, h);
    }
    return h;
  }

  private noteRtt(node: string, conn: Connection): void {
    const rtt = conn.rtt;
    if (rtt !== undefined && this.listed.has(node)) this.healthOf(node).rtt = rtt;
  }

  private succeeded(node: string): void {
    const h = this.healthOf(node);
    h.failures = 0;
    h.cooldown = this.cooldownMs;
  }

  /** `node` failed with `err`: counted once, however many calls (and a measure) shared that connect or drop. */
  private failed(node: string, err: unknown): void {
    // A node no route lists has no breaker (an explicit address's calls consult none).
    if (!this.listed.has(node)) return;
    // Before, each call that waited for one failed connect counted it: 8 calls opened a breaker of
    // failureThreshold 8 and doubled its cooldown 7 times (1 s became the 30 s maximum).
    if (typeof err === "object" && err !== null) {
      if (COUNTED.has(err)) return;
      COUNTED.add(err);
    }
    const h = this.healthOf(node);
    const wasHalfOpen = h.failures >= this.failureThreshold;
    h.failures++;
    if (h.failures >= this.failureThreshold) {
      if (wasHalfOpen) h.cooldown = Math.min(this.maxCooldownMs, h.cooldown * 2);
      h.openUntil = performance.now() + h.cooldown;
    }
  }

  /**
   * Calls `route` on the node at `address` through the pool. On an open
   * connection with room this is the connection's own request (no extra
   * promise); calls to an explicit address do not feed the node's breaker.
   * The call's `signal` and `timeoutMs` also end its wait for a connection
   * (the pool connecting, or waiting for a slot): ERR_CANCELLED, ERR_TIMEOUT;
   * a call without a `timeoutMs` of its own waits at most the connections'
   * `requestTimeoutMs` (its default deadline; 0: no limit) — with
   * `connectTimeoutMs: 0` a node that never completes the connect would
   * hold it for ever.
   */
  request(address: Address, route: string, payload: Payload, options: RequestOptions = {}): Promise<Uint8Array> {
    const bad = badOptions(options);
    if (bad !== undefined) return Promise.reject(bad);
    const node = typeof address === "string" ? address : nodeKey(address);
    const ready = this.pool.tryAcquire(node);
    if (ready !== undefined) return ready.conn.request(route, payload, options);
    if (!this.addresses.has(node)) this.addresses.set(node, address);
    return this.call(node, route, payload, options);
  }

  private call(
    node: string,
    route: string,
    payload: Payload,
    options: RequestOptions,
    again?: PointSubError,
  ): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(closedError());
    // Hot path: an open connection with room takes the call at once (no extra promise hop).
    const ready = this.pool.tryAcquire(node);
    if (ready !== undefined) return this.run(ready, node, route, payload, options, again);
    try {
      checkSignal(options);
    } catch (err) {
      return Promise.reject(err);
    }
    const acquired = this.pool.acquire(node).catch((err: unknown) => {
      const e = thrownError(err, "ERR_CONNECT");
      this.notConnected(node, e);
      throw e;
    });
    // No timeoutMs of its own: the wait is bounded by its default deadline, requestTimeoutMs (0: none). Before,
    // only connectTimeoutMs bounded it: with connectTimeoutMs 0, a node that accepted and never answered the
    // handshake (or never accepted) held every call to it for ever.
    const own = options.timeoutMs !== undefined;
    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
    const deadline = timeoutMs > 0 && timeoutMs < MAX_TIMER_MS ? performance.now() + timeoutMs : 0;
    const bounded = options.signal !== undefined || deadline !== 0;
    const waited = bounded
      ? this.waitAcquired(acquired, route, options.signal, deadline, timeoutMs, own ? undefined : node)
      : acquired;
    return waited.then((p) => {
      // The call starts on it now (run sends it at once): no longer only claimed. Its timeoutMs counts
      // from the call: what the wait for a connection took is taken off (a call without one gets the
      // connection's default deadline from now on, as any call sent on it).
      // Whole ms: the connection's ERR_TIMEOUT names it ("timed out after 296.44459000000006 ms" before).
      const rest =
        deadline === 0 || !own
          ? options
          : { ...options, timeoutMs: Math.max(1, Math.ceil(deadline - performance.now())) };
      try {
        return this.run(p, node, route, payload, rest, again);
      } finally {
        this.pool.release(p);
      }
    });
  }

  /** A connect to `node` (or a wait for one) failed with `e`: counted against its breaker when the node's. */
  private notConnected(node: string, e: PointSubError): void {
    if (CONNECT_RETRYABLE.has(e.code)) NOT_CONNECTED.add(e);
    // The client's own pool full (maxTotal): failed over, but no failure of the node. Before, each call that
    // waited counted one: a burst opened a healthy node's breaker and doubled its cooldown.
    if ((NODE_FAILURES.has(e.code) && e.code !== "ERR_POOL_EXHAUSTED") || NOT_CONNECTED.has(e)) this.failed(node, e);
  }

  /**
   * `acquired` (a pooled connection for a call), or the call's own end first: its signal (ERR_CANCELLED)
   * or its `timeoutMs` (ERR_TIMEOUT); a connection that comes after that is released unused. Before, a
   * call ignored both while the pool connected (up to connectTimeoutMs) or waited for a slot (up to
   * acquireTimeoutMs): an aborted call failed seconds later with the connect's ERR_TIMEOUT.
   * `node`: the deadline is not the call's own but its default (requestTimeoutMs): its end is a failure
   * of that node to connect (requestClosest goes on to the next node; counted against its breaker).
   */
  private waitAcquired(
    acquired: Promise<Pooled>,
    route: string,
    signal: AbortSignal | undefined,
    deadline: number,
    timeoutMs: number,
    node: string | undefined,
  ): Promise<Pooled> {
    return new Promise<Pooled>((resolve, reject) => {
      let done = false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const end = (): boolean => {
        if (done) return false;
        done = true;
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        return true;
      };
      const onAbort = () => {
        if (end()) reject(new PointSubError("ERR_CANCELLED", `request to ${route} aborted`, { cause: signal?.reason }));
      };
      acquired.then(
        (p) => {
          if (end()) resolve(p);
          else this.pool.release(p);
        },
        (err: unknown) => {
          if (end()) reject(err);
        },
      );
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      if (deadline !== 0) {
        let due = false;
        const fire = () => {
          // The default deadline due: looked at again after this turn's I/O (a new timer runs after the poll
          // phase). After a stall of this process the timers run before the handshake that came meanwhile is
          // read: the call failed with its connection open in the socket. A call's own timeoutMs has no time
          // left for the request (never sent), so it ends now.
          if (!due && node !== undefined) {
            due = true;
            timer = setTimeout(fire, 0);
            return;
          }
          if (!end()) return;
          if (node === undefined) {
            const why = `request to ${route} timed out after ${timeoutMs} ms (waiting for a connection)`;
            return reject(new PointSubError("ERR_TIMEOUT", why, { phase: "request" }));
          }
          const e = new PointSubError(
            "ERR_TIMEOUT",
            `request to ${route} timed out after ${timeoutMs} ms (requestTimeoutMs) waiting for a connection to ${node}`,
            { phase: "request" },
          );
          // Never sent: requestClosest goes on to the next node.
          NOT_CONNECTED.add(e);
          // One failure of the node per connect it did not complete in time, however many calls waited for
          // it, its own failure later included; a half-open node's probe counts again. A call that waited
          // for a slot (no connect under way: the client's pool full) is none, as ERR_POOL_EXHAUSTED is not.
          // Before, each call's end counted (failureThreshold 3: three calls sharing one connect opened
          // it), the connect's failure after it once more (the cooldown doubled), and a wait for a slot too.
          const connects = this.pool.connectsTo(node);
          let fresh = false;
          // Marked only when counted: a node no route lists (yet) has no breaker.
          for (const c of (this.listed.has(node) && connects) || []) {
            if (TIMED_OUT.has(c)) continue;
            TIMED_OUT.add(c);
            fresh = true;
            c.catch(countedAlready);
          }
          const h = this.health.get(node);
          const probe = h !== undefined && h.failures >= this.failureThreshold && performance.now() >= h.openUntil;
          if (fresh || (probe && connects !== undefined && connects.size !== 0)) this.failed(node, e);
          reject(e);
        };
        timer = setTimeout(fire, deadline - performance.now());
      }
    });
  }

  /** One call on pooled connection `p`; returns it to the pool when answered. */
  private run(
    p: Pooled,
    node: string,
    route: string,
    payload: Payload,
    options: RequestOptions,
    again?: PointSubError,
  ): Promise<Uint8Array> {
    // The repeat of a keyed call that may have run elsewhere (`again`: how it was lost) goes only to a node
    // that deduplicates; another would run its handler again.
    if (again !== undefined && (p.conn.peerSettings.features & DEDUPLICATES_FEATURE) === 0) {
      const e = new PointSubError(
        again.code,
        `${again.message} (not sent on to ${node}: it does not deduplicate keyed requests, a repeat could run the handler twice)`,
        { cause: again },
      );
      NOT_REPEATED.add(e);
      return Promise.reject(e);
    }
    // A call made on an open connection may have reached the node's handler when the connection fails.
    const sent = p.conn.state === "open";
    return p.conn.request(route, payload, options).then(
      (answer) => {
        if (this.health.get(node)?.failures) this.succeeded(node);
        return answer;
      },
      (err: unknown) => {
        const e = toPointSubError(err, "ERR_CONNECTION_CLOSED");
        if (!NODE_FAILURES.has(e.code)) {
          // The call's own error on a connection still open (the handler's, a bad route): the node works.
          // Before, only an answer closed its breaker: a node whose probes got errors stayed half-open for
          // ever, skipped by the calls made while one probed it. A timeout, a cancel or an overload does not tell.
          if (!NOT_TOLD.has(e.code) && p.conn.state === "open" && this.health.get(node)?.failures) this.succeeded(node);
        } else {
          this.failed(node, e);
          // Refused before it was sent (it waited for a request slot when the node began a graceful close,
          // drain.ts): no handler saw it, it goes on to the next node keyed or not.
          if (sent && !UNSENT.has(e)) {
            MAYBE_RAN.add(e);
            if ((p.conn.peerSettings.features & DEDUPLICATES_FEATURE) === 0) UNGUARDED.add(e);
          }
        }
        throw e;
      },
    );
  }

  /**
   * Calls `route` on the closest healthy node serving it: the lowest
   * smoothed RTT (ping round trips over its pooled connections; nodes not
   * measured yet come after measured ones, in list order), or with `key`
   * the smallest XOR distance of SHA-256 digests. A node that fails (cannot
   * connect, connection lost) is skipped for its breaker's cooldown and the
   * call goes to the next — unless it was sent before its connection was
   * lost and has no `idempotencyKey`, or was lost on a node that does not
   * deduplicate keyed requests (no idempotency middleware: its HELLO lacks
   * features bit 16): its handler may have run, so the caller gets the
   * error (a keyed call lost on a deduplicating node goes on, to nodes that
   * deduplicate too — the nodes' shared idempotency store runs it once; a
   * node that does not is not sent it, and the caller gets the loss, "not
   * sent on"; when no node is left to take it, the caller gets the loss too,
   * saying its handler may have run, not ERR_CONNECT); after the cooldown
   * one call probes it
   * (half-open; calls made meanwhile try it after the other nodes). A node whose rate limit refused the call
   * (ERR_RATE_LIMITED: its handler did not run) is not a failure: the call
   * goes to the next node, and when no node answered and one refused it,
   * the caller gets the last refusal with its `retryAfterMs`. An error of
   * the call itself (the handler's, a bad route) is returned as is.
   * ERR_NO_ROUTE when the route has no nodes. `timeoutMs` bounds the whole
   * call: each node gets what the ones before it left (ERR_TIMEOUT once
   * none is left).
   */
  async requestClosest(route: string, payload: Payload, options: ClosestOptions = {}): Promise<Uint8Array> {
    const bad = badOptions(options);
    if (bad !== undefined) throw bad;
    // Closed: every node's call would fail with it, and the caller got ERR_CONNECT "every node failed".
    if (this.closed) throw closedError();
    const list = this.routes.get(route);
    if (list === undefined || list.length === 0) {
      throw new PointSubError("ERR_NO_ROUTE", `no nodes for route ${route}`);
    }
    const fanout = options.fanout ?? 1;
    checkInt("fanout", fanout, 1);
    const { key, fanout: _f, ...callOptions } = options;
    // One deadline for the call, failover included (before, each node got the whole timeoutMs again).
    const timeoutMs = options.timeoutMs;
    const deadline = timeoutMs !== undefined && timeoutMs > 0 ? performance.now() + timeoutMs : 0;
    if (key === undefined) this.measure(list);
    const order = key === undefined ? this.byRtt(list) : await this.byDistance(list, key === true ? payload : key);
    const now = performance.now();
    // Healthy first (breaker closed or due for a probe), then the ones still cooling down as a last resort.
    // Half-open: one call probes it. Before, every call made meanwhile did, and with the node first (its key)
    // each waited for its connect (up to connectTimeoutMs) instead of going to the healthy nodes.
    // A half-open node another call probes comes after the others: when they all fail, this call shares that probe (before,
    // it was skipped, and the caller got ERR_CONNECT "every node failed" with that node answering).
    const usable: string[] = [];
    const probed = new Set<string>();
    for (const n of order) {
      const h = this.healthOf(n);
      if (h.failures < this.failureThreshold || (now >= h.openUntil && h.probing !== true)) usable.push(n);
      else if (now >= h.openUntil) probed.add(n);
    }
    const lastResort = usable.length === 0;
    const queue = lastResort ? order : [...usable, ...probed];
    let last: PointSubError | undefined;
    let limited: PointSubError | undefined;
    /** A keyed call lost after it was sent: the next nodes must deduplicate (`run`), else this is the error. */
    let ranOn: PointSubError | undefined;
    while (queue.length !== 0) {
      const batch = this.nextBatch(queue, fanout, lastResort ? undefined : probed);
      const left = deadline === 0 ? 0 : deadline - performance.now();
      if (deadline !== 0 && left <= 0) {
        // A keyed call lost after it was sent: that loss (below) says its handler may have run.
        if (ranOn !== undefined) break;
        throw new PointSubError("ERR_TIMEOUT", `request to ${route} timed out after ${timeoutMs} ms (failing over)`, {
          cause: limited ?? last,
          phase: "request",
        });
      }
      // Whole ms, as the errors that name it (the connection's, the wait for one) say.
      const opts = deadline === 0 ? callOptions : { ...callOptions, timeoutMs: Math.ceil(left) };
      try {
        if (batch.length === 1) return await this.probe(batch[0], route, payload, opts, ranOn);
        return await Promise.any(batch.map((n) => this.probe(n, route, payload, opts, ranOn)));
      } catch (err) {
        if (this.closed) throw closedError();
        const errors = (err instanceof AggregateError ? err.errors : [err]).map((x: unknown) =>
          thrownError(x, "ERR_CONNECT"),
        );
        // An error of the call itself (the handler's, a bad route) is the answer, whichever of a batch gave it.
        const own = errors.find(
          (x) => x.code !== "ERR_RATE_LIMITED" && !NODE_FAILURES.has(x.code) && !NOT_CONNECTED.has(x),
        );
        if (own !== undefined) throw own;
        // A keyed call that may have run, not repeated on a node that does not deduplicate: that is the answer.
        const stop = errors.find((x) => NOT_REPEATED.has(x));
        if (stop !== undefined) throw stop;
        // Lost after it was sent: its handler may have run. Only a keyed call goes to the next node (the
        // nodes' shared idempotency store runs it at most once); another would run again there (a batch of
        // fanout > 1: on the next batch, beyond the runs asked for).
        const ran = errors.find((x) => MAYBE_RAN.has(x));
        if (ran !== undefined && (callOptions.idempotencyKey === undefined || errors.some((x) => UNGUARDED.has(x)))) {
          throw ran;
        }
        ranOn ??= ran;
        for (const x of errors) {
          if (x.code === "ERR_RATE_LIMITED") limited = x;
          else last = x;
        }
      }
    }
    // A keyed call lost after it was sent, and no node left to take it: its handler may have run, and the
    // caller gets that loss (before: ERR_CONNECT "every node failed", as if no node had been reached).
    if (ranOn !== undefined) {
      throw new PointSubError(
        ranOn.code,
        `${ranOn.message} (lost after it was sent: its handler may have run; no other node of ${route} took it — repeat it with the same idempotencyKey)`,
        { cause: limited ?? last ?? ranOn },
      );
    }
    if (limited !== undefined) throw limited;
    throw new PointSubError("ERR_CONNECT", `every node of ${route} failed`, { cause: last });
  }

  /**
   * The next `fanout` nodes of `queue`: a half-open node another call started probing since the queue was
   * made goes after the others (once: `deferred` holds those already put there; none in a last-resort queue).
   */
  private nextBatch(queue: string[], fanout: number, deferred: Set<string> | undefined): string[] {
    const batch: string[] = [];
    while (batch.length < fanout && queue.length !== 0) {
      const n = queue.shift() as string;
      const h = this.healthOf(n);
      const probed = h.probing === true && h.failures >= this.failureThreshold;
      if (probed && deferred !== undefined && queue.length !== 0 && !deferred.has(n)) {
        deferred.add(n);
        queue.push(n);
        continue;
      }
      batch.push(n);
    }
    return batch;
  }

  /**
   * {@link call} on `node`; when it is half-open (due for a probe) and nobody probes it, this call does,
   * until its attempt there ends. Before, the claim was taken for all of a call's half-open nodes when it
   * started and kept until it ended: a call answered by another node first (a slow handler, a long poll)
   * kept each of them unprobed that long, every other call skipping them.
   */
  private probe(
    node: string,
    route: string,
    payload: Payload,
    options: RequestOptions,
    again?: PointSubError,
  ): Promise<Uint8Array> {
    const h = this.healthOf(node);
    if (h.failures < this.failureThreshold || h.probing === true || performance.now() < h.openUntil) {
      return this.call(node, route, payload, options, again);
    }
    h.probing = true;
    const done = () => {
      h.probing = false;
    };
    let attempt: Promise<Uint8Array>;
    try {
      attempt = this.call(node, route, payload, options, again);
    } catch (err) {
      done(); // else it stayed claimed: never probed again
      throw err;
    }
    attempt.then(done, done);
    return attempt;
  }

  /** Opens a connection (and so takes an RTT sample) to nodes not measured yet, in the background. */
  private measure(list: readonly string[]): void {
    for (const n of list) {
      const h = this.healthOf(n);
      if (h.rtt !== undefined || this.pool.connections(n).length !== 0 || this.measuring.has(n)) continue;
      if (h.failures >= this.failureThreshold && performance.now() < h.openUntil) continue;
      this.measuring.add(n);
      this.pool.acquire(n).then(
        (p) => {
          this.pool.release(p); // no call: only its RTT sample (connect's ping)
          this.measuring.delete(n);
        },
        (err: unknown) => {
          this.measuring.delete(n);
          // What a call's connect counts, no more: a refused credential or version is the caller's (before,
          // the measure counted it, the calls did not: the node's breaker opened, later calls sent elsewhere).
          // Never throws: a custom transport's Object.create(null) threw here, an unhandled rejection.
          this.notConnected(n, thrownError(err, "ERR_CONNECT"));
        },
      );
    }
  }

  private byRtt(list: readonly string[]): string[] {
    return [...list]
      .map((n, i) => ({ n, i, rtt: this.healthOf(n).rtt }))
      .sort((a, b) => {
        if (a.rtt === undefined || b.rtt === undefined) {
          return a.rtt === undefined && b.rtt === undefined ? a.i - b.i : a.rtt === undefined ? 1 : -1;
        }
        return a.rtt - b.rtt;
      })
      .map((x) => x.n);
  }

  private async byDistance(list: readonly string[], key: Payload): Promise<string[]> {
    // Another type reached webcrypto's digest: a raw TypeError (ERR_INVALID_ARG_TYPE), not a PointSubError.
    if (typeof key !== "string" && !(key instanceof Uint8Array)) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "key must be a string, a Uint8Array or true (the payload)");
    }
    const k = await sha256(typeof key === "string" ? utf8.encode(key) : key);
    const scored = await Promise.all(
      list.map(async (n) => {
        const id = await sha256(utf8.encode(n));
        const d = new Uint8Array(32);
        for (let i = 0; i < 32; i++) d[i] = id[i] ^ k[i];
        return { n, d };
      }),
    );
    return scored.sort((a, b) => compareDistance(a.d, b.d)).map((x) => x.n);
  }

  private armProbe(): void {
    if (this.probeTimer !== undefined || this.rttProbeMs === 0) return;
    // A period past a timer's range (2^31 - 1 ms) is that: a longer one fired every millisecond.
    this.probeTimer = setInterval(
      () => {
        for (const node of this.pool.nodeNames()) {
          for (const p of this.pool.connections(node)) {
            p.conn.ping({ timeoutMs: this.rttProbeMs }).then(
              () => this.noteRtt(node, p.conn),
              () => {},
            );
          }
        }
      },
      Math.min(this.rttProbeMs, MAX_TIMER_MS),
    );
    (this.probeTimer as { unref?: () => void }).unref?.();
  }

  /**
   * Closes every pooled connection and ends the connects under way (calls waiting for them, and later
   * calls, fail with ERR_CONNECTION_CLOSED); resolves once none is left open.
   */
  async close(): Promise<void> {
    this.closed = true;
    if (this.probeTimer !== undefined) clearInterval(this.probeTimer);
    await this.pool.close();
  }
}
