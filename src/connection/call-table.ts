/**
 * Calls in flight keyed by stream id, in a power-of-two array indexed by
 * `id >>> 1` (ids of one side share their parity, so consecutive ids take
 * consecutive slots). Cheaper than a Map on the request hot path. An id
 * whose slot is taken by an older call still in flight is skipped by the
 * allocator (`slotBusy`); for ids the peer chose, the table grows until they
 * do not collide. It also doubles when half full.
 */
export class CallTable<T extends { id: number }> {
  // Empty until the first call: an idle connection holds no slots.
  private slots: (T | undefined)[] = [];
  private mask = 0;
  /** Calls in the table. */
  size = 0;

  /** The call with this id, if in flight. */
  get(id: number): T | undefined {
    const c = this.slots[(id >>> 1) & this.mask];
    return c !== undefined && c.id === id ? c : undefined;
  }

  /** Whether the slot this id would use is taken (by it or another call). */
  slotBusy(id: number): boolean {
    return this.slots[(id >>> 1) & this.mask] !== undefined;
  }

  /**
   * Adds a call. Ids this side allocates never collide (the allocator skips
   * busy slots); ids chosen by the peer may, and then the table grows until
   * they do not.
   */
  add(call: T): void {
    if (this.slots[(call.id >>> 1) & this.mask] === call) return;
    if (this.size * 2 >= this.slots.length) this.grow();
    while (this.slots[(call.id >>> 1) & this.mask] !== undefined) this.grow();
    this.slots[(call.id >>> 1) & this.mask] = call;
    this.size++;
  }

  /** Removes the call with this id, if present. */
  delete(id: number): void {
    const i = (id >>> 1) & this.mask;
    const c = this.slots[i];
    if (c !== undefined && c.id === id) {
      this.slots[i] = undefined;
      this.size--;
    }
  }

  /** The calls, in no particular order. */
  values(): T[] {
    const out: T[] = [];
    for (const c of this.slots) if (c !== undefined) out.push(c);
    return out;
  }

  clear(): void {
    this.slots = [];
    this.mask = 0;
    this.size = 0;
  }

  private grow(): void {
    const old = this.slots;
    this.slots = new Array(Math.max(64, old.length * 2));
    this.mask = this.slots.length - 1;
    // Two calls could only share a new slot if they shared an old one.
    for (const c of old) if (c !== undefined) this.slots[(c.id >>> 1) & this.mask] = c;
  }
}
