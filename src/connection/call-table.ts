/** The slots of every empty table. */
const NONE: never[] = [];

/**
 * Calls in flight keyed by stream id, in a power-of-two array indexed by
 * `id >>> 1` (ids of one side share their parity, so consecutive ids take
 * consecutive slots). Cheaper than a Map on the request hot path. An id
 * whose slot is taken by an older call still in flight is skipped by the
 * allocator (`slotBusy`), so this side's ids never share a slot: this table
 * holds calls with ids this side chose. The calls a peer asked for, whose
 * ids it chose and may make collide, are in its subclass `PeerCalls`
 * (`peer-calls.ts`, which comes with the dispatcher), which puts a call
 * whose slot is taken in an overflow map. The array doubles when half full.
 */
export class CallTable<T extends { id: number }> {
  // A shared empty array until the first call (never written: `add` grows first): an idle connection holds no slots.
  protected slots: (T | undefined)[] = NONE;
  protected mask = 0;
  /** Calls in the table. */
  size = 0;

  /** The call with this id, if in flight. */
  get(id: number): T | undefined {
    const c = this.slots[(id >>> 1) & this.mask];
    if (c !== undefined && c.id === id) return c;
  }

  /** Whether the slot this id would use is taken (by it or another call). */
  slotBusy(id: number): boolean {
    return this.slots[(id >>> 1) & this.mask] !== undefined;
  }

  /**
   * Adds a call whose id is not in the table and whose slot {@link slotBusy}
   * found free (the allocator makes sure of both); adding the same call
   * twice is a no-op.
   */
  add(call: T): void {
    if (this.size * 2 >= this.slots.length) this.grow();
    const i = (call.id >>> 1) & this.mask;
    if (this.slots[i] === call) return;
    this.slots[i] = call;
    this.size++;
  }

  /** Removes the call with this id, if present; true if it was. */
  delete(id: number): boolean | undefined {
    const i = (id >>> 1) & this.mask;
    const c = this.slots[i];
    if (c !== undefined && c.id === id) {
      this.slots[i] = undefined;
      this.size--;
      return true;
    }
  }

  /** The calls, in no particular order. */
  values(): T[] {
    const out: T[] = [];
    for (const c of this.slots) if (c !== undefined) out.push(c);
    return out;
  }

  clear(): void {
    this.slots = NONE;
    this.mask = 0;
    this.size = 0;
  }

  protected grow(): void {
    const old = this.slots;
    this.slots = new Array(Math.max(8, old.length * 2));
    this.mask = this.slots.length - 1;
    // Two calls could only share a new slot if they shared an old one.
    for (const c of old) if (c !== undefined) this.slots[(c.id >>> 1) & this.mask] = c;
  }
}

/** The table of a connection that made no call yet: always empty (nothing is ever added to it). */
export const NO_CALLS: CallTable<never> = new CallTable();
