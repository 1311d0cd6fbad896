/**
 * Connections per node, reused across calls: a multiplexed connection
 * carries many calls at once, so calls are packed onto a node's first
 * connection with room (more calls per write), and a node gets another
 * connection only when each of its connections (and each one being opened)
 * already has `maxInFlight` calls (up to `maxPerNode`, and no more than were open when the node refused
 * another: its connection limit). At most `maxTotal` connections overall: opening one beyond
 * that first closes an idle connection of another node, else waits up to
 * `acquireTimeoutMs` for one (then ERR_POOL_EXHAUSTED). Calls waiting for a connection being
 * opened share that connect's outcome (one connect, not one per call). Idle connections
 * (no call open) close after `idleTimeoutMs`.
 */
import type { Connection } from "../connection/connection.ts";
import { PointSubError } from "../errors/error.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";

/** Pool limits. */
export interface PoolOptions {
  /** Connections per node at most. Default 4. */
  maxPerNode?: number;
  /** Connections over all nodes at most. Default 64. */
  maxTotal?: number;
  /** Calls open on a connection before the pool opens another to the same node. Default 256. */
  maxInFlight?: number;
  /** An idle connection (no call open) is closed after this long. Default 30000 ms. */
  idleTimeoutMs?: number;
  /**
   * Longest wait for a connection slot before ERR_POOL_EXHAUSTED (a slot is freed by a connection that
   * closes, or whose calls all ended: it is closed to make room). Default 5000 ms. A call waiting for a
   * connection being opened to its node waits for that connect instead (its own deadline:
   * connectTimeoutMs) and shares its failure; the Client's call waits at most its `timeoutMs`, or
   * the connections' `requestTimeoutMs` (connectTimeoutMs 0 is no deadline).
   */
  acquireTimeoutMs?: number;
}

/** One pooled connection and the calls open on it. */
export interface Pooled {
  readonly node: string;
  readonly conn: Connection;
  /** When the sweep first saw it with no call open (0: in use, or not seen idle yet). */
  idleSince: number;
  /**
   * Calls {@link Pool.acquire} gave it to that have not started yet ({@link Pool.release}): not idle
   * meanwhile. Before, a call waiting for a slot could close a connection just opened for another
   * call (its calls in flight: none yet), which then failed unsent with ERR_GOING_AWAY.
   */
  claims: number;
}

interface NodeEntry {
  conns: Pooled[];
  /** Connections being opened. */
  opening: number;
  /** The connects of those (what a call waiting for one of them waits for). */
  opens: Set<Promise<Pooled>>;
  /** Calls waiting for a connection being opened (each opening one takes up to maxInFlight). */
  waitingForOpen: number;
  /** Calls inside `acquire` for this node: the entry stays while any is. */
  acquiring: number;
  /** Connections the node takes: how many were open when it refused another (until one of them closes). */
  cap: number;
}

interface Waiter {
  node: string;
  resolve: () => void;
  reject: (e: PointSubError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** How often calls waiting for a slot look for a connection whose calls all ended. */
const IDLE_WATCH_MS = 20;

function positive(name: string, v: number | undefined, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v < min || !Number.isInteger(v)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `pool.${name} must be an integer >= ${min}, got ${v}`);
  }
  return v;
}

export class Pool {
  /** Connections whose server said GOAWAY: out of the pool, their calls in flight finishing (closed by close()). */
  private readonly draining = new Set<Connection>();
  readonly maxPerNode: number;
  readonly maxTotal: number;
  readonly maxInFlight: number;
  readonly idleTimeoutMs: number;
  readonly acquireTimeoutMs: number;
  private readonly nodes = new Map<string, NodeEntry>();
  private total = 0;
  /** Calls waiting for a slot, in arrival order (a Set: each timed-out one leaves in O(1); a list filtered per timeout took 0.7 s of one turn for 20,000). */
  private waiters = new Set<Waiter>();
  private sweeper: ReturnType<typeof setInterval> | undefined;
  /** Looks for a connection whose calls all ended while calls wait for a slot ({@link watchIdle}). */
  private idleWatch: ReturnType<typeof setInterval> | undefined;
  private closed = false;
  /** What close() gives back (a second call, the first's). */
  private closing: Promise<void> | undefined;
  /** Aborted by close(): ends the connects under way. */
  private readonly stop = new AbortController();
  /** Connects under way (close() waits for them to end). */
  private readonly connecting = new Set<Promise<Pooled>>();
  private readonly open: (node: string, signal: AbortSignal) => Promise<Connection>;
  private readonly dropped: ((node: string) => void) | undefined;

  /**
   * `open` makes a connection to a node (its attempt ends when `signal` aborts: the pool closed); `dropped` is told when the pool forgets a node (no
   * connection open or being opened, no call waiting for one): what its owner keeps per node can go.
   */
  constructor(
    options: PoolOptions,
    open: (node: string, signal: AbortSignal) => Promise<Connection>,
    dropped?: (node: string) => void,
  ) {
    this.maxPerNode = positive("maxPerNode", options.maxPerNode, 4);
    this.maxTotal = positive("maxTotal", options.maxTotal, 64);
    this.maxInFlight = positive("maxInFlight", options.maxInFlight, 256);
    this.idleTimeoutMs = positive("idleTimeoutMs", options.idleTimeoutMs, 30_000, 0);
    this.acquireTimeoutMs = positive("acquireTimeoutMs", options.acquireTimeoutMs, 5000, 0);
    this.open = open;
    this.dropped = dropped;
  }

  /** Connections open (and being opened) over all nodes. */
  get size(): number {
    return this.total;
  }

  /** The open connections to `node`. */
  connections(node: string): readonly Pooled[] {
    return this.nodes.get(node)?.conns ?? [];
  }

  /** Nodes with a connection open or being opened, or a call waiting for one. */
  nodeNames(): IterableIterator<string> {
    return this.nodes.keys();
  }

  /** The connects under way to `node` (what calls waiting for one of them wait for); none while they wait for a slot. */
  connectsTo(node: string): ReadonlySet<Promise<Pooled>> | undefined {
    return this.nodes.get(node)?.opens;
  }

  /** Whether the pool holds anything for `node` (see {@link nodeNames}). */
  has(node: string): boolean {
    return this.nodes.has(node);
  }

  /**
   * A connection to `node` with room for one more call, if one is open
   * (the hot path: no promise, no wait); undefined otherwise.
   */
  tryAcquire(node: string): Pooled | undefined {
    const e = this.nodes.get(node);
    if (e === undefined || this.closed) return undefined;
    const conns = e.conns;
    for (let i = 0; i < conns.length; i++) {
      const p = conns[i];
      // The connection counts its own calls (including those queued for the peer's limit).
      if (p.conn.inFlight < this.maxInFlight) {
        // Closing on this side (its idleTimeoutMs, which tells the pool nothing): out of the pool, as on
        // the peer's GOAWAY. Before, it took calls until closed: each failed with ERR_GOING_AWAY, a failure
        // of the node for requestClosest (its breaker opened).
        if (p.conn.state !== "open") {
          this.retire(p);
          i--;
          continue;
        }
        p.idleSince = 0;
        return p;
      }
    }
    return undefined;
  }

  /**
   * A connection to `node` for one call (opening one, or waiting for a slot, as needed), claimed for
   * that call: {@link release} it once the call started on it (or will not).
   */
  async acquire(node: string): Promise<Pooled> {
    if (this.closed) throw new PointSubError("ERR_CONNECTION_CLOSED", "client closed");
    const ready = this.tryAcquire(node);
    if (ready !== undefined) return this.take(ready);
    // The node's entry stays while this call is in here (its waits included): a node the pool
    // forgets is one nobody waits for.
    const e = this.entry(node);
    e.acquiring++;
    try {
      return await this.acquireFrom(node, e);
    } finally {
      e.acquiring--;
      this.dropIfUnused(node, e);
    }
  }

  private async acquireFrom(node: string, e: NodeEntry): Promise<Pooled> {
    /** When this call's wait for a slot ends (0: not waiting yet): one deadline however often it is woken. */
    let slotDeadline = 0;
    for (;;) {
      if (this.closed) throw new PointSubError("ERR_CONNECTION_CLOSED", "client closed");
      const ready = this.tryAcquire(node);
      if (ready !== undefined) return this.take(ready);
      if (e.opening !== 0 && e.waitingForOpen < e.opening * this.maxInFlight) {
        // A connection being opened will have room for this call: it shares that connect's outcome (its
        // failure is this call's; a connect has its own deadline). Before, it waited at most acquireTimeoutMs
        // (ERR_POOL_EXHAUSTED, no limit reached, for a handshake slower than that), and after a failed connect
        // opened its own: n calls to a node that never answers made n connects, one after another.
        await this.waitForOpen(e);
        continue;
      }
      const count = e.conns.length + e.opening;
      if (count < Math.min(this.maxPerNode, e.cap) && (this.total < this.maxTotal || this.evictIdle(node))) {
        try {
          return await this.connect(node, e); // claimed for this call as it opened
        } catch (err) {
          // A node that refuses another connection (maxConnectionsPerAddress, maxConnections) while some are
          // open: calls share those (over-subscribed, below) until one closes. Before, each call beyond
          // maxInFlight failed with the refusal (ERR_OVERLOADED), a working connection to the node at hand.
          if (e.conns.length === 0 || this.closed) throw err;
          e.cap = e.conns.length;
        }
      }
      // Every allowed connection is full: over-subscribe the least loaded one rather than wait.
      let best: Pooled | undefined;
      for (const p of e.conns) {
        if (p.conn.state === "open" && (best === undefined || p.conn.inFlight < best.conn.inFlight)) best = p;
      }
      if (best !== undefined) return this.take(best);
      // None open yet: those being opened will take it, over-subscribed (before: ERR_POOL_EXHAUSTED after
      // acquireTimeoutMs for a burst past maxPerNode × maxInFlight while the node's handshakes were slower).
      if (e.opening !== 0) await this.waitForOpen(e);
      else {
        slotDeadline ||= performance.now() + this.acquireTimeoutMs;
        await this.waitForSlot(node, slotDeadline);
      }
    }
  }

  /** Waits for one of the connects under way to `e`'s node: its failure is the caller's, unless the node has connections open. */
  private async waitForOpen(e: NodeEntry): Promise<void> {
    e.waitingForOpen++;
    try {
      await Promise.race(e.opens);
    } catch (err) {
      // Refused while the node has connections open (its connection limit): the call shares those.
      if (e.conns.length === 0 || this.closed) throw err;
    } finally {
      e.waitingForOpen--;
    }
  }

  /** The call {@link acquire} gave `p` to has started (or will not): `p` may be idle again. */
  release(p: Pooled): void {
    p.claims--;
  }

  /** Gives `p` to a call of {@link acquire}: claimed until {@link release} (at once: a wait may resume first). */
  private take(p: Pooled): Pooled {
    p.idleSince = 0;
    p.claims++;
    return p;
  }

  private entry(node: string): NodeEntry {
    let e = this.nodes.get(node);
    if (e === undefined) {
      e = { conns: [], opening: 0, opens: new Set(), waitingForOpen: 0, acquiring: 0, cap: Number.POSITIVE_INFINITY };
      this.nodes.set(node, e);
    }
    return e;
  }

  /** Opens a connection to `node`; close() aborts it and waits for it to end. */
  private connect(node: string, e: NodeEntry): Promise<Pooled> {
    const p = this.connectNow(node, e);
    this.connecting.add(p);
    e.opens.add(p);
    const done = () => {
      this.connecting.delete(p);
      e.opens.delete(p);
    };
    p.then(done, done);
    return p;
  }

  private async connectNow(node: string, e: NodeEntry): Promise<Pooled> {
    e.opening++;
    this.total++;
    let conn: Connection;
    try {
      conn = await this.open(node, this.stop.signal);
    } catch (err) {
      e.opening--;
      // After close() (which counted it out): the abort's error is the client's closing.
      if (this.closed) throw new PointSubError("ERR_CONNECTION_CLOSED", "client closed", { cause: err });
      this.total--;
      this.wakeWaiters();
      throw err;
    }
    e.opening--;
    // Claimed for the call that opened it before anyone waiting is woken (they would find it idle).
    const p: Pooled = { node, conn, idleSince: 0, claims: 1 };
    if (this.closed) {
      conn.destroy();
      throw new PointSubError("ERR_CONNECTION_CLOSED", "client closed");
    }
    e.conns.push(p);
    conn.once("close", () => this.forget(p));
    // A connection whose server said GOAWAY takes no new call (it failed each with ERR_GOING_AWAY until it
    // had drained): out of the pool at once, its calls in flight finish on it (close() waits for them).
    conn.once("goaway", () => this.retire(p));
    this.armSweeper();
    // Calls that waited while every allowed connection was still opening can use this one now.
    this.wakeWaiters();
    return p;
  }

  /** Takes `p` out of the pool while its calls in flight finish on it (close() closes it and waits for it). */
  private retire(p: Pooled): void {
    this.forget(p);
    const conn = p.conn;
    if (conn.state === "closed" || this.draining.has(conn)) return;
    this.draining.add(conn);
    conn.once("close", () => this.draining.delete(conn));
  }

  /** Drops a closed connection from the pool. */
  private forget(p: Pooled): void {
    const e = this.nodes.get(p.node);
    if (e === undefined) return;
    const i = e.conns.indexOf(p);
    if (i < 0) return;
    e.conns.splice(i, 1);
    e.cap = Number.POSITIVE_INFINITY;
    this.total--;
    this.dropIfUnused(p.node, e);
    this.wakeWaiters();
  }

  /**
   * Forgets `node` once nothing of it is left: no connection open or being opened, no call in
   * `acquire` for it. Before, every node ever used kept its entry (and its owner its address and
   * health): a client whose nodes come and go (a new address each) grew without bound.
   */
  private dropIfUnused(node: string, e: NodeEntry): void {
    if (e.conns.length !== 0 || e.opening !== 0 || e.acquiring !== 0 || this.nodes.get(node) !== e) return;
    this.nodes.delete(node);
    this.dropped?.(node);
  }

  /** Closes the longest-idle connection of another node to make room; false when there is none. */
  private evictIdle(except: string): boolean {
    let victim: Pooled | undefined;
    let victimSince = Number.POSITIVE_INFINITY;
    for (const [node, e] of this.nodes) {
      if (node === except) continue;
      for (const p of e.conns) {
        if (p.conn.inFlight !== 0 || p.claims !== 0) continue;
        // Idle the longest first; one not yet seen idle by the sweep counts as idle since now.
        const since = p.idleSince === 0 ? performance.now() : p.idleSince;
        if (victim === undefined || since < victimSince) {
          victim = p;
          victimSince = since;
        }
      }
    }
    if (victim === undefined) return false;
    this.forget(victim);
    void victim.conn.close();
    return true;
  }

  /**
   * Waits for a slot until woken or `deadline` (then ERR_POOL_EXHAUSTED). The caller's deadline, not one per
   * wait: before, each wake (a slot freed, then taken by another waiting call) started a full
   * acquireTimeoutMs again, and under churn a call waited for ever.
   */
  private waitForSlot(node: string, deadline: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let due = false;
      const fire = (): void => {
        // Due: looked at again after this turn's I/O (a new timer runs after the poll phase). After a stall of
        // this process the timers run before the input that came meanwhile is read: the call failed with
        // ERR_POOL_EXHAUSTED, a connection's last answer (its slot free) or its close in the socket. A close
        // wakes the waiters as it is read; a call's end is looked for now, as the idle watch does.
        if (!due) {
          due = true;
          w.timer = setTimeout(fire, 0);
          return;
        }
        if (this.hasIdle()) {
          this.wakeWaiters();
          return;
        }
        this.waiters.delete(w);
        if (this.waiters.size === 0) this.stopWatch();
        reject(
          new PointSubError(
            "ERR_POOL_EXHAUSTED",
            `no connection slot for ${node} within ${this.acquireTimeoutMs} ms (maxTotal ${this.maxTotal})`,
          ),
        );
      };
      const w: Waiter = {
        node,
        resolve,
        reject,
        // At most a timer's longest delay (a longer one fired after 1 ms: ERR_POOL_EXHAUSTED at once).
        timer: setTimeout(fire, Math.min(Math.max(0, deadline - performance.now()), MAX_TIMER_MS)),
      };
      this.waiters.add(w);
      this.watchIdle();
    });
  }

  /** Whether a connection has no call open or claimed: closing it frees a slot ({@link evictIdle}). */
  private hasIdle(): boolean {
    for (const e of this.nodes.values()) {
      for (const p of e.conns) if (p.conn.inFlight === 0 && p.claims === 0) return true;
    }
    return false;
  }

  /**
   * While calls wait for a slot: a connection whose last call ended (nothing tells the pool: a call on an
   * open connection is the connection's own, with no promise of the pool's around it) wakes them, to
   * close it and take its slot. Before, they waited for a connection to close or open, and a wait for a
   * slot that a call's end freed ended with ERR_POOL_EXHAUSTED.
   */
  private watchIdle(): void {
    if (this.idleWatch !== undefined) return;
    this.idleWatch = setInterval(() => {
      if (this.hasIdle()) this.wakeWaiters();
    }, IDLE_WATCH_MS);
  }

  private stopWatch(): void {
    if (this.idleWatch !== undefined) clearInterval(this.idleWatch);
    this.idleWatch = undefined;
  }

  private wakeWaiters(): void {
    const ws = this.waiters;
    this.waiters = new Set();
    this.stopWatch();
    for (const w of ws) {
      clearTimeout(w.timer);
      w.resolve();
    }
  }

  private armSweeper(): void {
    if (this.sweeper !== undefined || this.idleTimeoutMs === 0) return;
    // Half the timeout, within a timer's range: `>>> 1` took it modulo 2^32 (2^32 ms swept every 10 ms).
    this.sweeper = setInterval(
      () => this.sweep(),
      Math.max(10, Math.min(MAX_TIMER_MS, Math.floor(this.idleTimeoutMs / 2))),
    );
    (this.sweeper as { unref?: () => void }).unref?.();
  }

  private sweep(): void {
    const now = performance.now();
    for (const e of this.nodes.values()) {
      for (const p of [...e.conns]) {
        if (p.conn.inFlight !== 0 || p.claims !== 0) {
          p.idleSince = 0;
        } else if (p.idleSince === 0) {
          p.idleSince = now;
        } else if (now - p.idleSince >= this.idleTimeoutMs) {
          this.forget(p);
          void p.conn.close();
        }
      }
    }
    if (this.total === 0 && this.sweeper !== undefined) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  /**
   * Closes every connection; waiting acquisitions reject, and connects under way end (their
   * calls reject with ERR_CONNECTION_CLOSED): resolves once none is left open or opening. A second
   * call gives back the first's promise (before, it found nothing left and resolved at once, while
   * the first still waited for the calls in flight).
   */
  close(): Promise<void> {
    this.closing ??= this.closeNow();
    return this.closing;
  }

  private async closeNow(): Promise<void> {
    this.closed = true;
    this.stop.abort();
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.stopWatch();
    const ws = this.waiters;
    this.waiters = new Set();
    for (const w of ws) {
      clearTimeout(w.timer);
      w.reject(new PointSubError("ERR_CONNECTION_CLOSED", "client closed"));
    }
    const all: Promise<unknown>[] = [...this.connecting];
    for (const e of this.nodes.values()) for (const p of e.conns) all.push(p.conn.close());
    for (const c of this.draining) all.push(c.close());
    this.draining.clear();
    this.nodes.clear();
    this.total = 0;
    await Promise.allSettled(all);
  }
}
