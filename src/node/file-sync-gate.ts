/**
 * Where a file store's small operations run (the bundle handler's open,
 * write, close, link): on the main thread, synchronously — microseconds on
 * a healthy disk, where a thread-pool round trip costs the main thread more
 * than the operation and adds a wake-up per call — or on the thread pool
 * while the disk is slow (a synchronous call would stall every session).
 *
 * One slow call is not a slow disk: on a loaded machine any call can take a
 * few milliseconds because the process was descheduled, and switching on the
 * first one sent whole transfers to the pool (three round trips per small
 * file). The gate switches to the pool for {@link SyncGate.backoffMs} when
 * one call took over {@link SyncGate.stallMs} (the disk stalled), or when
 * at least {@link SyncGate.slowOf} of the last {@link SyncGate.window} calls
 * took over {@link SyncGate.slowMs} (the disk is slow, not one call); after
 * the back-off it tries the main thread again with a clean history.
 */
export class SyncGate {
  /** A call slower than this counts as slow, ms. */
  readonly slowMs: number;
  /** One call slower than this switches to the pool at once, ms. */
  readonly stallMs: number;
  /** Calls remembered. */
  readonly window = 8;
  /** Slow calls among the last {@link window} that switch to the pool. */
  readonly slowOf = 4;
  /** How long the pool is used before the main thread is tried again, ms. */
  readonly backoffMs: number;
  /** Slow flags of the last calls, newest in bit 0. */
  private history = 0;
  private poolUntil = 0;
  /** Times the gate switched to the pool (diagnostics and tests). */
  switches = 0;

  constructor(opts: { slowMs?: number; stallMs?: number; backoffMs?: number } = {}) {
    this.slowMs = opts.slowMs ?? 1;
    this.stallMs = opts.stallMs ?? 20;
    this.backoffMs = opts.backoffMs ?? 1000;
  }

  /** Whether the next call may run on the main thread at `now` (performance.now()). */
  mainThread(now: number): boolean {
    if (this.poolUntil === 0) return true;
    if (now < this.poolUntil) return false;
    this.poolUntil = 0;
    this.history = 0;
    return true;
  }

  /** Records a main-thread call that took `ms`, ending at `now`. */
  record(ms: number, now: number): void {
    const mask = (1 << this.window) - 1;
    this.history = ((this.history << 1) | (ms > this.slowMs ? 1 : 0)) & mask;
    if (ms > this.stallMs || popcount(this.history) >= this.slowOf) {
      this.poolUntil = now + this.backoffMs;
      this.switches++;
    }
  }
}

function popcount(n: number): number {
  let c = 0;
  for (let x = n; x !== 0; x &= x - 1) c++;
  return c;
}
