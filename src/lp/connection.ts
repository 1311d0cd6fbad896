/**
 * A connection to a peer that speaks plain length-prefixed messages (a u32
 * big-endian length, then the message; docs/PROTOCOL.md §8): the same
 * `send` / `on("message")` / `state` / `close` as a pointsub `Connection`,
 * over any transport, without the pointsub protocol. The format carries
 * nothing but messages, so there are no requests, streams, multiplexing,
 * pings or graceful-close handshake: `request` and the stream and route
 * methods reject with ERR_INVALID_ARGUMENT, saying so.
 */
import { ANSWER_SHARE, type MemoryBudget } from "../connection/budget.ts";
import { type GateWriter, ReadGate, type ReadGateHost } from "../connection/read-gate.ts";
import type { CloseOptions, ConnectionState, Message, Payload } from "../connection/types.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import { badOptions } from "../errors/options.ts";
import type { Transport } from "../transport/transport.ts";
import { Emitter } from "../util/emitter.ts";
import { handledRejection } from "../util/handled-rejection.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import { LpDecoder, type LpDecoderSink } from "./decoder.ts";
import type { ResolvedLpOptions } from "./options.ts";
import { LpWriter, type LpWriterHooks } from "./writer.ts";

const RESOLVED: Promise<void> = Promise.resolve();
/**
 * What a queued send costs besides its bytes — its queue entry, its
 * promise and the caller's view of the bytes (~470 B measured) — counted in
 * {@link LpConnection.owedBytes}: a flood of empty messages, echoed, is
 * bounded too.
 */
export const QUEUED_SEND_COST = 512;
/** Queued views up to this size of a buffer more than twice as large are copied (see `LpConnection.send`). */
export const COPY_QUEUED_MAX = 64 * 1024;
const noop = () => {};
/** How `LpConnection.chargeOwed` charges. */
const DOWN = 0;
const HELD = 1;
const QUEUED = 2;
const EMPTY = new Uint8Array(0);
/**
 * Messages the decoder hands out before the clock is read (once per step, not
 * per message: a 64 KiB read of 1-byte messages carries 13,107 of them).
 */
const STEP_MESSAGES = 256;
/**
 * Decoding time (ms) after which the read gate looks at its budgets (4 ms a
 * peer, 10 ms a turn), rather than after every step: it reads the clock
 * twice more and keeps what it holds back in pieces (the lp flood decodes
 * ~30 M messages a second in one process, a step in ~8 µs).
 */
const SLICE_MS = 1;
/** The read gate's view of the writer: the format has no answers, so no slow-peer pause of reading (see `chargeOwed`). */
const NO_ANSWERS: GateWriter = { answerQueued: 0, controlBacklog: 0, stalled: false, writable: true, pacer: undefined };
const encoder = new TextEncoder();
const decoder = new TextDecoder();
let nextId = 1;

/** Events of an {@link LpConnection}. */
export interface LpConnectionEvents {
  /** A message from the peer. */
  message: [msg: Message];
  /**
   * The connection is closed: `error` when it was not a clean close (a
   * clean close is `close()` that wrote everything queued and saw the
   * peer end its side, or the peer ending the byte stream between two
   * messages; a reset, or the peer leaving with sends of `close()` still
   * queued, is ERR_CONNECTION_CLOSED).
   */
  close: [error: PointSubError | undefined];
}

/** What an {@link LpConnection} has done. */
export interface LpStats {
  messagesIn: number;
  messagesOut: number;
  /** Bytes each way, lengths included. */
  bytesIn: number;
  bytesOut: number;
}

/** @internal How a server or `connectLp` builds a connection. */
export interface LpInit {
  id?: string;
  /** Shared by a server's sessions. */
  budget: MemoryBudget;
  /** Allocates the send slabs (no need to zero them): the runtime's `allocBody`. */
  alloc?: (n: number) => Uint8Array;
  /** A server's dispatch of every message, before the connection's own event. */
  onMessage?: (msg: Message, conn: LpConnection) => void;
  /** Called once when the connection closed, before its `close` event. */
  onClose?: (conn: LpConnection, error: PointSubError | undefined) => void;
  /**
   * A server's: what a session owes its peer is charged to `budget` too, and
   * when `need` more bytes do not fit, this cuts the sessions that owe the
   * most (see `LpConnection.chargeOwed`).
   */
  relieve?: (need: number, conn: LpConnection, inbound: boolean) => void;
}

class LpMessage implements Message {
  readonly data: Uint8Array;
  constructor(data: Uint8Array) {
    this.data = data;
  }
  text(): string {
    return decoder.decode(this.data);
  }
}

/** A close's `timeoutMs` that is not a number >= 0 (Infinity waits for the queued sends, however long). */
export function badCloseTimeout(ms: unknown): PointSubError {
  return new PointSubError("ERR_INVALID_ARGUMENT", `close timeoutMs must be a number >= 0 (got ${String(ms)})`);
}

/** The error of every method the format cannot carry. */
function unsupported(what: string): PointSubError {
  return new PointSubError(
    "ERR_INVALID_ARGUMENT",
    `${what} is not available on a length-prefix (lp+) connection: the format carries one-way messages only`,
    { suggestion: "Use send() and on('message'), or a pointsub URL (tcp://, unix://, …) for requests and streams." },
  );
}

/**
 * One length-prefix connection. Obtain one from `connect("lp+tcp://…")`
 * (or `connectLp`), or as a session of an `LpServer`.
 */
export class LpConnection extends Emitter<LpConnectionEvents> {
  /** A process-wide number on a client, the server's session id on a server. */
  readonly id: string;
  /** When the transport was connected or accepted (`Date.now()`). */
  readonly connectedAt: number;
  readonly localUrl: string;
  readonly remoteUrl: string;
  /** Resolved at once: the format has no handshake (kept for code written for `Connection`). */
  readonly ready: Promise<void> = RESOLVED;

  private readonly transport: Transport;
  private readonly options: ResolvedLpOptions;
  private readonly writer: LpWriter;
  private readonly decoder: LpDecoder;
  /**
   * When input is decoded (connection/read-gate.ts, as a pointsub
   * connection's): a peer's reading yields for a turn after 4 ms of
   * decoding (and of its message listeners), all peers' input together
   * holds a turn 10 ms at most, the rest waits unprocessed, in order.
   */
  private readonly gate: ReadGate;
  private readonly init: LpInit;
  private state_: ConnectionState = "open";
  private closeReason_ = "";
  private closePromise: Promise<void> | undefined;
  /** When a graceful close gives up (ms since the epoch), its timeout as last given, and its timer. */
  private closeDeadline = 0;
  private closeTimeoutMs = 0;
  private closeTimer: ReturnType<typeof setTimeout> | undefined;
  private closeFire: (() => void) | undefined;
  private closedResolve: (() => void) | undefined;
  private closedPromise: Promise<void> | undefined;
  private bytesIn = 0;
  private messagesIn = 0;
  /** Sends of a graceful close still queued when the peer ended the stream (they were lost). */
  private lostAtEnd = 0;
  private lastInput = 0;
  /** Since when the transport has been backed up (0: it is not). */
  private blockedSince = 0;
  /**
   * Since when (0: not watched) the transport has held bytes of which none went out, and how many
   * it had taken then (`Transport.bytesHeld`/`bytesTaken`, when it has them).
   */
  private stuckSince = 0;
  private stuckTaken = 0;
  private slowTimer: ReturnType<typeof setTimeout> | undefined;
  private progressTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeatTimer: ReturnType<typeof setTimeout> | undefined;
  /** Bytes of what it owes its peer charged to the server's budget (a server's session only: {@link chargeOwed}). */
  private owedCharge = 0;

  /** @internal Use `connect("lp+…")`, `connectLp` or an `LpServer`. */
  constructor(transport: Transport, options: ResolvedLpOptions, init: LpInit) {
    super();
    this.id = init.id ?? String(nextId++);
    this.connectedAt = Date.now();
    this.transport = transport;
    this.localUrl = transport.localUrl;
    this.remoteUrl = transport.remoteUrl;
    this.options = options;
    this.init = init;
    const port = new LpConnection.Port(this);
    this.writer = new LpWriter(transport, port, init.alloc);
    const relieve = init.relieve;
    this.decoder = new LpDecoder(
      port,
      options.maxMessageSize,
      init.budget,
      relieve && ((n) => relieve(n, this, true)),
      STEP_MESSAGES,
    );
    // No slow-peer bound on reading (what is owed is bounded by closing: see `overOwed`).
    this.gate = new ReadGate(transport, NO_ANSWERS, Number.POSITIVE_INFINITY);
    this.gate.host = port;
    transport.attach({
      onData: (chunk) => this.onData(chunk),
      // Not while input waits unprocessed: the decoder's target would be where that input already is.
      readTarget: () => (this.gate.holding ? undefined : this.decoder.readTarget()),
      onDrain: () => this.writer.onDrain(),
      onEnd: () => this.onPeerEnd(),
      onClose: (err) => this.onTransportClose(err),
    });
    if (options.heartbeat && options.keepAliveMs > 0) this.armBeat(options.keepAliveMs);
  }

  /** The decoder's sink, the writer's hooks and the read gate's host, in one object (methods on the prototype). */
  private static readonly Port = class implements LpDecoderSink, LpWriterHooks, ReadGateHost {
    private readonly c: LpConnection;
    constructor(c: LpConnection) {
      this.c = c;
    }
    onMessage(data: Uint8Array): void {
      this.c.onMessage(data);
    }
    processInput(chunk: Uint8Array): void {
      this.c.processInput(chunk);
    }
    readingResumed(): void {}
    isClosed(): boolean {
      return this.c.state_ === "closed";
    }
    blocked(on: boolean): void {
      this.c.onBlocked(on);
    }
    wrote(): void {
      const c = this.c;
      if (c.slowTimer === undefined) c.watchSlow();
      // Queued sends went out: what they held of the server's budget goes back.
      if (c.owedCharge !== 0) c.chargeOwed(DOWN);
    }
  };

  /** `"open"` until `close()` (`"closing"`) or the end (`"closed"`); never `"handshaking"`. */
  get state(): ConnectionState {
    return this.state_;
  }

  /** Why it closed: the reason given to `close()`, `"peer closed"`, or the error code; `""` while open. */
  get closeReason(): string {
    return this.closeReason_;
  }

  /** Largest message either way (the `maxMessageSize` option). */
  get maxMessageSize(): number {
    return this.options.maxMessageSize;
  }

  /**
   * Sends one message: its length, then its bytes. Resolves when they are
   * handed to the transport; rejects with ERR_MESSAGE_TOO_LARGE (nothing
   * written), ERR_GOING_AWAY (closing), ERR_CONNECTION_CLOSED or the
   * connection's error (closed before it went out). Do not modify `payload`
   * afterwards. For high rates: send without awaiting while `writable`,
   * then `await drain()`.
   */
  send(payload: Payload): Promise<void> {
    if (this.state_ !== "open") return handledRejection(this.unusableError());
    let data: Uint8Array;
    if (payload instanceof Uint8Array) data = payload;
    else if (typeof payload === "string") data = encoder.encode(payload);
    else return handledRejection(new PointSubError("ERR_INVALID_ARGUMENT", "payload must be a Uint8Array or a string"));
    if (data.length > this.options.maxMessageSize) {
      return handledRejection(
        new PointSubError(
          "ERR_MESSAGE_TOO_LARGE",
          `message of ${data.length} bytes exceeds maxMessageSize ${this.options.maxMessageSize}`,
        ),
      );
    }
    if (this.writer.tryWrite(data)) return RESOLVED;
    // Queued: a small view of a larger buffer (an echoed message is one of a 64 KiB read) would keep all of
    // it while it waits, up to 4× what is counted owed: its own bytes are kept instead. (A large one, a
    // part of the sender's own data, is not copied: the sender keeps that buffer anyway.)
    const small = data.byteLength <= COPY_QUEUED_MAX && data.byteLength * 2 < data.buffer.byteLength;
    const p = this.writer.enqueue(small ? data.slice() : data);
    p.catch(noop);
    if (this.owedBytes > this.options.maxOwedBytes) this.overOwed();
    else if (this.init.relieve !== undefined) this.chargeOwed(QUEUED);
    return p;
  }

  /** True while a `send` would go straight to the transport. */
  get writable(): boolean {
    return this.state_ === "open" && this.writer.writable;
  }

  /** Payload bytes queued behind backpressure, not yet handed to the transport. */
  get bufferedAmount(): number {
    return this.writer.queuedBytes;
  }

  /**
   * Bytes owed to the peer: {@link bufferedAmount}, 512 more per queued
   * send (what queuing it costs in memory), and what the transport holds,
   * not yet taken by the OS (when the transport can tell: lp+tcp, lp+unix).
   * Past `maxOwedBytes` the connection closes with ERR_SLOW_PEER (a send that queues past it).
   */
  get owedBytes(): number {
    const w = this.writer;
    return w.queuedBytes + w.pending * QUEUED_SEND_COST + (this.transport.bytesHeld?.() ?? 0);
  }

  /**
   * Resolves once nothing is queued and the transport takes bytes again (or the connection closed).
   * After the peer ended its side nothing more goes out: it resolves when the connection closes
   * (before, at once while `state` was still "open": a producer looping on state, writable and
   * drain() spun without yielding until the socket flushed).
   */
  drain(): Promise<void> {
    if (this.writable || this.state_ === "closed") return RESOLVED;
    return this.writer.ended ? this.closed : this.writer.whenDrained();
  }

  /** Counters. */
  stats(): LpStats {
    return {
      messagesIn: this.messagesIn,
      messagesOut: this.writer.messagesOut,
      bytesIn: this.bytesIn,
      bytesOut: this.writer.bytesOut,
    };
  }

  /** Not available: the format has no requests (rejects with ERR_INVALID_ARGUMENT). */
  request(_route: string, _payload?: Payload, _options?: object): Promise<never> {
    return handledRejection(unsupported("request()"));
  }

  /** Not available: the format has no streams (throws ERR_INVALID_ARGUMENT). */
  sendStream(_route: string, _source: unknown, _options?: object): never {
    throw unsupported("sendStream()");
  }

  /** Not available: the format has no routes (throws ERR_INVALID_ARGUMENT). */
  handle(_route: string, _handler: unknown): never {
    throw unsupported("handle()");
  }

  /** Not available: the format has no pings (rejects with ERR_INVALID_ARGUMENT). */
  ping(): Promise<never> {
    return handledRejection(unsupported("ping()"));
  }

  /**
   * Closes gracefully: refuses new sends (ERR_GOING_AWAY), writes what is
   * queued (up to `timeoutMs`, default closeTimeoutMs), then ends the byte
   * stream; sends still queued then reject with ERR_CONNECTION_CLOSED.
   * The format has no goodbye: the peer sees the stream end.
   */
  close(options: CloseOptions = {}): Promise<void> {
    // Null threw a raw TypeError at the caller.
    const notOptions = badOptions(options, "close");
    if (notOptions !== undefined) return handledRejection(notOptions);
    if (this.state_ === "closed") return this.closePromise ?? RESOLVED;
    const given = options.timeoutMs;
    const timeoutMs = given ?? this.options.closeTimeoutMs;
    // As a pointsub connection's: NaN (or a negative time) cut the close at once, sends queued lost.
    if (typeof timeoutMs !== "number" || !(timeoutMs >= 0)) return handledRejection(badCloseTimeout(timeoutMs));
    if (this.closePromise !== undefined) {
      // A second close with a shorter time brings the first one's deadline forward (as a server's does).
      if (given !== undefined && performance.now() + given < this.closeDeadline) {
        this.closeDeadline = performance.now() + given;
        this.closeTimeoutMs = given;
        this.armClose();
      }
      return this.closePromise;
    }
    this.state_ = "closing";
    this.closeReason_ = options.reason ?? "closing";
    this.closeDeadline = performance.now() + timeoutMs;
    this.closeTimeoutMs = timeoutMs;
    this.closePromise = this.drainAndEnd();
    return this.closePromise;
  }

  /** Resolves at the close's deadline (a second close may move it forward). */
  private atCloseDeadline(): Promise<void> {
    return new Promise((resolve) => {
      this.closeFire = resolve;
      this.armClose();
    });
  }

  /** (Re)sets the timer of the close's deadline for whoever waits for it. */
  private armClose(): void {
    clearTimeout(this.closeTimer);
    const fire = this.closeFire;
    if (fire === undefined) return;
    // At most a timer's largest delay: a longer one (Infinity) fires at once. Due: fired after this turn's I/O
    // (a new timer runs after the poll phase): after a stall of this process the timers run before what came
    // meanwhile is read (the peer's end: the close was cut as unclean; the socket's room to write on).
    this.closeTimer = setTimeout(
      () => {
        this.closeTimer = setTimeout(fire, 0);
      },
      Math.min(MAX_TIMER_MS, Math.max(0, this.closeDeadline - performance.now())),
    );
  }

  /** Stops waiting for the close's deadline. */
  private disarmClose(): void {
    clearTimeout(this.closeTimer);
    this.closeTimer = undefined;
    this.closeFire = undefined;
  }

  /** Closes at once: queued sends reject with ERR_CONNECTION_CLOSED (or `error`). */
  destroy(error?: PointSubError): void {
    if (this.state_ === "closed") return;
    this.transport.destroy();
    this.teardown(error);
  }

  /** Resolves once the connection is closed. */
  get closed(): Promise<void> {
    if (this.closedPromise === undefined) {
      this.closedPromise =
        this.state_ === "closed"
          ? RESOLVED
          : new Promise((resolve) => {
              this.closedResolve = resolve;
            });
    }
    return this.closedPromise;
  }

  private async drainAndEnd(): Promise<void> {
    this.writer.flush();
    if (!this.writer.writable) {
      await Promise.race([this.writer.whenDrained(), this.atCloseDeadline()]);
      this.disarmClose();
    }
    if (this.state_ === "closed") return;
    if (this.writer.pending !== 0) {
      // Out of time with sends queued: they fail, and the close is not a clean one.
      this.destroy(
        new PointSubError(
          "ERR_CONNECTION_CLOSED",
          `closed after ${this.closeTimeoutMs} ms (the close's timeout) with sends queued`,
        ),
      );
      return;
    }
    this.writer.flush();
    this.transport.end();
    // The peer closes its side once it read everything (given at least 100 ms). Not closed by the
    // deadline: it may not have read what was sent last (it stopped reading): not a clean close.
    this.closeDeadline = Math.max(this.closeDeadline, performance.now() + 100);
    const late = this.atCloseDeadline().then(() => {
      if (this.state_ === "closed") return;
      this.destroy(
        new PointSubError(
          "ERR_CONNECTION_CLOSED",
          `closed after ${this.closeTimeoutMs} ms (the close's timeout) before the peer closed its side: what was sent last may not have arrived`,
        ),
      );
    });
    await Promise.race([this.closed, late]);
    this.disarmClose();
  }

  private unusableError(): PointSubError {
    if (this.state_ === "closing") return new PointSubError("ERR_GOING_AWAY", "connection is closing");
    return new PointSubError("ERR_CONNECTION_CLOSED", "connection is closed");
  }

  private onData(chunk: Uint8Array): boolean {
    if (this.state_ === "closed") return false;
    this.bytesIn += chunk.length;
    this.lastInput = performance.now();
    if (!this.gate.admits()) {
      // This turn's decoding budget is spent (or older input waits): later, and kept until then.
      this.gate.hold(chunk);
      return true;
    }
    return this.processInput(chunk);
  }

  /**
   * Decodes input a step of messages at a time, the clock read after each:
   * after a millisecond of it (or the chunk's end) the read gate decides
   * whether the rest goes on now or waits, kept, for a later turn. Before, one read was decoded whole (a 64 KiB read of empty
   * messages is 16,384 of them, each with its listeners: an echo server
   * flooded by one peer held the event loop for up to 900 ms, and every other
   * peer's round trip with it). Returns whether views of `chunk` were kept.
   */
  private processInput(chunk: Uint8Array): boolean {
    const d = this.decoder;
    const end = chunk.length;
    let kept = false;
    let from = 0;
    for (;;) {
      if (this.state_ === "closed") return kept;
      const t0 = performance.now();
      try {
        // Steps until the chunk or a slice of decoding time is done.
        do {
          if (d.push(chunk, from)) kept = true;
          from = d.used;
        } while (from < end && performance.now() - t0 < SLICE_MS && (this.state_ as ConnectionState) !== "closed");
      } catch (err) {
        this.fail(toPointSubError(err, "ERR_PROTOCOL"));
        return true;
      }
      this.gate.afterInput(t0);
      if (from === end) break;
      // The rest now, or later and in order.
      if ((this.state_ as ConnectionState) !== "closed" && !this.gate.admits()) {
        this.gate.hold(chunk.subarray(from));
        return true;
      }
    }
    if (this.progressTimer === undefined && !d.idle && this.options.progressTimeoutMs > 0) {
      this.armProgress(this.options.progressTimeoutMs);
    }
    return kept;
  }

  private onMessage(data: Uint8Array): void {
    if (this.state_ === "closed") return;
    this.messagesIn++;
    if (data.length === 0 && this.options.heartbeat) return;
    const msg = new LpMessage(data);
    try {
      this.init.onMessage?.(msg, this);
      this.emit("message", msg);
    } catch (err) {
      // A throwing listener is the application's bug: surface it, keep the connection (before, it unwound
      // into the decoder and closed the connection as the peer's ERR_PROTOCOL).
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  /**
   * More than `maxOwedBytes` is owed to the peer: the connection closes with
   * ERR_SLOW_PEER (a peer that does not read what it is sent — an echo
   * server flooded by a non-reader grew by ~160 MiB/s — cannot grow this
   * side's memory). Reading goes on meanwhile: a side that stopped reading
   * while it owed much deadlocked two honest peers that each send more
   * than they read. (A rule on how fast an owed peer takes its bytes cut
   * honest readers: the kernel takes from a blocked socket in steps of
   * megabytes, seconds apart.)
   */
  private overOwed(): void {
    if (this.state_ === "closed") return;
    this.fail(
      new PointSubError(
        "ERR_SLOW_PEER",
        `${this.remoteUrl} does not take what it is sent: ${this.owedBytes} bytes owed to it, over maxOwedBytes ${this.options.maxOwedBytes}`,
      ),
    );
  }

  /** @internal Bytes of what it owes its peer charged to the server's memory budget now. */
  get owedCharged(): number {
    return this.owedCharge;
  }

  /**
   * A server's session: what it owes its peer (queued sends, 512 bytes more
   * each, and while the transport is backed up what it holds) is charged to
   * the server's memory budget, which all sessions share — before, each
   * session was bounded by `maxOwedBytes` alone, and many peers that did not
   * read held sessions × 128 MiB. Past half the budget a session owing more
   * than its share (the budget / 16, as for a pointsub server's answers) is
   * closed with ERR_SLOW_PEER; when a charge does not fit, the server cuts
   * the sessions owing the most (ERR_SLOW_PEER) until it does. `how`: DOWN
   * only gives back (after a write); HELD charges what the transport took
   * when it backed up (already held: charged as it is, past the budget if
   * need be); QUEUED checks a send queuing as above.
   */
  private chargeOwed(how: typeof DOWN | typeof HELD | typeof QUEUED): void {
    if (this.state_ === "closed") return;
    const w = this.writer;
    const held = w.transportWritable ? 0 : (this.transport.bytesHeld?.() ?? 0);
    const want = w.queuedBytes + w.pending * QUEUED_SEND_COST + held;
    const budget = this.init.budget;
    const d = want - this.owedCharge;
    if (d <= 0 || how === DOWN) {
      if (d < 0) {
        budget.release(-d);
        this.owedCharge = want;
      }
      return;
    }
    if (how === HELD) {
      budget.force(d);
      this.owedCharge = want;
      return;
    }
    if (budget.used * 2 > budget.limit && want * ANSWER_SHARE > budget.limit) {
      this.fail(
        new PointSubError(
          "ERR_SLOW_PEER",
          `${this.remoteUrl} does not take what it is sent: ${want} bytes owed to it, over its share (1/${ANSWER_SHARE}) of the server's memory budget (${budget.used} of ${budget.limit} bytes used)`,
        ),
      );
      return;
    }
    if (!budget.tryCharge(d)) {
      this.init.relieve?.(d, this, false);
      // The server may have closed this session to relieve its budget.
      if ((this.state_ as ConnectionState) === "closed") return;
      budget.force(d);
    }
    this.owedCharge = want;
  }

  /** An unfinished message must keep moving (a peer trickling nothing holds no connection forever). */
  private armProgress(wait: number, confirmed = false): void {
    this.progressTimer = setTimeout(() => {
      this.progressTimer = undefined;
      if (this.state_ === "closed" || this.decoder.idle) return;
      const limit = this.options.progressTimeoutMs;
      const quiet = performance.now() - this.lastInput;
      // Due: looked at again after this turn's I/O (a new timer runs after the poll phase), since after a
      // stall of this process (a long GC, a busy loop) timers run before the input that arrived meanwhile.
      if (quiet >= limit && !confirmed) this.armProgress(0, true);
      else if (quiet >= limit) {
        this.fail(
          PointSubError.fromPeer(
            "ERR_TIMEOUT",
            `the peer sent nothing of its unfinished message (${this.decoder.partialBytes} bytes so far) for ${limit} ms`,
          ),
        );
      } else this.armProgress(limit - quiet);
    }, wait);
  }

  /** The transport backed up (true) or drained (false): a peer that reads nothing is dropped after slowPeerTimeoutMs. */
  private onBlocked(on: boolean): void {
    if (!on) {
      this.blockedSince = 0;
      if (this.owedCharge !== 0) this.chargeOwed(DOWN);
      return;
    }
    this.blockedSince = performance.now();
    if (this.slowTimer === undefined) this.watchSlow();
    // What the backed-up transport holds is owed too.
    if (this.init.relieve !== undefined) this.chargeOwed(HELD);
  }

  /**
   * Starts watching whether the peer takes what it is sent (after a write, or the
   * transport backing up). A transport that tells what it holds (`bytesHeld`/`bytesTaken`: lp+tcp,
   * lp+unix) is checked for progress: a peer that takes none of what the socket holds for
   * slowPeerTimeoutMs is dropped, however little it holds — before, only a transport that refused a
   * write was timed, so a peer that stopped reading while the socket held less than its 1 MiB
   * high-water mark was kept for good (and one that read was cut unless the socket drained whole
   * within the timeout). Other transports: the time since they refused a write.
   */
  private watchSlow(): void {
    const limit = this.options.slowPeerTimeoutMs;
    if (limit === 0 || this.state_ === "closed") return;
    const t = this.transport;
    if (t.bytesHeld !== undefined && t.bytesTaken !== undefined) {
      this.stuckSince = performance.now();
      this.stuckTaken = t.bytesTaken();
      this.armSlow(Math.ceil(limit / 4));
    } else if (this.blockedSince !== 0) this.armSlow(limit);
  }

  private armSlow(wait: number, confirmed = false): void {
    this.slowTimer = setTimeout(() => {
      this.slowTimer = undefined;
      if (this.state_ === "closed") return;
      const limit = this.options.slowPeerTimeoutMs;
      const now = performance.now();
      const t = this.transport;
      let stuck: number;
      if (t.bytesHeld !== undefined && t.bytesTaken !== undefined) {
        // Checked every quarter of the limit while the socket holds bytes; the next write watches again.
        if (t.bytesHeld() === 0) return;
        const taken = t.bytesTaken();
        if (taken !== this.stuckTaken) {
          this.stuckTaken = taken;
          this.stuckSince = now;
        }
        stuck = now - this.stuckSince;
        if (stuck < limit) {
          this.armSlow(Math.min(Math.ceil(limit / 4), limit - stuck));
          return;
        }
      } else {
        if (this.blockedSince === 0) return;
        stuck = now - this.blockedSince;
        if (stuck < limit) {
          this.armSlow(limit - stuck);
          return;
        }
      }
      // Due: looked at again after this turn's I/O (a new timer runs after the poll phase), as a pointsub
      // connection's: after a stall of this process the timers run before the socket writes on what the peer
      // read meanwhile (it was cut as slow, reading).
      if (!confirmed) {
        this.armSlow(0, true);
        return;
      }
      this.fail(
        new PointSubError(
          "ERR_SLOW_PEER",
          `${this.remoteUrl} read nothing for ${limit} ms (${this.writer.queuedBytes} bytes queued, ${t.bytesHeld?.() ?? 0} held by the transport)`,
        ),
      );
    }, wait);
  }

  /** The heartbeat's next check, in `wait` ms. */
  private armBeat(wait: number): void {
    this.heartbeatTimer = setTimeout(() => this.beat(), wait);
    (this.heartbeatTimer as { unref?: () => void }).unref?.();
  }

  /**
   * Heartbeat: a zero-length message once keepAliveMs passed without output. The next check is when
   * that much will have passed since the last output: a fixed interval (before) sent it only at the
   * first tick a whole period after the output, up to twice keepAliveMs of silence, and a peer
   * whose idle timeout lay in between dropped the connection.
   */
  private beat(): void {
    this.heartbeatTimer = undefined;
    if (this.state_ !== "open") return;
    const period = this.options.keepAliveMs;
    const quiet = performance.now() - this.writer.lastOutput;
    if (quiet < period) {
      this.armBeat(period - quiet);
      return;
    }
    // Backed up: bytes are on their way anyway.
    if (this.writer.writable) this.writer.tryWrite(EMPTY);
    this.armBeat(period);
  }

  /** A fatal error: the format has no way to tell the peer, so the stream just ends. */
  private fail(err: PointSubError): void {
    if (this.state_ === "closed") return;
    this.transport.destroy();
    this.teardown(err);
  }

  /**
   * The peer ended its side. There is no half-close (PROTOCOL §8): the transport ends ours once what
   * it holds is written, so nothing more can be sent — sends queued and every later one reject with
   * ERR_CONNECTION_CLOSED. Before, the connection stayed open and writable: a send resolved while its
   * bytes were dropped, and later ones queued until ERR_SLOW_PEER.
   */
  private onPeerEnd(): void {
    if (this.state_ === "closed") return;
    if (this.state_ === "closing") this.lostAtEnd = this.writer.pending;
    this.writer.close(
      new PointSubError("ERR_CONNECTION_CLOSED", `${this.remoteUrl} ended the connection: nothing more can be sent`),
    );
  }

  private onTransportClose(error?: Error): void {
    if (this.state_ === "closed") return;
    const queued = this.writer.pending + this.lostAtEnd;
    if (this.state_ === "closing" && this.decoder.idle && error === undefined && queued === 0) {
      this.teardown(undefined);
      return;
    }
    if (!this.decoder.idle) {
      this.teardown(
        new PointSubError(
          "ERR_CONNECTION_CLOSED",
          `${this.remoteUrl} closed in the middle of a message (${this.decoder.partialBytes} bytes of it arrived)`,
          { cause: error },
        ),
      );
      return;
    }
    if (error !== undefined) {
      this.teardown(
        error instanceof PointSubError
          ? error
          : new PointSubError("ERR_CONNECTION_CLOSED", `connection to ${this.remoteUrl} closed`, { cause: error }),
      );
      return;
    }
    if (this.state_ === "closing") {
      // A graceful close promised to write what was queued: the peer left first, those sends are lost.
      this.teardown(
        new PointSubError(
          "ERR_CONNECTION_CLOSED",
          `${this.remoteUrl} closed before ${queued} queued sends were written`,
        ),
      );
      return;
    }
    if (this.closeReason_ === "") this.closeReason_ = "peer closed";
    this.teardown(undefined);
  }

  private teardown(error: PointSubError | undefined): void {
    if (this.state_ === "closed") return;
    this.state_ = "closed";
    if (this.closeReason_ === "") this.closeReason_ = error === undefined ? "closed" : error.code;
    clearTimeout(this.slowTimer);
    clearTimeout(this.progressTimer);
    clearTimeout(this.heartbeatTimer);
    // A graceful close waiting for its deadline stops waiting (no timer left behind).
    const fire = this.closeFire;
    this.disarmClose();
    fire?.();
    this.decoder.stop();
    this.writer.close(error ?? new PointSubError("ERR_CONNECTION_CLOSED", "connection closed"));
    if (this.owedCharge !== 0) {
      this.init.budget.release(this.owedCharge);
      this.owedCharge = 0;
    }
    // Settled before the listeners run (its awaiters still run after them): a close listener that threw
    // left it pending, and with it close() and the server's close, for ever.
    this.closedResolve?.();
    this.init.onClose?.(this, error);
    try {
      this.emit("close", error);
    } catch (err) {
      // A throwing listener is the application's bug: surfaced, not thrown into whoever closed (a timer, the transport).
      queueMicrotask(() => {
        throw err;
      });
    }
  }
}
