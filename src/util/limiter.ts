/**
 * Runs at most `max` async jobs at once; the rest wait in FIFO order. A job
 * that ends hands its slot to the first waiter (the count does not drop in
 * between): a caller arriving before that waiter resumes cannot take the
 * slot too and run one over `max`.
 */
export class Limiter {
  declare max: number;
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(max: number) {
    this.max = max;
  }

  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.running < this.max) this.running++;
    else await new Promise<void>((r) => this.waiting.push(r));
    try {
      return await job();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
