/**
 * A memory budget for bytes a peer makes this side hold: unfinished
 * messages (their declared size plus a fixed overhead each), request bodies
 * while their handler runs, and received stream data not yet read. A server
 * shares one budget between all its sessions; a client connection has its
 * own. When a charge does not fit, the work is refused with
 * `ERR_OVERLOADED` (a retryable error) instead of buffering it.
 */
export class MemoryBudget {
  /** Most bytes charged at once. */
  declare readonly limit: number;
  /** Bytes charged now. */
  used = 0;
  /** Highest `used` seen. */
  peak = 0;
  /** Charges refused so far. */
  refused = 0;
  /**
   * @internal Kept by housekeeping (`housekeeping.ts`, not in a page's first
   * load): {@link refused} when it last looked, and the time (its clock) it
   * saw that count change — connections owed answers are then held to a
   * higher floor.
   */
  declare refusedSeen?: number;
  declare refusedAt?: number;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Charges `n` bytes if they fit; returns whether they did. */
  tryCharge(n: number): boolean {
    const next = this.used + n;
    if (next > this.limit) {
      this.refused++;
      return false;
    }
    this.used = next;
    if (next > this.peak) this.peak = next;
    return true;
  }

  /**
   * Charges `n` bytes even past the limit (memory already committed, such
   * as a handler's answer); later charges are refused until it is back.
   */
  force(n: number): void {
    this.used += n;
    if (this.used > this.peak) this.peak = this.used;
  }

  /** Returns `n` bytes charged earlier. */
  release(n: number): void {
    this.used -= n;
  }
}

/**
 * A peer's share of the budget for answers owed to it: once more than
 * `limit / ANSWER_SHARE` of answers wait for its credit or its reading, and
 * more than half the budget is in use, its new requests are refused with
 * ERR_OVERLOADED until it takes them (a server at the default 1 GiB:
 * 64 MiB). Peers that take what they are owed keep theirs; a few that do
 * not cannot hold the whole budget. (On a quiet server one client may
 * pipeline past its share: a fast one's answers queue behind its own
 * window too.)
 */
export const ANSWER_SHARE = 16;
