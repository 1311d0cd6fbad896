/**
 * Feeds items to an async sender one at a time (for APIs such as zeromq's
 * that allow a single pending send), with a bounded backlog.
 */
export class SerialSender<T> {
  private queue: T[] = [];
  private running = false;
  private waiters: (() => void)[] = [];
  private readonly sendOne: (item: T) => Promise<void>;
  private readonly highWater: number;

  constructor(sendOne: (item: T) => Promise<void>, highWater = 1000) {
    this.sendOne = sendOne;
    this.highWater = highWater;
  }

  /** Queues `item`; false when the backlog is over the high-water mark. */
  push(item: T): boolean {
    this.queue.push(item);
    if (!this.running) void this.run();
    return this.queue.length < this.highWater;
  }

  /** Resolves when the backlog is below a quarter of the high-water mark. */
  drained(): Promise<void> {
    if (this.queue.length < this.highWater / 4) return Promise.resolve();
    return new Promise((r) => this.waiters.push(r));
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.queue.length > 0) {
      const batch = this.queue;
      this.queue = [];
      for (const item of batch) await this.sendOne(item);
      if (this.queue.length < this.highWater / 4) for (const w of this.waiters.splice(0)) w();
    }
    this.running = false;
    for (const w of this.waiters.splice(0)) w();
  }
}
