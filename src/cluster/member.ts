/**
 * One server's membership of a cluster: heartbeats and the member table,
 * broadcast fan-out across nodes, sendTo to another node's session, the
 * cluster-wide session list. Everything rides the engine's publish/
 * subscribe, at most once: nothing is retried, and a message id seen twice
 * (a duplicate on the bus) is dropped, so no session gets a message twice
 * because of the cluster.
 *
 * Subjects (`<p>` = `pointsub.<cluster name>`): `<p>.members` (heartbeats,
 * hello, bye), `<p>.bc` (broadcasts), `<p>.node.<id>` (sendTo, its acks,
 * session-list requests and pages for one node).
 */
import type { Connection } from "../connection/connection.ts";
import type { ConnectionInfo } from "../connection/types.ts";
import { PointSubError } from "../errors/error.ts";
import { positive as positiveInteger } from "../router/idempotency.ts";
import type { BroadcastResult } from "../server/broadcast.ts";
import type { ClusterLocal, ClusterMembership, ClusterSessionInfo, ServerBroadcastOptions } from "../server/server.ts";
import { Emitter } from "../util/emitter.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import {
  BusAuth,
  type ClusterSecret,
  isSealed,
  REPLAY_WINDOW_MS,
  type Rejection,
  SEAL_OVERHEAD,
  sealedBy,
} from "./bus-auth.ts";
import { isErrorCode } from "./codes.ts";
import type { ClusterEngine } from "./engine.ts";
import { type EngineIdempotencyStore, engineIdempotencyStore } from "./idempotency-store.ts";
import { type BusHeader, decode, encode, type Heartbeat, MAX_HEADER_BYTES } from "./wire.ts";

/**
 * A broadcast filter registered by name on every node: `arg` is the
 * broadcast's `filterArg`. One that throws for a session leaves that
 * session out (on every node alike, the sender's included) and is counted
 * in {@link ClusterStats.handlerErrors}.
 */
export type NamedFilter = (session: Connection, arg: string | undefined) => boolean;

/** Options common to every cluster engine. */
export interface ClusterOptions {
  /** The cluster's name: servers with the same name on the same engine form one cluster. Letters, digits, `-`, `_`. Default `"pointsub"`. */
  name?: string;
  /** This node's id (letters, digits, `-`, `_`; at most 32). Default: 10 random base-36 characters. */
  nodeId?: string;
  /** How often a node announces itself, in ms. Default 1,000. */
  heartbeatMs?: number;
  /** A node not heard from for this long is removed, with its sessions, in ms. Default 3 × `heartbeatMs`. */
  deadAfterMs?: number;
  /** How long a `sendTo`, or a page of a node's session list, is waited for, in ms. Default 5,000. */
  requestTimeoutMs?: number;
  /**
   * Longest a cluster-wide session list (`sessionsInfo({ cluster: true })`)
   * gathers, in ms: then it resolves with what it has, a node whose list is
   * not complete left out as one that misses `requestTimeoutMs` (with the
   * pages it sent). A node answering each page just in time could otherwise
   * hold the list for hours. Default 6 × `requestTimeoutMs` (30 s).
   */
  listTimeoutMs?: number;
  /** How long the first `listen` waits for the engine; then it rejects with ERR_CONNECT (a later `listen` tries again). Default 10,000. */
  connectTimeoutMs?: number;
  /**
   * Longest wait for one engine call (a publish, a key-value read or
   * compare-and-set), in ms: past it the call rejects with ERR_TIMEOUT
   * (retryable), so a frozen or partitioned engine cannot hold a request,
   * a rate-limit lease or `close` (whose `bye` waits this long at most).
   * Once this node no longer reads its own heartbeats back for
   * `deadAfterMs`, the engine counts as down (the `engine` event): calls
   * then fail at once with ERR_CONNECTION_CLOSED until it is back.
   * Default 2,000.
   */
  engineTimeoutMs?: number;
  /** Largest payload sent across the bus (broadcast, sendTo), in bytes; larger ones fail with ERR_MESSAGE_TOO_LARGE. Default 512 KiB. */
  maxBusMessageBytes?: number;
  /**
   * The cluster's shared secret (at least 16 bytes; e.g. 32 random bytes in
   * hex): every bus message is signed with it (HMAC-SHA256, bound to its
   * subject, its sender's process and a sequence number, sent within the
   * last 30 s on the sender's clock), and a node drops — and counts in
   * {@link ClusterStats.unauthenticated} / {@link ClusterStats.replayed},
   * reporting them by the `unauthenticated` event — every message that is
   * not signed with it, or was seen before, so nothing else that can publish
   * on the engine can join, ack, answer a list or remove a node. A list: the
   * first signs, any verifies (to rotate: every node `[old, next]`, then
   * `[next, old]`, then `next`). Every node needs it (a node without it, or
   * with another, is cut off from the others and reports why). Without one
   * (the default), the bus is trusted as it is: anything that can publish on
   * the engine's subjects can forge nodes' messages — keep the engine
   * private (Redis ACLs, NATS accounts) then. It does not cover the engine's
   * key-value store (the shared idempotency store, rate-limit counters).
   */
  secret?: ClusterSecret;
  /** Broadcast filters by name, the same on every node. */
  filters?: Record<string, NamedFilter>;
  /** Share the idempotency store through the engine. Default true. */
  idempotency?: boolean;
  /**
   * How long the shared store keeps an answer, in ms (on NATS also the
   * bucket's max age, when this node makes it: a claim whose lease is
   * longer is written again while its handler runs). Default 600,000.
   */
  idempotencyTtlMs?: number;
  /**
   * Most answers this node keeps in the shared store at once (those it
   * wrote, until `idempotencyTtlMs` ends): past it its oldest are deleted
   * from the engine (a retry of one runs the handler again), so peers
   * flooding unique keys cannot fill Redis or the bucket. Default 10,000.
   */
  idempotencyMaxEntries?: number;
  /** Most bytes of those answers (JSON, key, 128 each). Default 32 MiB. */
  idempotencyMaxBytes?: number;
  /**
   * Most answers one principal keeps through this node: at its quota its own
   * oldest go, never another's. Default: a quarter of `idempotencyMaxEntries`
   * (unauthenticated clients share one scope: raise it on such a server;
   * it is at most `idempotencyMaxEntries`).
   */
  idempotencyMaxEntriesPerScope?: number;
  /** Most bytes one principal keeps through this node (at most `idempotencyMaxBytes`). Default: a quarter of `idempotencyMaxBytes`. */
  idempotencyMaxBytesPerScope?: number;
}

/** A live node, as {@link Cluster.nodes} lists it. */
export interface ClusterNode {
  readonly id: string;
  /** The URLs it listens on. */
  readonly urls: readonly string[];
  /** Its session count at its last heartbeat. */
  readonly sessions: number;
  /** When it was last heard from (this node: now). */
  readonly lastSeen: number;
  /** Whether it is this node. */
  readonly self: boolean;
}

/** Events of a {@link Cluster}. */
export interface ClusterEvents {
  /** A node joined (or came back after it was removed). */
  nodeJoined: [node: ClusterNode];
  /** A node left: closed, or not heard from for `deadAfterMs`. */
  nodeLeft: [id: string, reason: "left" | "timeout"];
  /**
   * The engine connection went down or came back: down when the client
   * lost it, or when this node did not read its own heartbeats back for
   * `deadAfterMs` (a frozen engine, a partition); up once its own `hello`
   * comes back through the engine.
   */
  engine: [up: boolean];
  /** Something published to the bus failed (at most once: it is not retried). */
  busError: [error: Error];
  /**
   * Another node announces this node's id (a configuration error: two
   * servers given the same `nodeId`). The other nodes take the two for one
   * node (its session list and claims mix both; a broadcast reaches both, a
   * `sendTo` to a session of either is answered by the one whose run its id
   * names), so give every node its own id. Emitted once per other node (an
   * ERR_INVALID_ARGUMENT naming the id), and counted in
   * {@link ClusterStats.duplicateNodeIds}.
   */
  duplicateNodeId: [error: PointSubError];
  /**
   * A bus message was dropped for its signature or as a replay (see the
   * `secret` option): ERR_UNAUTHORIZED saying which — a node without the
   * secret or with another one (this node is then cut off from it), a
   * publisher that is not a node, a replay, or clocks more than 30 s apart.
   * At most once per kind every 10 s; every one is counted
   * ({@link ClusterStats.unauthenticated}, {@link ClusterStats.replayed}).
   */
  unauthenticated: [error: PointSubError];
}

/** Counters of a {@link Cluster}. */
export interface ClusterStats {
  broadcastsSent: number;
  broadcastsReceived: number;
  sendsSent: number;
  sendsReceived: number;
  /** Messages read from the bus a second time (same id) and dropped. */
  duplicates: number;
  /** Malformed bus messages dropped. */
  malformed: number;
  /** Broadcasts naming a filter this node does not have (dropped). */
  unknownFilters: number;
  busErrors: number;
  /**
   * Exceptions thrown by a named filter or by a listener of this cluster's
   * events (`nodeJoined`, …): caught and counted, the node keeps reading
   * the bus (a filter that throws leaves its session out).
   */
  handlerErrors: number;
  /** Broadcasts and sendTos read while the engine counted as down (late, from before an outage): dropped. */
  stale: number;
  /** Heartbeats of another node announcing this node's id (see the `duplicateNodeId` event). */
  duplicateNodeIds: number;
  /** Heartbeats of new nodes ignored: {@link MAX_CLUSTER_NODES} other nodes were already known. */
  ignoredNodes: number;
  /** Acks of a `sendTo` from another node than the one it went to: ignored. */
  foreignAcks: number;
  /**
   * Bus messages dropped for their signature (see `secret`): unsigned on a
   * node with a secret, signed with another secret (or forged), signed on a
   * node without one.
   */
  unauthenticated: number;
  /** Signed bus messages dropped as replays: seen before, or sent more than 30 s away from this node's clock. */
  replayed: number;
  /**
   * Session-list asks dropped: a node asked for more first pages than its
   * budget (a burst of {@link FIRST_PAGES_BURST}, then one a second), or for
   * more than one whole list a second.
   */
  listAsksDropped: number;
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
/** Other nodes with this node's id reported by the `duplicateNodeId` event (later ones are only counted). */
const MAX_REPORTED_DUPLICATES = 16;
/** Most `sendTo`s for another run of this node's id held at once for the end of its first `deadAfterMs` ({@link Cluster.onSend}). */
const MAX_HELD_SENDS = 1024;
const NODE = /^[A-Za-z0-9_-]{1,32}$/;
/** Message ids remembered per node against duplicates. */
const SEEN_MAX = 8192;
/** Why a `sendTo` of a node whose server closed (or was closing, still waiting for its answer) fails. */
const LEFT = "the server left the cluster (closed): sendTo not sent, or its answer not awaited";

/** Longest session id a sendTo carries across the bus: a node's are `<nodeId>.<incarnation>.<n>`, under 64. */
const MAX_SESSION_ID_CHARS = 128;
/** Session infos per page of a session-list answer (and at most `maxBusMessageBytes` of them). */
const INFO_PAGE = 200;
/** Room left in a page of session infos for the bus header. */
const INFO_HEADER_ROOM = 1024;
/** Least time between two whole session lists sent unpaged to one node (`info` without a cursor). */
const FULL_LIST_MS = 1000;
/**
 * First pages of session lists (each a snapshot of the sessions and up to `maxBusMessageBytes` published) one
 * node may ask of another at once; then one per {@link FULL_LIST_MS}. An asker keeps within it (its lists
 * wait for it); past it, plus one for the time on the bus, the ask is dropped.
 */
export const FIRST_PAGES_BURST = 4;

/**
 * How long a copy of a node's sessions taken for a list serves the lists asked after it, in ms (unless a
 * session opened meanwhile): each took its own, kept while it is paged, and 1,024 askers at once made 1,024
 * copies of every session.
 */
const SNAPSHOT_SHARE_MS = 1000;

/** Least time between two `unauthenticated` events of one kind, in ms. */
const AUTH_REPORT_MS = 10_000;

/** How long a leaving node lets keyed handlers still running end by themselves before it answers their keys. */
const SETTLE_GRACE_MS = 200;

/**
 * Nodes a session list asks pages of at once: what the engine holds for the
 * asker is at most this many pages (each at most `maxBusMessageBytes`).
 */
const INFO_NODES_AT_ONCE = 4;
/**
 * Other nodes a node keeps track of: heartbeats of new node ids beyond it are
 * ignored and counted ({@link ClusterStats.ignoredNodes}), so a publisher on
 * the bus inventing ids cannot grow the member table without bound.
 */
export const MAX_CLUSTER_NODES = 1024;
/** Session infos one cluster-wide session list gathers at most (more are dropped and counted as malformed). */
export const MAX_LISTED_SESSIONS = 262_144;
/**
 * Bytes of pages one cluster-wide session list gathers at most, in pages of `maxBusMessageBytes` (256 MiB
 * at the default 512 KiB; a page past it is dropped and counted as malformed): 262,144 sessions of 512 KiB
 * each were 128 GiB held by the asker.
 */
export const MAX_LISTED_PAGES = 512;

interface Member {
  urls: string[];
  sessions: number;
  /** When it was last heard from (`Date.now()`, as {@link ClusterNode.lastSeen} says it). */
  lastSeen: number;
  /** The same on the monotonic clock ({@link monotonic}): what it is timed out by. */
  heardAt: number;
  /** The incarnation (process) its heartbeats announce; undefined from an older node, which sends none. */
  incarnation: string | undefined;
  /** When that incarnation started, on its clock (undefined: not said). */
  since: number | undefined;
  /**
   * Its earlier incarnations, latest last (at most {@link SUPERSEDED_MAX}):
   * it restarted under the same id, and their claims no longer hold.
   */
  superseded: string[];
  /** An earlier incarnation announced itself again: two processes share the id, and no claim of it is taken as gone. */
  twins: boolean;
  /** The incarnation heard under its id before the present one, as the member was then (a `bye` of the present one may leave it). */
  before: (Pick<Member, "urls" | "sessions" | "lastSeen" | "heardAt" | "since"> & { incarnation: string }) | undefined;
}

/**
 * Characters of the incarnation in this node's session ids
 * (`<nodeId>.<incarnation>.<n>`): a node restarted under the same id does
 * not give an earlier run's session ids (kept by an application, a
 * `sendTo` on its way) to its new sessions.
 */
const SESSION_ID_INCARNATION = 6;
/** Earlier incarnations of a node kept to tell its dead claims by. */
const SUPERSEDED_MAX = 4;
/** An incarnation in a heartbeat's echo key (`<incarnation>.<probe>`). */
const INCARNATION = /^[0-9a-z]{1,32}$/;

interface PendingSend {
  node: string;
  resolve(): void;
  reject(e: PointSubError): void;
  timer: ReturnType<typeof setTimeout>;
}

interface PendingInfo {
  infos: ClusterSessionInfo[];
  /** Bytes of the pages read so far (at most {@link MAX_LISTED_PAGES} × maxBusMessageBytes). */
  bytes: number;
  /** Nodes not asked yet. */
  queued: string[];
  /**
   * The request id each node asked is given (the list's id, a dot, a random part of its own): a page counts
   * only under the id its node was given. One id for every node let any node asked answer for the others.
   */
  ids: Map<string, string>;
  /**
   * Nodes asked: the timer of the page each owes, whether a page was asked for and not yet received, and the
   * timer of an ask that waits for this node's first-page budget.
   */
  waiting: Map<string, { timer: ReturnType<typeof setTimeout>; asked: boolean; ask?: ReturnType<typeof setTimeout> }>;
  /** Stops waiting for `node` (its list is complete, or it is left out) and asks the next one. */
  finish(node: string): void;
  done(): void;
}

/** A session list this node answers a page at a time: what it had when asked, and where the next page starts. */
interface InfoSnapshot {
  readonly i: string;
  readonly sessions: Connection[];
  at: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

function randomId(): string {
  const b = new Uint8Array(10);
  globalThis.crypto.getRandomValues(b);
  let s = "";
  for (const x of b) s += (x % 36).toString(36);
  return s;
}

function positive(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a positive number, not ${String(v)}`);
  }
  return v;
}

/**
 * The longest `idempotencyTtlMs` taken (100 years): a longer one is this. JetStream's max age is in
 * nanoseconds (an int64), Redis's PX in ms from now: 1e300 was refused by both.
 */
export const MAX_TTL_MS = 100 * 365.25 * 24 * 3600 * 1000;

/**
 * A period or timeout a timer waits: at most a timer's range (24.8 days). Past it Node fires the timer at
 * once: connectTimeoutMs 3e9 failed every listen at once ("not connected within 3000000000 ms"), and a
 * heartbeatMs as long made a heartbeat every millisecond.
 */
function delay(name: string, v: number | undefined, fallback: number): number {
  return Math.min(positive(name, v, fallback), MAX_TIMER_MS);
}

/** A quota option of the shared idempotency store: a positive integer or Infinity, else ERR_INVALID_ARGUMENT naming it. */
function quota(name: string, v: number | undefined): number | undefined {
  return v === undefined ? undefined : positiveInteger(name, v, 1);
}

/**
 * Room for one more node in a session-list budget map (`performance.now()` of each budget's full time): at
 * {@link MAX_CLUSTER_NODES}, those whose budget is full again are forgotten; if none is, the oldest when
 * `evict`, else false (no room: a publisher inventing node ids does not get a fresh budget per id).
 */
function forgetFull(budgets: Map<string, number>, now: number, evict: boolean): boolean {
  if (budgets.size < MAX_CLUSTER_NODES) return true;
  for (const [k, tat] of budgets) if (tat <= now) budgets.delete(k);
  if (budgets.size < MAX_CLUSTER_NODES) return true;
  if (!evict) return false;
  budgets.delete(budgets.keys().next().value as string);
  return true;
}

/**
 * Now on the monotonic clock, in ms: what membership and engine liveness are timed by. `Date.now()` steps with
 * the wall clock (NTP, a VM resumed): a step forward of more than deadAfterMs removed every other node at once
 * and reported the engine down, a step back kept a dead node for its length (`cluster/clock-step.test.ts`).
 */
function monotonic(): number {
  return performance.now();
}

/** JSON that never throws: bigints as strings, bytes dropped, a value that cannot be written as undefined. */
function jsonSafe(info: ConnectionInfo): unknown {
  const replacer = (_k: string, v: unknown) =>
    typeof v === "bigint" ? v.toString() : v instanceof Uint8Array ? undefined : v;
  try {
    return JSON.parse(JSON.stringify(info, replacer));
  } catch {
    return JSON.parse(JSON.stringify({ ...info, principal: undefined, peerCertificate: undefined }, replacer));
  }
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** An engine call's failure as a PointSubError: the engine client's own errors are ERR_CONNECTION_CLOSED (retryable). */
function engineError(engine: string, what: string, err: unknown): PointSubError {
  if (err instanceof PointSubError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new PointSubError("ERR_CONNECTION_CLOSED", `${engine} ${what} failed: ${message}`, { cause: err });
}

/**
 * Whether a publish that failed with `err` may still reach the bus: past its deadline (the client may write it
 * when the engine resumes), or failed in the engine's client (a command written before its connection dropped
 * may have run). Only a refusal before the client was given it (the engine counted as down, not connected: a
 * PointSubError of pointsub's own, no cause) is sure not to.
 */
function mayHaveLanded(err: Error): boolean {
  return !(err instanceof PointSubError) || err.code === "ERR_TIMEOUT" || err.cause !== undefined;
}

/**
 * A cluster on one engine, for one server (`createServer({ cluster })`).
 * Built by `redisCluster` / `natsCluster`.
 */
export class Cluster extends Emitter<ClusterEvents> {
  /** This node's id: the prefix of its session ids. */
  readonly nodeId: string;
  private readonly engine: ClusterEngine;
  private readonly prefix: string;
  private readonly heartbeatMs: number;
  private readonly deadAfterMs: number;
  private readonly requestTimeoutMs: number;
  private readonly listTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly engineTimeoutMs: number;
  private readonly maxBusBytes: number;
  private readonly filters: Map<string, NamedFilter>;
  private readonly store: EngineIdempotencyStore | undefined;
  private readonly members = new Map<string, Member>();
  private readonly sends = new Map<string, PendingSend>();
  private readonly infos = new Map<string, PendingInfo>();
  /** The session list being gathered, shared by every caller meanwhile. */
  private gathering: Promise<ClusterSessionInfo[]> | undefined;
  /** Lists this node answers page by page, per asking node (its latest request). */
  private readonly snapshots = new Map<string, InfoSnapshot>();
  /** The latest copy of this node's sessions a list took, shared by lists asked within {@link SNAPSHOT_SHARE_MS}. */
  private sharedSnapshot:
    | { sessions: Connection[]; opened: number | undefined; timer: ReturnType<typeof setTimeout> }
    | undefined;
  private readonly seen = new Set<string>();
  private local: ClusterLocal | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  private nextMsg = 0;
  /** Random per instance: a node restarted under the same id does not reuse message ids the others remember. */
  private readonly incarnation = randomId();
  /** When this incarnation started (`Date.now()`): claims of this node's id made before are an earlier process's. */
  private readonly startedAt = Date.now();
  /** Since when the engine connection is up ({@link monotonic}): this node reads its own messages back (0: down). */
  private upSince = 0;
  /** Whether the engine's client reports its connection up. */
  private engineUp = false;
  /** When this node last read one of its own heartbeats back ({@link monotonic}, as every time below). */
  private lastEcho = 0;
  /** When the oldest heartbeat of this node not yet read back was sent (0: none outstanding). */
  private unechoedSince = 0;
  /** A liveness check waits for the end of this turn's I/O ({@link tick}). */
  private checking = false;
  /** When the engine was last reset or reported up while it counted as down (a reset is not repeated sooner than deadAfterMs). */
  private lastAttempt = 0;
  /** Probe number of the echo key: while down, only the latest probe's echo brings the engine back. */
  private probe = 0;
  /** Signs and checks bus messages (undefined: no secret, the bus is trusted). */
  private readonly auth: BusAuth | undefined;
  /** When each kind of rejected bus message was last reported by the `unauthenticated` event. */
  private readonly authReported = new Map<Rejection, number>();
  /**
   * Other nodes seen announcing this node's id, by incarnation, and when each was last heard ({@link monotonic};
   * reported once each; at most {@link MAX_REPORTED_DUPLICATES}).
   */
  private readonly otherIncarnations = new Map<string, number>();
  /** Answers to `sendTo`s for another run of this node's id, held until this node has heard its twins ({@link onSend}). */
  private readonly heldSends = new Set<ReturnType<typeof setTimeout>>();
  private stopped = false;
  /**
   * When each node may be sent its whole session list unpaged again (`performance.now()`; at most
   * MAX_CLUSTER_NODES, those past it forgotten first).
   */
  private readonly fullLists = new Map<string, number>();
  /**
   * The first-page budget of each node asking this one (at most MAX_CLUSTER_NODES; those with a full budget
   * are forgotten first), and of this node toward each it asks: when the budget is full again
   * (`performance.now()`; GCRA's theoretical arrival time).
   */
  private readonly firstPagesIn = new Map<string, number>();
  private readonly firstPagesOut = new Map<string, number>();
  /** Set once stop() began (it settles the keys of handlers still running before it stops). */
  private leaving = false;
  private readonly counters: ClusterStats = {
    broadcastsSent: 0,
    broadcastsReceived: 0,
    sendsSent: 0,
    sendsReceived: 0,
    duplicates: 0,
    malformed: 0,
    unknownFilters: 0,
    busErrors: 0,
    handlerErrors: 0,
    stale: 0,
    duplicateNodeIds: 0,
    ignoredNodes: 0,
    foreignAcks: 0,
    listAsksDropped: 0,
    unauthenticated: 0,
    replayed: 0,
  };
  /** When this node last answered a `hello` with a heartbeat, and the answer deferred to the end of the window, if any. */
  private helloAnsweredAt = Number.NEGATIVE_INFINITY;
  private helloAnswer: ReturnType<typeof setTimeout> | undefined;

  /** Use `redisCluster` or `natsCluster`. */
  constructor(engine: ClusterEngine, options: ClusterOptions) {
    super();
    const name = options.name ?? "pointsub";
    if (typeof name !== "string" || !NAME.test(name)) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "cluster name: 1 to 64 letters, digits, - or _");
    }
    this.nodeId = options.nodeId ?? randomId();
    if (typeof this.nodeId !== "string" || !NODE.test(this.nodeId)) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "nodeId: 1 to 32 letters, digits, - or _");
    }
    this.engine = engine;
    this.prefix = `pointsub.${name}`;
    this.heartbeatMs = delay("heartbeatMs", options.heartbeatMs, 1000);
    this.deadAfterMs = positive("deadAfterMs", options.deadAfterMs, 3 * this.heartbeatMs);
    if (this.deadAfterMs <= this.heartbeatMs) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "deadAfterMs must be more than heartbeatMs");
    }
    this.requestTimeoutMs = delay("requestTimeoutMs", options.requestTimeoutMs, 5000);
    this.listTimeoutMs = delay("listTimeoutMs", options.listTimeoutMs, 6 * this.requestTimeoutMs);
    this.connectTimeoutMs = delay("connectTimeoutMs", options.connectTimeoutMs, 10_000);
    this.engineTimeoutMs = delay("engineTimeoutMs", options.engineTimeoutMs, 2000);
    this.maxBusBytes = positive("maxBusMessageBytes", options.maxBusMessageBytes, 512 * 1024);
    try {
      this.auth = options.secret === undefined ? undefined : new BusAuth(options.secret, this.nodeId, this.incarnation);
    } catch (err) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", (err as Error).message);
    }
    this.filters = new Map(Object.entries(options.filters ?? {}));
    for (const [k, f] of this.filters) {
      if (typeof f !== "function") throw new PointSubError("ERR_INVALID_ARGUMENT", `filter ${k} is not a function`);
    }
    // Checked with or without a store (natsCluster makes its bucket with it either way: -5 failed the listen
    // "no JetStream key-value store … start it with -js"); at most what the engines take (1e300 did too).
    const ttlMs = Math.min(positive("idempotencyTtlMs", options.idempotencyTtlMs, 600_000), MAX_TTL_MS);
    this.store =
      options.idempotency === false || !engine.hasKv
        ? undefined
        : engineIdempotencyStore(this.guarded(), {
            prefix: `${this.prefix}.idem.`,
            nodeId: this.nodeId,
            incarnation: this.incarnation,
            holds: (id, incarnation, madeAt) => this.holds(id, incarnation, madeAt),
            ttlMs,
            maxValueBytes: () => engine.maxValueBytes,
            maxAgeMs: () => engine.kvMaxAgeMs,
            // Checked here, by the names given (the store's own messages named maxEntries, …).
            maxEntries: quota("idempotencyMaxEntries", options.idempotencyMaxEntries),
            maxBytes: quota("idempotencyMaxBytes", options.idempotencyMaxBytes),
            maxEntriesPerScope: quota("idempotencyMaxEntriesPerScope", options.idempotencyMaxEntriesPerScope),
            maxBytesPerScope: quota("idempotencyMaxBytesPerScope", options.idempotencyMaxBytesPerScope),
          });
    engine.onState((up) => this.engineState(up));
  }

  /** The cluster's shared idempotency store (what `createServer({ cluster, idempotency: true })` uses), if any. */
  get idempotencyStore(): EngineIdempotencyStore | undefined {
    return this.store;
  }

  /** The live nodes, this one included; none once this node has left (its server closed). */
  nodes(): ClusterNode[] {
    const now = Date.now();
    const out: ClusterNode[] = [];
    // Left: what it last heard is no longer news (it listed itself and every member, their lastSeen frozen).
    if (this.stopped) return out;
    if (this.local !== undefined) {
      out.push({
        id: this.nodeId,
        urls: this.local.urls,
        sessions: this.local.sessionCount,
        lastSeen: now,
        self: true,
      });
    }
    for (const [id, m] of this.members)
      out.push({ id, urls: m.urls, sessions: m.sessions, lastSeen: m.lastSeen, self: false });
    return out;
  }

  /** Counters since the start. */
  stats(): ClusterStats {
    return { ...this.counters };
  }

  /**
   * Takes up to `want` of the `limit` units of the cluster-wide counter
   * `name` (created at 0 and kept `ttlMs` after each take, in the engine's
   * key-value store) by compare-and-set: resolves to how many it took (0:
   * none left). The building block of {@link clusterRateLimit}. Rejects with
   * ERR_INVALID_ARGUMENT when the engine has no key-value store or an
   * argument is not one (`want`, `limit`: integers ≥ 0; `ttlMs`: a positive
   * finite number), with
   * ERR_OVERLOADED when other nodes won the compare-and-set 8 times running,
   * and, like every engine call, with ERR_TIMEOUT when the engine does not
   * answer within `engineTimeoutMs` or ERR_CONNECTION_CLOSED when it is
   * down (both retryable).
   */
  async reserve(name: string, want: number, limit: number, ttlMs: number): Promise<number> {
    // Checked first: NaN was taken and stored ("NaN" units), and a ttlMs that is not a positive number failed in
    // the engine (Redis: a retryable ERR_CONNECTION_CLOSED; the workers' relay: ERR_OVERLOADED, "contended").
    if (typeof name !== "string" || name.length === 0) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "reserve: name must be a non-empty string");
    }
    for (const [what, v] of [
      ["want", want],
      ["limit", limit],
    ] as const) {
      if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
        throw new PointSubError("ERR_INVALID_ARGUMENT", `reserve: ${what} must be an integer ≥ 0, not ${String(v)}`);
      }
    }
    if (typeof ttlMs !== "number" || !(ttlMs > 0) || !Number.isFinite(ttlMs)) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `reserve: ttlMs must be a positive number, not ${String(ttlMs)}`);
    }
    if (!this.engine.hasKv) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `the ${this.engine.name} engine has no key-value store`);
    }
    const key = `${this.prefix}.count.${name}`;
    const e = this.engine;
    for (let attempt = 0; attempt < 8; attempt++) {
      const cur = await this.call("kvGet", () => e.kvGet(key));
      const used = cur === undefined ? 0 : Number(cur.value) || 0;
      const take = Math.min(want, limit - used);
      if (take <= 0) return 0;
      const ok =
        cur === undefined
          ? await this.call("kvCreate", () => e.kvCreate(key, String(take), ttlMs))
          : await this.call("kvUpdate", () => e.kvUpdate(key, String(used + take), cur.revision, ttlMs));
      if (ok) return take;
    }
    throw new PointSubError("ERR_OVERLOADED", `counter ${name} contended by other nodes; retry later`);
  }

  /**
   * Runs one engine call with a deadline: rejects with ERR_TIMEOUT after
   * `engineTimeoutMs`, at once with ERR_CONNECTION_CLOSED while the engine
   * counts as down (unless `always`: the heartbeats that find out whether it
   * is back), and turns the engine client's own errors into
   * ERR_CONNECTION_CLOSED (retryable; the message keeps the client's words).
   */
  private call<T>(what: string, op: () => Promise<T>, always = false): Promise<T> {
    const name = this.engine.name;
    if (!always && (this.upSince === 0 || this.stopped)) {
      return Promise.reject(
        new PointSubError("ERR_CONNECTION_CLOSED", `the cluster's engine (${name}) is unreachable: ${what} not sent`),
      );
    }
    return new Promise<T>((resolve, reject) => {
      // Due: looked at again after the turn's I/O (an answer read then settles the call first; a later reject is
      // a no-op). After a stall of this process the timers run before the socket is read: an answer that came in
      // time failed the call ERR_TIMEOUT.
      const timer = setTimeout(
        () =>
          setImmediate(() =>
            reject(
              new PointSubError(
                "ERR_TIMEOUT",
                `${name} did not answer ${what} within ${this.engineTimeoutMs} ms (engine frozen or unreachable)`,
              ),
            ),
          ),
        this.engineTimeoutMs,
      );
      let p: Promise<T>;
      try {
        p = op();
      } catch (err) {
        p = Promise.reject(err);
      }
      p.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(engineError(name, what, err));
        },
      );
    });
  }

  /** The engine as the shared store sees it: every call through {@link Cluster.call}. */
  private guarded(): ClusterEngine {
    const e = this.engine;
    return {
      name: e.name,
      hasKv: e.hasKv,
      connect: () => e.connect(),
      publish: (subject, data) => this.call("publish", () => e.publish(subject, data)),
      subscribe: (subject, onMessage) => e.subscribe(subject, onMessage),
      onState: (cb) => e.onState(cb),
      kvCreate: (key, value, ttlMs) => this.call("kvCreate", () => e.kvCreate(key, value, ttlMs)),
      kvGet: (key) => this.call("kvGet", () => e.kvGet(key)),
      kvUpdate: (key, value, revision, ttlMs) => this.call("kvUpdate", () => e.kvUpdate(key, value, revision, ttlMs)),
      kvDelete: (key, revision) => this.call("kvDelete", () => e.kvDelete(key, revision)),
      close: () => e.close(),
    };
  }

  /**
   * Emits `event` to the application's listeners; one that throws is counted, not thrown into the bus
   * reader or a timer, and the listeners after it still run (`Emitter`: eventemitter3's emit stopped at it).
   */
  private safeEmit<K extends keyof ClusterEvents>(event: K, ...args: ClusterEvents[K]): void {
    try {
      this.emit(event, ...args);
    } catch {
      this.counters.handlerErrors++;
    }
  }

  /**
   * Whether claims of node `id` (made by its `incarnation` at `madeAt`, when
   * the claim says) still hold: it is a member and that incarnation is not
   * known to be gone, or this node has not been connected long enough to
   * know. A node restarted under the same id (a service manager restarting it, a pod
   * with a fixed name) left its earlier run's claims behind, each held for
   * its lease (10 minutes by default) though no handler runs it any more:
   * they are released once the node's heartbeats name a newer incarnation
   * (one that started after the claim was made, or that replaced the
   * claim's) — or, for this node's own earlier run, once it has been up
   * `deadAfterMs` without hearing that run announce itself. Every claim of
   * an id that two processes announce at once holds.
   */
  private holds(id: string, incarnation?: string, madeAt?: number): boolean {
    const unsure = this.upSince === 0 || monotonic() - this.upSince < this.deadAfterMs;
    if (id === this.nodeId) {
      if (incarnation === undefined || incarnation === this.incarnation) return true;
      return (
        unsure || this.otherIncarnations.has(incarnation) || this.otherIncarnations.size >= MAX_REPORTED_DUPLICATES
      );
    }
    const m = this.members.get(id);
    if (m === undefined) return unsure;
    if (incarnation === undefined || incarnation === m.incarnation || m.twins) return true;
    if (m.superseded.includes(incarnation)) return false;
    // Made before the node's present incarnation started: by a process that is gone. (Else it may be a
    // newer one not heard from yet.)
    return !(madeAt !== undefined && m.since !== undefined && madeAt < m.since);
  }

  /** Called by the server's constructor (`createServer({ cluster })`). */
  join(local: ClusterLocal): ClusterMembership {
    if (this.local !== undefined)
      throw new PointSubError("ERR_INVALID_ARGUMENT", "a cluster instance serves one server");
    this.local = local;
    return {
      nodeId: this.nodeId,
      sessionIdPrefix: `${this.nodeId}.${this.incarnation.slice(0, SESSION_ID_INCARNATION)}.`,
      idempotencyStore: this.store,
      start: () => this.start(),
      stop: () => this.stop(),
      broadcast: (data, options) => this.broadcast(data, options),
      sendTo: (id, data) => this.sendTo(id, data),
      sessionsInfo: () => this.sessionsInfo(),
    };
  }

  private subject(kind: string): string {
    return `${this.prefix}.${kind}`;
  }

  private async start(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      // The client library loads first: the timeout counts reaching the engine.
      await this.engine.load?.();
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new PointSubError("ERR_TIMEOUT", `not joined within ${this.connectTimeoutMs} ms`)),
          this.connectTimeoutMs,
        );
      });
      await Promise.race([this.engine.connect(), timeout]);
      const onBus = (subject: string) => (data: Uint8Array) => {
        try {
          this.onBus(subject, data);
        } catch {
          // Whatever throws while one message is handled (the application's code included) is counted;
          // the engine's reader never sees it, so the node keeps receiving.
          this.counters.handlerErrors++;
        }
      };
      // The server may close meanwhile (its stop closed the engine before this connected): then nothing is
      // subscribed. Before, a server closed during its first listen stayed subscribed on the workers' relay
      // (sent every message of the bus for as long as its process lived) with its heartbeat timer running.
      // Within connectTimeoutMs too: an engine that stops answering once connected (Redis frozen just then)
      // held the listen for ever.
      for (const kind of ["members", "bc", `node.${this.nodeId}`]) {
        if (this.stopped) throw new PointSubError("ERR_CONNECTION_CLOSED", "the server closed while it joined");
        const subject = this.subject(kind);
        await Promise.race([this.engine.subscribe(subject, onBus(subject)), timeout]);
      }
      if (this.stopped) throw new PointSubError("ERR_CONNECTION_CLOSED", "the server closed while it joined");
    } catch (err) {
      await this.engine.close().catch(() => {});
      // A client library that is not installed (the engine's load) is no failure to reach the engine: as it
      // is, not the retryable ERR_CONNECT (before, "cannot join the cluster on redis: Cannot find package").
      if (err instanceof PointSubError && err.code === "ERR_INVALID_ARGUMENT") throw err;
      throw new PointSubError(
        "ERR_CONNECT",
        `cannot join the cluster on ${this.engine.name}: ${err instanceof Error ? err.message : String(err)}`,
      );
    } finally {
      clearTimeout(timer);
    }
    // Published by the workers' relay when this process dies, any time later: sealed as a will (no time window).
    const members = this.subject("members");
    this.engine.setWill?.(members, this.seal(members, encode({ t: "bye", n: this.nodeId, k: this.incarnation }), true));
    this.upSince = this.lastEcho = monotonic();
    this.engineUp = true;
    this.announce("hello");
    this.timer = setInterval(() => this.tick(), this.heartbeatMs);
    (this.timer as { unref?: () => void }).unref?.();
  }

  private async stop(): Promise<void> {
    if (this.stopped || this.leaving) return;
    this.leaving = true;
    // Keyed handlers still running here (past the server's close timeout): once this node has left, the other
    // nodes take over its claims and a retry ran the handler a second time while the first still ran. Their
    // keys get an answer instead, an error saying the outcome is unknown (within engineTimeoutMs).
    const why = `the handler was still running on node ${this.nodeId} when it left the cluster: its outcome is unknown (it is not run again)`;
    if (this.upSince !== 0 && this.store !== undefined) {
      const store = this.store;
      // Those the close aborted get up to SETTLE_GRACE_MS to end first (a retry of a handler that stopped runs).
      await this.call(
        "the answers of handlers still running",
        () => store.settleRunning(why, Math.min(SETTLE_GRACE_MS, this.engineTimeoutMs / 2)),
        true,
      ).catch(() => {});
    } else if (this.store !== undefined) {
      // The engine is down: nothing lands (each write fails at once), and the answers the store was writing
      // again are dropped, not tried until their leases end (10 min) after the server closed.
      await this.store.settleRunning(why, 0).catch(() => {});
    }
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.helloAnswer);
    for (const t of this.heldSends) clearTimeout(t);
    this.heldSends.clear();
    // Not to an engine known to be down; otherwise within engineTimeoutMs (a frozen engine does not answer).
    if (this.upSince !== 0) {
      const members = this.subject("members");
      const bye = this.seal(members, encode({ t: "bye", n: this.nodeId, k: this.incarnation }));
      await this.call("bye", () => this.engine.publish(members, bye), true).catch(() => {});
    }
    const closed = new PointSubError("ERR_CONNECTION_CLOSED", LEFT);
    for (const [id, p] of this.sends) {
      clearTimeout(p.timer);
      this.sends.delete(id);
      p.reject(closed);
    }
    for (const p of [...this.infos.values()]) p.done();
    for (const snap of this.snapshots.values()) clearTimeout(snap.timer);
    this.snapshots.clear();
    clearTimeout(this.sharedSnapshot?.timer);
    this.sharedSnapshot = undefined;
    await this.engine.close();
  }

  /** What the engine's client reports. Up counts only once this node's own `hello` comes back through it. */
  private engineState(up: boolean): void {
    if (this.stopped) return;
    this.engineUp = up;
    if (!up) this.setLive(false);
    else if (this.upSince === 0) {
      this.lastAttempt = monotonic();
      this.announce("hello", true);
    }
  }

  /** The engine counts as up (this node reads its own messages back) or down; emits `engine` on a change. */
  private setLive(live: boolean): void {
    if (live === (this.upSince !== 0) || this.stopped) return;
    const now = monotonic();
    this.upSince = live ? now : 0;
    this.unechoedSince = 0;
    if (live) this.lastEcho = now;
    else this.lastAttempt = now;
    this.safeEmit("engine", live);
    if (live) this.announce("hello"); // the others learn of this node again at once, and answer
  }

  /** One of this node's own heartbeats read back with echo key `k`. */
  private onEcho(k: string | undefined): void {
    if (k === undefined || !k.startsWith(`${this.incarnation}.`)) {
      // Not this node's: another one uses its id (an older one sends no key; this node's own always carry
      // one). Taken for this node's echo, a key-less heartbeat under its id — a publisher on the bus, an older
      // twin — kept the engine counted as up while none of this node's own heartbeats came back.
      this.counters.duplicateNodeIds++;
      const other = k === undefined ? "" : k.slice(0, k.indexOf("."));
      if (this.otherIncarnations.has(other)) this.otherIncarnations.set(other, monotonic());
      else if (this.otherIncarnations.size < MAX_REPORTED_DUPLICATES) {
        this.otherIncarnations.set(other, monotonic());
        this.safeEmit(
          "duplicateNodeId",
          new PointSubError(
            "ERR_INVALID_ARGUMENT",
            `another node announces this node's id "${this.nodeId}": the other nodes take the two for one (its session list and claims mix both); give every node its own nodeId`,
          ),
        );
      }
      return;
    }
    if (this.upSince !== 0) {
      this.lastEcho = monotonic();
      this.unechoedSince = 0;
    } else if (k === `${this.incarnation}.${this.probe}`) this.setLive(true);
  }

  /** Publishes a heartbeat; `probe`: a `hello` whose echo brings a down engine back (heartbeats stop while it is down). */
  private announce(t: "hb" | "hello", probe = false): void {
    const local = this.local;
    if (local === undefined || this.stopped) return;
    if (probe) this.probe++;
    else if (this.upSince === 0) return;
    const header = {
      t,
      n: this.nodeId,
      urls: local.urls,
      sessions: local.sessionCount,
      k: `${this.incarnation}.${this.probe}`,
      since: this.startedAt,
    };
    if (!probe && this.unechoedSince === 0) this.unechoedSince = monotonic();
    void this.publish(this.subject("members"), encode(header), true);
  }

  private tick(): void {
    this.announce("hb");
    if (this.checking) return;
    this.checking = true;
    // Checked after this turn's I/O: right after the event loop stalled (a GC pause, a blocking call),
    // heartbeats — this node's own echoes and the others' — may wait unread in the engine's socket, and
    // are not missing (a 2.5 s stall took a healthy engine for down and the other nodes for gone).
    setImmediate(() => {
      this.checking = false;
      this.checkLiveness();
    });
  }

  private checkLiveness(): void {
    if (this.stopped) return;
    const now = monotonic();
    if (this.upSince !== 0 && this.unechoedSince !== 0 && now - this.unechoedSince > this.deadAfterMs) {
      // Connected, but a heartbeat of this node's did not come back for deadAfterMs: the engine is frozen
      // or cut off without a reset. Down until a new connection carries this node's hello back.
      this.setLive(false);
      this.engine.reset?.();
    } else if (this.upSince === 0 && this.engineUp && now - this.lastAttempt > this.deadAfterMs) {
      // Reported up, yet the probe did not come back: reset again, and probe again.
      this.lastAttempt = now;
      this.engine.reset?.();
      this.announce("hello", true);
    }
    // Counted from this node's own last heartbeat read back while the engine counts as up: a frozen engine
    // silences every node at once, and the others' heartbeats stop a little before this node's first
    // unanswered one. Counted from now, they were timed out a tick or two before the engine counted as down:
    // `nodeLeft`, and a sendTo to a session of theirs failed ERR_NOT_FOUND though it was open all along.
    const deadline = (this.upSince === 0 ? now : Math.min(now, this.lastEcho)) - this.deadAfterMs;
    for (const [id, m] of this.members) if (m.heardAt < deadline) this.removeMember(id, "timeout");
  }

  private removeMember(id: string, reason: "left" | "timeout"): void {
    if (!this.members.delete(id)) return;
    const gone = new PointSubError(
      "ERR_CONNECTION_CLOSED",
      `node ${id} left the cluster before answering (the message may or may not have reached the session; not retried)`,
    );
    for (const [rid, p] of this.sends) {
      if (p.node !== id) continue;
      clearTimeout(p.timer);
      this.sends.delete(rid);
      p.reject(gone);
    }
    for (const p of this.infos.values()) if (p.waiting.has(id)) p.finish(id);
    const snap = this.snapshots.get(id);
    if (snap !== undefined) {
      clearTimeout(snap.timer);
      this.snapshots.delete(id);
    }
    this.safeEmit("nodeLeft", id, reason);
  }

  /** `message` as it crosses the bus on `subject`: signed when the cluster has a secret. */
  private seal(subject: string, message: Uint8Array, will = false): Uint8Array {
    return this.auth === undefined ? message : this.auth.seal(subject, message, will);
  }

  /** Publishes `message` on `subject`: resolves to undefined once the engine took it, else to why not (counted, emitted). */
  private async publish(subject: string, message: Uint8Array, always = false): Promise<Error | undefined> {
    try {
      const data = this.seal(subject, message);
      await this.call("publish", () => this.engine.publish(subject, data), always);
      return undefined;
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.counters.busErrors++;
      if (this.listenerCount("busError") !== 0) this.safeEmit("busError", error);
      return error;
    }
  }

  /** What every message id of this process starts with. */
  private get ownIds(): string {
    return `${this.nodeId}:${this.incarnation}:`;
  }

  private msgId(): string {
    return `${this.ownIds}${(this.nextMsg++).toString(36)}`;
  }

  /** True the first time message id `i` is seen (bounded memory: the oldest ids are forgotten). */
  private firstSight(i: string): boolean {
    if (this.seen.has(i)) {
      this.counters.duplicates++;
      return false;
    }
    this.seen.add(i);
    if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.values().next().value as string);
    return true;
  }

  /**
   * The largest payload crossing the bus: `maxBusMessageBytes`, and never over the engine's largest message
   * less room for the header (NATS: its max_payload). Before, a maxBusMessageBytes over it let a payload
   * through that the engine refused: a broadcast never reached the other nodes, a sendTo failed
   * ERR_CONNECTION_CLOSED "the cluster's engine is unreachable" (retryable, for ever), a page of the
   * session list was lost.
   */
  private busBytes(): number {
    const engine = this.engine.maxMessageBytes;
    return engine === undefined
      ? this.maxBusBytes
      : Math.min(this.maxBusBytes, engine - INFO_HEADER_ROOM - (this.auth === undefined ? 0 : SEAL_OVERHEAD));
  }

  private checkSize(data: Uint8Array): void {
    const max = this.busBytes();
    if (data.length > max) {
      const what =
        max < this.maxBusBytes
          ? `the ${this.engine.name} engine's largest message (${this.engine.maxMessageBytes} bytes, with room for the header)`
          : `the cluster's maxBusMessageBytes (${this.maxBusBytes})`;
      throw new PointSubError(
        "ERR_MESSAGE_TOO_LARGE",
        `${data.length} bytes is over ${what}: large messages go point to point`,
      );
    }
  }

  private async broadcast(data: Uint8Array, options: ServerBroadcastOptions): Promise<BroadcastResult> {
    const local = this.local as ClusterLocal;
    const { filter, filterArg } = options;
    if (typeof filter === "function") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        "a filter function cannot run on other nodes: register it in the cluster's filters and pass its name (or broadcast with local: true)",
      );
    }
    // A string on every node: another node got String(filterArg) and this one the value as given (a number
    // 5 here, "5" there; an object "[object Object]" there).
    if (filterArg !== undefined && typeof filterArg !== "string") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `a broadcast's filterArg must be a string, not ${typeof filterArg}`,
      );
    }
    const named = filter === undefined ? undefined : this.filters.get(filter);
    if (filter !== undefined && named === undefined) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `no broadcast filter named ${JSON.stringify(String(filter))}`);
    }
    this.checkSize(data);
    const header: BusHeader = {
      t: "bc",
      n: this.nodeId,
      // Unguessable, as a sendTo's: every node drops an id it has seen, and a publisher on the bus that sent
      // broadcasts ahead under the numbered ids this node would use next had its real ones dropped everywhere.
      i: `${this.msgId()}.${randomId()}`,
      ...(filter === undefined ? {} : { f: filter }),
      ...(filterArg === undefined ? {} : { a: filterArg }),
      // Infinity is not JSON (it crossed as null, and the other nodes used the default mark): "inf".
      ...(options.highWaterMark === undefined
        ? {}
        : { hw: Number.isFinite(options.highWaterMark) ? options.highWaterMark : "inf" }),
      ...(options.slowSessions === undefined ? {} : { sl: options.slowSessions }),
    };
    const message = encode(header, data);
    // What the other nodes would drop (a header over MAX_HEADER_BYTES is malformed there) or the engine refuse
    // is refused here, before any session gets it: a filterArg of 178 KB (a list of session ids) resolved, and
    // reached no session of any other node.
    const headerBytes = message.length - data.length - 4;
    const engineMax = this.engine.maxMessageBytes;
    const sealed = message.length + (this.auth === undefined ? 0 : SEAL_OVERHEAD);
    if (headerBytes > MAX_HEADER_BYTES || (engineMax !== undefined && sealed > engineMax)) {
      throw new PointSubError(
        "ERR_MESSAGE_TOO_LARGE",
        `the broadcast's header (its filterArg: ${header.a?.length ?? 0} characters) is ${headerBytes} bytes, over the bus's ${MAX_HEADER_BYTES}${engineMax === undefined ? "" : ` or, with the payload, the ${this.engine.name} engine's largest message (${engineMax} bytes)`}`,
      );
    }
    // This node's sessions first: the same filter semantics as on the others (a throw leaves the session out).
    const result = local.broadcast(data, {
      filter: named === undefined ? undefined : this.safeFilter(named, filterArg),
      highWaterMark: options.highWaterMark,
      slowSessions: options.slowSessions,
    });
    // Not after its server closed: a busError ("the engine is unreachable") for each, the engine being up.
    if (this.stopped) return result;
    this.counters.broadcastsSent++;
    void this.publish(this.subject("bc"), message);
    return result;
  }

  /** A named filter for one broadcast: a throw is counted and leaves that session out. */
  private safeFilter(named: NamedFilter, arg: string | undefined): (s: Connection) => boolean {
    return (s) => {
      try {
        return named(s, arg) === true;
      } catch {
        this.counters.handlerErrors++;
        return false;
      }
    };
  }

  private sendTo(id: string, data: Uint8Array): Promise<void> {
    // After its server closed: "the cluster's engine is unreachable" (retryable, though no retry could ever
    // send it), and a busError counted and emitted for a publish never tried.
    if (this.stopped) return Promise.reject(new PointSubError("ERR_CONNECTION_CLOSED", LEFT));
    const dot = typeof id === "string" ? id.indexOf(".") : -1;
    const node = dot > 0 ? id.slice(0, dot) : "";
    // An id longer than any node makes names no session (its header, over the bus's limit, was dropped by
    // the target node as malformed: ERR_TIMEOUT after requestTimeoutMs, which a retry could never change).
    const tooLong = dot > 0 && id.length > MAX_SESSION_ID_CHARS;
    if (dot > 0 && !tooLong && !this.members.has(node) && node !== this.nodeId && !this.stopped) {
      // The engine is down: the other nodes were forgotten for not being heard, not for leaving. ERR_NOT_FOUND
      // said the session was gone (not retryable) while it may well be open on a node this one cannot reach.
      if (this.upSince === 0) {
        return Promise.reject(
          new PointSubError("ERR_CONNECTION_CLOSED", "the cluster's engine is unreachable: sendTo not sent"),
        );
      }
      // (Re)joined less than deadAfterMs ago: a node not heard from yet may be there (the others answer this
      // node's hello, or beat, within a heartbeat). Right after an outage every other node was unknown.
      if (NODE.test(node) && monotonic() - this.upSince < this.deadAfterMs) {
        return Promise.reject(
          new PointSubError(
            "ERR_CONNECTION_CLOSED",
            `this node has not heard from node ${node} since it (re)joined the cluster ${Math.round(monotonic() - this.upSince)} ms ago: sendTo not sent`,
          ),
        );
      }
    }
    // A session of another process given this node's id (a configuration error): sent on this node's subject,
    // which that process reads too; this one leaves it to that one (twinHolds). It was ERR_NOT_FOUND. Within
    // deadAfterMs of (re)joining, such a process may not have been heard yet: sent too, and answered by it or,
    // once the window ends, by this one's onSend (ERR_NOT_FOUND at once said an open session was gone).
    const twin = node === this.nodeId && !tooLong && (this.twinHolds(id) || this.twinUnsure(id) > 0);
    if ((!this.members.has(node) && !twin) || tooLong) {
      const shown = typeof id === "string" ? JSON.stringify(id.slice(0, 100)) : typeof id;
      return Promise.reject(new PointSubError("ERR_NOT_FOUND", `no open session with id ${shown} in the cluster`));
    }
    try {
      this.checkSize(data);
    } catch (err) {
      return Promise.reject(err);
    }
    // Unguessable: the ids before it are numbered, and the incarnation is in every heartbeat, so any publisher on
    // the bus acked a sendTo it never saw (an older node's ack names no node: the id is what it must know).
    const i = `${this.msgId()}.${randomId()}`;
    this.counters.sendsSent++;
    return new Promise<void>((resolve, reject) => {
      // Due: looked at again after the turn's I/O. After a stall of this process the timers run before the
      // socket is read: an ack that came in time failed the sendTo ERR_TIMEOUT (it had arrived).
      const timer = setTimeout(
        () =>
          setImmediate(() => {
            if (this.sends.get(i)?.timer !== timer) return;
            this.sends.delete(i);
            reject(
              new PointSubError(
                "ERR_TIMEOUT",
                `node ${node} did not confirm sendTo within ${this.requestTimeoutMs} ms (the message may or may not have arrived; not retried)`,
              ),
            );
          }),
        this.requestTimeoutMs,
      );
      this.sends.set(i, { node, resolve, reject, timer });
      void this.publish(this.subject(`node.${node}`), encode({ t: "to", n: this.nodeId, i, s: id }, data)).then(
        (err) => {
          // One that may still land (not answered within engineTimeoutMs: the client writes it when a frozen
          // engine resumes, and the target delivers it) is settled by its ack or its timeout ("may or may not
          // have arrived"): rejected as "not sent" (retryable), a retry delivered it twice.
          if (err === undefined || !this.sends.has(i) || mayHaveLanded(err)) return;
          clearTimeout(timer);
          this.sends.delete(i);
          reject(new PointSubError("ERR_CONNECTION_CLOSED", "the cluster's engine is unreachable: sendTo not sent"));
        },
      );
    });
  }

  /**
   * Every node's sessions. Calls while a list is being gathered share it
   * (each gets its own array): a node gathers one list at a time, so
   * callers asking at once do not multiply what crosses the bus.
   */
  private sessionsInfo(): Promise<ClusterSessionInfo[]> {
    this.gathering ??= this.gather().finally(() => {
      this.gathering = undefined;
    });
    return this.gathering.then((list) => list.slice());
  }

  /**
   * Asks the other nodes for their sessions, a page at a time: the next
   * page once the one before arrived, from at most
   * {@link INFO_NODES_AT_ONCE} nodes at once, so the engine holds at most
   * that many pages for this node (every page at once — a 40 MB list, or
   * 20 lists of 4 MB — went over Redis's output limit for a subscriber, or
   * NATS's for a slow consumer: the engine cut this node off). A node that
   * does not answer a page within `requestTimeoutMs` is left out (with the
   * pages it sent), and so is every node whose list is not complete within
   * `listTimeoutMs` of the call: a node answering each page just before
   * `requestTimeoutMs`, a session a page, held the list for up to 262,144
   * pages (15 days at the defaults).
   */
  private gather(): Promise<ClusterSessionInfo[]> {
    const local = this.local as ClusterLocal;
    const infos: ClusterSessionInfo[] = local.sessionsInfo().map((s) => ({ ...s, node: this.nodeId }));
    if (this.members.size === 0) return Promise.resolve(infos);
    // Unguessable, as a sendTo's: a page names the request it answers, and numbered ids let any publisher on
    // the bus answer for a node with sessions of its choosing (or an empty last page, leaving it out).
    const i = `${this.msgId()}.${randomId()}`;
    return new Promise((resolve) => {
      // Due: looked at again after the turn's I/O (as each page's wait, expectPage).
      const deadline = setTimeout(
        () =>
          setImmediate(() => {
            if (this.infos.get(i) === p) p.done();
          }),
        this.listTimeoutMs,
      );
      const p: PendingInfo = {
        infos,
        bytes: 0,
        queued: [...this.members.keys()],
        ids: new Map(),
        waiting: new Map(),
        finish: (node) => {
          const w = p.waiting.get(node);
          clearTimeout(w?.timer);
          clearTimeout(w?.ask);
          p.waiting.delete(node);
          this.askNext(i, p);
        },
        done: () => {
          clearTimeout(deadline);
          for (const w of p.waiting.values()) {
            clearTimeout(w.timer);
            clearTimeout(w.ask);
          }
          p.waiting.clear();
          p.queued.length = 0;
          this.infos.delete(i);
          resolve(p.infos);
        },
      };
      this.infos.set(i, p);
      this.askNext(i, p);
    });
  }

  /** Asks the next queued nodes for their first page, up to {@link INFO_NODES_AT_ONCE} at once; done when none is left. */
  private askNext(i: string, p: PendingInfo): void {
    while (p.waiting.size < INFO_NODES_AT_ONCE && p.queued.length !== 0) {
      const node = p.queued.shift() as string;
      if (this.members.has(node)) this.askPage(i, p, node, 0);
    }
    if (p.waiting.size === 0 && this.infos.get(i) === p) p.done();
  }

  /**
   * Asks `node` for the page of request `i` at cursor `c` (a first page once this node's budget toward it
   * allows: {@link FIRST_PAGES_BURST}); left out if it does not come within `requestTimeoutMs` of the ask.
   */
  private askPage(i: string, p: PendingInfo, node: string, c: number): void {
    let id = p.ids.get(node);
    if (id === undefined) {
      id = `${i}.${randomId()}`;
      p.ids.set(node, id);
    }
    const wait = c === 0 ? this.firstPageWait(node) : 0;
    this.expectPage(p, node, true, wait);
    const w = p.waiting.get(node);
    const ask = () => {
      if (p.waiting.get(node) !== w) return; // done meanwhile
      void this.publish(this.subject(`node.${node}`), encode({ t: "info", n: this.nodeId, i: id, c })).then((err) => {
        if (err !== undefined && p.waiting.get(node) === w) p.finish(node); // not sent: nothing will come
      });
    };
    if (wait <= 0) ask();
    else if (w !== undefined) w.ask = setTimeout(ask, wait);
  }

  /** Waits `requestTimeoutMs` (again, after `askIn` ms) for `node`'s next page; past it the node is left out. */
  private expectPage(p: PendingInfo, node: string, asked: boolean, askIn = 0): void {
    const before = p.waiting.get(node);
    clearTimeout(before?.timer);
    clearTimeout(before?.ask);
    // Due: looked at again after the turn's I/O. After a stall of this process the timers run before the socket
    // is read: a node whose page came in time was left out of the list.
    const timer = setTimeout(
      () =>
        setImmediate(() => {
          if (p.waiting.get(node)?.timer === timer) p.finish(node);
        }),
      askIn + this.requestTimeoutMs,
    );
    p.waiting.set(node, { timer, asked });
  }

  /** How long this node waits before it asks `node` for a first page (0: at once), the ask counted. */
  private firstPageWait(node: string): number {
    const now = performance.now();
    const interval = FULL_LIST_MS;
    const tat = this.firstPagesOut.get(node) ?? now;
    const at = Math.max(now, tat - (FIRST_PAGES_BURST - 1) * interval);
    if (!this.firstPagesOut.has(node)) forgetFull(this.firstPagesOut, now, true);
    this.firstPagesOut.set(node, Math.max(tat, at) + interval);
    return at - now;
  }

  /** Whether a first page asked by `from` is within its budget (counted if so; else dropped and counted). */
  private admitFirstPage(from: string): boolean {
    const now = performance.now();
    const interval = FULL_LIST_MS;
    const tat = this.firstPagesIn.get(from);
    // One more than an asker allows itself: its asks may come closer together than it sent them.
    if (tat !== undefined && tat - now > FIRST_PAGES_BURST * interval) {
      this.counters.listAsksDropped++;
      return false;
    }
    if (tat === undefined && !forgetFull(this.firstPagesIn, now, false)) {
      this.counters.listAsksDropped++;
      return false;
    }
    this.firstPagesIn.set(from, Math.max(tat ?? now, now) + interval);
    return true;
  }

  private onBus(subject: string, data: Uint8Array): void {
    if (this.stopped) return;
    let signer: string | undefined;
    let will = false;
    if (this.auth !== undefined) {
      const opened = this.auth.open(subject, data);
      if (!opened.ok) {
        this.rejected(opened.why, opened.node, opened.skewMs, data);
        return;
      }
      signer = opened.node;
      will = opened.will;
      data = opened.message;
    } else if (isSealed(data)) {
      this.rejected("signed", undefined, undefined, data);
      return;
    }
    const m = decode(data);
    if (m === undefined) {
      this.counters.malformed++;
      return;
    }
    const h = m.header;
    if (signer !== undefined && (h.n !== signer || (will && h.t !== "bye"))) {
      // Signed by one node in another's name (only a node with the secret can), or a will that is not a bye.
      this.counters.malformed++;
      return;
    }
    if (h.t !== "ack" && !NODE.test(h.n)) {
      // Not a node id. A sendTo's ack and a session-list page go to the subject `node.<n>`: an `n` with a space
      // or CR LF was written into the engine's protocol as it came (NATS: "PUB <subject> <size>"), so a
      // publisher on the bus made this node publish what it chose, or dropped its connection.
      this.counters.malformed++;
      return;
    }
    if (this.upSince === 0 && (h.t === "bc" || h.t === "to")) {
      // Read while the engine counts as down: from before or during an outage, late. Not delivered.
      this.counters.stale++;
      return;
    }
    switch (h.t) {
      case "hb":
      case "hello":
        if (h.n !== this.nodeId) this.onHeartbeat(h);
        else this.onEcho(typeof h.k === "string" ? h.k : undefined);
        return;
      case "bye": {
        // Not a bye of the process the member is now (an earlier one, under the same id, closing late): it
        // removed the new one, whose sendTos then failed and whose running claims the other nodes took over.
        const m = this.members.get(h.n);
        const now = m?.incarnation;
        const b = m?.before;
        if (
          m?.twins === true &&
          typeof h.k === "string" &&
          h.k === now &&
          b !== undefined &&
          b.incarnation !== now &&
          monotonic() - b.heardAt <= this.deadAfterMs
        ) {
          // Two processes under its id take turns (an earlier run closing late beside the new one, or two given one
          // id), and the other was heard within deadAfterMs: the node stays, as that process. Removed, the other's
          // sessions were unreachable until its next heartbeat (sendTos pending to it failed, new ones
          // ERR_NOT_FOUND, not retryable).
          const superseded = m.superseded.includes(h.k)
            ? m.superseded
            : [...m.superseded.slice(1 - SUPERSEDED_MAX), h.k];
          this.members.set(h.n, { ...m, ...b, superseded, before: undefined });
        } else if (h.n !== this.nodeId && (typeof h.k !== "string" || now === undefined || h.k === now)) {
          this.removeMember(h.n, "left");
        } else if (h.n === this.nodeId && typeof h.k === "string" && h.k !== this.incarnation) {
          // Another process under this node's id left (an earlier run closing late): a sendTo to a session of
          // its run was left to it for deadAfterMs more (twinHolds), unanswered, and failed ERR_TIMEOUT, not
          // ERR_NOT_FOUND; and its claims held as a live process's.
          this.otherIncarnations.delete(h.k);
        }
        return;
      }
      case "bc":
        // This node's own, read back, is skipped by its id, not its node: another process given this node's id
        // (a configuration error) had its broadcasts skipped here, and this node's sessions never got them.
        if (!h.i.startsWith(this.ownIds) && this.firstSight(h.i)) this.onBroadcast(h, m.payload);
        return;
      case "to":
        if (this.firstSight(h.i)) this.onSend(h.n, h.i, h.s, m.payload);
        return;
      case "ack": {
        const p = this.sends.get(h.i);
        if (p === undefined) return;
        if (h.n !== undefined && h.n !== p.node) {
          // Only the node the sendTo went to answers it (an older one names none; the id is not guessable).
          this.counters.foreignAcks++;
          return;
        }
        clearTimeout(p.timer);
        this.sends.delete(h.i);
        if (h.code === undefined) p.resolve();
        else p.reject(new PointSubError(isErrorCode(h.code) ? h.code : "ERR_HANDLER", String(h.message ?? "")));
        return;
      }
      case "info":
        this.onInfoRequest(h.n, h.i, h.c);
        return;
      case "infos":
        this.onInfoPage(h.n, h.i, h.last, h.c, m.payload);
        return;
    }
  }

  /** A bus message dropped for its signature (see the `secret` option): counted, and reported at most once per kind every 10 s. */
  private rejected(why: Rejection, node: string | undefined, skewMs: number | undefined, data: Uint8Array): void {
    if (why === "replayed") this.counters.replayed++;
    else this.counters.unauthenticated++;
    const now = performance.now();
    const last = this.authReported.get(why);
    if ((last !== undefined && now - last < AUTH_REPORT_MS) || this.listenerCount("unauthenticated") === 0) return;
    this.authReported.set(why, now);
    // Who it says it is from: the seal's node, or an unsigned message's own header (neither proven).
    const from = node ?? (isSealed(data) ? sealedBy(data) : decode(data)?.header.n);
    const as = from === undefined ? "" : ` (sent as node ${JSON.stringify(from.slice(0, 32))})`;
    const text =
      why === "unsigned"
        ? `dropped an unsigned message on the cluster's bus${as}: this node has a secret, so every node needs the same one (a node without it is cut off; or a publisher that is not a node)`
        : why === "signed"
          ? `dropped a signed message on the cluster's bus${as}: its node has a secret and this one has none (give every node the same secret)`
          : why === "bad-signature"
            ? `dropped a message on the cluster's bus whose signature does not match this node's secret${as}: a node with another secret is cut off from this one (or a forgery)`
            : skewMs !== undefined
              ? `dropped a message on the cluster's bus${as} sent ${Math.round(skewMs / 1000)} s away from this node's clock (more than ${REPLAY_WINDOW_MS / 1000} s): a replay, or the nodes' clocks disagree`
              : `dropped a replayed message on the cluster's bus${as} (seen before)`;
    this.safeEmit("unauthenticated", new PointSubError("ERR_UNAUTHORIZED", text));
  }

  private onHeartbeat(h: Heartbeat): void {
    if (!NODE.test(h.n) || !Number.isFinite(h.sessions)) {
      this.counters.malformed++;
      return;
    }
    const known = this.members.get(h.n);
    if (known === undefined && this.members.size >= MAX_CLUSTER_NODES) {
      this.counters.ignoredNodes++;
      return;
    }
    const urls = h.urls.filter((u): u is string => typeof u === "string").slice(0, 16);
    const dot = typeof h.k === "string" ? h.k.indexOf(".") : -1;
    const said = dot > 0 ? (h.k as string).slice(0, dot) : undefined;
    const incarnation = said !== undefined && INCARNATION.test(said) ? said : known?.incarnation;
    let superseded = known?.superseded ?? [];
    let twins = known?.twins ?? false;
    let before = known?.before;
    if (known?.incarnation !== undefined && incarnation !== known.incarnation) {
      // Restarted under the same id; or, if this one was seen before, two processes take turns.
      if (superseded.includes(incarnation as string)) twins = true;
      else superseded = [...superseded.slice(1 - SUPERSEDED_MAX), known.incarnation];
      const { urls, sessions, heardAt, lastSeen, since } = known;
      before = { incarnation: known.incarnation, urls, sessions, heardAt, lastSeen, since };
    }
    const since =
      incarnation === said && typeof h.since === "number" && Number.isFinite(h.since) ? h.since : known?.since;
    const m: Member = {
      urls,
      sessions: h.sessions,
      lastSeen: Date.now(),
      heardAt: monotonic(),
      incarnation,
      since,
      superseded,
      twins,
      before,
    };
    this.members.set(h.n, m);
    if (known === undefined) {
      this.safeEmit("nodeJoined", { id: h.n, urls, sessions: h.sessions, lastSeen: m.lastSeen, self: false });
    }
    if (h.t === "hello") this.answerHello();
  }

  /**
   * Answers a `hello` with a heartbeat (the newcomer learns of this node at
   * once), at most once per quarter of `heartbeatMs`: hellos meanwhile share
   * one answer at the end of that window (every node reads every heartbeat),
   * so a flood of hellos is not answered by every node, each time.
   */
  private answerHello(): void {
    const window = this.heartbeatMs / 4;
    const wait = this.helloAnsweredAt + window - performance.now();
    if (wait <= 0) {
      this.helloAnsweredAt = performance.now();
      this.announce("hb");
    } else if (this.helloAnswer === undefined) {
      this.helloAnswer = setTimeout(() => {
        this.helloAnswer = undefined;
        this.helloAnsweredAt = performance.now();
        this.announce("hb");
      }, wait);
      (this.helloAnswer as { unref?: () => void }).unref?.();
    }
  }

  private onBroadcast(h: BusHeader & { t: "bc" }, payload: Uint8Array): void {
    this.counters.broadcastsReceived++;
    let filter: ((s: Connection) => boolean) | undefined;
    if (h.f !== undefined) {
      const named = this.filters.get(h.f);
      if (named === undefined) {
        this.counters.unknownFilters++;
        return;
      }
      filter = this.safeFilter(named, h.a);
    }
    // As the sender's own sessions had it: 0 (skip any session with bytes queued) and Infinity included.
    const hw = h.hw === "inf" ? Number.POSITIVE_INFINITY : typeof h.hw === "number" && h.hw >= 0 ? h.hw : undefined;
    const sl = h.sl === "disconnect" ? "disconnect" : undefined;
    (this.local as ClusterLocal).broadcast(payload, { filter, highWaterMark: hw, slowSessions: sl });
  }

  private onSend(from: string, i: string, session: string, payload: Uint8Array): void {
    this.counters.sendsReceived++;
    // Another process announcing this node's id (a configuration error) reads the same sendTo: a session id
    // naming its run is its own, and it answers. Its twin's ERR_NOT_FOUND, sent at once, was often the ack
    // taken: the sendTo failed "no open session", not retryable, though the session got the message.
    if (this.twinHolds(session)) return;
    // Another run of this node's id, within deadAfterMs of this node (re)joining: a process under its id may hold
    // it and not be heard yet (its next heartbeat; a twin does not answer a hello under its own id). Answered
    // once that window ends, unless that process was heard meanwhile: ERR_NOT_FOUND at once was often the ack
    // taken, though the session got the message (right after a twin started, or came back from an outage).
    const wait = this.twinUnsure(session);
    if (wait > 0 && this.heldSends.size < MAX_HELD_SENDS) {
      const timer = setTimeout(() => {
        this.heldSends.delete(timer);
        // Never this process's session (another run): the server answers ERR_NOT_FOUND, without the payload.
        if (!this.stopped && !this.twinHolds(session)) this.answerSend(from, i, session, new Uint8Array(0));
      }, Math.ceil(wait));
      (timer as { unref?: () => void }).unref?.();
      this.heldSends.add(timer);
      return;
    }
    this.answerSend(from, i, session, payload);
  }

  /** Hands a `sendTo` read from the bus to this node's server, and acks what it says. */
  private answerSend(from: string, i: string, session: string, payload: Uint8Array): void {
    const ack = (code?: string, message?: string) =>
      void this.publish(
        this.subject(`node.${from}`),
        encode(code === undefined ? { t: "ack", n: this.nodeId, i } : { t: "ack", n: this.nodeId, i, code, message }),
      );
    (this.local as ClusterLocal).sendTo(session, payload.slice()).then(
      () => ack(),
      (err: unknown) => (err instanceof PointSubError ? ack(err.code, err.message) : ack("ERR_HANDLER", String(err))),
    );
  }

  /** The run (`<nodeId>.<run>.<n>`) session id `session` names if it is a run of this node's id other than this process's. */
  private otherRun(session: string): string | undefined {
    if (!session.startsWith(`${this.nodeId}.`)) return undefined;
    const from = this.nodeId.length + 1;
    const run = session.slice(from, from + SESSION_ID_INCARNATION);
    if (session[from + SESSION_ID_INCARNATION] !== "." || run === this.incarnation.slice(0, SESSION_ID_INCARNATION)) {
      return undefined;
    }
    return run;
  }

  /** Whether session id `session` names the run of another process heard under this node's id within `deadAfterMs`. */
  private twinHolds(session: string): boolean {
    const run = this.otherIncarnations.size === 0 ? undefined : this.otherRun(session);
    if (run === undefined) return false;
    const now = monotonic();
    for (const [other, at] of this.otherIncarnations) {
      if (other.startsWith(run) && now - at <= this.deadAfterMs) return true;
    }
    return false;
  }

  /**
   * How long (ms) this node is still within `deadAfterMs` of (re)joining when session id `session` names another
   * run of its id (a process under the same id, not heard yet, may hold it); else 0.
   */
  private twinUnsure(session: string): number {
    if (this.upSince === 0) return 0;
    const left = this.deadAfterMs - (monotonic() - this.upSince);
    return left > 0 && this.otherRun(session) !== undefined ? left : 0;
  }

  /**
   * Answers a session list in pages of at most {@link INFO_PAGE} sessions
   * and `maxBusMessageBytes` (a page over the engine's limit — NATS: 1 MiB —
   * was lost, and the asker got an empty list after its timeout). A session
   * whose info alone is over the limit is left out and counted as malformed.
   * With a cursor `c`, one page: the first (`c` 0) takes this node's
   * sessions as they are, each later one continues from the cursor of the
   * page before (one list per asking node is kept, for `requestTimeoutMs`
   * after its last page was asked for; a cursor that is not the expected one
   * gets an empty last page and drops it). Without one (an older node), every
   * page at once.
   */
  private onInfoRequest(from: string, i: string, c: unknown): void {
    const subject = this.subject(`node.${from}`);
    const room = Math.max(INFO_HEADER_ROOM, this.busBytes() - INFO_HEADER_ROOM);
    const send = (page: Uint8Array[], last: boolean, next?: number) => {
      // "[" + the infos with a comma between each + "]" (2 bytes for an empty page: 1 made it "[", not JSON).
      const body = new Uint8Array(page.reduce((n, p) => n + p.length + 1, 2));
      body[0] = 0x5b; // [
      let at = 1;
      for (let k = 0; k < page.length; k++) {
        if (k > 0) body[at++] = 0x2c; // ,
        body.set(page[k], at);
        at += page[k].length;
      }
      body[at++] = 0x5d; // ]
      const header: BusHeader =
        next === undefined ? { t: "infos", n: this.nodeId, i, last } : { t: "infos", n: this.nodeId, i, last, c: next };
      void this.publish(subject, encode(header, body.subarray(0, at)));
    };
    /** The JSON of a session's info, or undefined (counted) when it could never fit in a page. */
    const json = (info: ConnectionInfo): Uint8Array | undefined => {
      const one = utf8.encode(JSON.stringify(jsonSafe(info)));
      if (one.length + 2 <= room) return one;
      this.counters.malformed++;
      return undefined;
    };
    if (c === undefined) {
      // The whole list at once (a node of an earlier version asks so): at most one per asking node a second.
      // Each is every session serialised and published, so a flood of them from one publisher on the bus
      // was this node's CPU and the bus's bandwidth times its sessions; a node's own asks come one at a time.
      // The table full of nodes asked within the second: dropped (forgetting the oldest let ids taking turns
      // past MAX_CLUSTER_NODES each be forgotten before its next ask, and every ask got a whole list).
      const now = performance.now();
      const next = this.fullLists.get(from);
      if ((next !== undefined && now < next) || (next === undefined && !forgetFull(this.fullLists, now, false))) {
        this.counters.listAsksDropped++;
        return;
      }
      this.fullLists.set(from, now + FULL_LIST_MS);
      let page: Uint8Array[] = [];
      let bytes = 2;
      for (const info of (this.local as ClusterLocal).sessionsInfo()) {
        const one = json(info);
        if (one === undefined) continue;
        if (page.length === INFO_PAGE || bytes + one.length + 1 > room) {
          send(page, false);
          page = [];
          bytes = 2;
        }
        page.push(one);
        bytes += one.length + 1;
      }
      send(page, true);
      return;
    }
    if (c === 0 && !this.admitFirstPage(from)) return;
    let snap = this.snapshots.get(from);
    if (c === 0) {
      if (snap !== undefined) clearTimeout(snap.timer);
      if (snap === undefined && this.snapshots.size >= MAX_CLUSTER_NODES) {
        const [oldest, s] = this.snapshots.entries().next().value as [string, InfoSnapshot];
        clearTimeout(s.timer);
        this.snapshots.delete(oldest);
      }
      this.snapshots.delete(from);
      snap = { i, sessions: this.sessionsSnapshot(), at: 0, timer: undefined };
      this.snapshots.set(from, snap);
    } else if (snap === undefined || snap.i !== i || snap.at !== c) {
      // Not the page the list is at (a repeat, an expired list, a cursor not given): the list ends here.
      if (snap !== undefined) {
        clearTimeout(snap.timer);
        this.snapshots.delete(from);
      }
      send([], true, 0);
      return;
    } else clearTimeout(snap.timer);
    const page: Uint8Array[] = [];
    let bytes = 2;
    let at = snap.at;
    for (; at < snap.sessions.length && page.length < INFO_PAGE; at++) {
      const s = snap.sessions[at];
      if (s.state === "closed") continue;
      const one = json(s.info());
      if (one === undefined) continue;
      if (page.length !== 0 && bytes + one.length + 1 > room) break;
      page.push(one);
      bytes += one.length + 1;
    }
    const last = at >= snap.sessions.length;
    if (last) this.snapshots.delete(from);
    else {
      snap.at = at;
      const kept = snap;
      kept.timer = setTimeout(() => {
        if (this.snapshots.get(from) === kept) this.snapshots.delete(from);
      }, this.requestTimeoutMs);
    }
    send(page, last, at);
  }

  /**
   * This node's sessions for a list: the copy taken for another list within SNAPSHOT_SHARE_MS, if no session
   * opened since (those closed are skipped as their page goes). The count alone was not enough: one session
   * closed and one opened left it the same, and the lists sharing the copy missed the new one.
   */
  private sessionsSnapshot(): Connection[] {
    const local = this.local as ClusterLocal;
    const shared = this.sharedSnapshot;
    const opened = local.sessionsOpened;
    if (
      shared !== undefined &&
      (opened !== undefined ? shared.opened === opened : shared.sessions.length === local.sessionCount)
    ) {
      return shared.sessions;
    }
    clearTimeout(shared?.timer);
    const sessions = local.sessions();
    // Dropped after the window: a copy kept longer would hold closed sessions for nothing.
    const timer = setTimeout(() => {
      if (this.sharedSnapshot?.sessions === sessions) this.sharedSnapshot = undefined;
    }, SNAPSHOT_SHARE_MS);
    (timer as { unref?: () => void }).unref?.();
    this.sharedSnapshot = { sessions, opened, timer };
    return sessions;
  }

  private onInfoPage(from: string, i: string, last: boolean, c: unknown, payload: Uint8Array): void {
    // The page's id is the one its node was given: the list's, a dot, a random part.
    const list = i.slice(0, i.lastIndexOf("."));
    const p = this.infos.get(list);
    if (p === undefined || p.ids.get(from) !== i || !p.waiting.has(from)) return;
    const pulled = typeof c === "number" && Number.isSafeInteger(c) && c >= 0;
    if (pulled && p.waiting.get(from)?.asked !== true) return; // a page not asked for (a repeat)
    let full = p.bytes + payload.length > MAX_LISTED_PAGES * this.busBytes();
    let page: unknown;
    if (full) this.counters.malformed++;
    else {
      p.bytes += payload.length;
      try {
        page = JSON.parse(fromUtf8.decode(payload));
      } catch {
        this.counters.malformed++;
        page = undefined;
      }
    }
    let added = 0;
    if (Array.isArray(page)) {
      for (const info of page) {
        if (p.infos.length >= MAX_LISTED_SESSIONS) {
          this.counters.malformed++;
          full = true;
          break;
        }
        if (typeof info !== "object" || info === null) continue;
        const id = (info as { id?: unknown }).id;
        if (typeof id !== "string" || !id.startsWith(`${from}.`)) {
          // Not a session of that node (every node's ids start with its own): a node listing another's ids
          // put sessions in the list twice, under the wrong node — and a sendTo by such an id reaches the other.
          this.counters.malformed++;
          continue;
        }
        p.infos.push({ ...(info as ConnectionInfo), node: from });
        added++;
      }
    }
    // A page asked for that adds no session (empty, not JSON, not an array, no object in it) ends the node's
    // list: every page but the last holds one at least, and asking on after one that adds none looped for as
    // long as the node answered (thousands of pages a second, the list never settled).
    if (last || full || (pulled && added === 0)) {
      p.finish(from);
    } else if (pulled) {
      this.askPage(list, p, from, c as number);
    } else if (added !== 0) {
      // An older node pushes every page unasked: wait for its next one. (Not again after a page that added
      // nothing: pages of "{}" pushed every 100 ms held the list for as long as they came.)
      this.expectPage(p, from, false);
    }
  }
}
