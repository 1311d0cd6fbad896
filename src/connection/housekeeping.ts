/**
 * Everything periodic on one connection, on one interval: keepalive pings
 * (a peer silent for two intervals after a ping is dead), releasing idle
 * buffers, closing a connection whose peer stopped taking what it is sent
 * (slowPeerTimeoutMs), and cancelling messages and streams that stalled
 * (progressTimeoutMs; unfinished messages also below
 * minProgressBytesPerSecond), failing this side's streams not answered in
 * time after their END (requestTimeoutMs), closing a connection whose peer
 * leaves this side's CANCEL unanswered (progressTimeoutMs), and closing a
 * connection left idle (idleTimeoutMs).
 * Its period is a fraction of the shortest of those times
 * ({@link housekeepingPeriod}); a server's sessions share one {@link Ticker}
 * instead of an interval each.
 */
import type { Tickable, Ticker } from "../util/ticker.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import type { CallTable } from "./call-table.ts";
import type { PendingCall } from "./calls.ts";
import type { TargetingFrameRouter } from "./frame-targets.ts";
import type { FrameRouter } from "./frames.ts";
import { sendPing } from "./ping.ts";
import type { ReadGate } from "./read-gate.ts";
import type { LateStream } from "./stream-in.ts";

/**
 * Most keepalive PINGs in flight (unanswered) for keepalive to send another:
 * a peer that answers none keeps at most these in the pinger's table
 * (`attack/keepalive-pings.test.ts`; before, one more every period). Its
 * own only: the application's `ping()`s in flight counted too, and 8 of
 * them to a dead peer stopped keepalive for good
 * (`connection/keepalive-app-pings.test.ts`).
 */
const MAX_PINGS_IN_FLIGHT = 8;
/** Bytes of an unfinished frame that always count as hearing from the peer (a large frame arriving slowly). */
const LIVE_BYTES = 16 * 1024;
/**
 * What housekeeping needs from its connection besides the parts it is given
 * (the Connection implements it with prototype methods: no closures per
 * connection).
 */
export interface HousekeepingHost {
  readonly state: string;
  readonly remoteUrl: string;
  /**
   * Closes at once with a fatal error `code` (a PointSubError built by the
   * host: this file stays free of the error classes, a chunk of its own in a
   * browser bundle), telling the peer.
   */
  timedOut(code: "ERR_SLOW_PEER" | "ERR_KEEPALIVE" | "ERR_TIMEOUT", message: string): void;
  /** A number that changes whenever application data moves (messages, requests, streams). */
  activity(): number;
  /** Bytes received so far. */
  readonly bytesIn: number;
  /** Whether calls, messages or streams are in flight (never idle then). */
  inUse(): boolean;
  /** Closes gracefully because nothing happened for idleTimeoutMs. */
  idle(): void;
}

export interface HousekeepingTimes {
  /** Default 30,000. */
  keepAliveMs?: number | undefined;
  /** Default 30,000. */
  slowPeerTimeoutMs?: number | undefined;
  /** Default 60,000. */
  progressTimeoutMs?: number | undefined;
  /** Bytes a second each unfinished message of the peer must receive, measured over progressTimeoutMs (0: any frame is progress). Default {@link DEFAULT_MIN_PROGRESS_BYTES_PER_SECOND}. */
  minProgressBytesPerSecond?: number | undefined;
  /** Bytes a second the peer must take of the answers owed to it, beyond slowPeerTimeoutMs of grace (0: no floor). Default {@link DEFAULT_MIN_ANSWER_BYTES_PER_SECOND}. */
  minAnswerBytesPerSecond?: number | undefined;
  /** Default 0 (off). */
  idleTimeoutMs?: number | undefined;
}

/** {@link HousekeepingTimes} with the default applied; never modified (shared). */
type Times = Readonly<Required<HousekeepingTimes>>;

/** Resolved times by value (at most 32: a process has few configurations). */
const timesByValue = new Map<string, Times>();

/** The last object {@link sharedTimes} returned: a server's sessions ask for the same values one after the other. */
let lastTimes: Times | undefined;

/** The shared resolved object for `t`'s values (one per configuration, not one per connection). */
function sharedTimes(t: HousekeepingTimes): Times {
  // The defaults are applied here, read straight from a connection's options (no object per connection).
  const keepAlive = t.keepAliveMs ?? 30_000;
  const slowPeer = t.slowPeerTimeoutMs ?? 30_000;
  const progress = t.progressTimeoutMs ?? 60_000;
  const idle = t.idleTimeoutMs ?? 0;
  const min = t.minProgressBytesPerSecond ?? DEFAULT_MIN_PROGRESS_BYTES_PER_SECOND;
  const answers = t.minAnswerBytesPerSecond ?? DEFAULT_MIN_ANSWER_BYTES_PER_SECOND;
  const last = lastTimes;
  // No key string per connection when the values are the last ones (a burst of accepts makes no garbage here).
  if (
    last !== undefined &&
    last.keepAliveMs === keepAlive &&
    last.slowPeerTimeoutMs === slowPeer &&
    last.progressTimeoutMs === progress &&
    last.minProgressBytesPerSecond === min &&
    last.minAnswerBytesPerSecond === answers &&
    last.idleTimeoutMs === idle
  )
    return last;
  const key = `${keepAlive},${slowPeer},${progress},${min},${answers},${idle}`;
  let r = timesByValue.get(key);
  if (r === undefined) {
    if (timesByValue.size >= 32) timesByValue.clear();
    r = Object.freeze({
      keepAliveMs: keepAlive,
      slowPeerTimeoutMs: slowPeer,
      progressTimeoutMs: progress,
      minProgressBytesPerSecond: min,
      minAnswerBytesPerSecond: answers,
      idleTimeoutMs: idle,
    });
    timesByValue.set(key, r);
  }
  lastTimes = r;
  return r;
}

/**
 * How often housekeeping must run for `times`: half the keepalive interval,
 * a quarter of the other timeouts (0 disables each); Infinity when none is on.
 */
export function housekeepingPeriod(
  times: Readonly<Record<"keepAliveMs" | "slowPeerTimeoutMs" | "progressTimeoutMs" | "idleTimeoutMs", number>>,
): number {
  let period = Number.POSITIVE_INFINITY;
  // Divided, not shifted: `>>>` took the times modulo 2^32 (keepAliveMs 2^32 ticked every 10 ms).
  if (times.keepAliveMs > 0) period = Math.floor(times.keepAliveMs / 2);
  // Three tests, not a loop over an array: this runs once per connection.
  if (times.slowPeerTimeoutMs > 0) period = Math.min(period, Math.floor(times.slowPeerTimeoutMs / 4));
  if (times.progressTimeoutMs > 0) period = Math.min(period, Math.floor(times.progressTimeoutMs / 4));
  if (times.idleTimeoutMs > 0) period = Math.min(period, Math.floor(times.idleTimeoutMs / 4));
  // Within a timer's range: a longer interval fires every millisecond.
  return period === Number.POSITIVE_INFINITY ? period : Math.max(10, Math.min(MAX_TIMER_MS, period));
}

const noop = () => {};

/** When housekeeping first saw each call this side gave up on still waiting for the peer's final frame. */
const givenUpSeen = new WeakMap<PendingCall, number>();

/** Housekeepers whose PING probing an unanswered CANCEL is out ({@link Housekeeper.probeCancel}). */
const probing = new WeakSet<Housekeeper>();

/**
 * A call this side gave up on (settled while still in `pending`: its
 * CANCEL went out, see `Caller.abandon` and `OutgoingStreams.stopOut`)
 * whose final frame has not come `windowMs` (progressTimeoutMs) after
 * housekeeping first saw it so, or after `floor` (reading resumed after
 * this side paused it) if later; or undefined.
 */
function unansweredCancel(
  pending: CallTable<PendingCall>,
  now: number,
  windowMs: number,
  floor: number,
): PendingCall | undefined {
  if (pending.size === 0) return undefined;
  for (const call of pending.values()) {
    if (!call.settled) continue;
    const seen = givenUpSeen.get(call);
    if (seen === undefined) {
      givenUpSeen.set(call, now);
      continue;
    }
    if (now - (seen > floor ? seen : floor) >= windowMs) return call;
  }
  return undefined;
}

/**
 * The origin of a housekeeper's times: they are ms after it ({@link clock}),
 * small integers for a process's first ~24 days, which every connection
 * keeps in its fields unboxed (a `performance.now()` there is a 16 B number box per
 * field and connection). 0 means never.
 */
const EPOCH = performance.now() - 1;

/** `t` (a `performance.now()` time) as ms after {@link EPOCH}: `| 0` while in int32 range (a difference of doubles is a box even when whole). */
function clock(t: number): number {
  const n = t - EPOCH;
  return n <= 0x7fffffff ? n | 0 : n;
}

/** Runs `f` after the current event-loop turn's I/O: Node's check phase, a new task elsewhere. */
const afterIo: (f: () => void) => void =
  typeof setImmediate === "function" ? (f) => void setImmediate(f) : (f) => void setTimeout(f, 0);

/**
 * Default of `minProgressBytesPerSecond`: 1 KiB/s. At default settings a pointsub sender's
 * chunks of a message are at least 64 KiB (but its last), so a message
 * getting a frame per default progressTimeoutMs (60 s) gets more than this
 * asks (60 KiB): the rate cuts only peers the frame rule let through by
 * trickling small frames.
 */
export const DEFAULT_MIN_PROGRESS_BYTES_PER_SECOND = 1024;

/**
 * Default of `minAnswerBytesPerSecond`: 64 KiB/s (a 512 kbit/s link). The
 * answers a peer is owed are charged to the memory budget until they are
 * handed to the transport, and a peer that grants credit (or reads its
 * socket) at a trickle lets out a frame now and then, which keeps
 * slowPeerTimeoutMs from ever firing. So what the peer owes must go out
 * within slowPeerTimeoutMs plus its size at this rate (a 16 MiB answer:
 * 30 s + 256 s at the defaults), counted from when it was owed, not from
 * the last frame. A reader as fast as this is never cut; a slower one only
 * when an answer takes longer than that.
 */
export const DEFAULT_MIN_ANSWER_BYTES_PER_SECOND = 64 * 1024;

/**
 * While the memory budget refuses work (a refusal in the last
 * slowPeerTimeoutMs), answers owed must go out this many times faster
 * (1 MiB/s at the default floor): peers that hold the budget by taking
 * their answers slowly make room for those refused, within
 * slowPeerTimeoutMs plus what they are owed at that rate. Only peers owed
 * more than their share (`limit / ANSWER_SHARE`) are held to it: any peer
 * can make the budget refuse, and an honest slow reader owed little must
 * not be cut for it.
 */
const PRESSED_FACTOR = 16;

/** Longest the answer deadline may lie ahead (ms): keeps it a small integer (a floor of 1 B/s and a 4 GiB answer would not be). */
const MAX_AHEAD_MS = 0x1fffffff;

export class Housekeeper implements Tickable {
  /** `Connection.ping` (this side's PINGs come with housekeeping: see `ping.ts`). */
  static readonly ping = sendPing;

  // Times are clock() values (ms after EPOCH: small integers); 0 is never.
  /** When input last arrived. */
  private lastInput = clock(performance.now());
  /** When output was last handed to the transport. */
  private lastOutput = this.lastInput;
  /** Progress is measured from no earlier than this (reading was paused before it; 0: no floor). */
  private progressFloor = 0;
  /** When application data last moved, as far as the last check could tell. */
  private lastActivity = this.lastInput;
  private activitySeen = -1;
  /** `frames.framesIn` at the last check. */
  private framesSeen = 0;
  /** `host.bytesIn` when {@link lastHeard} last moved for bytes. */
  private bytesSeen = 0;
  /**
   * When the peer was last heard, as far as the checks can tell: the input
   * that brought a whole frame, or bytes at `minProgressBytesPerSecond`
   * since the last time (at most {@link LIVE_BYTES}).
   */
  private lastHeard = this.lastInput;
  private pingAt = 0;
  /** Keepalive PINGs in flight (not the application's: those have their own timeouts). */
  private pingsOut = 0;
  /** A due timeout waits for this turn's I/O ({@link confirmLater}). */
  private confirming = false;
  /** When the last PING probing a held-paused peer went out. */
  private probeAt = 0;
  /**
   * When the answers owed to the peer must have gone out (0: none owed at
   * the last tick): slowPeerTimeoutMs after they were first seen owed, plus
   * every owed byte at minAnswerBytesPerSecond. Only the peer taking all it
   * is owed resets it; frames that go out meanwhile do not.
   */
  private answersDue = 0;
  /** The same deadline at PRESSED_FACTOR times the rate: the one that holds while the budget refuses work. */
  private answersDueFast = 0;
  /**
   * Since when (clock(); 0: not) the transport has held bytes none of which
   * went out (`Transport.bytesHeld`/`bytesTaken`), and how much it had sent then.
   */
  private heldSince = 0;
  private heldSent = 0;
  /**
   * What it runs on once started: the shared ticker (a server's sessions),
   * or its own interval (a client connection: cheaper than a wheel of its
   * own). One field for either.
   */
  private runsOn: Ticker | ReturnType<typeof setInterval> | undefined;
  /** Its slot in the ticker (written by the ticker; -1: none). */
  tickSlot = -1;
  /** The times, shared by housekeepers with the same ones (a server's sessions). */
  private readonly times: Times;
  /** The read gate (and through it the transport). */
  private readonly gate: ReadGate;
  /** The frame router (and through it the writer and the pinger): fewer fields per connection. */
  private readonly frames: FrameRouter;
  private readonly host: HousekeepingHost;

  constructor(times: HousekeepingTimes, gate: ReadGate, frames: FrameRouter, host: HousekeepingHost) {
    this.frames = frames;
    this.times = sharedTimes(times);
    this.gate = gate;
    this.host = host;
  }

  /**
   * Starts ticking (once the connection is open): on `shared` (a server's
   * ticker, whose period suits these times) or on an interval of its own.
   */
  start(shared?: Ticker): void {
    const period = housekeepingPeriod(this.times);
    if (period === Number.POSITIVE_INFINITY) return;
    if (shared !== undefined) {
      this.runsOn = shared;
      shared.add(this);
      return;
    }
    const timer = setInterval(() => this.tick(performance.now()), period);
    (timer as { unref?: () => void }).unref?.();
    this.runsOn = timer;
  }

  stop(): void {
    // The connection closed: a frame it was reading into memory of its own gives back its charge.
    (this.frames as { releaseBody?(): void }).releaseBody?.();
    const r = this.runsOn;
    this.runsOn = undefined;
    if (r === undefined) return;
    // A timer is a number in a browser, an object without `delete` in Node.
    if (typeof r === "object" && "delete" in r) r.delete(this);
    else clearInterval(r);
  }

  /** Input arrived at `now` (`performance.now()`). */
  input(now: number): void {
    this.lastInput = clock(now);
  }

  /** Output was handed to the transport. */
  output(): void {
    this.lastOutput = clock(performance.now());
  }

  /** Takes over the times a connection's {@link HousekeeperShell} recorded (`performance.now()` times). */
  adopt(shell: { lastInput: number; lastOutput: number; progressFloor: number }): void {
    this.lastInput = this.lastHeard = clock(shell.lastInput);
    this.lastOutput = clock(shell.lastOutput);
    if (shell.progressFloor !== 0) this.progressFloor = clock(shell.progressFloor);
  }

  /** Brings the last activity up to date (to the nearest input or output); returns it as a `performance.now()` time (`Connection.info` shows it as a date). */
  observe(): number {
    return EPOCH + this.observed();
  }

  private observed(): number {
    const a = this.host.activity();
    if (a !== this.activitySeen) {
      this.activitySeen = a;
      this.lastActivity = Math.max(this.lastActivity, this.lastInput, this.lastOutput);
    }
    return this.lastActivity;
  }

  /** Reading resumed after middleware held the peer's messages: nothing could arrive meanwhile, so progress counts from now. */
  readingResumed(): void {
    this.lastInput = this.lastHeard = clock(performance.now());
    this.progressFloor = this.lastInput;
  }

  tick(now: number): void {
    this.check(now, false);
  }

  /**
   * A timeout that looks due at a tick waits for the rest of this event-loop
   * turn's I/O before it acts: after a stall (a long GC, a busy loop, a
   * starved process) timers run before the input that arrived meanwhile is
   * read, and a pong or a drain sitting in the socket must not count as
   * silence. Runs {@link check} again, confirmed, after the poll phase
   * (`setImmediate`; `setTimeout(0)` where there is none).
   */
  private confirmLater(): void {
    if (this.confirming) return;
    this.confirming = true;
    afterIo(() => {
      this.confirming = false;
      if (this.host.state !== "closed") this.check(performance.now(), true);
    });
  }

  /**
   * Whether the answers owed to the peer are past their deadline (`t`: a
   * {@link clock} time). Extends the deadline by the answers queued since the
   * last tick; no cost per frame (the dispatcher adds up the answers it
   * hands to the writer).
   */
  private answersLate(t: number, slow: number, rate: number): boolean {
    // (A browser connection's dispatcher may not be loaded yet: its stand-in has no count.)
    const d = this.frames.inbound.dispatcher;
    const added = d.answerEnqueued;
    if (added > 0) d.answerEnqueued = 0;
    // Pressed: a charge was refused in the last slowPeerTimeoutMs (as far as the ticks can tell:
    // any of the budget's housekeepers notes the time it first sees the count of refusals move).
    const b = this.frames.inbound.budget;
    if (b.refused !== (b.refusedSeen ?? 0)) {
      b.refusedSeen = b.refused;
      b.refusedAt = t;
    }
    const owed = this.frames.writer.answerQueued;
    if (owed <= 0) {
      this.answersDue = 0;
      return false;
    }
    let due = this.answersDue;
    let fast = this.answersDueFast;
    // First seen owed: the grace, then what is owed now at the rate. Later: what was queued since.
    if (due === 0) {
      const ms = (owed * 1000) / rate;
      due = t + slow + Math.ceil(ms);
      fast = t + slow + Math.ceil(ms / PRESSED_FACTOR);
    } else if (added > 0) {
      const ms = (added * 1000) / rate;
      due += Math.ceil(ms);
      fast += Math.ceil(ms / PRESSED_FACTOR);
    }
    if (due - t > MAX_AHEAD_MS) due = t + MAX_AHEAD_MS;
    if (fast - t > MAX_AHEAD_MS) fast = t + MAX_AHEAD_MS;
    this.answersDue = due;
    this.answersDueFast = fast;
    // Only a peer owed more than its share is held to the pressed floor: any peer can make the
    // budget refuse (a START declaring more than is free), which must not cut honest slow readers.
    // (16: budget.ts's ANSWER_SHARE, not imported: that would pull budget.ts out of this chunk.)
    const pressed = owed > b.limit / 16 && b.refusedAt !== undefined && t - b.refusedAt < slow;
    return t > (pressed ? fast : due);
  }

  /**
   * Whether the transport has held bytes none of which went out for `slow`
   * ms (at `t`, a clock() time). The writer's own rule (`blockedSince`) sees
   * only a write the transport refused: bytes a socket accepted below its
   * high-water mark, then kept because the peer stopped reading, wait for
   * ever otherwise — and with them the budget charges of the answers they
   * carry (one peer could hold the budget over its limit for good).
   */
  private heldTooLong(t: number, slow: number): boolean {
    const tr = this.gate.transport;
    const unsent = tr.bytesHeld?.() ?? 0;
    if (unsent === 0) {
      this.heldSince = 0;
      return false;
    }
    const sent = tr.bytesTaken?.() ?? 0;
    if (this.heldSince === 0 || sent !== this.heldSent) {
      this.heldSince = t;
      this.heldSent = sent;
      return false;
    }
    return t - this.heldSince >= slow;
  }

  /**
   * Sends a PING after the peer left `call`'s CANCEL unanswered for
   * `windowMs`; when its answer comes and `call` still holds its id (the
   * peer read the CANCEL and kept the id), the connection closes with
   * ERR_TIMEOUT.
   */
  private probeCancel(call: PendingCall, windowMs: number): void {
    this.probe(
      windowMs,
      () => this.frames.inbound.caller.pending.get(call.id) === call,
      `did not answer this side's CANCEL of the call ${call.id} to ${call.route}`,
    );
  }

  /**
   * Sends a PING after the peer left its final frame of stream `st` (END or
   * CANCEL) owed for `windowMs` after this side's answer or CANCEL; when its
   * answer comes and `st` still holds its id, the connection closes with
   * ERR_TIMEOUT. Before, such a stream's state stayed for the connection's
   * life, outside the memory budget (up to maxConcurrentStreams of them).
   */
  private probeStream(st: LateStream, windowMs: number): void {
    this.probe(
      windowMs,
      () => this.frames.inStreamsIfAny?.stillLate(st) === true,
      `did not end its stream ${st.id} to ${st.call.route} after this side's answer or CANCEL`,
    );
  }

  /** A PING; answered while `held()` (the peer read what it owes a frame for, and kept the id): ERR_TIMEOUT. */
  private probe(windowMs: number, held: () => boolean, what: string): void {
    probing.add(this);
    const host = this.host;
    sendPing(this.frames.pinger, windowMs, () => new Error("no pong")).then(
      () => {
        probing.delete(this);
        if (host.state === "closed" || !held()) return;
        host.timedOut(
          "ERR_TIMEOUT",
          `${host.remoteUrl}: the peer ${what} in over ${windowMs} ms, though it answered a PING sent after it (progressTimeoutMs ${windowMs}): it keeps the id in use`,
        );
      },
      () => probing.delete(this),
    );
  }

  /** `now`: a `performance.now()` time (as the writer's and the inbound side's times are). */
  private check(now: number, confirmed: boolean): void {
    const times = this.times;
    /** `now` as this one's times are kept. */
    const t = clock(now);
    const ms = times.keepAliveMs;
    const slow = times.slowPeerTimeoutMs;
    const pt = times.progressTimeoutMs;
    const host = this.host;
    const blocked = this.frames.writer.blockedSince;
    if (slow > 0 && blocked !== 0 && now - blocked >= slow) {
      if (!confirmed) {
        this.confirmLater();
        return;
      }
      const shut = Math.round(now - blocked);
      // Writable: the transport takes bytes; the peer's credit (connection, message, assembly) is what lacks.
      host.timedOut(
        "ERR_SLOW_PEER",
        this.frames.writer.writable
          ? `${host.remoteUrl} did not reopen its window for ${shut} ms: no message this side queued fits the credit it granted (slowPeerTimeoutMs ${slow})`
          : `${host.remoteUrl} took nothing this side sent for ${shut} ms (slowPeerTimeoutMs ${slow})`,
      );
      return;
    }
    if (slow > 0 && this.heldTooLong(t, slow)) {
      if (!confirmed) {
        this.confirmLater();
        return;
      }
      host.timedOut(
        "ERR_SLOW_PEER",
        `${host.remoteUrl} took none of the ${this.gate.transport.bytesHeld?.()} bytes its transport holds for over ${slow} ms (slowPeerTimeoutMs)`,
      );
      return;
    }
    const rate = times.minAnswerBytesPerSecond;
    if (slow > 0 && rate > 0 && this.answersLate(t, slow, rate)) {
      if (!confirmed) {
        this.confirmLater();
        return;
      }
      host.timedOut(
        "ERR_SLOW_PEER",
        `${host.remoteUrl} took the answers owed to it slower than minAnswerBytesPerSecond (${rate}, ×${PRESSED_FACTOR} while the memory budget refuses work): ${this.frames.writer.answerQueued} bytes still owed`,
      );
      return;
    }
    // Not while middleware holds the peer's messages (this side's doing: nothing can arrive).
    // While reading is paused because the peer does not take what it is owed, they are checked:
    // that pause is the peer's doing, and a peer taking a trickle of its answers (each drain
    // resumes reading) would otherwise keep its unfinished messages clear of the rate rule.
    // What this side gave up on (CANCEL sent): the peer answers at once (§3.4, §3.10), or its ids would be
    // held for ever (a stream waiting for a slot behind them for ever). One still unanswered after
    // progressTimeoutMs is probed with a PING: a peer that answers it has read the CANCEL (frames are
    // read in order) and keeps the id anyway, and is cut. (One that reads nothing — its own backpressure,
    // a dead link — answers no PING either: the slow-peer and keepalive rules are for that.)
    if (pt > 0 && !probing.has(this)) {
      const floor = this.progressFloor === 0 ? 0 : EPOCH + this.progressFloor;
      const late = unansweredCancel(this.frames.inbound.caller.pending, now, pt, floor);
      if (late !== undefined) this.probeCancel(late, pt);
      else {
        // The peer's streams this side answered or cancelled whose final frame it still owes.
        const st = this.frames.inStreamsIfAny?.lateFinal(now, pt, floor);
        if (st !== undefined) this.probeStream(st, pt);
      }
    }
    if (pt > 0 && !this.gate.heldPaused) {
      // The peer's unfinished messages and streams, and this side's streams waiting for credit.
      const f = this.frames;
      const floor = this.progressFloor === 0 ? 0 : EPOCH + this.progressFloor;
      const stalled = (f as { bodyStalled?: TargetingFrameRouter["bodyStalled"] }).bodyStalled?.(
        now,
        pt,
        floor,
        times.minProgressBytesPerSecond,
      );
      if (stalled !== undefined) {
        if (!confirmed) {
          this.confirmLater();
          return;
        }
        // A frame cannot be skipped: the connection goes.
        host.timedOut("ERR_TIMEOUT", `${host.remoteUrl}: ${stalled}`);
        return;
      }
      // One due (an upload's wait for credit, the peer's stream's wait for frames, its unfinished message)
      // waits for this turn's I/O, as the timeouts above.
      if (
        f.outStreamsIfAny?.checkProgress(now, pt, floor, confirmed) === true ||
        f.inStreamsIfAny?.checkProgress(now, pt, floor, confirmed) === true ||
        f.inbound.checkProgress(now, pt, floor, times.minProgressBytesPerSecond, confirmed)
      ) {
        this.confirmLater();
        return;
      }
      if (host.state === "closed") return;
    }
    const idleMs = times.idleTimeoutMs;
    // At every check, with an idle timeout or not: `info().lastActivity` reads the same record, which,
    // brought up to date only when read, took the latest input or output then (a keepalive PING's).
    const seen = this.observed();
    if (idleMs > 0) {
      if (host.inUse()) this.lastActivity = t;
      else if (t - seen >= idleMs) {
        if (!confirmed) {
          this.confirmLater();
          return;
        }
        host.idle();
        return;
      }
    }
    if (ms <= 0) return;
    const gate = this.gate;
    // Reading is paused for a reason other than a yield: nothing arrives from the peer meanwhile.
    if (gate.slowPaused || gate.heldPaused) {
      // Paused while middleware holds the peer's messages (not a slow reader): nothing is
      // read, so a peer that went away is noticed only by writing — a PING to a reset
      // socket fails and closes the connection (its held messages then go on at once).
      // One probe per interval, each given up after it (at most two outstanding): the
      // second write to a reset socket is the one that fails.
      if (!gate.slowPaused && t - this.probeAt >= ms) {
        this.probeAt = t;
        sendPing(this.frames.pinger, ms).catch(noop);
      }
      // Otherwise nothing can arrive: the slow-peer timeout rules.
      return;
    }
    // The peer is heard while whole frames arrive, or bytes of one at minProgressBytesPerSecond (an honest
    // large frame on a slow link; at most 16 KiB asked): one that drips a byte of a frame it never finishes
    // now and then answered no PING, yet passed for alive for ever.
    const f = this.frames;
    const bytes = host.bytesIn;
    const need = Math.min(LIVE_BYTES, Math.max(1, (times.minProgressBytesPerSecond * (t - this.lastHeard)) / 1000));
    const fresh = bytes - this.bytesSeen;
    if (f.framesIn !== this.framesSeen || fresh >= need) {
      this.framesSeen = f.framesIn;
      this.bytesSeen = bytes;
      this.lastHeard = this.lastInput;
    }
    const idle = t - this.lastHeard;
    if (t - this.lastOutput >= ms) f.writer.trim();
    // The peer sends (bytes at minProgressBytesPerSecond since the last check) and this side said nothing
    // for half an interval: a PING nobody waits for (§3.7: its answer, matching no PING outstanding, is
    // ignored), so the peer hears from this side. Else it may hear nothing: this side's CREDIT comes once a
    // quarter of the window arrived (minutes on a slow link), and the peer's keepalive PING waits behind
    // its own upload in the link's queues.
    // Halved by division: `>>> 1` took keepAliveMs modulo 2^32 (2^32 ms made half an interval 0 ms).
    const half = ms / 2;
    if (t - this.lastOutput >= half && fresh >= need) f.pinger.send(0);
    // No input for a tick: let the transport drop its bulk read buffer.
    if (t - this.lastInput >= half) this.gate.transport.trim?.();
    if (this.pingAt !== 0 && idle >= ms * 2) {
      if (!confirmed) {
        this.confirmLater();
        return;
      }
      host.timedOut(
        "ERR_KEEPALIVE",
        t - this.lastInput >= idle
          ? `no bytes from ${host.remoteUrl} for ${idle} ms`
          : `nothing but ${bytes - this.bytesSeen} bytes of an unfinished frame from ${host.remoteUrl} in ${idle} ms`,
      );
      return;
    }
    // A keepalive PING waits for its answer without a timeout: a peer that answers none but sends
    // other input before the close would otherwise leave one in the pinger's table every period.
    if (idle >= ms && this.pingsOut < MAX_PINGS_IN_FLIGHT) {
      this.pingAt = t;
      this.pingsOut++;
      sendPing(this.frames.pinger, 0).then(
        () => {
          this.pingAt = 0;
          this.pingsOut--;
        },
        () => this.pingsOut--,
      );
    }
  }
}
