/** The slots of every empty table. */
const NONE: never[] = [];

/**
 * Calls in flight keyed by stream id, in a power-of-two array indexed by
 * `id >>> 1` (ids of one side share their parity, so consecutive ids take
 * consecutive slots). Cheaper than a Map on the request hot path. An id
 * whose slot is taken by an older call still in flight is skipped by the
 * allocator (`slotBusy`). Ids chosen by the peer may collide with a call
 * already in the table (1 and 0x80000001 share every slot up to 2^30): such
 * a call goes to a small overflow map instead, so a hostile peer can never
 * make the table grow beyond twice the calls it holds. The array doubles
 * when half full.
 */
export class CallTable<T extends { id: number }> {
  // A shared empty array until the first call (never written: `add` grows first): an idle connection holds no slots.
  private slots: (T | undefined)[] = NONE;
  private mask = 0;
  /** Calls whose slot was taken by another id when they were added (peer-chosen ids only). */
  private overflow: Map<number, T> | undefined;
  /** Calls in the table. */
  size = 0;

  /** The call with this id, if in flight. */
  get(id: number): T | undefined {
    const c = this.slots[(id >>> 1) & this.mask];
    if (c !== undefined && c.id === id) return c;
    return this.overflow === undefined ? undefined : this.overflow.get(id);
  }

  /** Whether the slot this id would use is taken (by it or another call), or the id is in use. */
  slotBusy(id: number): boolean {
    return this.slots[(id >>> 1) & this.mask] !== undefined || this.overflow?.has(id) === true;
  }

  /**
   * Adds a call. The caller makes sure no call with the same id is in the
   * table (a peer reusing an id in flight is a protocol error it reports);
   * adding the same call twice is a no-op. Ids this side allocates never
   * collide (the allocator skips busy slots); a peer-chosen id whose slot is
   * taken goes to the overflow map: O(1), no growth.
   */
  add(call: T): void {
    if (this.size * 2 >= this.slots.length) this.grow();
    const i = (call.id >>> 1) & this.mask;
    const c = this.slots[i];
    if (c === call) return;
    if (c === undefined) {
      this.slots[i] = call;
    } else {
      this.overflow ??= new Map();
      if (this.overflow.get(call.id) === call) return;
      this.overflow.set(call.id, call);
    }
    this.size++;
  }

  /** Removes the call with this id, if present. */
  delete(id: number): void {
    const i = (id >>> 1) & this.mask;
    const c = this.slots[i];
    if (c !== undefined && c.id === id) {
      this.slots[i] = undefined;
      this.size--;
      return;
    }
    if (this.overflow?.delete(id) === true) {
      this.size--;
      if (this.overflow.size === 0) this.overflow = undefined;
    }
  }

  /** The calls, in no particular order. */
  values(): T[] {
    const out: T[] = [];
    for (const c of this.slots) if (c !== undefined) out.push(c);
    if (this.overflow !== undefined) for (const c of this.overflow.values()) out.push(c);
    return out;
  }

  clear(): void {
    this.slots = NONE;
    this.mask = 0;
    this.size = 0;
    this.overflow = undefined;
  }

  private grow(): void {
    const old = this.slots;
    this.slots = new Array(Math.max(8, old.length * 2));
    this.mask = this.slots.length - 1;
    // Two calls could only share a new slot if they shared an old one, so
    // the array calls stay alone; overflow calls move in where they now fit.
    for (const c of old) if (c !== undefined) this.slots[(c.id >>> 1) & this.mask] = c;
    const overflow = this.overflow;
    if (overflow === undefined) return;
    for (const [id, c] of overflow) {
      const i = (id >>> 1) & this.mask;
      if (this.slots[i] === undefined) {
        this.slots[i] = c;
        overflow.delete(id);
      }
    }
    if (overflow.size === 0) this.overflow = undefined;
  }
}

/** The table of a connection that made no call yet: always empty (nothing is ever added to it). */
export const NO_CALLS: CallTable<never> = new CallTable();
