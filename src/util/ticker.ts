/**
 * One timer for many periodic jobs: a wheel of `SLOTS` slots turned by a
 * single interval of `period / SLOTS` ms. Each job sits in one slot and is
 * ticked once per `period`; jobs added together land in different slots, so
 * ten thousand sessions' keepalive pings and idle checks are spread over the
 * period instead of firing in one burst. A server shares one ticker among
 * all its sessions (no timer per session); the interval runs only while
 * jobs are registered and never keeps the process alive.
 */

/** A periodic job. */
export interface Tickable {
  /** Called about once per period with the current `performance.now()`. */
  tick(now: number): void;
  /**
   * The slot its ticker keeps it in, -1 while not registered (start it at
   * -1; the ticker writes it): a field on the job instead of an entry per
   * job in a map (thousands of sessions).
   */
  tickSlot: number;
}

/** Slots of the wheel. */
const SLOTS = 8;

export class Ticker {
  /** How often each job is ticked, in ms. */
  readonly period: number;
  private readonly slots: Set<Tickable>[] = [];
  /** Jobs registered. */
  private count = 0;
  private next = 0;
  private hand = 0;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(periodMs: number) {
    this.period = Math.max(10, periodMs);
    for (let i = 0; i < SLOTS; i++) this.slots.push(new Set());
  }

  /** Jobs registered. */
  get size(): number {
    return this.count;
  }

  /** Registers `job` (once; adding it again is a no-op). */
  add(job: Tickable): void {
    if (job.tickSlot >= 0) return;
    const slot = this.next;
    this.next = (slot + 1) % SLOTS;
    this.slots[slot].add(job);
    job.tickSlot = slot;
    this.count++;
    if (this.timer === undefined) {
      this.timer = setInterval(this.turn, Math.max(1, Math.floor(this.period / SLOTS)));
      (this.timer as { unref?: () => void }).unref?.();
    }
  }

  /** Unregisters `job`; the interval stops with the last one. */
  delete(job: Tickable): void {
    const slot = job.tickSlot;
    if (slot < 0 || !this.slots[slot].delete(job)) return;
    job.tickSlot = -1;
    this.count--;
    if (this.count === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private readonly turn = (): void => {
    const slot = this.slots[this.hand];
    this.hand = (this.hand + 1) % SLOTS;
    if (slot.size === 0) return;
    const now = performance.now();
    // A Set may lose members while iterated (a job whose connection closed
    // removes itself): they are skipped, the rest still visited.
    for (const job of slot) job.tick(now);
  };
}
