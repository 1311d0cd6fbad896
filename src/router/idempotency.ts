/**
 * Idempotent requests (docs/PROTOCOL.md §3.4.1): a request that carries an
 * idempotency key runs its handler at most once per key. The
 * {@link idempotency} middleware claims the key in an
 * {@link IdempotencyStore} before the handler runs and stores what it
 * answered; a duplicate (a retry on the same or a new connection) gets the
 * stored answer, or waits while the first attempt still runs.
 *
 * The store is an interface so that several servers can share one (a
 * Redis implementation keeps the same four operations);
 * {@link memoryIdempotencyStore} is the in-process one, bounded by entry
 * count, bytes and age.
 */
import { crc32c, crc32cHex } from "../codec/crc32c.ts";
import { codeInfo, type ErrorCode, type ErrorCodeInfo } from "../errors/codes.ts";
import { answerableError, describeResult, describeThrown, thrownCode } from "../errors/describe.ts";
import { PointSubError } from "../errors/error.ts";
import { keyedHold } from "./keyed-hold.ts";
import type { CallContext, HandlerResult, Middleware } from "./types.ts";

/** What a keyed request was answered with, as a store keeps it. */
export type IdempotencyOutcome =
  | { readonly ok: true; readonly data: Uint8Array }
  | { readonly ok: false; readonly code: ErrorCode; readonly message: string };

/**
 * A key's entry in an {@link IdempotencyStore}. `fingerprint` is what the
 * claim was made with ({@link IdempotencyStore.begin}): a duplicate whose
 * request differs is refused. A store that keeps none leaves it out (then
 * nothing is compared).
 */
export type IdempotencyEntry =
  /** A handler runs for the key (claimed by `token`). */
  | { readonly state: "running"; readonly token: string; readonly fingerprint?: string }
  /** The key's request was answered with `outcome`. */
  | { readonly state: "done"; readonly outcome: IdempotencyOutcome; readonly fingerprint?: string };

/**
 * Where the {@link idempotency} middleware keeps keys: claimed (a handler
 * runs) and completed (the answer). Keys are opaque strings the middleware
 * builds from the principal's scope, the route and the key bytes.
 *
 * A store decides its own bounds and expiry; it must make {@link begin}
 * atomic (of concurrent begins for one key, exactly one claims it), so that
 * a handler runs at most once per key while the key's entry is kept.
 */
export interface IdempotencyStore {
  /**
   * Claims `key` for a handler about to run: when the key has no live
   * entry, records it as running under `token` for at most `leaseMs` and
   * resolves to undefined (the caller runs the handler, then calls
   * {@link complete} or {@link fail}). Otherwise resolves to the entry as
   * it stands and changes nothing. May reject with ERR_OVERLOADED when the
   * store has no room for another running key (nothing runs then).
   * `fingerprint` identifies the request's payload: the store keeps it with
   * the claim and the answer and returns it in the entry.
   */
  begin(key: string, token: string, leaseMs: number, fingerprint?: string): Promise<IdempotencyEntry | undefined>;
  /** The live entry of `key`, or undefined. */
  get(key: string): Promise<IdempotencyEntry | undefined>;
  /**
   * Records the answer of the claim `token` on `key` (or of a key whose
   * claim expired meanwhile), wakes its waiters and keeps it for the
   * store's time to live. Does nothing when another claim holds the key.
   * `fingerprint` is the one the claim was made with.
   */
  complete(key: string, token: string, outcome: IdempotencyOutcome, fingerprint?: string): Promise<void>;
  /**
   * Drops the claim `token` on `key` without an answer (the attempt failed
   * in a way worth retrying): the next attempt with the key runs the
   * handler. Its waiters wake with undefined.
   */
  fail(key: string, token: string): Promise<void>;
  /**
   * Resolves once `key` is no longer running: to its done entry, or to
   * undefined when its claim was failed, expired or dropped (or the key
   * has no entry). Rejects with `signal.reason` when `signal` aborts first.
   */
  wait(key: string, signal: AbortSignal): Promise<IdempotencyEntry | undefined>;
}

/** Options of {@link memoryIdempotencyStore}. */
export interface MemoryIdempotencyStoreOptions {
  /** Most entries (running and done) kept at once. Default 10,000. */
  maxEntries?: number;
  /**
   * Most bytes kept at once: stored responses and error messages, keys,
   * and a fixed per-entry overhead ({@link MEMORY_ENTRY_OVERHEAD}).
   * Default 32 MiB.
   */
  maxBytes?: number;
  /** How long a done entry is kept after its request completed, in ms. Default 600,000 (10 minutes). */
  ttlMs?: number;
  /**
   * Most entries one scope — one principal, as the {@link idempotency}
   * middleware builds keys (see {@link idempotencyStoreKey}) — keeps at
   * once. A scope at its quota makes room by dropping its own least
   * recently used answers, never another scope's, so one client with many
   * unique keys cannot push out everybody else's. Default: a quarter of
   * `maxEntries`. Unauthenticated clients all share the scope `""`: on a
   * server without authentication, set it to `maxEntries`.
   */
  maxEntriesPerScope?: number;
  /** Most bytes one scope keeps at once (as `maxEntriesPerScope`, for bytes). Default: a quarter of `maxBytes`. */
  maxBytesPerScope?: number;
}

/** What a {@link MemoryIdempotencyStore} holds now and has dropped. */
export interface MemoryIdempotencyStats {
  /** Entries kept (running + done). */
  entries: number;
  /** Keys whose handler runs. */
  running: number;
  /** Bytes counted against `maxBytes`. */
  bytes: number;
  /** Done entries dropped to make room (least recently used first). */
  evicted: number;
  /** Entries dropped because they outlived `ttlMs` (done) or their lease (running). */
  expired: number;
  /** Claims refused with ERR_OVERLOADED because running keys filled the store (or their scope's quota). */
  refused: number;
  /** Scopes with entries now. */
  scopes: number;
}

/** The in-process {@link IdempotencyStore}: LRU by count and bytes, with a time to live. */
export interface MemoryIdempotencyStore extends IdempotencyStore {
  /** Entries kept now (running + done); never more than `maxEntries`. */
  readonly size: number;
  /** Bytes kept now; never more than `maxBytes`. */
  readonly bytes: number;
  /** Counters. */
  stats(): MemoryIdempotencyStats;
  /** Drops every entry (running claims too: their waiters wake with undefined). */
  clear(): void;
}

/**
 * Bytes a memory store counts per entry on top of its key and stored answer: its slot, entry and answer
 * objects, the answer's own ArrayBuffer (heap and native), its place in two maps — ~510 bytes of heap
 * measured per done entry with a small answer (`--expose-gc`, session 53). 128 were counted: a store
 * at its `maxBytes` held ~2.7× that (`attack/idempotency-charge.test.ts`).
 */
export const MEMORY_ENTRY_OVERHEAD = 768;

interface Waiter {
  resolve(entry: IdempotencyEntry | undefined): void;
  reject(reason: unknown): void;
  signal: AbortSignal;
  onAbort: () => void;
}

/** What one scope holds: entries (running + done), bytes, and its done keys, least recently used first. */
interface ScopeUse {
  readonly name: string;
  entries: number;
  bytes: number;
  readonly done: Set<string>;
}

interface RunningSlot {
  readonly token: string;
  readonly fingerprint: string | undefined;
  readonly bytes: number;
  readonly expiresAt: number;
  readonly scope: ScopeUse;
  waiters: Waiter[] | undefined;
}

type DoneEntry = IdempotencyEntry & { state: "done" };

interface DoneSlot {
  readonly entry: DoneEntry;
  readonly bytes: number;
  readonly expiresAt: number;
  readonly scope: ScopeUse;
}

/** @internal The scope part of a store key built by {@link idempotencyStoreKey} (`"<length>:<scope>…"`); `""` for other keys. */
export function scopeOfKey(key: string): string {
  const colon = key.indexOf(":");
  if (colon <= 0 || colon > 10) return "";
  const n = Number(key.slice(0, colon));
  return Number.isSafeInteger(n) && n >= 0 && colon + 1 + n <= key.length ? key.slice(colon + 1, colon + 1 + n) : "";
}

/** @internal A positive integer option (or Infinity), `fallback` when not given; else ERR_INVALID_ARGUMENT. */
export function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !(value > 0) || (!Number.isSafeInteger(value) && value !== Infinity)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a positive integer, not ${String(value)}`);
  }
  return value;
}

function outcomeBytes(o: IdempotencyOutcome): number {
  return o.ok ? o.data.length : 2 * (o.code.length + o.message.length);
}

class MemoryStore implements MemoryIdempotencyStore {
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private readonly ttlMs: number;
  private readonly maxEntriesPerScope: number;
  private readonly maxBytesPerScope: number;
  /** Scopes that hold entries (a scope is dropped with its last entry). */
  private readonly scopes = new Map<string, ScopeUse>();
  /** Done entries, least recently used first (a hit moves an entry to the end). */
  private readonly done = new Map<string, DoneSlot>();
  private readonly running = new Map<string, RunningSlot>();
  private bytes_ = 0;
  private evicted = 0;
  private expired = 0;
  private refused = 0;
  /** Drops what expired while the store holds entries (unref'd: it never keeps a process alive). */
  private sweeper: ReturnType<typeof setTimeout> | undefined;
  private readonly sweepMs: number;

  constructor(o: MemoryIdempotencyStoreOptions) {
    this.maxEntries = positive("maxEntries", o.maxEntries, 10_000);
    this.maxBytes = positive("maxBytes", o.maxBytes, 32 * 1024 * 1024);
    this.ttlMs = positive("ttlMs", o.ttlMs, 600_000);
    this.maxEntriesPerScope = positive(
      "maxEntriesPerScope",
      o.maxEntriesPerScope,
      Math.max(1, Math.floor(this.maxEntries / 4)),
    );
    this.maxBytesPerScope = positive(
      "maxBytesPerScope",
      o.maxBytesPerScope,
      Math.max(1, Math.floor(this.maxBytes / 4)),
    );
    this.sweepMs = Math.min(60_000, Math.max(10, Math.ceil(this.ttlMs / 4)));
  }

  get size(): number {
    return this.done.size + this.running.size;
  }

  get bytes(): number {
    return this.bytes_;
  }

  stats(): MemoryIdempotencyStats {
    return {
      entries: this.size,
      running: this.running.size,
      bytes: this.bytes_,
      evicted: this.evicted,
      expired: this.expired,
      refused: this.refused,
      scopes: this.scopes.size,
    };
  }

  clear(): void {
    for (const [key, r] of [...this.running]) this.endRunning(key, r, undefined);
    for (const [key, d] of [...this.done]) this.dropDone(key, d);
    if (this.sweeper !== undefined) clearTimeout(this.sweeper);
    this.sweeper = undefined;
  }

  /**
   * Arms the sweep while the store holds entries. Before, expiry was only checked on access and when
   * room was needed: a burst of keyed requests followed by quiet kept its answers (up to `maxBytes`,
   * 32 MiB by default) for the life of the process, not `ttlMs`.
   */
  private armSweep(): void {
    if (this.sweeper !== undefined) return;
    this.sweeper = setTimeout(this.sweep, this.sweepMs);
    (this.sweeper as { unref?: () => void }).unref?.();
  }

  /** Drops done entries past `ttlMs` and claims past their lease (as an access to them would). */
  private readonly sweep = (): void => {
    this.sweeper = undefined;
    const now = performance.now();
    for (const [key, d] of this.done) {
      if (d.expiresAt > now) continue;
      this.expired++;
      this.dropDone(key, d);
    }
    for (const [key, r] of this.running) {
      if (r.expiresAt > now) continue;
      this.expired++;
      this.endRunning(key, r, undefined);
    }
    if (this.size !== 0) this.armSweep();
  };

  begin(key: string, token: string, leaseMs: number, fingerprint?: string): Promise<IdempotencyEntry | undefined> {
    const now = performance.now();
    const live = this.live(key, now);
    if (live !== undefined) return Promise.resolve(live);
    const bytes = MEMORY_ENTRY_OVERHEAD + 2 * (key.length + (fingerprint?.length ?? 0));
    const scope = this.scopeUse(scopeOfKey(key));
    if (!this.makeScopeRoom(scope, bytes, now)) {
      this.refused++;
      this.forgetIfEmpty(scope);
      return Promise.reject(
        new PointSubError("ERR_OVERLOADED", "this client's idempotency quota is full of running requests; retry later"),
      );
    }
    if (!this.makeRoom(bytes, now)) {
      this.refused++;
      this.forgetIfEmpty(scope);
      return Promise.reject(
        new PointSubError("ERR_OVERLOADED", "the idempotency store is full of running requests; retry later"),
      );
    }
    this.running.set(key, { token, fingerprint, bytes, expiresAt: now + leaseMs, scope, waiters: undefined });
    this.account(scope, 1, bytes);
    this.armSweep();
    return Promise.resolve(undefined);
  }

  get(key: string): Promise<IdempotencyEntry | undefined> {
    return Promise.resolve(this.live(key, performance.now()));
  }

  complete(key: string, token: string, outcome: IdempotencyOutcome, fingerprint?: string): Promise<void> {
    const now = performance.now();
    const r = this.running.get(key);
    if (r !== undefined && r.token !== token && r.expiresAt > now) return RESOLVED; // another claim holds it
    const d = this.done.get(key);
    if (d !== undefined && d.expiresAt > now) {
      // Completed by a later claim after this one's lease ran out: the first answer stays.
      if (r !== undefined) this.endRunning(key, r, d.entry);
      return RESOLVED;
    }
    if (d !== undefined) this.dropDone(key, d);
    const print = r?.fingerprint ?? fingerprint;
    const entry: DoneEntry =
      print === undefined ? { state: "done", outcome } : { state: "done", outcome, fingerprint: print };
    const scope = r?.scope ?? this.scopeUse(scopeOfKey(key));
    if (r !== undefined) {
      // Counted out without forgetting the scope: the answer usually takes the claim's place.
      this.running.delete(key);
      this.bytes_ -= r.bytes;
      scope.bytes -= r.bytes;
      scope.entries--;
    }
    const base = MEMORY_ENTRY_OVERHEAD + 2 * (key.length + (print?.length ?? 0));
    const fits = (bytes: number): boolean =>
      bytes <= this.maxBytes &&
      bytes <= this.maxBytesPerScope &&
      this.makeScopeRoom(scope, bytes, now) &&
      this.makeRoom(bytes, now);
    // An answer the store cannot hold is kept as an error saying so: before, it was dropped, and a retry with
    // the key ran the handler again (an answer of 20 KiB with maxBytes 64 KiB, whose scope quota is 16 KiB).
    let kept: DoneEntry | undefined = entry;
    let bytes = base + outcomeBytes(outcome);
    if (!fits(bytes)) {
      const stub: IdempotencyOutcome = {
        ok: false,
        code: "ERR_HANDLER",
        message: `the ${outcome.ok ? "response" : "error"} to this idempotency key (${outcomeBytes(outcome)} bytes) was too large for the idempotency store to keep; the handler ran once`,
      };
      kept =
        print === undefined ? { state: "done", outcome: stub } : { state: "done", outcome: stub, fingerprint: print };
      bytes = base + outcomeBytes(stub);
      if (!fits(bytes)) kept = undefined;
    }
    if (kept !== undefined) {
      this.done.set(key, { entry: kept, bytes, expiresAt: now + this.ttlMs, scope });
      scope.done.add(key);
      this.account(scope, 1, bytes);
      this.armSweep();
    } else {
      this.forgetIfEmpty(scope);
    }
    // Duplicates already waiting get the answer itself.
    if (r !== undefined) wake(r, entry);
    return RESOLVED;
  }

  fail(key: string, token: string): Promise<void> {
    const r = this.running.get(key);
    if (r !== undefined && r.token === token) this.endRunning(key, r, undefined);
    return RESOLVED;
  }

  wait(key: string, signal: AbortSignal): Promise<IdempotencyEntry | undefined> {
    if (signal.aborted) return Promise.reject(signal.reason);
    const live = this.live(key, performance.now());
    if (live === undefined || live.state === "done") return Promise.resolve(live);
    const r = this.running.get(key) as RunningSlot;
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          if (r.waiters !== undefined) {
            const i = r.waiters.indexOf(w);
            if (i >= 0) r.waiters.splice(i, 1);
          }
          reject(signal.reason);
        },
      };
      signal.addEventListener("abort", w.onAbort, { once: true });
      r.waiters ??= [];
      r.waiters.push(w);
    });
  }

  /** The key's entry unless expired (an expired one is dropped); a done hit becomes most recently used. */
  private live(key: string, now: number): IdempotencyEntry | undefined {
    const d = this.done.get(key);
    if (d !== undefined) {
      if (d.expiresAt > now) {
        this.done.delete(key);
        this.done.set(key, d);
        d.scope.done.delete(key);
        d.scope.done.add(key);
        return d.entry;
      }
      this.expired++;
      this.dropDone(key, d);
    }
    const r = this.running.get(key);
    if (r === undefined) return undefined;
    if (r.expiresAt > now) {
      return r.fingerprint === undefined
        ? { state: "running", token: r.token }
        : { state: "running", token: r.token, fingerprint: r.fingerprint };
    }
    this.expired++;
    this.endRunning(key, r, undefined);
    return undefined;
  }

  /**
   * Evicts done entries (expired ones, then least recently used) until
   * `bytes` more fit; then, if running keys alone fill the store, drops
   * those whose lease ran out. False when there is still no room.
   */
  private makeRoom(bytes: number, now: number): boolean {
    const fits = () => this.size + 1 <= this.maxEntries && this.bytes_ + bytes <= this.maxBytes;
    while (!fits() && this.done.size !== 0) {
      const [key, d] = this.done.entries().next().value as [string, DoneSlot];
      if (d.expiresAt <= now) this.expired++;
      else this.evicted++;
      this.dropDone(key, d);
    }
    if (fits()) return true;
    for (const [key, r] of [...this.running]) {
      if (r.expiresAt <= now) {
        this.expired++;
        this.endRunning(key, r, undefined);
      }
    }
    return fits();
  }

  /**
   * Evicts `scope`'s own done entries (expired ones count as expired)
   * until one more entry of `bytes` fits its quota. False when its running
   * keys alone fill it.
   */
  private makeScopeRoom(scope: ScopeUse, bytes: number, now: number): boolean {
    const fits = () => scope.entries + 1 <= this.maxEntriesPerScope && scope.bytes + bytes <= this.maxBytesPerScope;
    while (!fits() && scope.done.size !== 0) {
      const key = scope.done.values().next().value as string;
      const d = this.done.get(key) as DoneSlot;
      if (d.expiresAt <= now) this.expired++;
      else this.evicted++;
      this.dropDone(key, d);
    }
    return fits();
  }

  private scopeUse(name: string): ScopeUse {
    let u = this.scopes.get(name);
    if (u === undefined) {
      u = { name, entries: 0, bytes: 0, done: new Set() };
      this.scopes.set(name, u);
    }
    return u;
  }

  /** Adds `entries` and `bytes` (negative: removes) to the store's and `scope`'s counts. */
  private account(scope: ScopeUse, entries: number, bytes: number): void {
    this.bytes_ += bytes;
    scope.bytes += bytes;
    scope.entries += entries;
    if (entries < 0) this.forgetIfEmpty(scope);
    // A scope emptied a moment ago within the same operation (its last answer evicted to make room) is kept again.
    else if (this.scopes.get(scope.name) !== scope) this.scopes.set(scope.name, scope);
  }

  /** A scope with nothing left is dropped: the scope map is never larger than the entries. */
  private forgetIfEmpty(scope: ScopeUse): void {
    if (scope.entries === 0 && this.scopes.get(scope.name) === scope) this.scopes.delete(scope.name);
  }

  private dropDone(key: string, d: DoneSlot): void {
    this.done.delete(key);
    d.scope.done.delete(key);
    this.account(d.scope, -1, -d.bytes);
  }

  private endRunning(key: string, r: RunningSlot, entry: IdempotencyEntry | undefined): void {
    this.running.delete(key);
    this.account(r.scope, -1, -r.bytes);
    wake(r, entry);
  }
}

function wake(r: RunningSlot, entry: IdempotencyEntry | undefined): void {
  const ws = r.waiters;
  if (ws === undefined) return;
  r.waiters = undefined;
  for (const w of ws) {
    w.signal.removeEventListener("abort", w.onAbort);
    w.resolve(entry);
  }
}

const RESOLVED: Promise<void> = Promise.resolve();

/**
 * The in-process {@link IdempotencyStore}. Bounded whatever the peers
 * send: at most `maxEntries` entries and `maxBytes` bytes (done entries
 * are evicted least recently used first; when running keys alone fill it,
 * new claims are refused with ERR_OVERLOADED), and per scope (principal)
 * at most `maxEntriesPerScope` / `maxBytesPerScope`, made room for from
 * that scope's own answers only; done entries expire after
 * `ttlMs` (checked on access, when room is needed, and by a sweep every
 * quarter of `ttlMs` — 10 ms to 60 s — while the store holds entries: an
 * unref'd timer that never keeps a process alive). An answer larger than
 * `maxBytes` or `maxBytesPerScope` (or that finds no room: running keys
 * fill the store) is kept as an ERR_HANDLER error saying it was too large
 * to keep, so that a duplicate still does not run the handler (duplicates
 * already waiting get the answer itself); only when even that finds no
 * room is the key's answer not kept.
 */
export function memoryIdempotencyStore(options: MemoryIdempotencyStoreOptions = {}): MemoryIdempotencyStore {
  return new MemoryStore(options);
}

/** Options of the {@link idempotency} middleware. */
export interface IdempotencyOptions {
  /** Where keys are kept. Default: a new {@link memoryIdempotencyStore} with its defaults. */
  store?: IdempotencyStore;
  /**
   * How long a duplicate waits for the first attempt still running, in
   * ms, before it fails with ERR_TIMEOUT (retryable). It also stops
   * waiting when its own call is cancelled or its connection closes.
   * Default 30,000.
   */
  waitMs?: number;
  /**
   * How long a claim holds while its handler runs, in ms: a handler still
   * running after this may run again for a duplicate. Default 600,000.
   */
  leaseMs?: number;
  /**
   * Largest answer kept, in bytes. A larger response is sent to the first
   * caller but stored as an error (ERR_HANDLER, "too large to keep"), so a
   * duplicate still does not run the handler again. Default 1 MiB.
   */
  maxResponseBytes?: number;
  /**
   * The scope of a call's keys: keys are unique per scope and route, so
   * one principal can never read another's stored answer. Default: derived
   * from `ctx.principal` (see {@link principalScope}): every unauthenticated
   * client is the one scope `""`, so their keys must be unguessable (a key
   * two of them send is one key: the second gets the first's answer). Not
   * per connection: a retry after a reconnection must find its answer.
   */
  scope?: (ctx: CallContext) => string;
  /**
   * Whether a duplicate must carry the same payload as the request that
   * claimed its key: a key reused for a different payload (a client bug:
   * one key for two operations) is refused with ERR_INVALID_ARGUMENT
   * instead of being answered with the other operation's result. The
   * store keeps the payload's length and CRC32C with the key. Default true.
   */
  checkPayload?: boolean;
  /**
   * Called when the store fails to record an attempt's end (`complete`
   * after the handler answered or threw, `fail` when its key is released):
   * the caller still gets the handler's own answer or error — the handler
   * ran, so a store failure is not reported as the request's — and the key
   * stays claimed until its lease ends (a duplicate meanwhile waits, then
   * fails with ERR_TIMEOUT), unless the store records the end later: the
   * cluster's shared store writes an answer again until its engine takes it
   * (a duplicate then gets it). Default: nothing (the failure is dropped).
   */
  onStoreError?: (error: unknown, operation: "complete" | "fail") => void;
}

const objectIds = new WeakMap<object, number>();
let nextObjectId = 1;

/**
 * The default scope of a call's idempotency keys, from `ctx.principal`:
 * `""` without authentication (every anonymous client shares one scope,
 * so their keys must be unguessable), the value of a string, number,
 * bigint or boolean principal, the `id` field of an object that has a
 * string or number one, else the object's JSON, else the object's
 * identity (then keys do not carry over to a new session).
 */
export function principalScope(ctx: CallContext): string {
  const p = ctx.principal;
  switch (typeof p) {
    case "undefined":
      return "";
    case "string":
      return `s${p}`;
    case "number":
    case "bigint":
    case "boolean":
      return `${typeof p}${String(p)}`;
    case "object": {
      if (p === null) return "";
      const id = (p as { id?: unknown }).id;
      if (typeof id === "string" || typeof id === "number") return `i${typeof id}${String(id)}`;
      try {
        const json = JSON.stringify(p);
        if (json !== undefined) return `j${json}`;
      } catch {
        // cyclic or bigint inside: identity below
      }
      return identity(p);
    }
    case "function":
      return identity(p);
    default:
      return `y${String(p)}`;
  }
}

function identity(o: object): string {
  let id = objectIds.get(o);
  if (id === undefined) {
    id = nextObjectId++;
    objectIds.set(o, id);
  }
  return `o${id}`;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/**
 * The key an {@link IdempotencyStore} keeps a call under, as the
 * {@link idempotency} middleware builds it: `scope` (the caller's principal,
 * `""` when unauthenticated), `route` and the idempotency key's bytes (hex),
 * unambiguous (lengths first): `"<scope length>:<scope><route length>:<route><hex>"`.
 *
 * @param scope - whose key it is: the middleware's scope, the session's principal as a string.
 * @param route - the route called.
 * @param key - the idempotency key as the handler sees it, `ctx.idempotencyKey`: bytes (a `Uint8Array`),
 *   not a string: the key a client gives as a string travels UTF-8 encoded, so pass
 *   `new TextEncoder().encode(text)`.
 * @throws PointSubError ERR_INVALID_ARGUMENT when `key` is not a `Uint8Array` or `scope` or `route` not a
 *   string (a string key made every key of its length one store key).
 */
export function idempotencyStoreKey(scope: string, route: string, key: Uint8Array): string {
  if (!(key instanceof Uint8Array) || typeof scope !== "string" || typeof route !== "string") {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `idempotencyStoreKey(scope: string, route: string, key: Uint8Array) got (${typeof scope}, ${typeof route}, ${key instanceof Uint8Array ? "Uint8Array" : typeof key}): encode a text key with new TextEncoder().encode(key)`,
    );
  }
  let hex = "";
  for (let i = 0; i < key.length; i++) hex += HEX[key[i]];
  return `${scope.length}:${scope}${route.length}:${route}${hex}`;
}

/**
 * Errors that are not stored: the attempt may succeed when repeated
 * (retryable codes, a cancelled call) or the handler did not run (no
 * route, refused by a later middleware).
 */
function keepsError(code: ErrorCode): boolean {
  if (code === "ERR_CANCELLED" || code === "ERR_NO_ROUTE" || code === "ERR_UNAUTHORIZED") return false;
  return !codeInfo(code).retryable;
}

const utf8 = new TextEncoder();

/** What a claim records of its request's payload: its length and CRC32C (a check for a key reused by mistake, not a MAC). */
function payloadFingerprint(data: Uint8Array): string {
  return `${data.length}.${crc32cHex(crc32c(data))}`;
}

/**
 * `e`, when it is an entry of the same request (`print`, to `route`): an entry made for another payload is
 * not a duplicate's answer. (A function of its own: a closure per keyed request was kept while it ran.)
 */
function same(e: IdempotencyEntry, print: string | undefined, route: string): IdempotencyEntry {
  if (print === undefined || e.fingerprint === undefined || e.fingerprint === print) return e;
  throw new PointSubError(
    "ERR_INVALID_ARGUMENT",
    `this idempotency key was used for a different request to ${route} (another payload); use a new key for a new request`,
  );
}

function positiveMs(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number" || !(v > 0)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a positive number, not ${String(v)}`);
  }
  return v;
}

let tokenCounter = 0;
let tokenPrefix: string | undefined;

/**
 * A claim token unique across processes sharing a store: one random prefix per process (randomUUID where
 * available: secure contexts, Node) and a counter. Before, a randomUUID per keyed request: Node builds it
 * of ~20 pieces, a rope of 13 cons strings (~450 bytes of heap) that the claim and every waiting duplicate
 * kept while the handler ran; now one string of ~50.
 */
function claimToken(): string {
  if (tokenPrefix === undefined) {
    const c = globalThis.crypto as Crypto | undefined;
    tokenPrefix = `${typeof c?.randomUUID === "function" ? c.randomUUID() : `${Math.random().toString(36).slice(2)}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`}-`;
  }
  return tokenPrefix + (tokenCounter++).toString(36);
}

/**
 * HELLO feature bit (docs/PROTOCOL.md §3.4.1, §4) a server announces once an
 * {@link idempotency} middleware is in its chain: it runs a keyed request's
 * handler at most once per key, so a client may send such a request again
 * (after a drop, or when an attempt ran out of time). Bit `8` only says that
 * a side understands keys.
 */
export const DEDUPLICATES_FEATURE = 0x10;
const dedupers = new WeakSet<Middleware>();

/** Whether `mw` came from {@link idempotency} (its server announces {@link DEDUPLICATES_FEATURE}). */
export function isDeduplicating(mw: Middleware): boolean {
  return dedupers.has(mw);
}

/**
 * A middleware that runs a handler at most once per idempotency key
 * (`conn.request(route, data, { idempotencyKey })`, docs/PROTOCOL.md
 * §3.4.1). Use it with `server.use(idempotency({ store }))` (or
 * `createServer({ idempotency: true })`); put it before middleware whose
 * work should not repeat either.
 *
 * For a keyed request it claims the key (scoped by principal and route)
 * in the store, then:
 * - a duplicate of a completed request gets the stored answer, and
 *   nothing after this middleware runs;
 * - a duplicate of a request still running waits for it (at most
 *   `waitMs`; it stops when its own call is cancelled) and gets its
 *   answer;
 * - the first attempt runs the rest of the chain and stores its answer:
 *   the response bytes, or the error it threw — except errors worth
 *   repeating, which release the key instead: retryable codes
 *   (ERR_TIMEOUT, ERR_CONNECTION_CLOSED, ERR_OVERLOADED, ERR_GOING_AWAY,
 *   …), ERR_CANCELLED, ERR_NO_ROUTE and ERR_UNAUTHORIZED, and any error
 *   thrown after its signal aborted. When its connection closes, the
 *   handler's signal is aborted only `waitMs` later (at once when the
 *   server closes, when 1024 such handlers of the server already run on,
 *   or on a client's connection): a retry on a new connection waits for
 *   it and gets its answer,
 *   which is stored even when its connection closed before it was sent.
 *
 * Unkeyed requests, streams and one-way messages pass through untouched.
 */
export function idempotency(options: IdempotencyOptions = {}): Middleware {
  // Checked here: a store or scope of another type was kept, and every keyed request then failed
  // ERR_HANDLER ("store.begin is not a function").
  const given = options.store as Partial<IdempotencyStore> | null | undefined;
  if (
    given !== undefined &&
    (typeof given?.begin !== "function" ||
      typeof given.get !== "function" ||
      typeof given.complete !== "function" ||
      typeof given.fail !== "function" ||
      typeof given.wait !== "function")
  ) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      "idempotency store must have begin, get, complete, fail and wait (an IdempotencyStore)",
    );
  }
  if (options.scope !== undefined && typeof options.scope !== "function") {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "idempotency scope must be a function");
  }
  // Kept, it was called only when the store failed, and its TypeError swallowed: nothing was ever reported.
  if (options.onStoreError !== undefined && typeof options.onStoreError !== "function") {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "idempotency onStoreError must be a function");
  }
  const store = options.store ?? memoryIdempotencyStore();
  const waitMs = positiveMs("waitMs", options.waitMs, 30_000);
  const leaseMs = positiveMs("leaseMs", options.leaseMs, 600_000);
  const maxResponseBytes = positiveMs("maxResponseBytes", options.maxResponseBytes, 1024 * 1024);
  const scopeOf = options.scope ?? principalScope;
  const checkPayload = options.checkPayload ?? true;
  const onStoreError = options.onStoreError;
  /** Records an attempt's end; a store that fails does not change what the caller gets. */
  const settle = async (operation: "complete" | "fail", op: () => Promise<void>): Promise<void> => {
    try {
      await op();
    } catch (err) {
      try {
        onStoreError?.(err, operation);
      } catch {
        // the application's reporter failing changes nothing either
      }
    }
  };

  /**
   * The stored answer, as it is: every duplicate answered from it sends the
   * same bytes (an answer is only read once handed back). A copy each — the
   * duplicates waiting for one running attempt all woke at once — made
   * 1,000 waiting duplicates of a 1 MiB answer hold 1 GiB at the same time,
   * past the memory budget, which saw each copy only once it existed.
   */
  const replay = (o: IdempotencyOutcome): Uint8Array => {
    if (o.ok) return o.data;
    // A code this side does not know (a store of the application's, shared with a newer version): ERR_HANDLER
    // naming it, as the cluster store reads one. Before, the constructor refused it: the duplicate's caller got
    // ERR_INVALID_ARGUMENT ("invalid code …"), blamed for a request that was fine.
    if ((codeInfo(o.code) as ErrorCodeInfo | undefined) === undefined) {
      throw new PointSubError("ERR_HANDLER", `${o.code}: ${o.message}`);
    }
    throw new PointSubError(o.code, o.message);
  };

  /** Waits for the running key; a done entry, or undefined to try claiming again. */
  const waitFor = async (key: string, ctx: CallContext, deadline: number): Promise<IdempotencyEntry | undefined> => {
    const left = deadline - performance.now();
    // Made when it fires: made up front, every waiting duplicate kept an error, its message and its stack.
    const timeout = () =>
      new PointSubError(
        "ERR_TIMEOUT",
        `a request with the same idempotency key to ${ctx.route} is still running after ${waitMs} ms; retry later`,
      );
    if (left <= 0) throw timeout();
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(timeout()), Math.min(left, 0x7fffffff)); // a longer delay fires at once
    const outer = ctx.signal;
    const onAbort = () => ac.abort(outer.reason);
    if (outer.aborted) onAbort();
    else outer.addEventListener("abort", onAbort, { once: true });
    try {
      return await store.wait(key, ac.signal);
    } finally {
      clearTimeout(timer);
      outer.removeEventListener("abort", onAbort);
    }
  };

  const mw: Middleware = async (ctx, next) => {
    const raw = ctx.idempotencyKey;
    if (raw === undefined || ctx.kind !== "request") return next();
    // Its claim or wait (KEYED_OVERHEAD), charged here: wherever this middleware stands, and only when it runs.
    keyedHold.charge?.(ctx);
    const key = idempotencyStoreKey(scopeOf(ctx), ctx.route, raw);
    const token = claimToken();
    const deadline = performance.now() + waitMs;
    const print = checkPayload ? payloadFingerprint(ctx.data) : undefined;
    for (;;) {
      const entry = await store.begin(key, token, leaseMs, print);
      if (entry === undefined) {
        // Claimed: this attempt runs the handler, on for up to waitMs if its connection ends (a retry on
        // another connection will want the answer; orphans.ts bounds them): the caller's CANCEL aborts it.
        (ctx as { outliveConnection?(graceMs: number): void }).outliveConnection?.(waitMs);
        break;
      }
      if (same(entry, print, ctx.route).state === "done") return replay((entry as DoneEntry).outcome);
      const settled = await waitFor(key, ctx, deadline);
      if (settled?.state === "done") return replay((same(settled, print, ctx.route) as DoneEntry).outcome);
      // The running attempt gave up without an answer: claim the key again.
    }
    let value: HandlerResult;
    try {
      value = await next();
    } catch (err) {
      // What the dispatcher answers as it is (a PointSubError it can send); anything else is ERR_HANDLER.
      const e = answerableError(err);
      if (ctx.signal.aborted || (e !== undefined && !keepsError(e.code))) {
        await settle("fail", () => store.fail(key, token));
      } else {
        const message =
          e !== undefined ? e.message : `handler for ${ctx.route} failed: ${thrownCode(err)}${describeThrown(err)}`;
        const code = e?.code ?? "ERR_HANDLER";
        await settle("complete", () => store.complete(key, token, { ok: false, code, message }, print));
      }
      throw err;
    }
    let data: Uint8Array;
    if (value === undefined) data = new Uint8Array(0);
    else if (typeof value === "string") data = utf8.encode(value);
    // A copy of its own (a Buffer's slice() is a view: the store kept the handler's buffer, and a later write
    // to it changed what duplicates got; a small view kept the whole buffer under it, past maxBytes).
    else if (value instanceof Uint8Array) data = new Uint8Array(value);
    else {
      // Not an answer the dispatcher can send: it fails the call with ERR_HANDLER, and so does every duplicate.
      // The handler ran: releasing the key (as before) made a duplicate waiting for it run the handler again.
      const message = `handler for ${ctx.route} returned ${describeResult(value)}, not a Uint8Array, a string or undefined`;
      await settle("complete", () => store.complete(key, token, { ok: false, code: "ERR_HANDLER", message }, print));
      return value;
    }
    const outcome: IdempotencyOutcome =
      data.length <= maxResponseBytes
        ? { ok: true, data }
        : {
            ok: false,
            code: "ERR_HANDLER",
            message: `the response to this idempotency key (${data.length} bytes) was too large to keep; the handler ran once`,
          };
    // The handler answered: that answer is this caller's even if the store cannot keep it (engine down).
    await settle("complete", () => store.complete(key, token, outcome, print));
    return value;
  };
  dedupers.add(mw);
  return mw;
}
