/**
 * A server for length-prefix peers: listens on `lp+tcp://` / `lp+unix://`
 * (any `lp+` scheme of its runtime) and gives every accepted connection the
 * same events. No routes: the format carries one-way messages only.
 */
import { MemoryBudget } from "../connection/budget.ts";
import type { Message } from "../connection/types.ts";
import { PointSubError } from "../errors/error.ts";
import { checkOptions } from "../errors/options.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { Address, Transport, TransportListener } from "../transport/transport.ts";
import { Emitter } from "../util/emitter.ts";
import { badCloseTimeout, LpConnection } from "./connection.ts";
import {
  isLpAddress,
  LP_FRAMING,
  type LpOptions,
  type LpTransportOptions,
  notLpAddress,
  type ResolvedLpOptions,
  resolveLpOptions,
} from "./options.ts";

/** Most sessions one charge that does not fit the budget closes (see `LpServer.relieve`). */
const RELIEVE_CUTS = 16;

/** What `listen` rejects with once the server was closed. */
function closedForListen(): PointSubError {
  return new PointSubError("ERR_GOING_AWAY", "the server was closed: it listens no more");
}

/** Options of an {@link LpServer}: every session's {@link LpOptions}, and the runtime. */
export interface LpServerOptions extends LpOptions {
  /** The runtime whose transports to listen with. Default: the entry point's default runtime. */
  runtime?: Runtime;
  /**
   * Most sessions at once; a connection beyond it is closed at once (the
   * format has no way to say why) and reported as `reject`. Default
   * unlimited.
   */
  maxConnections?: number;
  /**
   * lp+tcp:// and lp+unix:// listeners: the kernel's queue of connections
   * not yet accepted, as `createServer`'s `backlog` (1 to 65535, capped by
   * `net.core.somaxconn`). Default 511.
   */
  backlog?: number;
}

/** Events of an {@link LpServer}. */
export interface LpServerEvents {
  /** A peer connected. */
  session: [session: LpConnection];
  /** A message from a session. */
  message: [msg: Message, session: LpConnection];
  /** A session ended: `error` when it was not a clean close (see the `close` event of {@link LpConnection}). */
  sessionClose: [session: LpConnection, error: PointSubError | undefined];
  /** A session failed with an error other than the connection simply dropping; `sessionClose` follows. */
  error: [error: PointSubError, session: LpConnection];
  /** A connection was refused (`maxConnections`, or the server closing): ERR_OVERLOADED or ERR_GOING_AWAY. */
  reject: [error: PointSubError];
}

/** Listens for length-prefix peers. Use `createLpServer` of the "pointsub" entry point. */
export class LpServer extends Emitter<LpServerEvents> {
  private readonly runtime: Runtime;
  private readonly options: LpServerOptions;
  private readonly resolved: ResolvedLpOptions;
  /** What all sessions' peers may make the server hold (unfinished messages, and what sessions owe them). */
  private readonly budget: MemoryBudget;
  private readonly bound: TransportListener[] = [];
  private readonly sessions_ = new Set<LpConnection>();
  private readonly maxConnections: number;
  private nextId = 0;
  private closing = false;

  constructor(options: LpServerOptions = {}) {
    super();
    if (options.runtime === undefined) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        'an LpServer needs options.runtime here (createLpServer of the "pointsub" entry point supplies it)',
      );
    }
    this.runtime = options.runtime;
    this.options = options;
    this.resolved = resolveLpOptions(options);
    this.budget = new MemoryBudget(options.memoryBudget ?? this.runtime.memoryLimit());
    const max = options.maxConnections ?? Number.POSITIVE_INFINITY;
    // As createServer's: 0 was taken, and refused every connection (1.5 as 2).
    if (typeof max !== "number" || !(max >= 1) || !(Number.isInteger(max) || max === Number.POSITIVE_INFINITY)) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `maxConnections must be an integer >= 1, got ${max}`);
    }
    this.maxConnections = max;
  }

  /**
   * Listens on every address (`lp+tcp://host:port`, `lp+unix:///path`); resolves to the bound URLs, one per address in order (a non-empty tuple).
   * Rejects with ERR_GOING_AWAY once `close` was called (also when it is called while this listen is
   * binding: nothing stays bound after the close).
   */
  async listen(...addresses: Address[]): Promise<[string, ...string[]]> {
    if (addresses.length === 0) throw new PointSubError("ERR_INVALID_ARGUMENT", "listen needs at least one URL");
    if (this.closing) throw closedForListen();
    const started: TransportListener[] = [];
    try {
      for (const a of addresses) {
        if (!isLpAddress(a)) throw notLpAddress(a);
        const { adapter, address } = this.runtime.transports.resolve(a);
        const o: LpServerOptions & LpTransportOptions = {
          ...this.options,
          keepAliveMs: this.resolved.keepAliveMs,
          [LP_FRAMING]: true,
        };
        started.push(await adapter.listen(address, o, (t) => this.accept(t)));
        // A close that ran meanwhile did not see these listeners: they stayed bound after it (the port held,
        // the process kept alive, every connection accepted and dropped).
        if (this.closing) throw closedForListen();
      }
    } catch (err) {
      await Promise.all(started.map((l) => l.close()));
      throw err;
    }
    this.bound.push(...started);
    return started.map((l) => l.url) as [string, ...string[]];
  }

  /** The bound URLs. */
  get urls(): string[] {
    return this.bound.map((l) => l.url);
  }

  /** Open sessions. */
  get sessions(): ReadonlySet<LpConnection> {
    return this.sessions_;
  }

  /** Bytes of unfinished messages and of what sessions owe their peers held now (all sessions), the limit and the peak. */
  get memory(): { used: number; limit: number; peak: number } {
    return { used: this.budget.used, limit: this.budget.limit, peak: this.budget.peak };
  }

  /**
   * Stops listening and closes every session gracefully (their queued
   * sends are written, up to `timeoutMs`, default closeTimeoutMs). A
   * `timeoutMs` that is not a number >= 0 is ERR_INVALID_ARGUMENT, and
   * nothing is closed.
   */
  async close(options: { timeoutMs?: number } = {}): Promise<void> {
    // Null rejected with a raw TypeError.
    checkOptions(options, "close");
    const ms = options.timeoutMs;
    // Checked before anything closes: NaN (or a negative time) cut every session at once, sends queued lost.
    if (ms !== undefined && (typeof ms !== "number" || !(ms >= 0))) throw badCloseTimeout(ms);
    this.closing = true;
    const listeners = this.bound.splice(0).map((l) => l.close());
    // The default given explicitly: a session already closing with a longer timeout of its own is brought
    // forward to it (undefined left that one's deadline standing, and the server's close waited for it).
    const timeoutMs = ms ?? this.resolved.closeTimeoutMs;
    const sessions = [...this.sessions_].map((s) => s.close({ reason: "server closing", timeoutMs }));
    await Promise.all([...listeners, ...sessions]);
  }

  private accept(transport: Transport): void {
    if (this.closing || this.sessions_.size >= this.maxConnections) {
      transport.attach({ onData: () => false, onDrain() {}, onClose() {} });
      transport.destroy();
      this.tell(
        "reject",
        this.closing
          ? new PointSubError("ERR_GOING_AWAY", `refused ${transport.remoteUrl}: server closing`)
          : new PointSubError(
              "ERR_OVERLOADED",
              `refused ${transport.remoteUrl}: maxConnections (${this.maxConnections}) reached`,
            ),
      );
      return;
    }
    const conn = new LpConnection(transport, this.resolved, {
      id: String(++this.nextId),
      budget: this.budget,
      alloc: this.runtime.allocBody,
      onMessage: this.dispatch,
      onClose: this.closed,
      relieve: this.relieve,
    });
    this.sessions_.add(conn);
    this.tell("session", conn);
  }

  /**
   * Emits `event` to the application's listeners. One that throws is the application's bug: it is
   * surfaced (thrown again from a microtask: an uncaught exception), the listeners after it still run
   * (`Emitter`; eventemitter3's emit stopped at it) and the server's own work goes on.
   * Before, it unwound into that work: a throwing `message` listener closed the session as the peer's
   * ERR_PROTOCOL, a throwing `error` listener skipped `sessionClose`, and a throwing `sessionClose`
   * listener left the session's close, and the server's, pending for ever.
   */
  private tell<E extends keyof LpServerEvents>(event: E, ...args: LpServerEvents[E]): void {
    try {
      this.emit(event, ...args);
    } catch (err) {
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  /**
   * `need` more bytes owed to `conn`'s peer (or, `inbound`, of a message
   * from it) do not fit the budget: the sessions owing the most (at most
   * {@link RELIEVE_CUTS} of them: each cut scans every session) are closed
   * with ERR_SLOW_PEER until they fit. Owed: `conn` itself when it owes the
   * most, or when they still do not fit (ERR_OVERLOADED when it owes
   * nothing and no other session owes anything). Inbound: never `conn` (the
   * decoder refuses the message as before). Peers that read what they are
   * sent owe little, and keep their sessions.
   */
  private readonly relieve = (need: number, conn: LpConnection, inbound: boolean): void => {
    const budget = this.budget;
    let most: LpConnection | undefined;
    for (let cuts = 0; cuts < RELIEVE_CUTS && budget.used + need > budget.limit; cuts++) {
      most = undefined;
      for (const s of this.sessions_) {
        if (s !== conn && s.owedCharged > (most?.owedCharged ?? 0)) most = s;
      }
      if (most === undefined || (!inbound && most.owedCharged <= conn.owedCharged + need)) break;
      most.destroy(
        new PointSubError(
          "ERR_SLOW_PEER",
          `${most.remoteUrl} does not take what it is sent: ${most.owedCharged} bytes owed to it, the most while the server's memory budget is full (${budget.used} of ${budget.limit} bytes used)`,
        ),
      );
    }
    if (inbound || budget.used + need <= budget.limit) return;
    conn.destroy(
      new PointSubError(
        most === undefined && conn.owedCharged === 0 ? "ERR_OVERLOADED" : "ERR_SLOW_PEER",
        `the server's memory budget is full (${budget.used} of ${budget.limit} bytes used): ${conn.owedCharged + need} bytes would be owed to ${conn.remoteUrl}`,
      ),
    );
  };

  private readonly dispatch = (msg: Message, session: LpConnection): void => {
    this.tell("message", msg, session);
  };

  private readonly closed = (session: LpConnection, error: PointSubError | undefined): void => {
    if (!this.sessions_.delete(session)) return;
    if (error !== undefined && error.code !== "ERR_CONNECTION_CLOSED") this.tell("error", error, session);
    this.tell("sessionClose", session, error);
  };
}
