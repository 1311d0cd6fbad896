import { ANSWER_SHARE, MemoryBudget } from "../connection/budget.ts";
import { budgetLimit, Connection, connectionShared, resolveSettings } from "../connection/connection.ts";
import {
  ConnectionDiagnostics,
  channelsOf,
  type HandshakeErrorMessage,
  type RefusedMessage,
} from "../connection/diagnostics.ts";
import { toBytes } from "../connection/dispatch.ts";
import { greeting, refusalBytes } from "../connection/handshake.ts";
import { Housekeeper, housekeepingPeriod } from "../connection/housekeeping.ts";
import { useHousekeeper } from "../connection/housekeeping-lazy.ts";
import { frameLimit } from "../connection/link.ts";
import { checkConnectionOptions } from "../connection/options.ts";
import { abortOrphans } from "../connection/orphans.ts";
import { useDiagnostics } from "../connection/publisher.ts";
import { SINGLE_FRAME_MAX } from "../connection/size-class.ts";
import { addStats, emptyStats, type StatsSnapshot, sumStats } from "../connection/stats.ts";
import { useStreamEngine } from "../connection/stream-engine.ts";
import * as streams from "../connection/streams.ts";
import type {
  Authenticator,
  ConnectionInfo,
  ConnectionOptions,
  Handler,
  Message,
  Payload,
} from "../connection/types.ts";
import { codeInfo, type ErrorCode, useSuggestions } from "../errors/codes.ts";
import { PointSubError } from "../errors/error.ts";
import { checkOptions } from "../errors/options.ts";
import { SUGGESTIONS } from "../errors/suggestions.ts";
import { checkFunction } from "../router/check.ts";
import {
  DEDUPLICATES_FEATURE,
  type IdempotencyOptions,
  type IdempotencyStore,
  idempotency,
  isDeduplicating,
} from "../router/idempotency.ts";
import { type RateLimitOptions, rateLimit } from "../router/rate-limit.ts";
import { checkRouteLength, Router } from "../router/router.ts";
import type { Middleware, ResumeLookup } from "../router/types.ts";
import type { DiagnosticsChannel, Runtime } from "../runtime/runtime.ts";
import type { StreamHandler } from "../stream/types.ts";
import type { Address, Transport, TransportListener, TransportListenOptions } from "../transport/transport.ts";
import { Emitter } from "../util/emitter.ts";
import { nextTurn } from "../util/next-turn.ts";
import { Ticker } from "../util/ticker.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import { type AdaptiveLimitOptions, Admission, type AdmissionOptions } from "./admission.ts";
import { type BroadcastOptions, type BroadcastResult, broadcastTo } from "./broadcast.ts";
import { type ServerEvent, type ServerEventOptions, ServerEventStream, Subscribers } from "./events.ts";
import { CLOSING_GRACE_MS, type OpeningHost, Openings, type PreHandshake } from "./pre-handshake.ts";

/**
 * Portable options of {@link createServer}: every session's connection
 * options, plus the runtime and server limits. An entry point adds its
 * transports' own options (the Node entry: `tls`, `maxPendingHandshakes`);
 * they are handed to the adapters as given.
 */
export interface ServerOptions extends ConnectionOptions, AdmissionOptions {
  /**
   * The runtime whose transports, codecs and defaults to use. Default: the
   * entry point's default runtime (`defaultRuntime()` of the Node entry).
   */
  runtime?: Runtime;
  /**
   * Most sessions at once, counting connections still in their TLS or
   * pointsub handshake; further clients are refused with a GOAWAY
   * (ERR_OVERLOADED, "connection limit reached; retry later") that their
   * `connect` reports — on tcp:// and unix://; a ws:// client gets an HTTP
   * 503 (ERR_OVERLOADED too), and a tls:// or wss:// one is closed before
   * its TLS handshake (no TLS work for a refusal: its `connect` reports
   * ERR_CONNECT). Default unlimited. With `adaptiveConnections` it caps
   * the adaptive range.
   */
  maxConnections?: number;
  /**
   * Let the connection limit follow the server's load (the seeds' adaptive
   * mode): between `min` (100) and `max` (10,000), 10 % down while the event
   * loop is delayed over `targetDelayMs`, 10 % up while it is not and the
   * limit is nearly used. `true` for the defaults. See {@link AdaptiveLimitOptions}.
   */
  adaptiveConnections?: boolean | AdaptiveLimitOptions;
  /**
   * Most connections from one remote address (host) at once: an IPv4
   * address, an IPv6 /64 (a host usually holds a whole /64; IPv4-mapped and
   * NAT64 addresses count as their IPv4 host, link-local ones by address and
   * interface), a libp2p peer by the IP of its multiaddr. Default unlimited.
   */
  maxConnectionsPerAddress?: number;
  /**
   * `sendTo` sends nothing and rejects with ERR_SLOW_PEER when the session
   * already has more than this many bytes queued (its `bufferedAmount`):
   * what a relay holds for a peer that does not read stays bounded (as
   * `broadcast`'s `highWaterMark` bounds it for broadcasts), instead of
   * growing until `slowPeerTimeoutMs` closes the session. The message that
   * crosses the mark is queued whole. A payload that could never be sent
   * (not bytes or text, or over the peer's maxMessageSize) gets its own
   * error first, not the retryable ERR_SLOW_PEER. What `sendTo` queues is
   * also charged to `memoryBudget` until written (a full budget refuses it
   * with ERR_OVERLOADED): many non-readers together stay bounded; past half
   * the budget, a session holding more than its share (the budget / 16) is
   * refused with ERR_SLOW_PEER alone. With a cluster each node
   * applies its own to its sessions. `Infinity` turns the check off. Default 64 MiB.
   */
  sendToHighWaterMark?: number;
  /**
   * Checks each client's credentials (`connect(url, { credentials })`)
   * before anything of it is served; its result is `session.principal`, a
   * throw refuses the client with ERR_UNAUTHORIZED. See {@link tokenAuth}.
   */
  authenticate?: Authenticator;
  /**
   * Run each handler at most once per idempotency key: `true` installs the
   * {@link idempotency} middleware with its defaults (an in-memory store),
   * an object passes its options (e.g. a shared `store`). Default off.
   */
  idempotency?: boolean | IdempotencyOptions;
  /**
   * Install the {@link rateLimit} middleware with these limits (per session
   * and global token buckets for requests, messages and bytes), first:
   * before `idempotency` (a duplicate of a keyed request counts as a
   * request) and any middleware added with `use`. Default none.
   */
  rateLimit?: RateLimitOptions;
  /**
   * Join this cluster (`redisCluster` / `natsCluster` of `pointsub/cluster`):
   * session ids become unique cluster-wide (`<nodeId>.<incarnation>.<n>`), `broadcast`,
   * `sendTo` and `sessionsInfo({ cluster: true })` reach every node's
   * sessions, and `idempotency` uses the cluster's shared store unless it
   * is given one. Joined on the first `listen`, left on `close`. Default none.
   */
  cluster?: ServerCluster;
}

/** A session of any node of a cluster, as `sessionsInfo({ cluster: true })` lists it. */
export interface ClusterSessionInfo extends ConnectionInfo {
  /** The id of the node that holds the session (`""` without a cluster). */
  readonly node: string;
}

/** Options of {@link Server.broadcast}. */
export interface ServerBroadcastOptions extends Omit<BroadcastOptions, "filter"> {
  /**
   * Only sessions this accepts receive the message. A function runs on
   * this node only, so with a cluster it needs `local: true`; a cluster
   * broadcast names a filter registered on every node (the cluster's
   * `filters` option) and each node runs it with `filterArg`. Default: every
   * session.
   */
  filter?: BroadcastOptions["filter"] | string;
  /** The argument handed to a named `filter` (with a cluster). */
  filterArg?: string;
  /** With a cluster: this node's sessions only. Default false. */
  local?: boolean;
}

/**
 * What a server offers the cluster it joins: its own sessions only (the
 * cluster does the rest). Built by the server; see {@link ServerCluster}.
 */
export interface ClusterLocal {
  /** Sends `data` to this node's sessions (encoded once, checksummed once from 16 KiB). */
  broadcast(data: Uint8Array, options: BroadcastOptions): BroadcastResult;
  /** Sends `data` to this node's session `id`; rejects with ERR_NOT_FOUND when it has none. */
  sendTo(id: string, data: Uint8Array): Promise<void>;
  /** This node's sessions. */
  sessionsInfo(): ConnectionInfo[];
  /** This node's sessions as they are now (a list answered a page at a time reads each one's info when its page goes). */
  sessions(): Connection[];
  /** This node's session count. */
  readonly sessionCount: number;
  /**
   * Sessions this node has opened since it started. Optional: without it a
   * cluster takes an unchanged count for unchanged sessions (one closed and
   * one opened meanwhile, its lists miss the new one for up to a second).
   */
  readonly sessionsOpened?: number;
  /** This node's bound URLs. */
  readonly urls: string[];
}

/** A server's membership of a cluster, as {@link ServerCluster.join} returns it. */
export interface ClusterMembership {
  /** This node's id, unique in the cluster: the prefix of its session ids. */
  readonly nodeId: string;
  /**
   * What this node's session ids start with (then a number): `nodeId` and a
   * dot, then what tells this process from an earlier one under the same
   * id. Default `<nodeId>.`.
   */
  readonly sessionIdPrefix?: string;
  /** The cluster's shared idempotency store, if it has one. */
  readonly idempotencyStore: IdempotencyStore | undefined;
  /** Connects to the engine and announces the node (first `listen`). */
  start(): Promise<void>;
  /** Leaves the cluster and disconnects (`close`). */
  stop(): Promise<void>;
  /** Broadcast to every node's sessions (this one's included). */
  broadcast(data: Uint8Array, options: ServerBroadcastOptions): Promise<BroadcastResult>;
  /** Sends to a session of another node. */
  sendTo(id: string, data: Uint8Array): Promise<void>;
  /** Every node's sessions (this one's included). */
  sessionsInfo(): Promise<ClusterSessionInfo[]>;
}

/** A cluster a server can join (`createServer({ cluster })`); one server per instance. */
export interface ServerCluster {
  /** Called once by the server's constructor. */
  join(local: ClusterLocal): ClusterMembership;
}

/** Payloads from this size on are sent by reference and checksummed once for a broadcast (the writer's copy threshold). */
const SHARED_CRC_MIN = 16 * 1024;

function notFound(id: string): PointSubError {
  // Any value may come in from untyped callers: never throw here (a BigInt, a throwing toJSON).
  const shown = typeof id === "string" ? JSON.stringify(id.length > 100 ? `${id.slice(0, 100)}…` : id) : typeof id;
  return new PointSubError("ERR_NOT_FOUND", `no open session with id ${shown}`);
}

/** Default {@link ServerOptions.sendToHighWaterMark}: NATS's slow-consumer limit (max_pending). */
const SEND_TO_HIGH_WATER = 64 * 1024 * 1024;

/** Checks {@link ServerOptions.sendToHighWaterMark}: a number >= 0 (Infinity: no mark). */
function sendToHighWaterMark(x: unknown): number {
  if (x === undefined) return SEND_TO_HIGH_WATER;
  if (typeof x !== "number" || Number.isNaN(x) || x < 0) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `sendToHighWaterMark must be a number >= 0 (got ${String(x)})`);
  }
  return x;
}

/** A close's `timeoutMs` that is not a number >= 0 (Infinity waits for the work in flight, however long). */
function badCloseTimeout(ms: unknown): PointSubError {
  return new PointSubError("ERR_INVALID_ARGUMENT", `close timeoutMs must be a number >= 0 (got ${String(ms)})`);
}

/** What `listen` rejects with once `close` was called. */
function closedForListen(): PointSubError {
  return new PointSubError("ERR_GOING_AWAY", "the server was closed: it listens no more");
}

/**
 * Refused connections that may wait (up to a second each) for their peer to
 * take the GOAWAY saying why and hang up; more are closed once it is written.
 */
const MAX_LINGERING_REFUSALS = 1024;

/** Connections set up per event-loop turn; more wait for the next turn. */
const ACCEPT_PER_TURN = 128;
/**
 * Time (ms) setting up accepted connections may take per event-loop turn
 * (each costs a write of the greeting and the session's objects); more
 * wait for the next turn, so a burst of connections never holds the event
 * loop for long whatever the count.
 */
const ACCEPT_MS = 4;

/** The server-wide memory budget, as {@link Server.memory} reports it. */
export interface MemoryUsage {
  /** Bytes charged now: unfinished messages, request bodies in handlers, unread stream data. */
  used: number;
  /** The budget (`memoryBudget`). */
  limit: number;
  /** Highest `used` so far. */
  peak: number;
  /** Messages, requests and streams refused with ERR_OVERLOADED so far. */
  refused: number;
}

/** Events of a {@link Server}. */
export interface ServerEvents {
  /** A client connected and completed the handshake. */
  session: [session: Connection];
  /** A one-way message from a session. */
  message: [msg: Message, session: Connection];
  /**
   * A session ended. `reason` says why (`session.closeReason`: `"idle"`,
   * `"server closing"`, the reason given to `closeSession`, the peer's
   * GOAWAY reason as `"peer: …"`, or an error code); `error` is set when it
   * was not a clean close.
   */
  sessionClose: [session: Connection, error: PointSubError | undefined, reason: string];
  /**
   * A session failed with a fatal error (a protocol violation, keepalive or
   * slow-peer timeout, …: anything but the connection simply dropping);
   * `sessionClose` follows.
   */
  error: [error: PointSubError, session: Connection];
  /**
   * A connection was refused (connection limits) or failed its handshake:
   * pointsub's, or its transport's own (a TLS handshake, a client
   * certificate, a WebSocket upgrade).
   */
  reject: [error: PointSubError];
  /** The adaptive connection limit moved. */
  connectionLimit: [limit: number, previous: number];
}

/**
 * A pointsub server: listens on any number of URLs, hands each accepted
 * connection to the same routes and events.
 */
export class Server extends Emitter<ServerEvents> {
  private readonly options: ServerOptions;
  private readonly runtime: Runtime;
  /** `pointsub:refused` of the runtime's diagnostics (docs/OBSERVABILITY.md). */
  private readonly refusedChannel: DiagnosticsChannel;
  /**
   * Every session's settings, resolved and validated once; replaced (for the sessions that open
   * after) when an idempotency middleware joins the chain: then they announce DEDUPLICATES_FEATURE.
   */
  private settings: ReturnType<typeof resolveSettings>;
  /** Routes and middleware of every session (each session's own router falls back to it). */
  private readonly router = new Router();
  private readonly bound: TransportListener[] = [];
  private readonly sessions_ = new Set<Connection>();
  /** Sessions opened since the start (a cluster tells by it whether its copy of the sessions is missing one). */
  private sessionsOpened = 0;
  private readonly byId = new Map<string, Connection>();
  private nextId = 0;
  /** Housekeeping of every session on one timer wheel (undefined: nothing periodic to do). */
  private readonly ticker: Ticker | undefined;
  private readonly admission: Admission;
  /** Open event streams (events are built only while some exist). */
  private readonly subscribers = new Subscribers();
  /** Sessions built (the peer's HELLO arrived) whose handshake is not complete yet (authentication). */
  private readonly connecting = new Set<Connection>();
  /** Accepted connections whose peer's opening (HELLO, and AUTH when required) has not arrived: no session yet. */
  private readonly openings: Openings;
  /** While closing: what waits for each connection that was still in `openings`. */
  private openingWaiters: Map<PreHandshake, (() => void)[]> | undefined;
  /** What `close` was given (for sessions built while it runs). */
  private closeOptions: { reason: string; timeoutMs: number | undefined } | undefined;
  /** `pointsub:handshake:error` of the runtime's diagnostics. */
  private readonly handshakeErrorChannel: DiagnosticsChannel;
  /** Accepted connections still in a transport handshake (tls), not yet handed to accept. */
  private pending = 0;
  /** Transports accepted beyond ACCEPT_PER_TURN, handled on the next turns. */
  private readonly acceptQueue: Transport[] = [];
  private acceptedThisTurn = 0;
  /** Time (ms) accepts took since the last accept turn. */
  private acceptMs = 0;
  private acceptTurnScheduled = false;
  /** Refused connections waiting for their peer to hang up (at most MAX_LINGERING_REFUSALS). */
  private lingering = 0;
  /** One budget for everything all sessions' peers make the server hold. */
  private readonly budget: MemoryBudget;
  /** {@link ServerOptions.sendToHighWaterMark}, checked. */
  private readonly sendToHighWater: number;
  private closedTotals: StatsSnapshot | undefined;
  private closing = false;
  /** A close finished: event streams asked for from now on end at once. */
  private closed = false;
  /** The first close's whole work (its drain, then leaving the cluster and ending the event streams): every close awaits it. */
  private closeDone: Promise<void> | undefined;
  /** While closing: the earliest deadline (`performance.now()`) a `close` gave. */
  private closeBy: number | undefined;
  /** The cluster this server joined, if any. */
  private readonly cluster: ClusterMembership | undefined;
  /** Prefix of session ids: the cluster node id and a dot, or "". */
  private readonly idPrefix: string;
  private clusterStarted: Promise<void> | undefined;

  /** Use `createServer` of the "pointsub" entry point, which supplies the default runtime. */
  constructor(options: ServerOptions = {}) {
    super();
    // A server takes streams from its first frame: the stream halves are loaded up front.
    useStreamEngine(streams);
    useSuggestions(SUGGESTIONS);
    useDiagnostics(ConnectionDiagnostics);
    useHousekeeper(Housekeeper);
    if (options.runtime === undefined) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        'a Server needs options.runtime here (createServer of the "pointsub" entry point supplies its default runtime)',
      );
    }
    this.runtime = options.runtime;
    const channels = channelsOf(this.runtime.diagnostics);
    this.refusedChannel = channels.refused;
    this.handshakeErrorChannel = channels.handshakeError;
    this.options = options;
    // Infinity is the default of both limits (none), taken as given as createLpServer's maxConnections
    // and sendToHighWaterMark are; the sessions' check refused it ("must be an integer").
    const none = (n: number | undefined) => (n === Number.POSITIVE_INFINITY ? undefined : n);
    const checked: ServerOptions = {
      ...options,
      maxConnections: none(options.maxConnections),
      maxConnectionsPerAddress: none(options.maxConnectionsPerAddress),
    };
    checkConnectionOptions(checked);
    // 0 failed every client at once over tcp:// (ws:// and tls:// refused it at listen): no handshake takes no time.
    if (options.handshakeTimeoutMs === 0) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "handshakeTimeoutMs must be >= 1 on a server (got 0)");
    }
    checkAuthenticate(options.authenticate);
    this.sendToHighWater = sendToHighWaterMark(options.sendToHighWaterMark);
    this.settings = resolveSettings(options, options.authenticate !== undefined, this.runtime.codecs.mask());
    const cluster: unknown = options.cluster;
    // Anything else threw a raw TypeError ("options.cluster?.join is not a function").
    if (cluster !== undefined && typeof (cluster as Partial<ServerCluster> | null)?.join !== "function") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `cluster must be a cluster of pointsub/cluster (redisCluster, natsCluster…) (got ${String(cluster)})`,
      );
    }
    this.cluster = options.cluster?.join(this.clusterLocal());
    this.idPrefix = this.cluster === undefined ? "" : (this.cluster.sessionIdPrefix ?? `${this.cluster.nodeId}.`);
    // The rate limit first: a duplicate of a keyed request is a request too (answered from the
    // store, it would pass any limit, each answer up to the store's maxResponseBytes).
    if (options.rateLimit !== undefined) this.router.use(rateLimit(options.rateLimit));
    const idem: unknown = options.idempotency;
    // Anything else turned deduplication on (0, "off" from a config) or threw an untyped TypeError (null).
    if (idem !== undefined && typeof idem !== "boolean" && (typeof idem !== "object" || idem === null)) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `idempotency must be true, false or an object of options (got ${String(idem)})`,
      );
    }
    if (options.idempotency !== undefined && options.idempotency !== false) {
      // Next, so that nothing else runs twice for a duplicate.
      const o = options.idempotency === true ? {} : options.idempotency;
      const shared = this.cluster?.idempotencyStore;
      this.use(idempotency(o.store === undefined && shared !== undefined ? { ...o, store: shared } : o));
    }
    this.budget = new MemoryBudget(budgetLimit(options, this.settings, this.runtime.memoryLimit()));
    const period = housekeepingPeriod({
      keepAliveMs: options.keepAliveMs ?? 30_000,
      slowPeerTimeoutMs: options.slowPeerTimeoutMs ?? 30_000,
      progressTimeoutMs: options.progressTimeoutMs ?? 60_000,
      idleTimeoutMs: options.idleTimeoutMs ?? 0,
    });
    if (period !== Number.POSITIVE_INFINITY) this.ticker = new Ticker(period);
    this.openings = new Openings(this.openingHost(), options.handshakeTimeoutMs ?? 10_000);
    this.admission = new Admission(options, {
      active: () =>
        this.sessions_.size + this.connecting.size + this.openings.size + this.pending + this.acceptQueue.length,
      limitChanged: (limit, previous) => this.tell("connectionLimit", limit, previous),
    });
  }

  /** The server-wide memory budget: what peers make the server hold, and what was refused. */
  get memory(): MemoryUsage {
    const b = this.budget;
    return { used: b.used, limit: b.limit, peak: b.peak, refused: b.refused };
  }

  /**
   * Registers `handler` for requests to `route` (e.g. `/echo/1.0.0`) from any session. A route over 1024
   * bytes of UTF-8 (the protocol's limit) is ERR_INVALID_ARGUMENT.
   */
  handle(route: string, handler: Handler): this {
    checkRouteLength(route);
    this.router.handle(route, handler);
    return this;
  }

  /**
   * Adds a middleware around every request, stream and one-way message of
   * every session (outermost first, before each session's own middleware).
   * A middleware may refuse a call by throwing a PointSubError (e.g.
   * `ERR_UNAUTHORIZED` after checking `ctx.principal`); see {@link Middleware}.
   */
  use(mw: Middleware): this {
    this.router.use(mw);
    if (isDeduplicating(mw) && (this.settings.features & DEDUPLICATES_FEATURE) === 0) {
      this.settings = { ...this.settings, features: this.settings.features | DEDUPLICATES_FEATURE };
    }
    return this;
  }

  /**
   * Registers `handler` for streams sent to `route` from any session (see
   * `Connection.sendStream`). With `resume`, interrupted transfers to this
   * route continue where they stopped.
   */
  handleStream(route: string, handler: StreamHandler, options: { resume?: ResumeLookup } = {}): this {
    checkOptions(options, "handleStream");
    // Anything else was kept, and each resume query of the route then failed ERR_HANDLER.
    if (options.resume !== undefined) checkFunction(options.resume, "resume");
    checkRouteLength(route);
    this.router.handleStream(route, handler, options);
    return this;
  }

  /**
   * Starts listening on every address (`tcp://host:port`, `tls://host:port`,
   * `unix:///path`, `memory://name`, or whatever the runtime's transports
   * take). Resolves to the bound URLs, one per address in order (port 0
   * replaced by the real port; typed as a non-empty tuple, so
   * `const [url] = await server.listen(…)` is a `string` under
   * `noUncheckedIndexedAccess`). If one fails, those already bound are closed. Rejects with
   * ERR_GOING_AWAY once `close` was called (also when it is called while
   * this listen is binding: nothing stays bound after the close).
   */
  async listen(...addresses: Address[]): Promise<[string, ...string[]]> {
    if (addresses.length === 0) throw new PointSubError("ERR_INVALID_ARGUMENT", "listen needs at least one URL");
    if (this.closing) throw closedForListen();
    if (this.cluster !== undefined) {
      this.clusterStarted ??= this.cluster.start().catch((err: unknown) => {
        this.clusterStarted = undefined; // a later listen tries again
        throw err;
      });
      try {
        await this.clusterStarted;
      } catch (err) {
        // A close meanwhile stopped the join: this listen was closed, as when it binds.
        if (this.closing) throw closedForListen();
        throw err;
      }
    }
    const started: TransportListener[] = [];
    // The adapters get the server's options whole: each reads the part it knows (tls, …).
    const options: ServerOptions & TransportListenOptions = {
      ...this.options,
      onPending: this.countPending,
      onRefused: this.transportRefused,
    };
    // A transport handshake's deadline is a timer's: the longest one (ws:// and tls:// refused more, tcp:// took it).
    if ((options.handshakeTimeoutMs ?? 0) > MAX_TIMER_MS) options.handshakeTimeoutMs = MAX_TIMER_MS;
    try {
      for (const a of addresses) {
        const { adapter, address } = this.runtime.transports.resolve(a);
        started.push(await adapter.listen(address, options, (t) => this.accept(t)));
        // A close that ran meanwhile did not see these listeners: they would stay bound after it.
        if (this.closing) throw closedForListen();
      }
    } catch (err) {
      await Promise.all(started.map((l) => l.close()));
      throw err;
    }
    this.bound.push(...started);
    this.admission.start();
    return started.map((l) => l.url) as [string, ...string[]];
  }

  /** The bound URLs of all listeners. */
  get urls(): string[] {
    return this.bound.map((l) => l.url);
  }

  /** Sessions that completed their handshake and are not closed. */
  get sessions(): ReadonlySet<Connection> {
    return this.sessions_;
  }

  /** The connection limit in effect now (Infinity: none); it moves with `adaptiveConnections`. */
  get connectionLimit(): number {
    return this.admission.limit;
  }

  /** The open session with this id, if any. */
  session(id: string): Connection | undefined {
    return this.byId.get(id);
  }

  /**
   * What every open session is and has done: id, transport, addresses,
   * principal, TLS certificate, connect time, last activity, bytes and
   * messages each way, requests in flight, open streams, queued bytes.
   */
  sessionsInfo(): ConnectionInfo[];
  /**
   * The sessions of every node of the cluster, each with its `node`
   * (without a cluster: this server's, with node `""`), gathered from the
   * live nodes when called. Other nodes' entries are JSON copies (a
   * principal as its JSON, certificate bytes left out). A node that does
   * not answer a page of its list within the cluster's `requestTimeoutMs`
   * is left out (with the pages it sent), and so is one whose list is not
   * complete within its `listTimeoutMs` (30 s by default). Calls while a list is gathered
   * share it: each gets its own array of the same entries. A node asks
   * another for at most 4 lists at once, then one a second (each list a
   * snapshot of that node's sessions): lists asked back to back wait.
   */
  sessionsInfo(options: { cluster: true }): Promise<ClusterSessionInfo[]>;
  sessionsInfo(options?: { cluster?: boolean }): ConnectionInfo[] | Promise<ClusterSessionInfo[]> {
    if (options?.cluster === true) {
      if (this.cluster !== undefined) return this.cluster.sessionsInfo();
      return Promise.resolve(this.localInfo().map((i) => ({ ...i, node: "" })));
    }
    return this.localInfo();
  }

  private localInfo(): ConnectionInfo[] {
    const out: ConnectionInfo[] = [];
    for (const s of this.sessions_) out.push(s.info());
    return out;
  }

  /** The hooks a cluster gets: this node's sessions only. */
  private clusterLocal(): ClusterLocal {
    const server = this;
    return {
      broadcast: (data, options) => this.broadcastLocal(data, options),
      sendTo: (id, data) => this.sendLocal(id, data),
      sessionsInfo: () => this.localInfo(),
      sessions: () => [...this.sessions_],
      get sessionCount() {
        return server.sessions_.size;
      },
      get sessionsOpened() {
        return server.sessionsOpened;
      },
      get urls() {
        return server.urls;
      },
    };
  }

  /**
   * Closes session `id` gracefully (GOAWAY with `reason`, its work in
   * flight finishes); resolves once it is closed. Rejects with
   * ERR_NOT_FOUND when no open session has that id.
   */
  closeSession(id: string, reason = "closed by the server", options: { timeoutMs?: number } = {}): Promise<void> {
    const s = this.byId.get(id);
    if (s === undefined) return Promise.reject(notFound(id));
    // Anything else threw a raw TypeError at the caller, from the GOAWAY's encoding.
    if (typeof reason !== "string") {
      return Promise.reject(
        new PointSubError("ERR_INVALID_ARGUMENT", `closeSession reason must be a string (got ${typeof reason})`),
      );
    }
    try {
      checkOptions(options, "closeSession");
    } catch (err) {
      return Promise.reject(err);
    }
    const ms = options.timeoutMs;
    if (ms !== undefined && (typeof ms !== "number" || !(ms >= 0))) return Promise.reject(badCloseTimeout(ms));
    return s.close({ reason, timeoutMs: ms });
  }

  /**
   * Sends a one-way message to session `id`; settles like
   * `Connection.send`. Rejects with ERR_NOT_FOUND when no open session has
   * that id. With a cluster, `id` may be a session of any node (the
   * message crosses the bus once, never retried).
   */
  sendTo(id: string, payload: Payload): Promise<void> {
    if (this.cluster !== undefined && typeof id === "string" && !id.startsWith(this.idPrefix)) {
      let data: Uint8Array;
      try {
        data = toBytes(payload, "payload");
      } catch (err) {
        return Promise.reject(err);
      }
      return this.cluster.sendTo(id, data);
    }
    return this.sendLocal(id, payload);
  }

  /** {@link sendTo} to a session of this node (a cluster's sendTo from another node ends here too). */
  private sendLocal(id: string, payload: Payload): Promise<void> {
    const s = this.byId.get(id);
    if (s === undefined || s.state !== "open") return Promise.reject(notFound(id));
    let data: Uint8Array;
    try {
      data = toBytes(payload, "payload");
    } catch (err) {
      return Promise.reject(err);
    }
    // A payload that could never be sent says so (ERR_MESSAGE_TOO_LARGE) before the refusals below:
    // they are retryable, and retrying it could never succeed. Over the peer's maxMessageSize, or over
    // its maxAssemblyBytes and more than one frame (before: ERR_SLOW_PEER first, over the mark).
    const peer = s.peerSettings;
    if (
      data.length > peer.maxMessageSize ||
      (data.length > peer.maxAssemblyBytes && data.length > frameLimit(peer, SINGLE_FRAME_MAX))
    ) {
      return s.send(data);
    }
    const buffered = s.bufferedAmount;
    const budget = this.budget;
    // Past half the budget, a session holding more than its share (as for answers owed: ANSWER_SHARE)
    // is the slow one: refused alone, not every session's sendTo and every peer's input with it.
    const pressed = budget.used * 2 > budget.limit && (buffered + data.length) * ANSWER_SHARE > budget.limit;
    if (buffered > this.sendToHighWater || (pressed && buffered > 0)) {
      return Promise.reject(
        new PointSubError(
          "ERR_SLOW_PEER",
          `session ${id} has ${buffered} bytes queued (sendToHighWaterMark ${this.sendToHighWater}, memory budget ${budget.used} of ${budget.limit} bytes used): not sent`,
        ),
      );
    }
    // What waits in a session's queue is memory the server holds for its peer: charged to the server's
    // budget while it waits, so that many sessions that do not read are bounded together, not only
    // each by the mark (a thousand of them held up to 64 GiB).
    const n = data.length;
    if (!budget.tryCharge(n)) {
      return Promise.reject(
        new PointSubError(
          "ERR_OVERLOADED",
          `the server's memory budget is full (${budget.used} of ${budget.limit} bytes): sendTo ${id} not sent`,
        ),
      );
    }
    const p = s.send(data);
    if (s.bufferedAmount <= buffered) {
      // Written at once (or refused): nothing waits.
      budget.release(n);
      return p;
    }
    const release = () => budget.release(n);
    p.then(release, release);
    return p;
  }

  /**
   * Sends `payload` to every open session (or those `options.filter`
   * accepts): encoded once, and for payloads of 16 KiB and more checksummed
   * once. A session with more than `highWaterMark` bytes queued is skipped
   * or disconnected (`slowSessions`), never queued without bound. Never
   * waits for a slow session: resolves at once to how many sessions wrote
   * the message, how many queued it, and which did not get it and why; it
   * rejects only for its arguments (ERR_INVALID_ARGUMENT): a payload that
   * is not bytes or text, options that are not an object, or an invalid `highWaterMark`, `slowSessions`,
   * `filter` (or, with a cluster, `filterArg`).
   *
   * With a cluster the message also goes to every other node once, which
   * fans it out to its own sessions (at most once, never retried): the
   * result counts this node's sessions. A filter must then be a name
   * (see {@link ServerBroadcastOptions.filter}) unless `local` is set.
   */
  async broadcast(payload: Payload, options: ServerBroadcastOptions = {}): Promise<BroadcastResult> {
    const data = toBytes(payload, "payload");
    checkOptions(options, "broadcast");
    // NaN skipped no session whatever it queued, and a negative mark every session.
    const high = options.highWaterMark;
    // (A string such as "5" compared as its number, and was taken.)
    if (high !== undefined && (typeof high !== "number" || !(high >= 0))) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `broadcast highWaterMark must be a number >= 0 (got ${String(high)})`,
      );
    }
    const slow = options.slowSessions;
    if (slow !== undefined && slow !== "skip" && slow !== "disconnect") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `broadcast slowSessions must be "skip" or "disconnect" (got ${String(slow)})`,
      );
    }
    const filter: unknown = options.filter;
    if (filter !== undefined && typeof filter !== "function" && typeof filter !== "string") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `broadcast filter must be a function or a cluster filter's name (got ${String(filter)})`,
      );
    }
    if (this.cluster !== undefined && options.local !== true) return this.cluster.broadcast(data, options);
    if (typeof options.filter === "string") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        "a named broadcast filter runs through a cluster (createServer({ cluster }) with its filters, not local: true)",
      );
    }
    return this.broadcastLocal(data, options as BroadcastOptions);
  }

  private broadcastLocal(data: Uint8Array, options: BroadcastOptions): BroadcastResult {
    const crc = data.length >= SHARED_CRC_MIN ? this.runtime.checksums.compute(data) : -1;
    return broadcastTo(this.sessions_, data, crc, options);
  }

  /**
   * The server's events as an async iterable of typed objects (`session`,
   * `sessionClose`, `message`, `error`, `reject`), for `for await`. A slow
   * reader loses the oldest events past `bufferSize` and is told so by an
   * `overflow` event; the stream ends when the server closed.
   */
  events(options: ServerEventOptions = {}): ServerEventStream {
    checkOptions(options, "events");
    const st = new ServerEventStream(this.subscribers, options);
    // Asked after the close: nothing will come (a `for await` over it would never end).
    if (this.closed) st.end();
    return st;
  }

  /** Totals over all sessions, past and present. */
  stats(): StatsSnapshot {
    return sumStats(
      [...this.sessions_].map((s) => s.stats()),
      this.closedTotals,
    );
  }

  /**
   * Shuts down gracefully: stops accepting (the listeners close at once: a
   * new connect is refused; clients still in their handshake get a GOAWAY
   * "server closing"), sends every session a GOAWAY so that clients start
   * nothing new here (their new calls fail with ERR_GOING_AWAY, retryable
   * elsewhere), lets requests, messages and transfers in flight finish for
   * up to `timeoutMs` (default each session's `closeTimeoutMs`), then closes
   * what is left, whose calls fail with ERR_CONNECTION_CLOSED. Resolves when
   * everything is closed. A second call (SIGINT, then SIGTERM) resolves with
   * the first; with a shorter timeout, it brings the end forward for the
   * sessions the first is draining too.
   */
  async close(options: { timeoutMs?: number } = {}): Promise<void> {
    checkOptions(options, "close");
    const ms = options.timeoutMs ?? this.options.closeTimeoutMs ?? 5_000;
    // Checked before anything closes: NaN closed nothing in flight, ever (the close never resolved).
    if (typeof ms !== "number" || !(ms >= 0)) throw badCloseTimeout(ms);
    const drained = this.drain(ms, options.timeoutMs);
    // A second close resolves only once the first's work is done too: before, it went on as soon as its own
    // drain had (the first's listeners, and the first's cluster.stop(), which returns at once once started).
    this.closeDone ??= drained.then(() => this.finishClose());
    await Promise.all([drained, this.closeDone]);
  }

  /** What a close does until its sessions, handshakes and listeners are closed (by `ms`). */
  private async drain(ms: number, timeoutMs: number | undefined): Promise<void> {
    this.closing = true;
    const by = performance.now() + ms;
    let cut: ReturnType<typeof setTimeout> | undefined;
    // A session already closing (closeSession, an idle close, its peer's GOAWAY) keeps its own
    // deadline: its close() gives back the one under way, which may run far longer than this one.
    let drainingAlready = false;
    for (const s of this.sessions_) if (s.state === "closing") drainingAlready = true;
    if ((this.closeBy !== undefined && by < this.closeBy) || drainingAlready) {
      // Sessions a close with a later deadline drains end by this one's (their own end waits 100 ms for the peer's).
      const gone = new PointSubError("ERR_CONNECTION_CLOSED", "server closed before this finished");
      // After the turn's I/O and the turn after it (a socket's close is told in the close phase, after this
      // turn's check): after a stall of this process the timers run before the socket is read, and a session
      // whose peer finished and hung up in time was cut.
      cut = setTimeout(
        () =>
          nextTurn(() =>
            nextTurn(() => {
              for (const s of [...this.sessions_]) s.destroy(gone);
            }),
          ),
        Math.min(MAX_TIMER_MS, ms + 100),
      );
    }
    this.closeBy = Math.min(this.closeBy ?? by, by);
    this.admission.stop();
    // Keyed handlers whose connection ended, still running for a retry that will not come here now.
    abortOrphans(this.budget, new PointSubError("ERR_GOING_AWAY", "server closing"));
    const close = { reason: "server closing", timeoutMs };
    // A listener's close resolves only once its connections are gone, so
    // close sessions at the same time.
    const listeners = this.bound.splice(0).map((l) => l.close());
    const sessions = [...this.sessions_].map((s) => s.close(close));
    // Connections still in their handshake close gracefully once it completes (a client
    // that just connected sees a clean GOAWAY), but no later than the timeout: a stalled
    // handshake must not hold the shutdown for handshakeTimeoutMs.
    const refused = new PointSubError("ERR_GOING_AWAY", "server closing");
    // Those whose opening has not arrived CLOSING_GRACE_MS after their accept are no client in its
    // handshake: given up now, the others by then (a GOAWAY to those that said something, the others
    // closed). Before, a socket that said nothing (a health check's probe) held every graceful close
    // for its whole timeout, 5 s by default, or up to handshakeTimeoutMs with a longer one.
    // Both after the turn's I/O (as the connections' own timeouts): after a stall of this process (a long GC, a
    // busy shutdown) the timers ran before the openings that arrived meanwhile were read, and a client whose
    // HELLO was in the socket was closed without a word (its calls failed ERR_CONNECTION_CLOSED).
    const graceAt = performance.now() - CLOSING_GRACE_MS;
    nextTurn(() => this.openings.giveUpAll(refused, graceAt));
    const early =
      this.openings.size === 0
        ? undefined
        : setTimeout(
            () => nextTurn(() => this.openings.giveUpAll(refused)),
            Math.min(MAX_TIMER_MS, ms, CLOSING_GRACE_MS),
          );
    // The deadline after the turn's I/O too: due with the grace's (a close's deadline under 1 s), it gave the
    // openings up before they were read, and a client whose HELLO was in the socket was closed without a word.
    const late = setTimeout(
      () =>
        nextTurn(() => {
          // Those built meanwhile too (their opening arrived during the close).
          for (const s of [...this.connecting]) s.terminate(refused);
          // Those whose opening never came: a GOAWAY to those that said something, the others closed.
          this.openings.giveUpAll(refused);
          // Given up with a GOAWAY and still there (a peer that never hangs up, a ws:// one that never answers
          // the close frame): destroyed once their GOAWAY is written, on the next turn. They held the listeners,
          // and so the close, up to 2 s past its deadline (close({ timeoutMs: 300 }) took 1.7 s).
          nextTurn(() => this.openings.dropLingering());
        }),
      Math.min(MAX_TIMER_MS, ms), // Infinity: a longer delay fires at once
    );
    const handshaking = [...this.connecting].map((s) => s.close(close));
    // Connections whose opening has not arrived: closed gracefully like those above once
    // their session is built (see build in openingHost), or given up by the timer.
    // Each close() waits for them (a second close, e.g. SIGINT then SIGTERM, must not leave the first pending).
    this.openingWaiters ??= new Map();
    const waiters = this.openingWaiters;
    this.closeOptions = close;
    const opening = [...this.openings.pending].map(
      (p) =>
        new Promise<void>((resolve) => {
          const w = waiters.get(p);
          if (w === undefined) waiters.set(p, [resolve]);
          else w.push(resolve);
        }),
    );
    await Promise.all([...listeners, ...sessions, ...handshaking, ...opening]);
    clearTimeout(early);
    clearTimeout(late);
    clearTimeout(cut);
  }

  /** After the first close's drain: leaves the cluster, then ends the event streams. */
  private async finishClose(): Promise<void> {
    if (this.clusterStarted !== undefined) await this.cluster?.stop();
    this.closed = true;
    this.subscribers.endAll();
  }

  /**
   * Emits `event` to the application's listeners. One that throws is the application's bug: it is
   * surfaced (thrown again from a microtask: an uncaught exception, as a throwing `message` listener
   * of a connection is), the listeners after it still run (`Emitter`; eventemitter3's emit stopped at
   * it) and the server's own work goes on. Before, it unwound into that work: a
   * throwing `session` listener closed the session as the peer's ERR_PROTOCOL, and a throwing
   * `sessionClose` or `reject` listener left a close that never resolved.
   */
  private tell<E extends keyof ServerEvents>(event: E, ...args: ServerEvents[E]): void {
    try {
      this.emit(event, ...args);
    } catch (err) {
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  private publish(e: ServerEvent): void {
    this.subscribers.publish(e);
  }

  private readonly dispatchMessage = (msg: Message, session: Connection): void => {
    // Every one-way message of every session passes here: no spread call when nobody listens on the server.
    if (this.listenerCount("message") !== 0) this.tell("message", msg, session);
    if (this.subscribers.size !== 0) this.publish({ type: "message", message: msg, session });
  };

  /**
   * Accepts a transport: at most ACCEPT_PER_TURN per event-loop turn, the
   * rest on the following turns, so a burst of thousands of connections
   * (a slowloris attack) does not hold the event loop for all their
   * handshakes at once.
   */
  private accept(transport: Transport): void {
    if (this.acceptedThisTurn < ACCEPT_PER_TURN && this.acceptMs < ACCEPT_MS && this.acceptQueue.length === 0) {
      this.acceptedThisTurn++;
      this.scheduleAcceptTurn();
      const t0 = performance.now();
      this.acceptNow(transport);
      this.acceptMs += performance.now() - t0;
      return;
    }
    this.acceptQueue.push(transport);
    this.scheduleAcceptTurn();
  }

  private scheduleAcceptTurn(): void {
    if (this.acceptTurnScheduled) return;
    this.acceptTurnScheduled = true;
    nextTurn(this.acceptTurn);
  }

  private readonly acceptTurn = (): void => {
    this.acceptTurnScheduled = false;
    const q = this.acceptQueue;
    const t0 = performance.now();
    let n = 0;
    while (n < q.length && n < ACCEPT_PER_TURN && performance.now() - t0 < ACCEPT_MS) this.acceptNow(q[n++]);
    if (n !== 0) q.splice(0, n);
    // What this turn's accepts cost counts against the next turn's I/O-phase accepts too.
    this.acceptedThisTurn = n;
    this.acceptMs = performance.now() - t0;
    if (q.length !== 0 || n !== 0) this.scheduleAcceptTurn();
  };

  private acceptNow(transport: Transport): void {
    // The accept queue is not held against its own transports: those already taken from it this turn are
    // counted where they went (handshakes), and this one and those behind it are admitted or refused in
    // turn. Counted, a burst of connections queued past a turn's accepts (ws://, tls://, libp2p: many
    // handshakes completing in one turn) was refused under the limit: 128 of 300 clients with
    // maxConnections 300.
    const uncounted = this.acceptQueue.length;
    const refused = this.closing ? "server closing" : this.admission.admit(transport.remoteUrl, uncounted);
    if (refused !== undefined) {
      // Say why instead of just closing: preface, then GOAWAY in place of HELLO (docs/PROTOCOL.md §1.1).
      const code = this.closing ? "ERR_GOING_AWAY" : "ERR_OVERLOADED";
      const reason = refused;
      // Destroyed if the peer has not closed within a second; the timer goes when it closes
      // (a refused socket that hangs up at once is not held for that second). At most
      // MAX_LINGERING_REFUSALS wait so: refused connections are counted by no limit, and a flood
      // of connects that never hang up held one descriptor per connect of the last second
      // (thousands, with maxConnections 10); past it they are closed on the next turn, once the GOAWAY is written.
      const linger = this.lingering < MAX_LINGERING_REFUSALS;
      let t: ReturnType<typeof setTimeout> | undefined;
      if (linger) {
        this.lingering++;
        t = setTimeout(() => transport.destroy(), 1000);
        (t as { unref?: () => void }).unref?.();
      }
      transport.attach({
        onData: () => false,
        onDrain() {},
        onClose: () => {
          if (t === undefined) return;
          clearTimeout(t);
          t = undefined;
          this.lingering--;
        },
      });
      transport.write(refusalBytes(codeInfo(code).errno, reason));
      transport.end();
      // On the next turn, not now: a transport may still hold the GOAWAY (ws:// corks its writes until
      // the end of the turn; a runtime's socket may write asynchronously), and destroying drops it.
      if (!linger) nextTurn(() => transport.destroy());
      this.publishRefused(transport.remoteUrl, reason, code);
      this.rejected(new PointSubError(code, `refused ${transport.remoteUrl}: ${reason}`));
      return;
    }
    // Until the peer's opening (HELLO, AUTH) arrives, the connection is its
    // transport, the bytes so far and a place in the deadline sweep: the
    // session is built in openingHost's build.
    transport.write([greeting(this.settings, true).bytes]);
    this.openings.add(transport);
  }

  /** The hooks of {@link Openings}: one object per server. */
  private openingHost(): OpeningHost {
    // Every session points at one object of these (and the options' timeouts): they are not in each session's init.
    const shared = connectionShared(
      this.options,
      {
        initiator: false,
        router: this.router,
        onOpen: this.sessionOpened,
        onClose: this.sessionClosed,
        ticker: this.ticker,
      },
      this.runtime,
      this.budget,
    );
    return {
      auth: this.options.authenticate !== undefined,
      checksum: this.settings.checksum === 1,
      build: (p) => {
        const conn = new Connection(p.transport, this.options, {
          localSettings: this.settings,
          initiator: false,
          router: this.router,
          runtime: this.runtime,
          onMessage: this.dispatchMessage,
          budget: this.budget,
          authenticate: this.options.authenticate,
          shared,
          id: this.idPrefix + String(++this.nextId),
          accepted: p,
        });
        this.connecting.add(conn);
        const waiters = this.openingWaiters?.get(p);
        if (waiters !== undefined) {
          // The server is closing: this session closes gracefully once its handshake completes.
          this.openingWaiters?.delete(p);
          const done = () => {
            for (const w of waiters) w();
          };
          // By the close's deadline: with a timeout of its own from now, a handshake completed late in the
          // close held it up to twice its timeoutMs (close({ timeoutMs: 1000 }) took 1.7 s).
          const left = Math.max(0, (this.closeBy ?? Number.POSITIVE_INFINITY) - performance.now());
          conn.close({ reason: this.closeOptions?.reason ?? "server closing", timeoutMs: left }).then(done, done);
        }
        return conn;
      },
      ended: (p, error) => {
        this.admission.release(p.transport.remoteUrl);
        const c = this.handshakeErrorChannel;
        if (c.hasSubscribers) {
          c.publish({
            connection: undefined,
            remoteUrl: p.transport.remoteUrl,
            role: "server",
            error,
          } satisfies HandshakeErrorMessage);
        }
        this.rejected(error);
        const waiters = this.openingWaiters?.get(p);
        if (waiters !== undefined) {
          this.openingWaiters?.delete(p);
          for (const w of waiters) w();
        }
      },
    };
  }

  /** Connections in a transport handshake count against maxConnections; refused at once when full. */
  private readonly countPending = (delta: 1 | -1, remoteUrl?: string): boolean => {
    if (delta === -1) {
      this.pending--;
      if (remoteUrl !== undefined) this.admission.release(remoteUrl);
      return true;
    }
    // Counted against the limits (per address too, when the adapter says who it is) from
    // before the transport's own handshake; accepted, it is admitted again as a session.
    const refused = this.closing
      ? "server closing"
      : remoteUrl === undefined
        ? this.admission.hasRoom()
          ? undefined
          : "connection limit reached"
        : this.admission.admit(remoteUrl);
    if (refused !== undefined) {
      // ERR_OVERLOADED, as tcp://'s refusal and the ws:// client's 503 say (it was ERR_CONNECT here).
      const code = this.closing ? "ERR_GOING_AWAY" : "ERR_OVERLOADED";
      this.publishRefused(remoteUrl, refused, code);
      this.rejected(
        new PointSubError(
          code,
          `refused ${remoteUrl ?? "a connection"} before its TLS or WebSocket handshake: ${refused}`,
        ),
      );
      return false;
    }
    this.pending++;
    return true;
  };

  // One set of hooks for every session: no closures or listeners per session.
  private readonly sessionOpened = (conn: Connection): void => {
    this.connecting.delete(conn);
    this.sessions_.add(conn);
    this.sessionsOpened++;
    this.byId.set(conn.id, conn);
    // Published before the listeners: one that destroys the session (refusing the peer) published its
    // sessionClose first, and a reader of events() saw the session close before it opened.
    if (this.subscribers.size !== 0) this.publish({ type: "session", session: conn });
    this.tell("session", conn);
  };

  /**
   * A connection refused before it became a session: `pointsub:refused`
   * (nothing is built without subscribers). `why` is the refusal's text.
   */
  private publishRefused(remoteUrl: string | undefined, why: string, code: ErrorCode): void {
    const c = this.refusedChannel;
    if (!c.hasSubscribers) return;
    const reason = this.closing ? "closing" : why.includes("address") ? "address-limit" : "connection-limit";
    c.publish({ connection: undefined, remoteUrl, reason, code } satisfies RefusedMessage);
  }

  /**
   * A connection the transport refused or lost in its own handshake (TLS, a
   * WebSocket upgrade): a handshake error (`pointsub:handshake:error`, the
   * metrics' handshake failures) and a `reject` event, as a failed pointsub
   * handshake is.
   */
  private readonly transportRefused = (error: PointSubError, remoteUrl?: string): void => {
    const c = this.handshakeErrorChannel;
    if (c.hasSubscribers) {
      c.publish({ connection: undefined, remoteUrl, role: "server", error } satisfies HandshakeErrorMessage);
    }
    this.rejected(error);
  };

  private rejected(error: PointSubError): void {
    this.tell("reject", error);
    if (this.subscribers.size !== 0) this.publish({ type: "reject", error });
  }

  private readonly sessionClosed = (conn: Connection, error: PointSubError | undefined): void => {
    this.connecting.delete(conn);
    this.admission.release(conn.remoteUrl);
    if (this.sessions_.delete(conn)) {
      this.byId.delete(conn.id);
      // Folded in place: no copy of the running totals per closed session.
      this.closedTotals ??= emptyStats();
      addStats(this.closedTotals, conn.stats());
      const reason = conn.closeReason;
      if (error !== undefined && error.code !== "ERR_CONNECTION_CLOSED") {
        this.tell("error", error, conn);
        if (this.subscribers.size !== 0) this.publish({ type: "error", error, session: conn });
      }
      this.tell("sessionClose", conn, error, reason);
      if (this.subscribers.size !== 0) this.publish({ type: "sessionClose", session: conn, reason, error });
    } else {
      // The handshake never completed.
      this.rejected(error ?? new PointSubError("ERR_CONNECTION_CLOSED", "closed during the handshake"));
    }
  };
}

/**
 * An `authenticate` hook that accepts clients whose credentials equal one
 * of `tokens` (compared in constant time); the principal is the token's
 * index in the list ("token:0", ...), never the token itself.
 */
export function tokenAuth(tokens: string | readonly string[]): Authenticator {
  // Strings only: a number was taken as its digits, and a Uint8Array (the credentials, when tokenAuth
  // itself was given as the hook: `authenticate: tokenAuth`) made a hook whose principal was a function,
  // so every client with any credentials was let in.
  const given: unknown = tokens;
  const strings = typeof given === "string" ? [given] : Array.isArray(given) ? (given as unknown[]) : undefined;
  if (strings === undefined || strings.length === 0 || strings.some((t) => typeof t !== "string" || t.length === 0)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "tokenAuth needs non-empty tokens: a string or a list of strings");
  }
  const list = (strings as string[]).map((t) => new TextEncoder().encode(t));
  return (credentials) => {
    let found = -1;
    for (let i = 0; i < list.length; i++) if (sameBytes(credentials, list[i])) found = i;
    // A client that sent none is told so: "invalid token" sent `pointsub send` users without one looking for a wrong token.
    if (found < 0) {
      throw new PointSubError(
        "ERR_UNAUTHORIZED",
        credentials.length === 0 ? "no token given; this server requires one" : "invalid token",
      );
    }
    return `token:${found}`;
  };
}

/**
 * Throws ERR_INVALID_ARGUMENT unless `authenticate` is undefined or a hook: a value that is not a
 * function refused every client ("credentials refused") with nothing said to the operator, and
 * `tokenAuth` itself, not called (`authenticate: tokenAuth`), took the credentials for its tokens.
 */
function checkAuthenticate(authenticate: unknown): void {
  if (authenticate === undefined) return;
  if (authenticate === tokenAuth) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      'authenticate: tokenAuth is called with the tokens, e.g. authenticate: tokenAuth("<token>")',
    );
  }
  if (typeof authenticate !== "function") {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `authenticate must be a function (got ${typeof authenticate})`);
  }
}

/** Constant-time comparison (for equal lengths; lengths are not secret). */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** Creates a server. Register routes with `handle`, then `listen`. */
export function createServer(options: ServerOptions = {}): Server {
  return new Server(options);
}
