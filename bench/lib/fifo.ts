/**
 * Request/response over an ordered message channel without ids: answers come
 * back in the order the requests went out, so a FIFO of resolvers matches them.
 */
export class Fifo<T> {
  private waiting: ((v: T) => void)[] = [];
  private head = 0;

  /** Registers the next expected answer. */
  expect(): Promise<T> {
    return new Promise<T>((resolve) => this.waiting.push(resolve));
  }

  /** Delivers an answer to the oldest waiter. */
  deliver(value: T): void {
    const r = this.waiting[this.head++];
    if (this.head === this.waiting.length) {
      this.waiting = [];
      this.head = 0;
    }
    r?.(value);
  }
}

/** One-byte message kinds shared by the message-based peers (ws, socket.io-less, zeromq). */
export const Kind = { ONE_WAY: 0, ECHO: 1, REPLY: 2, COUNT: 3, SINK: 4 } as const;

export const GiB = 1024 ** 3;
