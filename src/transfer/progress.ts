import type { PointSubError } from "../errors/error.ts";
import { Emitter, type Listener } from "../util/emitter.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";

export { newTransferId } from "./transfer-id.ts";

/** Lifecycle of a transfer, as progress reports it. */
export type TransferStatus =
  | "initializing"
  | "transferring"
  | "paused"
  | "resuming"
  | "completed"
  | "failed"
  | "cancelled";

const TERMINAL: ReadonlySet<TransferStatus> = new Set(["completed", "failed", "cancelled"]);

/** One progress report. */
export interface ProgressSnapshot {
  transferId: string;
  /** Content bytes in all, when known. */
  total: number | undefined;
  /** Content bytes done: acknowledged by the receiver (sender side) or consumed (receiver side). */
  bytes: number;
  /** 0..100, or undefined while the total is unknown (100 once completed). */
  percent: number | undefined;
  /** Bytes per second over the last few seconds. */
  rate: number;
  /** Seconds left at the current rate, when the total is known and the rate is not 0. */
  etaSeconds: number | undefined;
  status: TransferStatus;
  /** Milliseconds since the transfer began. */
  elapsedMs: number;
  /** Set when status is failed or cancelled, and while paused: why (the error of the attempt that ended). */
  error?: PointSubError;
}

/** Events of a {@link Progress}. */
export interface ProgressEvents {
  progress: [snapshot: ProgressSnapshot];
}

const WINDOW_MS = 3000;
const SAMPLES = 32;

/**
 * Progress of one transfer: counts bytes, keeps a sliding-window rate, and
 * emits `progress` at most every `intervalMs` (and on every status change).
 * Also an async iterable of snapshots that ends with the final status.
 */
export class Progress extends Emitter<ProgressEvents> implements AsyncIterable<ProgressSnapshot> {
  /** The transfer id (may be set once known). */
  transferId: string;
  total: number | undefined;
  private bytes_ = 0;
  private status_: TransferStatus = "initializing";
  private error_: PointSubError | undefined;
  private readonly started = performance.now();
  private readonly intervalMs: number;
  private lastEmit = 0;
  /**
   * The rate window: sample times in the first half, byte counts in the
   * second. Made at the first sample: a transfer that never moves data (a
   * refused or cancelled stream, many under a hostile peer) allocates none.
   */
  private samples: Float64Array | undefined;
  private sampleHead = 0;
  private sampleCount = 0;
  private lastSampleAt = 0;
  /** The `context` listeners were added with, when one was ({@link emitNow} calls each listener itself). */
  private contexts: WeakMap<object, unknown> | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(transferId: string, total: number | undefined, intervalMs = 100) {
    super();
    this.transferId = transferId;
    this.total = total;
    this.intervalMs = intervalMs;
  }

  get status(): TransferStatus {
    return this.status_;
  }

  get bytes(): number {
    return this.bytes_;
  }

  /** Sets the byte count (e.g. the resume offset) without counting it toward the rate. */
  setBase(bytes: number): void {
    this.bytes_ = bytes;
    this.sampleCount = 0;
  }

  /** Adds `n` bytes done. Cheap: emits at most every intervalMs. */
  add(n: number): void {
    // Ended: bytes still read or credited after a failure or a cancel (a handler draining what was
    // buffered) no longer move the final figures, nor emit after the final status.
    if (TERMINAL.has(this.status_)) return;
    this.bytes_ += n;
    const now = performance.now();
    if (now - this.lastSampleAt >= WINDOW_MS / SAMPLES) this.sample(now);
    if (now - this.lastEmit >= this.intervalMs) this.emitNow(now);
    else this.scheduleEmit();
  }

  /** Changes status; terminal statuses are final. */
  setStatus(status: TransferStatus, error?: PointSubError): void {
    if (TERMINAL.has(this.status_) || this.status_ === status) return;
    this.status_ = status;
    // Only the status it came with has it: a pause's error (a connection lost) is not the completed transfer's.
    this.error_ = error;
    if (status === "completed" && this.total === undefined) this.total = this.bytes_;
    if (status === "completed" && this.total !== undefined) this.bytes_ = this.total;
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.emitNow(performance.now());
  }

  get done(): boolean {
    return TERMINAL.has(this.status_);
  }

  /** The current state (`now`: a `performance.now()` time). */
  snapshot(now = performance.now()): ProgressSnapshot {
    const rate = this.rate(now);
    const total = this.total;
    const bytes = this.bytes_;
    const s: ProgressSnapshot = {
      transferId: this.transferId,
      total,
      bytes,
      percent:
        this.status_ === "completed"
          ? 100
          : total === undefined
            ? undefined
            : total === 0
              ? 0
              : Math.min(100, (bytes / total) * 100),
      rate,
      etaSeconds:
        this.status_ === "completed"
          ? 0
          : total !== undefined && rate > 0
            ? Math.max(0, (total - bytes) / rate)
            : undefined,
      status: this.status_,
      elapsedMs: now - this.started,
    };
    if (this.error_ !== undefined) s.error = this.error_;
    return s;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ProgressSnapshot> {
    // Keeps only the newest report between reads (a slow reader never grows a queue).
    let latest: ProgressSnapshot | undefined = this.snapshot();
    let wake: (() => void) | undefined;
    const on = (s: ProgressSnapshot) => {
      latest = s;
      wake?.();
    };
    this.on("progress", on);
    try {
      for (;;) {
        if (latest === undefined) await new Promise<void>((r) => (wake = r));
        wake = undefined;
        const s = latest as ProgressSnapshot;
        latest = undefined;
        yield s;
        if (TERMINAL.has(s.status)) return;
      }
    } finally {
      this.off("progress", on);
    }
  }

  private rate(now: number): number {
    if (this.sampleCount === 0) return 0;
    const oldest = (this.sampleHead - this.sampleCount + SAMPLES) % SAMPLES;
    const w = this.samples as Float64Array;
    const dt = now - w[oldest];
    if (dt <= 0) return 0;
    return ((this.bytes_ - w[SAMPLES + oldest]) * 1000) / dt;
  }

  private sample(now: number): void {
    this.lastSampleAt = now;
    this.samples ??= new Float64Array(2 * SAMPLES);
    const w = this.samples;
    w[this.sampleHead] = now;
    w[SAMPLES + this.sampleHead] = this.bytes_;
    this.sampleHead = (this.sampleHead + 1) % SAMPLES;
    if (this.sampleCount < SAMPLES) this.sampleCount++;
    // Drop samples older than the window (keep at least one).
    while (this.sampleCount > 1) {
      const oldest = (this.sampleHead - this.sampleCount + SAMPLES) % SAMPLES;
      if (now - w[oldest] <= WINDOW_MS) break;
      this.sampleCount--;
    }
  }

  private scheduleEmit(): void {
    if (this.timer !== undefined || this.listenerCount("progress") === 0) return;
    // Within a timer's range: a longer delay fired after 1 ms (a report every millisecond, and a warning each).
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.emitNow(performance.now());
      },
      Math.min(this.intervalMs, MAX_TIMER_MS),
    );
    (this.timer as { unref?: () => void }).unref?.();
  }

  /**
   * Reports to the listeners. One that throws is the application's bug: surfaced (thrown again from a
   * microtask, an uncaught exception, as a connection's or server's listener's is) and the transfer goes
   * on. Before, it unwound into the stream's work: a sender's first report rejected the producer's start
   * (an unhandled rejection; the transfer never settled), a receiver's failed the handler's read. Each
   * listener is called on its own, so each one's error surfaces (`emit` throws the first only; when it
   * was eventemitter3's, it stopped at the first that threw, and those after it — a `for await` over
   * this progress behind a throwing `onProgress` — missed every report, the final one too).
   */
  override on<K extends keyof ProgressEvents>(event: K, fn: Listener<ProgressEvents, K>, context?: unknown): this {
    this.keepContext(fn, context);
    return super.on(event, fn, context);
  }

  override addListener<K extends keyof ProgressEvents>(
    event: K,
    fn: Listener<ProgressEvents, K>,
    context?: unknown,
  ): this {
    this.keepContext(fn, context);
    return super.addListener(event, fn, context);
  }

  override once<K extends keyof ProgressEvents>(event: K, fn: Listener<ProgressEvents, K>, context?: unknown): this {
    this.keepContext(fn, context);
    return super.once(event, fn, context);
  }

  private keepContext(fn: unknown, context: unknown): void {
    // A falsy context is none (`this` is the progress), as the emitter's.
    if (!context || typeof fn !== "function") return;
    this.contexts ??= new WeakMap();
    this.contexts.set(fn, context);
  }

  private emitNow(now: number): void {
    this.lastEmit = now;
    if (this.listenerCount("progress") === 0) return;
    const s = this.snapshot(now);
    for (const fn of this.listeners("progress")) {
      // A `once` listener runs this time only (removes nothing else: emit's own rule).
      this.removeListener("progress", fn, undefined, true);
      try {
        // With the context it was added with, as emit calls it (the emitter's own default: the Progress).
        fn.call(this.contexts?.get(fn) ?? this, s);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
