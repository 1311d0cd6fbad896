/**
 * Pacing of bulk data (issue 17: latency bounded in time, not bytes).
 *
 * Everything this side writes below the engine — Node's socket buffer, the
 * kernel's send buffer, a slow link's router queue — is a queue a small
 * message waits behind. The writer sends small frames first, but once a
 * chunk is handed to the transport nothing can overtake it. So the bytes
 * of chunked messages and streams handed over and not yet delivered are kept
 * near what the link delivers in one round trip plus {@link TARGET_MS}:
 *
 * - **Acknowledgements**: every so often after bulk bytes (a quarter of the
 *   window), the writer sends a PING (docs/PROTOCOL.md §3.7) whose 8 bytes
 *   are a negative number (the keepalive's are positive). The peer answers a
 *   PING when it has read every byte before it, so its PING ACK says the
 *   byte stream was delivered up to the PING's position — an exact,
 *   transport-independent acknowledgement, and a round-trip sample that
 *   includes the queue ahead of it. Nothing new on the wire.
 * - **Delivery rate**: acknowledged bytes per ms over at least one minimum
 *   round trip, the maximum of the samples of the last {@link RATE_WINDOW_MS}
 *   (as BBR's bottleneck-bandwidth filter; a sample may at most double it).
 *   A sample's bytes are divided by the longer of the time their
 *   acknowledgements took to come and the time they took to be sent (as
 *   BBR's max(send_elapsed, ack_elapsed)): acknowledgements that come bunched
 *   (a receiver, link or machine that delivers in bursts, a return path that
 *   holds them) make no rate the sender never sent at. The max filter keeps
 *   the highest sample, so timing noise is an overestimate: on a 100 MB/s,
 *   10 ms shaped link (bench/lib/shaper.ts, whose ticks deliver in bursts)
 *   acknowledgement intervals alone put the rate at 112 KB/ms (p50; 150 at
 *   p99), ~2 ms more queue than the target.
 * - **Window**: bulk bytes are handed over only while the bytes in flight
 *   (written, not yet acknowledged) are below rate × (min RTT + TARGET_MS),
 *   at least {@link FLOOR}. With spare capacity, delivery outgrows the
 *   window by (1 + TARGET_MS / min RTT) per round trip; at capacity the
 *   queue settles at TARGET_MS of the link's rate.
 * - **Acknowledgements in bursts** (a stalled or busy sender, receiver or
 *   link: on a loaded machine every process is descheduled for ms at a
 *   time) are measured as BBR measures ack aggregation: the bytes
 *   acknowledged beyond what the rate explains since the last time it
 *   explained them all, the maximum of {@link RATE_WINDOW_MS}, is added to
 *   the window (capped at {@link MAX_EXTRA_MS} of the rate), so a receiver
 *   still has data while its sender is away. A link that delivers steadily
 *   adds nothing.
 * - **Startup** (as BBR's STARTUP): until the rate grew less than
 *   {@link STARTUP_GROWTH}× in {@link STARTUP_FLAT_ROUNDS} round trips, a
 *   probe came back later than min RTT + TARGET_MS (a queue beyond the
 *   target: the link is full — as HyStart's delay increase; startup's 1.5×
 *   window had kept ~12 ms of queue on a 100 MB/s, 10 ms link for three
 *   round trips), or the delay guard fired, the rate part of the window is
 *   {@link STARTUP_GAIN}× and the window at least {@link INITIAL_WINDOW}:
 *   the first samples are taken while the window, not the link, limits
 *   delivery (a 16 MiB transfer on a 100 MB/s, 10 ms link reached 74 % of
 *   the link without it, 91 % with it; bench/lib/pacer-sim.ts). A rate
 *   sample spans at least {@link MIN_FRAME} acknowledged bytes (the first
 *   probe goes before any bulk: its few bytes made a rate of bytes per ms).
 * - **Delay guard**: the max filter believes the fastest burst of the last
 *   second; when the receiver (or the machine) delivers in bursts, that is
 *   far above what it delivers on average and the queue grows to many times
 *   its budget (loaded machine: a 2.5 MiB window at ~15 MB/s, pings waiting
 *   150–250 ms). A probe's round trip is exactly the wait of anything sent
 *   with it, so an acknowledgement that took longer than min RTT +
 *   TARGET_MS + the guard's margin (the min RTT, within
 *   {@link GUARD_MIN_MS}..{@link GUARD_MS}: a reset costs about the round
 *   trips the window takes to grow back, few on a short path) sets the rate to what was
 *   delivered while that probe was under way, and both filters start again
 *   from it.
 * - **Min RTT** comes only from probes sent with no bulk ahead of them: a
 *   probe sent behind a queue measures the queue, and a min RTT that
 *   includes one keeps that queue standing (the window is sized from it).
 *   Bulk that starts on an idle pipe sends a probe first; every
 *   {@link MIN_RTT_REFRESH_MS} bulk is held until every probe is answered
 *   (the pipe is empty), then a probe goes first and bulk resumes behind it
 *   (as BBR's ProbeRTT; the link idles for about one round trip). Measured:
 *   a 256 KiB first window at 10 MB/s made every later min RTT 17-21 ms on a
 *   10 ms link, and 6 ms on loopback — 12-16 ms of standing queue.
 * - **Restart**: bulk that restarts on a pipe with no bulk in flight (after
 *   a drain, or a pause of the application) would hand the whole window over
 *   at once, and its last bytes wait window / rate + min RTT — a whole min
 *   RTT more than at steady state, where acknowledgements come back while the
 *   window is sent (a 25–27 ms ping after each drain on a 10 MB/s, 10 ms
 *   link, 17 ms otherwise). Until an acknowledgement of what the restart
 *   sent comes back (not of a probe sent before it, after a small message)
 *   or one min RTT passed, bulk goes out at the rate after the queue the
 *   window keeps (its bytes beyond rate × min RTT), woken by a timer.
 * - **Chunks**: bulk frames are at most a quarter of the window and no larger
 *   than the window's room (at least {@link MIN_FRAME}), so what is in
 *   flight stays within the window and a small message never waits behind
 *   one frame of many milliseconds.
 *
 * Single-frame messages and control frames are never paced: they go first.
 */
import { encodePing } from "../codec/control.ts";
import { T_PING } from "../codec/frame.ts";
import { BULK_FLUSH_BYTES, FLUSH_BYTES } from "./writer.ts";

/** What the pacer needs from the frame writer. */
export interface PacedWriter {
  /** Bytes encoded so far on this connection: the byte-stream position of the next frame. */
  readonly position: number;
  /** Writes a control frame now. */
  control(type: number, flags: number, id: number, payload: Uint8Array): void;
  /** The window opened: try sending bulk again. */
  wake(): void;
  /** Hands everything batched to the transport now. */
  flush(): void;
}

const KIB = 1024;
/** Smallest window: a slow or unknown link still moves this much per round trip. */
export const FLOOR = 64 * KIB;
/** Window before the first rate sample. */
export const INITIAL_WINDOW = 256 * KIB;
/** Queueing delay the window allows on top of the min RTT, ms. */
export const TARGET_MS = 5;
/** Bulk frames are at least this large (the writer's smallest chunk). */
const MIN_FRAME = 16 * KIB;
/** Rate samples count for this long, ms. */
const RATE_WINDOW_MS = 1000;
/** The min RTT is measured again (the window drained) after this long, ms. */
const MIN_RTT_REFRESH_MS = 2000;
/**
 * Until two clean min-RTT samples were taken, the refresh comes after this
 * long instead, ms: the first window is sent blind (before any rate sample)
 * and a new process answers its first probes late, so the first samples may
 * hold a queue that the window would otherwise keep standing for 2 s.
 */
const FIRST_REFRESH_MS = 250;
/** A drain gives up after this long without its acknowledgement, ms. */
const MAX_DRAIN_MS = 500;
/** Probes in flight at most (each is a PING the peer answers). */
const MAX_PROBES = 32;
/** Rate samples span at least this long, ms (and at least the min RTT). */
const MIN_SPAN_MS = 2;
/**
 * The allowance for acknowledgements in bursts is at most this much of the
 * rate, ms. 10 ms before: a ping then waited up to 15 ms of the rate
 * behind bulk on loopback (simulated bursts, bench/hol-sim.ts: ping wait
 * p50 9.1 → 7.7 ms, p99 22.3 → 20-21 ms at 100 MB/s).
 */
const MAX_EXTRA_MS = 5;
/**
 * The delay guard fires on an acknowledgement later than min RTT +
 * TARGET_MS + this, ms. Not the burst allowance's 5 ms: on a loaded
 * machine (simulated receiver and sender away 4-8 ms at a time) a guard at
 * +10 ms reset the rate on every stall and cost 5-10 % of the link.
 */
const GUARD_MS = 10;
/**
 * The delay guard's margin on a short path (min RTT below this), ms: a rate
 * reset there grows back within a few ms. Simulated loopback with the
 * receiver and sender away 2 ms in 10 (bench/hol-sweep.ts): ping p99
 * 22.0 → 18.5 ms, the same share of the receiver.
 */
const GUARD_MIN_MS = 5;
/** Startup: the gain of the window's rate part until the rate stops growing (as BBR's STARTUP). */
const STARTUP_GAIN = 1.5;
/** Startup ends after this many round trips in which the rate grew less than {@link STARTUP_GROWTH}. */
const STARTUP_FLAT_ROUNDS = 3;
const STARTUP_GROWTH = 1.25;
/** Rate samples kept at most. */
const MAX_SAMPLES = 64;
/** Acknowledgements remembered to take rate samples from. */
const HISTORY = 32;
/**
 * Bulk blocked this long with a probe unanswered: the peer does not answer
 * PINGs (or not in time) and pacing stops until an answer comes — a peer
 * that never answers must not stall bulk data (longer than the initial
 * window takes on a 256 KB/s link, so a slow link is not mistaken for it).
 */
export const NO_ACK_MS = 1000;

export class Pacer {
  /** Delivery rate in bytes per ms (0 before the first sample). */
  rate = 0;
  /** Smallest round-trip time seen since the last refresh, ms. */
  minRtt = Number.POSITIVE_INFINITY;
  /** Byte-stream position the peer acknowledged. */
  acked: number;
  /** When {@link acked} last moved (`performance.now()`; 0: never): a request's body is still arriving (caller.ts). */
  ackedAt = 0;
  /** Probes sent (their PINGs carry the negative count). */
  probesSent = 0;

  private readonly writer: PacedWriter;
  /** Probes in flight, oldest first: sequence number, position, send time, flat. */
  private readonly probes: number[] = [];
  private lastProbePos: number;
  /** Byte-stream position after the last bulk frame: bulk is in flight while it is beyond {@link acked}. */
  private bulkPos: number;
  private minRttAt = 0;
  /** Acknowledgements: time and position, a ring of HISTORY. */
  private readonly histT = new Float64Array(HISTORY);
  private readonly histP = new Float64Array(HISTORY);
  /** ...and when the acknowledged probe was sent (every byte before it had been handed over by then). */
  private readonly histS = new Float64Array(HISTORY);
  private histN = 0;
  private histHead = 0;
  /** Rate samples of the last RATE_WINDOW_MS: time and value, flat. */
  private readonly samples: number[] = [];
  /** Acknowledgements beyond the rate: since when (ms) and from which position they are counted. */
  private aggT = 0;
  private aggPos = 0;
  /** Extra-acknowledged samples of the last RATE_WINDOW_MS: time and bytes, flat; and their maximum. */
  private readonly extras: number[] = [];
  private extra = 0;
  /** Since when the window is held to drain the queue (0: not draining). */
  private drainSince = 0;
  /** The probe whose answer ends the drain (0: not sent yet). */
  private drainSeq = 0;
  /** Drain probes answered: clean min-RTT samples taken. */
  private drains = 0;
  /** Smallest round trip of any probe since the refresh before the last one, ms. */
  private periodMin = Number.POSITIVE_INFINITY;
  /** Startup: the window is {@link STARTUP_GAIN} times larger until the rate stops growing or the delay guard fires. */
  startup = true;
  /** Startup's round trips: the position whose acknowledgement ends this one, the rate at the last growth, rounds since. */
  private roundEnd = 0;
  private roundRate = 0;
  private flatRounds = 0;
  /** No answer to a probe within NO_ACK_MS while blocked: not pacing until one comes. */
  unresponsive = false;
  /**
   * This side stopped reading the peer (the slow-peer bound, read-gate.ts):
   * no acknowledgement can be read meanwhile, so bulk is not paced — it
   * goes to the transport, whose drain resumes reading, as without pacing.
   */
  readingPaused = false;
  /**
   * Reading the peer stopped (`true`, the slow-peer bound) or resumed (sets
   * {@link readingPaused}): when it stops, what waits is handed to the
   * transport now, as without pacing.
   */
  pauseReading(on: boolean): void {
    if (this.readingPaused === on) return;
    this.readingPaused = on;
    if (!on) return;
    this.writer.wake();
    this.writer.flush();
  }
  private noAckTimer: ReturnType<typeof setTimeout> | undefined;
  /** Bulk restarted with none in flight at this time (0: not ramping), from this position. */
  private rampT = 0;
  private rampPos = 0;
  /** ...and the end of its first bulk frame: an acknowledgement from there on is one of what the restart sent. */
  private rampFrom = 0;
  private rampTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(writer: PacedWriter) {
    this.writer = writer;
    this.acked = writer.position;
    this.lastProbePos = this.acked;
    this.bulkPos = this.acked;
    this.minRttAt = performance.now();
  }

  /**
   * The queue the window keeps, ms: TARGET_MS, or an eighth of the min RTT
   * on a longer path (as HyStart's delay threshold).
   */
  private target(): number {
    return Math.max(TARGET_MS, this.minRtt / 8);
  }

  /** Bytes the window allows in flight now. */
  window(): number {
    if (this.unresponsive || this.readingPaused) return Number.POSITIVE_INFINITY;
    if (this.rate === 0) return INITIAL_WINDOW;
    const base = this.rate * (this.minRtt + this.target());
    return Math.max(this.startup ? INITIAL_WINDOW : FLOOR, (this.startup ? STARTUP_GAIN * base : base) + this.extra);
  }

  /** Bulk bytes that may be handed over now at `position` (≤ 0: wait for an acknowledgement). */
  room(position: number): number {
    // Refreshing the min RTT: nothing more until every probe is answered and the drain probe left.
    if (this.drainSince !== 0 && this.drainSeq === 0 && !this.unresponsive && !this.readingPaused) return 0;
    const room = this.window() - (position - this.acked);
    if (this.rampT === 0 || this.unresponsive || this.readingPaused) return room;
    return Math.min(room, this.rampRoom(performance.now()) - (position - this.rampPos));
  }

  /**
   * Bytes a restart may have handed over by `now`: at once the queue the
   * window keeps (all of it but the rate × min RTT read while
   * acknowledgements travel), then the rate.
   */
  private rampRoom(now: number): number {
    return this.window() + this.rate * (now - this.rampT - this.minRtt);
  }

  /**
   * Whether the paced frames batched so far (`batched` bytes, the next frame
   * at `position`) make a write (the writer's pump): groups of `group` bytes
   * (the writer's bulkFlushBytes), one by one when the window is unbounded
   * (as unpaced); a transport with its own frame limit (a group smaller than
   * {@link BULK_FLUSH_BYTES}) gets at most one such frame per write, flushed
   * when the next frame would not fit.
   */
  groupFull(batched: number, position: number, group: number): boolean {
    if (this.window() === Number.POSITIVE_INFINITY) return batched >= FLUSH_BYTES;
    return batched + (group < BULK_FLUSH_BYTES ? this.frameLimit(position) : 0) >= group;
  }

  /**
   * Largest bulk frame payload now; with `position`, also no more than the
   * window's room there (at least {@link MIN_FRAME}), so a frame does not
   * overshoot the window.
   */
  frameLimit(position?: number): number {
    const quarter = Math.floor(this.window() / 4);
    if (position === undefined) return Math.max(MIN_FRAME, quarter);
    return Math.max(MIN_FRAME, Math.min(quarter, Math.floor(this.room(position))));
  }

  /**
   * Bulk is about to start on an idle pipe (nothing unacknowledged): a probe
   * goes first, so its round trip is the path's with no bulk ahead — the
   * min RTT is refreshed from it for free. Not while a probe is answered
   * still (its answer may stand for the path already).
   */
  starting(position: number): void {
    if (this.unresponsive || this.readingPaused || this.probes.length !== 0 || position > this.acked) return;
    this.drainSince = performance.now();
    this.drainSeq = 0;
    this.probe(this.drainSince);
  }

  /** A bulk frame went out; the writer is at `position` after it. */
  sent(position: number, idleBefore: boolean): void {
    const now = performance.now();
    // No bulk was in flight before this frame (probes at most, as after a drain): a restart.
    if (this.bulkPos <= this.acked && this.rate !== 0) {
      this.rampT = now;
      this.rampPos = this.acked;
      this.rampFrom = position;
    }
    this.bulkPos = position;
    // The pipe was empty: rate samples start from here, not from the last acknowledgement.
    if (idleBefore) {
      this.remember(now, this.acked, now);
      this.aggT = now;
      this.aggPos = this.acked;
    }
    const refresh = this.drains < 2 ? FIRST_REFRESH_MS : MIN_RTT_REFRESH_MS;
    if (this.drainSince === 0 && this.rate !== 0 && now - this.minRttAt > refresh) {
      // Hold bulk until every probe is answered (room() is 0), then the drain probe goes first (onAck).
      this.drainSince = now;
      this.drainSeq = 0;
    }
    const step = this.unresponsive || this.readingPaused ? INITIAL_WINDOW / 4 : Math.max(MIN_FRAME, this.window() / 4);
    if (position - this.lastProbePos >= step) this.probe(now);
  }

  /** Bulk waits for the window: make sure an acknowledgement of everything written will come. */
  blocked(position: number): void {
    const now = performance.now();
    if (this.rampT !== 0 && this.rampTimer === undefined && this.window() > position - this.acked) {
      // Held by the restart's ramp, not by the window: wake when a smallest frame fits (≥ 1 ms on).
      const need = position - this.rampPos + MIN_FRAME - this.rampRoom(now);
      this.rampTimer = setTimeout(() => this.rampWake(), Math.max(1, need / this.rate));
      (this.rampTimer as { unref?: () => void }).unref?.();
    }
    if (position > this.lastProbePos) this.probe(now);
    if (this.noAckTimer === undefined) {
      this.noAckTimer = setTimeout(() => this.noAck(), NO_ACK_MS);
      (this.noAckTimer as { unref?: () => void }).unref?.();
    }
  }

  private rampWake(): void {
    this.rampTimer = undefined;
    if (this.rampT !== 0) this.writer.wake();
  }

  /** NO_ACK_MS after bulk blocked: still waiting for a probe sent that long ago means the peer does not answer. */
  private noAck(): void {
    this.noAckTimer = undefined;
    if (this.probes.length === 0) return;
    const waited = performance.now() - this.probes[2];
    if (waited < NO_ACK_MS) {
      // Still in time: look again when the oldest probe is that old.
      this.noAckTimer = setTimeout(() => this.noAck(), NO_ACK_MS - waited);
      (this.noAckTimer as { unref?: () => void }).unref?.();
      return;
    }
    this.unresponsive = true;
    this.writer.wake();
  }

  /**
   * Every bulk byte acknowledged: a probe now has no bulk ahead of it. Probes
   * still unanswered follow small messages only (every probe before the last
   * bulk byte was answered with it): waiting for them too never ended while
   * a small message went every round trip or more often (each is followed
   * by a probe) — the drain then lasted MAX_DRAIN_MS, or until one's answer
   * happened to come before the next was sent (90-310 ms on a 10 ms link
   * with a ping every 10 ms).
   */
  private empty(): boolean {
    return this.bulkPos <= this.acked;
  }

  /** Whether the pipe holds nothing unacknowledged at `position`. */
  idle(position: number): boolean {
    return position <= this.acked;
  }

  private probe(now: number): void {
    if (this.probes.length >= 3 * MAX_PROBES) return;
    // A probe with no bulk ahead of it (every earlier probe answered) measures the path: it ends a drain.
    const seq = ++this.probesSent;
    if (this.drainSince !== 0 && this.drainSeq === 0 && this.empty()) this.drainSeq = seq;
    this.writer.control(T_PING, 0, 0, encodePing(-seq));
    // Its answer acknowledges every byte up to the end of the PING itself.
    const end = this.writer.position;
    this.probes.push(seq, end, now);
    this.lastProbePos = end;
  }

  /** The peer answered probe `-value` (a PING ACK with a negative payload); false if unknown. */
  onAck(value: number): boolean {
    const seq = -value;
    const probes = this.probes;
    let i = 0;
    while (i < probes.length && probes[i] < seq) i += 3;
    if (i >= probes.length || probes[i] !== seq) return false;
    this.unresponsive = false;
    const position = probes[i + 1];
    const now = performance.now();
    const sentAt = probes[i + 2];
    const rtt = now - sentAt;
    // The peer may answer only the latest of several PINGs: every earlier one is answered too.
    probes.splice(0, i + 3);
    if (position > this.acked) {
      this.acked = position;
      this.ackedAt = now;
    }
    // What the restart sent is being acknowledged: acknowledgements clock bulk from here. Not the
    // answer to a probe sent before it (after a small message, during the drain): that one ended the
    // ramp a few ms into it and the whole window went at once (hol-slow 100 MB/s: a ping behind it
    // waited 27-35 ms after each min-RTT refresh, the run's slowest).
    if (this.rampT !== 0 && (this.acked >= this.rampFrom || now - this.rampT >= this.minRtt)) this.rampT = 0;
    if (rtt < this.minRtt) {
      this.minRtt = rtt;
      this.minRttAt = now;
    }
    if (rtt < this.periodMin) this.periodMin = rtt;
    if (this.drainSince !== 0 && (seq === this.drainSeq || now - this.drainSince > MAX_DRAIN_MS)) {
      // The queue was drained when this probe left: its round trip is the path's.
      if (seq === this.drainSeq) {
        // Every round trip is at least the path's: the smallest since the refresh before
        // this one, so one clean probe answered late (a descheduled peer on a loaded machine)
        // does not raise the min RTT above what other probes showed.
        this.minRtt = Math.min(rtt, this.periodMin);
        this.periodMin = rtt;
        this.drains++;
      }
      this.minRttAt = now;
      this.drainSince = 0;
      this.drainSeq = 0;
    }
    this.sample(now, sentAt);
    // A queue beyond the target: the link is full, startup ends (the window drains to its steady size).
    if (this.startup && this.rate !== 0 && rtt > this.minRtt + this.target()) this.startup = false;
    this.guard(now, rtt);
    if (this.startup && this.acked >= this.roundEnd) this.round();
    this.aggregation(now);
    this.remember(now, this.acked, sentAt);
    // Draining and every probe answered: the pipe is empty, the drain probe goes now (bulk follows it).
    if (this.drainSince !== 0 && this.drainSeq === 0 && this.empty()) this.probe(now);
    this.writer.wake();
    return true;
  }

  /**
   * A delivery-rate sample from the acknowledgements of the last min RTT or
   * more; `sentAt`: when the probe just answered was sent.
   */
  private sample(now: number, sentAt: number): void {
    const span = Math.max(MIN_SPAN_MS, this.minRtt);
    let k = -1;
    for (let j = 0; j < this.histN; j++) {
      const idx = (this.histHead - 1 - j + HISTORY) % HISTORY;
      // At least MIN_FRAME bytes: fewer say nothing (the first probe goes before any bulk:
      // its few bytes were a rate of bytes per ms); on a slow link the span grows to hold them.
      if (now - this.histT[idx] >= span && this.acked - this.histP[idx] >= MIN_FRAME) {
        k = idx;
        break;
      }
    }
    if (k < 0) return;
    // Over the longer of the acknowledgements' interval and the one the bytes were sent in.
    let value = (this.acked - this.histP[k]) / Math.max(now - this.histT[k], sentAt - this.histS[k]);
    if (!(value > 0)) return;
    if (this.rate > 0 && value > 2 * this.rate) value = 2 * this.rate;
    const s = this.samples;
    while (s.length !== 0 && (now - s[0] > RATE_WINDOW_MS || s.length >= 2 * MAX_SAMPLES)) s.splice(0, 2);
    s.push(now, value);
    let max = 0;
    for (let j = 1; j < s.length; j += 2) if (s[j] > max) max = s[j];
    this.rate = max;
  }

  /** A startup round trip ended: did the rate grow? Three that did not end startup. */
  private round(): void {
    this.roundEnd = this.bulkPos;
    if (this.rate >= STARTUP_GROWTH * this.roundRate) {
      this.roundRate = this.rate;
      this.flatRounds = 0;
    } else if (++this.flatRounds >= STARTUP_FLAT_ROUNDS) this.startup = false;
  }

  /**
   * The queue outgrew the window's time budget (an acknowledgement took longer
   * than min RTT + the target + the margin — the min RTT within
   * GUARD_MIN_MS..GUARD_MS, or an eighth of it when more): the rate was overestimated (the
   * max filter caught a burst). The rate becomes what was delivered while this
   * probe was under way, and the filters start again from it.
   */
  private guard(now: number, rtt: number): void {
    const margin = Math.max(Math.min(GUARD_MS, Math.max(GUARD_MIN_MS, this.minRtt)), this.minRtt / 8);
    if (this.rate === 0 || rtt <= this.minRtt + this.target() + margin) return;
    let k = -1;
    for (let j = 0; j < this.histN; j++) {
      const idx = (this.histHead - 1 - j + HISTORY) % HISTORY;
      k = idx;
      if (now - this.histT[idx] >= rtt) break;
    }
    if (k < 0 || now - this.histT[k] <= 0) return;
    const value = (this.acked - this.histP[k]) / (now - this.histT[k]);
    if (!(value > 0) || value >= this.rate) return;
    this.startup = false;
    this.rate = value;
    this.samples.length = 0;
    this.samples.push(now, value);
    this.extras.length = 0;
    this.extra = 0;
  }

  /** Bytes acknowledged beyond the rate since the epoch began; a new epoch when the rate explains them all. */
  private aggregation(now: number): void {
    if (this.rate === 0) return;
    const expected = this.rate * (now - this.aggT);
    const got = this.acked - this.aggPos;
    if (this.aggT === 0 || got <= expected) {
      this.aggT = now;
      this.aggPos = this.acked;
      return;
    }
    const e = this.extras;
    while (e.length !== 0 && (now - e[0] > RATE_WINDOW_MS || e.length >= 2 * MAX_SAMPLES)) e.splice(0, 2);
    e.push(now, Math.min(got - expected, this.rate * MAX_EXTRA_MS));
    let max = 0;
    for (let j = 1; j < e.length; j += 2) if (e[j] > max) max = e[j];
    this.extra = max;
  }

  private remember(t: number, position: number, sentAt: number): void {
    this.histT[this.histHead] = t;
    this.histS[this.histHead] = sentAt;
    this.histP[this.histHead] = position;
    this.histHead = (this.histHead + 1) % HISTORY;
    if (this.histN < HISTORY) this.histN++;
  }
}
