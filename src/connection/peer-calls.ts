import { CallTable } from "./call-table.ts";
import { idKey } from "./id-key.ts";

/**
 * The calls a peer asked for (requests and streams being served), by id.
 * Their ids are the peer's choice, so two may share a slot of the array
 * (1 and 0x80000001 share every slot up to 2^30): a call whose slot is taken
 * goes to a small overflow map instead, so a hostile peer can never make the
 * table grow beyond twice the calls it holds (before that, two 51-byte
 * frames froze the event loop for ~100 s). The overflow map is keyed by the
 * secret permutation {@link idKey}: ids chosen to share a slot and V8's
 * unseeded integer hash made each lookup of another such id walk all of
 * them (1,000 calls: each CANCEL ~3x as costly,
 * `scripts/attack/hash-flood-tables.ts`). Comes with the dispatcher (never
 * in a browser page's first load).
 */
export class PeerCalls<T extends { id: number }> extends CallTable<T> {
  /** Calls whose slot was taken by another id when they were added, by {@link idKey} of their id. */
  private overflow: Map<number, T> | undefined;
  /**
   * Calls that ended early (cancelled, connection closed) while their handlers
   * still run, no longer in the table (the dispatcher's `abandoned`; here, not
   * in the dispatcher: a connection that never served an async handler has none).
   */
  abandoned: Set<T> | undefined;

  override get(id: number): T | undefined {
    return super.get(id) ?? this.overflow?.get(idKey(id));
  }

  /** Whether the slot this id would use is taken (by it or another call), or the id is in use. */
  override slotBusy(id: number): boolean {
    return super.slotBusy(id) || this.overflow?.has(idKey(id)) === true;
  }

  /**
   * Adds a call. The caller makes sure no call with the same id is in the
   * table (a peer reusing an id in flight is a protocol error it reports);
   * adding the same call twice is a no-op. A call whose slot is taken goes
   * to the overflow map: O(1), no growth.
   */
  override add(call: T): void {
    if (this.size * 2 >= this.slots.length) this.grow();
    const c = this.slots[(call.id >>> 1) & this.mask];
    if (c === undefined || c === call) {
      super.add(call);
      return;
    }
    this.overflow ??= new Map();
    const k = idKey(call.id);
    if (this.overflow.get(k) === call) return;
    this.overflow.set(k, call);
    this.size++;
  }

  override delete(id: number): boolean | undefined {
    if (super.delete(id) === true) return true;
    if (this.overflow?.delete(idKey(id)) === true) {
      this.size--;
      if (this.overflow.size === 0) this.overflow = undefined;
      return true;
    }
  }

  override values(): T[] {
    const out = super.values();
    if (this.overflow !== undefined) for (const c of this.overflow.values()) out.push(c);
    return out;
  }

  override clear(): void {
    super.clear();
    this.overflow = undefined;
  }

  protected override grow(): void {
    super.grow();
    // Two calls could only share a new slot if they shared an old one, so
    // the array calls stay alone; overflow calls move in where they now fit.
    const overflow = this.overflow;
    if (overflow === undefined) return;
    for (const [k, c] of overflow) {
      const i = (c.id >>> 1) & this.mask;
      if (this.slots[i] === undefined) {
        this.slots[i] = c;
        overflow.delete(k);
      }
    }
    if (overflow.size === 0) this.overflow = undefined;
  }
}
