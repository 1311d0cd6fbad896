/**
 * FIFO queue over a growable ring buffer: O(1) push and shift without the
 * O(n) cost of Array.prototype.shift on long queues.
 */
export class Queue<T> {
  /** The ring (a power of two long); a shared empty array until the first push, so an unused queue costs nothing. */
  private items: (T | undefined)[] = NONE;
  private head = 0;
  private count = 0;

  get length(): number {
    return this.count;
  }

  push(item: T): void {
    if (this.count === this.items.length) this.grow();
    this.items[(this.head + this.count) & (this.items.length - 1)] = item;
    this.count++;
  }

  peek(): T | undefined {
    return this.count === 0 ? undefined : this.items[this.head];
  }

  /** The item `i` places behind the head (0 = head), if any. */
  peekAt(i: number): T | undefined {
    return i < 0 || i >= this.count ? undefined : this.items[(this.head + i) & (this.items.length - 1)];
  }

  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) & (this.items.length - 1);
    this.count--;
    return item;
  }

  /** Calls `fn` on each item, in order. */
  forEach(fn: (item: T) => void): void {
    const mask = this.items.length - 1;
    for (let i = 0; i < this.count; i++) fn(this.items[(this.head + i) & mask] as T);
  }

  /** Removes every item and returns them in order. */
  drain(): T[] {
    const out: T[] = [];
    for (let item = this.shift(); item !== undefined; item = this.shift()) out.push(item);
    return out;
  }

  /** Removes the first item for which `pred` is true; returns whether one was found. */
  remove(pred: (item: T) => boolean): boolean {
    const all = this.drain();
    let found = false;
    for (const item of all) {
      if (!found && pred(item)) found = true;
      else this.push(item);
    }
    return found;
  }

  private grow(): void {
    const old = this.items;
    const next: (T | undefined)[] = new Array(Math.max(16, old.length * 2));
    for (let i = 0; i < this.count; i++) next[i] = old[(this.head + i) & (old.length - 1)];
    this.items = next;
    this.head = 0;
  }
}

/** The ring of every queue that never held an item (never written: push grows first). */
const NONE: never[] = [];
