/**
 * A token bucket: `rate` tokens per second flow in, at most `burst` are
 * kept. Refill is lazy — arithmetic on the clock reading at each call, no
 * timer — so an idle bucket costs nothing and a check allocates nothing.
 * Portable: the clock is `performance.now()` where there is one (Node,
 * browsers, workers), else `Date.now()`.
 */

/** A millisecond clock; only differences between readings matter. */
export type Clock = () => number;

const perf = (globalThis as { performance?: { now(): number } }).performance;

/** The default clock: monotonic `performance.now()` where available, else `Date.now()`. */
export const monotonicClock: Clock = perf !== undefined ? () => perf.now() : () => Date.now();

/**
 * A clock read at most once per task: the first reading is kept until the
 * next microtask checkpoint, so a burst of calls handled in one task (the
 * requests of one socket read) costs one clock read, not one each. Time
 * stands still within a task (a few ms at most: the engine yields after
 * 4 ms of decoding); a bucket on it only ever grants late, never early.
 */
export function perTaskClock(clock: Clock = monotonicClock): Clock {
  let fresh = false;
  let cached = 0;
  const expire = (): void => {
    fresh = false;
  };
  return () => {
    if (!fresh) {
      cached = clock();
      fresh = true;
      queueMicrotask(expire);
    }
    return cached;
  };
}

export class TokenBucket {
  /** Tokens added per second. */
  readonly rate: number;
  /** Most tokens kept (also the largest amount granted without debt). */
  readonly burst: number;
  private readonly clock: Clock;
  /** Tokens at `last`; below 0 after an oversized take (a debt paid back at `rate`). */
  private tokens: number;
  private last: number;

  /**
   * A full bucket. `rate` must be > 0 and `burst` >= 1 (both finite);
   * callers validate them (the constructor does not, to stay cheap).
   */
  constructor(rate: number, burst: number, clock: Clock = monotonicClock) {
    this.rate = rate;
    this.burst = burst;
    this.clock = clock;
    this.tokens = burst;
    this.last = clock();
  }

  /** Reads the bucket's clock (to pass one reading to several buckets). */
  now(): number {
    return this.clock();
  }

  /**
   * Ms until `n` tokens could be taken (0: now), taking nothing. An amount
   * over `burst` only needs a full bucket (see {@link consume}).
   */
  delay(n: number, now: number = this.clock()): number {
    const t = this.refill(now);
    const need = n < this.burst ? n : this.burst;
    // The epsilon absorbs float rounding: after waiting the returned ms the tokens are there.
    if (t >= need - 1e-9) return 0;
    // At least 1 ms: after waiting that long the tokens are there.
    return Math.max(1, Math.ceil(((need - t) * 1000) / this.rate));
  }

  /**
   * Takes `n` tokens unconditionally (after {@link delay} said 0). An
   * amount over `burst` leaves the bucket in debt, paid back at `rate`:
   * the long-run rate holds for oversized amounts too.
   */
  consume(n: number, now: number = this.clock()): void {
    this.tokens = this.refill(now) - n;
  }

  /** Takes `n` tokens when they are there and returns 0; else takes nothing and returns the ms until they would be. */
  take(n = 1, now: number = this.clock()): number {
    const d = this.delay(n, now);
    if (d === 0) this.tokens -= n;
    return d;
  }

  /** Gives back `n` tokens taken by {@link take} (a call refused by another bucket after this one granted it). */
  refund(n: number): void {
    this.tokens += n;
  }

  /** Tokens available now (negative while in debt). */
  available(now: number = this.clock()): number {
    return this.refill(now);
  }

  private refill(now: number): number {
    const elapsed = now - this.last;
    if (elapsed > 0) {
      const t = this.tokens + (elapsed * this.rate) / 1000;
      this.tokens = t < this.burst ? t : this.burst;
      this.last = now;
    }
    return this.tokens;
  }
}
