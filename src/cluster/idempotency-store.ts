/**
 * The cluster's shared {@link IdempotencyStore}, on the engine's key-value
 * store: every node claims keys in the same place, so a request retried on
 * another node after a failover finds the first attempt's claim or answer.
 *
 * An entry is JSON: running (`token`, owning node, lease end) or done
 * (the outcome, its expiry). A claim is taken by create-if-absent, or by
 * compare-and-set over an entry that no longer holds: a done entry past
 * its time to live, a running one past its lease — or one whose node left
 * the cluster (a node that died mid-handler does not hold its keys for the
 * whole lease: once the membership has removed it, the next attempt runs).
 * Waiting for a running key polls the store (25 ms, doubling to 250 ms):
 * one poll per key on a node, whatever number of duplicates wait for it.
 */
import { PointSubError } from "../errors/error.ts";
import {
  type IdempotencyEntry,
  type IdempotencyOutcome,
  type IdempotencyStore,
  positive,
  scopeOfKey,
} from "../router/idempotency.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import { isErrorCode } from "./codes.ts";
import type { ClusterEngine } from "./engine.ts";

/**
 * An entry as JSON; `f`: the fingerprint of the claim's payload, when it has
 * one; a claim's `r`: the incarnation (process) of node `n` that made it,
 * and `b` when (`Date.now()` on its clock; both absent from older nodes' claims).
 */
type Stored = (
  | { s: "r"; t: string; n: string; e: number; r?: string; b?: number }
  | { s: "d"; e: number; ok: true; d: string }
  | { s: "d"; e: number; ok: false; c: string; m: string }
) & { f?: string };

interface Read {
  /** The live entry, or undefined. */
  entry: IdempotencyEntry | undefined;
  /** The running entry's token and whether it is live, for fail(). */
  token?: string;
  /** The stored value's revision (undefined: no stored value). */
  revision?: string;
}

/**
 * An entry read from the engine, or undefined for what no node writes (not JSON, fields missing or of
 * another type): a claim takes such a key over. Before, `{"s":"d","ok":true}` (no `d`) threw a TypeError
 * out of every begin of its key, and a claim's token or node of another type was taken as it came.
 */
function parse(value: string): Stored | undefined {
  try {
    const v = JSON.parse(value) as Stored;
    if (typeof v !== "object" || v === null || typeof v.e !== "number") return undefined;
    if (v.s === "r") return typeof v.t === "string" && typeof v.n === "string" ? v : undefined;
    if (v.s === "d") return v.ok === false || (v.ok === true && typeof v.d === "string") ? v : undefined;
  } catch {}
  return undefined;
}

/** Options of {@link engineIdempotencyStore}. */
export interface EngineIdempotencyStoreOptions {
  /** Prefix of the store's keys in the engine. */
  prefix: string;
  /** This node's id (recorded with its claims). */
  nodeId: string;
  /**
   * This node's incarnation (recorded with its claims): its claims tell this
   * process from an earlier one under the same node id. Default none.
   */
  incarnation?: string;
  /**
   * Whether claims of node `id` still hold (false once the membership removed
   * it); `incarnation` and `madeAt`: the claim's process and when it was
   * made, when recorded (false once that process is known to be gone: its
   * node restarted under the same id).
   */
  holds(id: string, incarnation?: string, madeAt?: number): boolean;
  /** How long a done entry is kept, in ms. */
  ttlMs: number;
  /**
   * The largest value the engine takes, in UTF-8 bytes (undefined: no
   * limit). An answer whose entry would be larger is kept as an error
   * (ERR_HANDLER, too large to keep) so that a retry still gets an answer
   * and the handler does not run again.
   */
  maxValueBytes?: () => number | undefined;
  /**
   * How long the engine keeps a key after its last write whatever its time
   * to live (NATS: the bucket's max age; undefined: each key for its own).
   * A claim whose lease is longer is written again every half of it while
   * its handler runs, so it does not vanish under the handler.
   */
  maxAgeMs?: () => number | undefined;
  /**
   * Most answers this node keeps in the engine at once (the done entries it
   * wrote, until their time to live ends): past it the oldest are deleted
   * from the engine, so what peers can make the shared store hold is this
   * node's quota times the nodes, not their request rate times `ttlMs`.
   * Default 10,000 (as the in-memory store's `maxEntries`).
   */
  maxEntries?: number;
  /** Most bytes of those answers (their JSON and key, plus 128 each). Default 32 MiB. */
  maxBytes?: number;
  /**
   * Most answers one scope (one principal) keeps through this node: at its
   * quota a scope's own oldest answers are deleted, never another's.
   * Default: a quarter of `maxEntries`.
   */
  maxEntriesPerScope?: number;
  /** Most bytes one scope keeps through this node. Default: a quarter of `maxBytes`. An answer larger is kept as an error (too large to keep; the handler ran once). */
  maxBytesPerScope?: number;
}

/** What the shared store holds through this node ({@link EngineIdempotencyStore.stats}). */
export interface EngineIdempotencyStats {
  /** Answers this node wrote that live in the engine now (their time to live not over). */
  kept: number;
  /** Their bytes as counted against `maxBytes`. */
  bytes: number;
  /** Answers this node deleted from the engine to stay within its quotas (oldest first). */
  evicted: number;
}

/** The shared store, with what it holds through this node. */
export interface EngineIdempotencyStore extends IdempotencyStore {
  stats(): EngineIdempotencyStats;
  /**
   * Before this node leaves the cluster: each key whose handler still runs
   * here gets an answer, the error ERR_HANDLER `message` (the outcome is
   * unknown), instead of a claim the other nodes take over once the node
   * has left — where a retry ran the handler a second time while the first
   * still ran. Resolves once written (what the engine does not take in time
   * stays a claim of a node that left). Handlers that end within
   * `graceMs` (default 0) answer for themselves. Answers the engine refused
   * before, being written again, get one more try, then are dropped; those
   * refused later (a handler answering after the close) are not kept.
   */
  settleRunning(message: string, graceMs?: number): Promise<void>;
}

/** Bytes counted per kept answer besides its JSON and key (the engine's own bookkeeping, this node's ledger). */
const KEPT_OVERHEAD = 128;
/** Default `maxEntries` / `maxBytes` of a node (`idempotencyMaxEntries` / `idempotencyMaxBytes`). */
export const DEFAULT_MAX_ENTRIES = 10_000;
export const DEFAULT_MAX_BYTES = 32 * 1024 * 1024;
/** Deletes that failed tried again per answer kept (each a read and a delete in the engine). */
const RETRY_PER_KEEP = 8;

/** The longest lease a claim is written with (100 years): a longer one, Infinity included, is this. */
const MAX_LEASE_MS = 100 * 365.25 * 24 * 3600 * 1000;

/** An answer this node wrote to the engine, until its time to live ends. */
interface Kept {
  readonly key: string;
  readonly bytes: number;
  /** Its `e`: when it expires, also how it is told from a later answer under the key. */
  readonly expires: number;
  readonly scope: KeptScope;
}

/** What one scope keeps through this node, oldest first. */
interface KeptScope {
  readonly name: string;
  bytes: number;
  readonly kept: Map<string, Kept>;
}

/** Tokens of claims whose write failed a node remembers ({@link EngineStore.abandon}). */
const ABANDONED_MAX = 1024;

/** Most bytes of answers a node keeps read from the engine ({@link EngineStore}'s done cache). */
const DONE_CACHE_BYTES = 16 * 1024 * 1024;
/** Most answers it keeps. */
const DONE_CACHE_ENTRIES = 1024;
/** How long it serves one without asking the engine again, in ms (at most until the entry's own expiry). */
const DONE_CACHE_MS = 30_000;

interface Cached {
  readonly entry: IdempotencyEntry;
  readonly bytes: number;
  readonly until: number;
}

class EngineStore implements EngineIdempotencyStore {
  private readonly engine: ClusterEngine;
  private readonly o: EngineIdempotencyStoreOptions;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private readonly maxEntriesPerScope: number;
  private readonly maxBytesPerScope: number;
  /** The answers this node wrote that still live, oldest first (they all live `ttlMs`). */
  private readonly kept = new Map<string, Kept>();
  private keptBytes = 0;
  private readonly keptScopes = new Map<string, KeptScope>();
  private evicted = 0;
  /**
   * Answers whose delete failed (the engine did not answer: down, or slower
   * than the cluster's `engineTimeoutMs`), oldest first: they live in the
   * engine still, so they count as kept, and each {@link keep} deletes up to
   * {@link RETRY_PER_KEEP} of them again, until their time to live ends
   * (they were forgotten: what the engine held grew past the quota by every
   * delete that failed).
   */
  private undeleted: Kept[] = [];
  private undeletedBytes = 0;
  /**
   * Done entries read from the engine, least recently used first: an answer
   * never changes while it lives, so the duplicates of one key — waiting
   * for it, or sent again and again — share one read and one copy of it
   * instead of each fetching and decoding its own (300 duplicates of a 1 MiB
   * answer were 300 reads of 1.4 MB, which timed out the node's engine link).
   */
  private readonly cache = new Map<string, Cached>();
  private cacheBytes = 0;
  /**
   * Drops cached answers past their time (unref'd: it never keeps a process alive). Before, they
   * were dropped only when read again or pushed out: a burst of duplicates followed by quiet kept
   * up to DONE_CACHE_BYTES (1,024 answers) for the life of the process.
   */
  private sweeper: ReturnType<typeof setTimeout> | undefined;
  /** When the armed sweep runs (`Date.now()`). */
  private sweepAt = Number.POSITIVE_INFINITY;
  /** Reads under way: concurrent ones of a key share one. */
  private readonly reading = new Map<string, Promise<Read>>();
  /** Claims of this node written again while their handler runs ({@link EngineIdempotencyStoreOptions.maxAgeMs}), by key. */
  private readonly renewing = new Map<string, Held>();
  /**
   * This node's claims whose handler runs (key → token, with its fingerprint): at most the keyed handlers
   * the server runs at once, each removed by its completion or failure.
   */
  private readonly running = new Map<string, { token: string; fingerprint: string | undefined; leaseEnd: number }>();
  /**
   * Answers of this node's claims the engine did not take: written again in the background
   * ({@link settleLater}), by key, oldest first; at most {@link UNSETTLED_MAX} and {@link UNSETTLED_BYTES}.
   */
  private readonly unsettled = new Map<string, Unsettled>();
  private unsettledBytes = 0;
  /**
   * {@link settleRunning} ran (this node left the cluster): an answer the engine does not take is no longer
   * written again. A handler still running past the close answered later, its write failed on the closed
   * engine, and it was tried every 2 s until its lease or expiry ended (10 min) after the server closed.
   */
  private left = false;
  /** Tokens of this node's claims whose write failed ({@link abandon}), oldest first: at most {@link ABANDONED_MAX}. */
  private readonly abandoned = new Set<string>();
  /**
   * Claims of this node whose delete failed (their handler gave up), deleted again in the background
   * ({@link dropLater}), by key: at most {@link ABANDONED_MAX}, the oldest dropped (it lives out its lease).
   */
  private readonly undropped = new Map<string, Undropped>();
  /** Keys this node's waiting duplicates wait for, each with the one poll they share ({@link wait}). */
  private readonly polls = new Map<string, Poll>();

  constructor(engine: ClusterEngine, o: EngineIdempotencyStoreOptions) {
    this.engine = engine;
    this.o = o;
    this.maxEntries = positive("maxEntries", o.maxEntries, DEFAULT_MAX_ENTRIES);
    this.maxBytes = positive("maxBytes", o.maxBytes, DEFAULT_MAX_BYTES);
    // A scope's quota set over the node's is the node's (an answer over maxBytes but not over the scope's
    // deleted every other answer this node kept, and was kept over maxBytes: 8,197 bytes of 4,000).
    this.maxEntriesPerScope = Math.min(
      this.maxEntries,
      positive("maxEntriesPerScope", o.maxEntriesPerScope, Math.max(1, Math.floor(this.maxEntries / 4))),
    );
    this.maxBytesPerScope = Math.min(
      this.maxBytes,
      positive("maxBytesPerScope", o.maxBytesPerScope, Math.max(1, Math.floor(this.maxBytes / 4))),
    );
  }

  stats(): EngineIdempotencyStats {
    this.expireKept(Date.now());
    return {
      kept: this.kept.size + this.undeleted.length,
      bytes: this.keptBytes + this.undeletedBytes,
      evicted: this.evicted,
    };
  }

  /** Forgets the answers whose time to live is over (the engine dropped them). */
  private expireKept(now: number): void {
    for (const k of this.kept.values()) {
      if (k.expires > now) break;
      this.unkeep(k);
    }
    if (this.undeleted.some((k) => k.expires <= now)) {
      this.undeleted = this.undeleted.filter((k) => {
        if (k.expires > now) return true;
        this.undeletedBytes -= k.bytes;
        return false;
      });
    }
  }

  /** Takes the `n` oldest failed deletes off the list (to try again, or to forget). */
  private takeUndeleted(n: number): Kept[] {
    const out = this.undeleted.splice(0, n);
    for (const k of out) this.undeletedBytes -= k.bytes;
    return out;
  }

  private unkeep(k: Kept): void {
    this.kept.delete(k.key);
    this.keptBytes -= k.bytes;
    k.scope.kept.delete(k.key);
    k.scope.bytes -= k.bytes;
    if (k.scope.kept.size === 0) this.keptScopes.delete(k.scope.name);
  }

  /**
   * Counts an answer just written under `key` against this node's quotas,
   * deleting from the engine the oldest ones (its scope's first) past them.
   */
  private async keep(key: string, bytes: number, expires: number): Promise<void> {
    this.expireKept(Date.now());
    const old = this.kept.get(key);
    if (old !== undefined) this.unkeep(old);
    const name = scopeOfKey(key);
    let scope = this.keptScopes.get(name);
    if (scope === undefined) {
      scope = { name, bytes: 0, kept: new Map() };
      this.keptScopes.set(name, scope);
    }
    // Deletes that failed before, again (not counted against the quotas: the engine's trouble is not the
    // scopes'); past the most kept, the oldest are forgotten (they live out their time to live).
    const out: Kept[] = this.takeUndeleted(RETRY_PER_KEEP);
    if (this.undeleted.length > this.maxEntries) this.takeUndeleted(this.undeleted.length - this.maxEntries);
    while (
      scope.kept.size > 0 &&
      (scope.kept.size + 1 > this.maxEntriesPerScope || scope.bytes + bytes > this.maxBytesPerScope)
    ) {
      const first = scope.kept.values().next().value as Kept;
      this.unkeep(first);
      out.push(first);
    }
    while (this.kept.size > 0 && (this.kept.size + 1 > this.maxEntries || this.keptBytes + bytes > this.maxBytes)) {
      const first = this.kept.values().next().value as Kept;
      this.unkeep(first);
      out.push(first);
    }
    if (scope.kept.size === 0) this.keptScopes.set(name, scope);
    const k: Kept = { key, bytes, expires, scope };
    this.kept.set(key, k);
    this.keptBytes += bytes;
    scope.kept.set(key, k);
    scope.bytes += bytes;
    if (out.length > 0) await Promise.all(out.map((e) => this.evict(e)));
  }

  /** Deletes an answer this node wrote from the engine, if it is still that answer (not a later one under its key). */
  private async evict(k: Kept): Promise<void> {
    const c = this.cache.get(k.key);
    if (c !== undefined) {
      this.cache.delete(k.key);
      this.cacheBytes -= c.bytes;
    }
    try {
      const kv = await this.engine.kvGet(this.o.prefix + k.key);
      const v = kv === undefined ? undefined : parse(kv.value);
      if (kv !== undefined && v?.s === "d" && v.e === k.expires)
        await this.engine.kvDelete(this.o.prefix + k.key, kv.revision);
      this.evicted++;
    } catch {
      // The engine did not answer: deleted again at a later keep (unless its time to live ends first).
      if (k.expires > Date.now() && !this.kept.has(k.key)) {
        this.undeleted.push(k);
        this.undeletedBytes += k.bytes;
      }
    }
  }

  private read(key: string): Promise<Read> {
    const c = this.cache.get(key);
    if (c !== undefined) {
      this.cache.delete(key);
      if (c.until > Date.now()) {
        this.cache.set(key, c);
        return Promise.resolve({ entry: c.entry });
      }
      this.cacheBytes -= c.bytes;
    }
    let p = this.reading.get(key);
    if (p === undefined) {
      p = this.readEngine(key).finally(() => this.reading.delete(key));
      this.reading.set(key, p);
    }
    return p;
  }

  private remember(key: string, entry: IdempotencyEntry, bytes: number, expires: number): void {
    if (bytes > DONE_CACHE_BYTES) return;
    const old = this.cache.get(key);
    if (old !== undefined) {
      this.cache.delete(key);
      this.cacheBytes -= old.bytes;
    }
    while (this.cache.size >= DONE_CACHE_ENTRIES || this.cacheBytes + bytes > DONE_CACHE_BYTES) {
      const [k, v] = this.cache.entries().next().value as [string, Cached];
      this.cache.delete(k);
      this.cacheBytes -= v.bytes;
    }
    const until = Math.min(expires, Date.now() + DONE_CACHE_MS);
    this.cache.set(key, { entry, bytes, until });
    this.cacheBytes += bytes;
    this.armSweep(until);
  }

  /** Makes a sweep run by `at` (one timer for the cache: the earliest time asked for). */
  private armSweep(at: number): void {
    if (this.sweeper !== undefined) {
      if (this.sweepAt <= at) return;
      clearTimeout(this.sweeper);
    }
    this.sweepAt = at;
    this.sweeper = setTimeout(this.sweep, Math.max(10, at - Date.now()));
    (this.sweeper as { unref?: () => void }).unref?.();
  }

  private readonly sweep = (): void => {
    this.sweeper = undefined;
    this.sweepAt = Number.POSITIVE_INFINITY;
    const now = Date.now();
    let next = Number.POSITIVE_INFINITY;
    for (const [key, c] of this.cache) {
      if (c.until <= now) {
        this.cache.delete(key);
        this.cacheBytes -= c.bytes;
      } else if (c.until < next) next = c.until;
    }
    if (next !== Number.POSITIVE_INFINITY) this.armSweep(next);
  };

  private async readEngine(key: string): Promise<Read> {
    const kv = await this.engine.kvGet(this.o.prefix + key);
    if (kv === undefined) return { entry: undefined };
    const v = parse(kv.value);
    const now = Date.now();
    if (v === undefined || v.e <= now) return { entry: undefined, revision: kv.revision };
    const print = typeof v.f === "string" ? { fingerprint: v.f } : {};
    if (v.s === "r") {
      const r = typeof v.r === "string" ? v.r : undefined;
      const mine = v.n === this.o.nodeId && (r === undefined || r === this.o.incarnation);
      const ghost = mine && this.abandoned.has(v.t);
      const live = !ghost && (mine || this.o.holds(v.n, r, typeof v.b === "number" ? v.b : undefined));
      return {
        entry: live ? { state: "running", token: v.t, ...print } : undefined,
        token: v.t,
        revision: kv.revision,
      };
    }
    const outcome: IdempotencyOutcome = v.ok
      ? { ok: true, data: new Uint8Array(Buffer.from(v.d, "base64")) }
      : { ok: false, code: isErrorCode(v.c) ? v.c : "ERR_HANDLER", message: String(v.m) };
    const entry: IdempotencyEntry = { state: "done", outcome, ...print };
    this.remember(key, entry, 256 + key.length + kv.value.length, v.e);
    return { entry, revision: kv.revision };
  }

  async begin(
    key: string,
    token: string,
    leaseMs: number,
    fingerprint?: string,
  ): Promise<IdempotencyEntry | undefined> {
    // A lease of Infinity (the middleware takes it: a claim that holds until its handler ends) as the longest
    // an engine keeps: Redis refused its PX (every keyed request failed, the handler never ran), and its end
    // written as JSON null made the claim unreadable on NATS (a duplicate took it over and ran the handler again).
    leaseMs = Math.min(leaseMs, MAX_LEASE_MS);
    const k = this.o.prefix + key;
    const claim = JSON.stringify({
      s: "r",
      t: token,
      n: this.o.nodeId,
      r: this.o.incarnation,
      b: Date.now(),
      e: Date.now() + leaseMs,
      f: fingerprint,
    } satisfies Stored);
    for (let attempt = 0; attempt < 5; attempt++) {
      let won: boolean;
      try {
        won = await this.engine.kvCreate(k, claim, leaseMs);
        if (!won) {
          const r = await this.read(key);
          if (r.entry !== undefined) return r.entry;
          if (r.revision === undefined) continue; // gone meanwhile: create again
          // Expired, or claimed by a node that left: take it over, unless another node does first.
          won = await this.engine.kvUpdate(k, claim, r.revision, leaseMs);
        }
      } catch (err) {
        this.abandon(key, token, Date.now() + leaseMs);
        throw err;
      }
      if (won) {
        this.running.set(key, { token, fingerprint, leaseEnd: Date.now() + leaseMs });
        return this.hold(key, token, Date.now() + leaseMs);
      }
    }
    throw new PointSubError("ERR_OVERLOADED", "idempotency key contended by other nodes; retry later");
  }

  /**
   * Keeps this node's new claim of `key` in an engine that ages keys by a
   * max age shorter than the lease (a JetStream bucket: a claim vanished
   * after `idempotencyTtlMs` and a retry ran the handler again): the claim
   * is written again, unchanged, every half of that age until its lease
   * ends, it is completed or released, or it is no longer this one.
   */
  private hold(key: string, token: string, leaseEnd: number): undefined {
    const age = this.o.maxAgeMs?.();
    if (age === undefined || !(age > 0) || Date.now() + age >= leaseEnd) return undefined;
    const k = this.o.prefix + key;
    // A timer's range at most (24.8 days): past it Node fires at once, and a bucket aged 60 days had the claim
    // read and written again every millisecond while its handler ran (323 writes in 1 s).
    const every = Math.min(age / 2, MAX_TIMER_MS);
    const renew = async () => {
      if (this.renewing.get(key) !== held) return;
      try {
        const kv = await this.engine.kvGet(k);
        const v = kv === undefined ? undefined : parse(kv.value);
        if (kv === undefined || v?.s !== "r" || v.t !== token) {
          this.release(key, token);
          return;
        }
        await this.engine.kvUpdate(k, kv.value, kv.revision, leaseEnd - Date.now());
      } catch {
        // The engine did not answer: again at the next turn (the claim lives `age` from its last write).
      }
      if (this.renewing.get(key) !== held) return;
      if (Date.now() + age >= leaseEnd) this.release(key, token);
      else held.timer = later(run, every);
    };
    const run = () => {
      held.busy = renew();
      return held.busy;
    };
    this.release(key, this.renewing.get(key)?.token ?? "");
    const held: Held = { token, timer: later(run, every), busy: undefined };
    this.renewing.set(key, held);
    return undefined;
  }

  /**
   * Stops writing `key`'s claim again, if it is `token`'s: the write under
   * way, if any, settles with the promise returned (a completion or a
   * failure reads the claim after it, else a delete on the revision read
   * before it misses).
   */
  private release(key: string, token: string): Promise<void> | undefined {
    const held = this.renewing.get(key);
    if (held === undefined || held.token !== token) return undefined;
    clearTimeout(held.timer);
    this.renewing.delete(key);
    return held.busy;
  }

  async get(key: string): Promise<IdempotencyEntry | undefined> {
    return (await this.read(key)).entry;
  }

  /**
   * A claim under `token` whose write failed (the engine did not answer in time) may land later, with no
   * handler under it: this node takes it for no claim (a retry here claims the key over it), and deletes
   * it if it can. Before, it held the key for its whole lease (10 min): every retry waited and failed.
   */
  private abandon(key: string, token: string, leaseEnd: number): void {
    this.forsake(token);
    this.drop(key, token).catch(() => this.dropLater(key, token, leaseEnd));
  }

  /** This node takes `token`'s claim for no claim (its handler does not run): a retry here claims the key over it. */
  private forsake(token: string): void {
    this.abandoned.add(token);
    if (this.abandoned.size > ABANDONED_MAX) this.abandoned.delete(this.abandoned.values().next().value as string);
  }

  /** Deletes `token`'s claim of `key`, if it is still that claim. */
  private async drop(key: string, token: string): Promise<void> {
    const r = await this.read(key);
    if (r.token === token && r.revision !== undefined) await this.engine.kvDelete(this.o.prefix + key, r.revision);
  }

  /**
   * Deletes a claim whose delete failed again in the background, until it is gone or `until` (its lease
   * end) passes: 100 ms, doubling to 2 s. Not once this node left (the other nodes take its claims over).
   */
  private dropLater(key: string, token: string, until: number): void {
    if (this.left) return;
    const old = this.undropped.get(key);
    if (old !== undefined) this.undrop(key, old);
    while (this.undropped.size >= ABANDONED_MAX) {
      const [k, oldest] = this.undropped.entries().next().value as [string, Undropped];
      this.undrop(k, oldest);
    }
    const u: Undropped = { token, until, delay: UNSETTLED_FIRST_MS, timer: undefined };
    const again = async (): Promise<void> => {
      if (this.undropped.get(key) !== u || this.left) return;
      try {
        await this.drop(key, token);
      } catch {
        u.delay = Math.min(u.delay * 2, UNSETTLED_MAX_DELAY_MS);
        if (this.undropped.get(key) === u && Date.now() + u.delay < u.until) {
          u.timer = later(again, u.delay);
          return;
        }
      }
      this.undrop(key, u);
    };
    this.undropped.set(key, u);
    u.timer = later(again, u.delay);
  }

  private undrop(key: string, u: Undropped): void {
    clearTimeout(u.timer);
    if (this.undropped.get(key) === u) this.undropped.delete(key);
  }

  /** This node no longer runs `token`'s handler for `key`. */
  private ended(key: string, token: string): void {
    if (this.running.get(key)?.token === token) this.running.delete(key);
  }

  async settleRunning(message: string, graceMs = 0): Promise<void> {
    // Handlers aborted by the close (their session ended) get a moment to end and answer, or fail, themselves.
    for (const until = Date.now() + graceMs; this.running.size > 0 && Date.now() < until; ) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const outcome: IdempotencyOutcome = { ok: false, code: "ERR_HANDLER", message };
    await Promise.all([
      ...[...this.running].map(([key, { token, fingerprint }]) =>
        this.complete(key, token, outcome, fingerprint).catch(() => {}),
      ),
      // Answers not written yet: once more, then no more (this node is leaving).
      ...[...this.unsettled].map(([key, u]) => this.settleNow(key, u, true)),
    ]);
    for (const [key, u] of [...this.unsettled]) this.unsettle(key, u);
    for (const [key, u] of [...this.undropped]) this.undrop(key, u);
    this.left = true;
  }

  async complete(key: string, token: string, outcome: IdempotencyOutcome, fingerprint?: string): Promise<void> {
    const run = this.running.get(key);
    const leaseEnd = run?.token === token ? run.leaseEnd : Number.POSITIVE_INFINITY;
    this.ended(key, token);
    await this.release(key, token);
    const k = this.o.prefix + key;
    const ttl = this.o.ttlMs;
    const stored: Stored = outcome.ok
      ? { s: "d", e: Date.now() + ttl, ok: true, d: Buffer.from(outcome.data).toString("base64"), f: fingerprint }
      : { s: "d", e: Date.now() + ttl, ok: false, c: outcome.code, m: outcome.message, f: fingerprint };
    let value = JSON.stringify(stored);
    const max = this.o.maxValueBytes?.();
    let bytes = Buffer.byteLength(value);
    if ((max !== undefined && bytes > max) || KEPT_OVERHEAD + k.length + bytes > this.maxBytesPerScope) {
      // The engine would refuse it and leave the key claimed for its whole lease (every retry ERR_TIMEOUT),
      // or it is over the scope's quota alone: keep that the handler ran, as the middleware does for an
      // answer over maxResponseBytes.
      const what = outcome.ok ? `response (${outcome.data.length} bytes)` : `error (${outcome.code})`;
      value = JSON.stringify({
        s: "d",
        e: stored.e,
        ok: false,
        c: "ERR_HANDLER",
        m: `the ${what} to this idempotency key was too large to keep in the cluster's store; the handler ran once`,
        f: fingerprint,
      } satisfies Stored);
      bytes = Buffer.byteLength(value);
    }
    try {
      await this.writeAnswer(key, token, value, bytes, stored.e);
    } catch (err) {
      // The claim stayed, this node's and live, for its whole lease (10 min): every retry waited and failed
      // ERR_TIMEOUT "still running" though the handler had answered. Written again until the engine takes it.
      const until = Math.min(leaseEnd, stored.e);
      const marker = (): string =>
        JSON.stringify({
          s: "d",
          e: stored.e,
          ok: false,
          c: "ERR_HANDLER",
          m: "the handler ran, but its answer could not be kept in the cluster's store in time; it is not run again",
          f: fingerprint,
        } satisfies Stored);
      this.settleLater(key, { token, value, bytes, expires: stored.e, until, marker });
      throw err;
    }
  }

  /** Writes answer `value` of `token`'s claim of `key`, unless the key has another answer or claim. */
  private async writeAnswer(key: string, token: string, value: string, bytes: number, expires: number): Promise<void> {
    const k = this.o.prefix + key;
    for (let attempt = 0; attempt < 5; attempt++) {
      const r = await this.read(key);
      if (r.entry?.state === "done") return; // the first answer stays
      if (r.entry?.state === "running" && r.entry.token !== token) return; // another claim holds it
      const ttl = Math.max(1, expires - Date.now());
      const written =
        r.revision === undefined
          ? await this.engine.kvCreate(k, value, ttl)
          : await this.engine.kvUpdate(k, value, r.revision, ttl);
      if (written) {
        await this.keep(key, KEPT_OVERHEAD + k.length + bytes, expires);
        return;
      }
    }
  }

  /**
   * Writes an answer the engine did not take again, in the background, until it lands or `u.until`
   * (the claim's lease end, or the answer's expiry) passes: 100 ms, doubling to 2 s. At most
   * {@link UNSETTLED_MAX} (the oldest dropped: its claim lives out its lease, as before) and
   * {@link UNSETTLED_BYTES} of answers (past it, an answer is kept as an error saying the handler ran).
   */
  private settleLater(key: string, u: Omit<Unsettled, "delay" | "timer">): void {
    if (this.left) return;
    const old = this.unsettled.get(key);
    if (old !== undefined) this.unsettle(key, old);
    let { value, bytes } = u;
    if (this.unsettledBytes + bytes > UNSETTLED_BYTES) {
      value = u.marker();
      bytes = Buffer.byteLength(value);
    }
    while (
      this.unsettled.size > 0 &&
      (this.unsettled.size >= UNSETTLED_MAX || this.unsettledBytes + bytes > UNSETTLED_BYTES)
    ) {
      const [k, oldest] = this.unsettled.entries().next().value as [string, Unsettled];
      this.unsettle(k, oldest);
    }
    const entry: Unsettled = { ...u, value, bytes, delay: UNSETTLED_FIRST_MS, timer: undefined };
    this.unsettled.set(key, entry);
    this.unsettledBytes += bytes;
    entry.timer = later(() => this.settleNow(key, entry, false), entry.delay);
  }

  /** One more try of an unsettled answer; `last`: not again whatever happens. */
  private async settleNow(key: string, u: Unsettled, last: boolean): Promise<void> {
    if (this.unsettled.get(key) !== u) return;
    clearTimeout(u.timer);
    try {
      await this.writeAnswer(key, u.token, u.value, u.bytes, u.expires);
    } catch {
      if (this.unsettled.get(key) !== u) return;
      u.delay = Math.min(u.delay * 2, UNSETTLED_MAX_DELAY_MS);
      if (!last && Date.now() + u.delay < u.until) {
        u.timer = later(() => this.settleNow(key, u, false), u.delay);
        return;
      }
    }
    if (this.unsettled.get(key) === u) this.unsettle(key, u);
  }

  private unsettle(key: string, u: Unsettled): void {
    clearTimeout(u.timer);
    if (this.unsettled.get(key) !== u) return;
    this.unsettled.delete(key);
    this.unsettledBytes -= u.bytes;
  }

  async fail(key: string, token: string): Promise<void> {
    // After a rewrite under way: the claim's revision read before it was gone once it landed, and the
    // delete on that revision missed (the claim stayed, live, until the bucket aged it out: a retry
    // waited for it and failed ERR_TIMEOUT).
    const run = this.running.get(key);
    const leaseEnd = run?.token === token ? run.leaseEnd : Number.POSITIVE_INFINITY;
    this.ended(key, token);
    await this.release(key, token);
    try {
      await this.drop(key, token);
    } catch (err) {
      // The claim stayed, this node's and live, for its whole lease (10 min): a retry here waited for it and
      // failed ERR_TIMEOUT, and so did one on another node. This node now takes it for no claim, and deletes
      // it again until the engine takes the delete.
      this.forsake(token);
      this.dropLater(key, token, leaseEnd);
      throw err;
    }
  }

  wait(key: string, signal: AbortSignal): Promise<IdempotencyEntry | undefined> {
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      let poll = this.polls.get(key);
      if (poll === undefined) {
        poll = { waiters: new Set(), delay: 25, timer: undefined };
        this.polls.set(key, poll);
        this.poll(key, poll);
      }
      const p = poll;
      const w: PollWaiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          p.waiters.delete(w);
          if (p.waiters.size === 0) this.endPoll(key, p);
          reject(signal.reason);
        },
      };
      signal.addEventListener("abort", w.onAbort, { once: true });
      p.waiters.add(w);
    });
  }

  /** One read of `key` for its waiters: they settle when it is no longer running, else it is read again later. */
  private poll(key: string, p: Poll): void {
    p.timer = undefined;
    this.get(key).then(
      (e) => {
        if (this.polls.get(key) !== p) return;
        if (e === undefined || e.state === "done") {
          for (const w of this.endPoll(key, p)) w.resolve(e);
          return;
        }
        p.timer = setTimeout(() => this.poll(key, p), p.delay);
        p.delay = Math.min(p.delay * 2, 250);
      },
      (err: unknown) => {
        if (this.polls.get(key) === p) for (const w of this.endPoll(key, p)) w.reject(err);
      },
    );
  }

  /** Ends `key`'s poll; returns its waiters (no longer listening to their signals), to be settled. */
  private endPoll(key: string, p: Poll): Set<PollWaiter> {
    if (this.polls.get(key) === p) this.polls.delete(key);
    clearTimeout(p.timer);
    for (const w of p.waiters) w.signal.removeEventListener("abort", w.onAbort);
    return p.waiters;
  }
}

/**
 * The poll of a key that this node's waiting duplicates share ({@link EngineStore.wait}): one read at a time,
 * 25 ms after the last, doubling to 250 ms. Before, each waiter polled on its own, from its own arrival: the
 * engine's reads of one key grew with its duplicates (`cluster/idempotency-shared-poll.test.ts`).
 */
interface Poll {
  readonly waiters: Set<PollWaiter>;
  delay: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

interface PollWaiter {
  readonly resolve: (entry: IdempotencyEntry | undefined) => void;
  readonly reject: (reason: unknown) => void;
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
}

/** Answers written again at most ({@link EngineStore.settleLater}). */
const UNSETTLED_MAX = 1024;
/** Most bytes of answers among them. */
const UNSETTLED_BYTES = 16 * 1024 * 1024;
const UNSETTLED_FIRST_MS = 100;
const UNSETTLED_MAX_DELAY_MS = 2000;

/** An answer the engine did not take, tried again. */
interface Unsettled {
  readonly token: string;
  readonly value: string;
  readonly bytes: number;
  /** The answer's expiry. */
  readonly expires: number;
  /** Tried again until then. */
  readonly until: number;
  /** The answer as an error saying the handler ran, for when it is too large to hold. */
  readonly marker: () => string;
  delay: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** A claim of this node whose delete failed, deleted again. */
interface Undropped {
  readonly token: string;
  /** Tried again until then (the claim's lease end). */
  readonly until: number;
  delay: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** A claim written again while its handler runs: the timer of the next write, and the write under way. */
interface Held {
  readonly token: string;
  timer: ReturnType<typeof setTimeout>;
  busy: Promise<void> | undefined;
}

/** A timer that does not keep the process alive. */
function later(fn: () => Promise<void>, ms: number): ReturnType<typeof setTimeout> {
  const t = setTimeout(() => void fn(), ms);
  (t as { unref?: () => void }).unref?.();
  return t;
}

/** An {@link IdempotencyStore} on a cluster engine's key-value store, shared by every node. */
export function engineIdempotencyStore(
  engine: ClusterEngine,
  options: EngineIdempotencyStoreOptions,
): EngineIdempotencyStore {
  return new EngineStore(engine, options);
}
