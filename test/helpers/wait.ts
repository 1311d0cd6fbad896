import type { PointSubError } from "../../src/index.ts";

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `pred` every 5 ms; rejects if it is not true within `ms` (a wait for an event, not a timing assertion). */
export async function until(pred: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error("condition not reached");
    await sleep(5);
  }
}

/**
 * Counts events between two check phases of the event loop (a `setImmediate`
 * chain): `hit()` per event, `most` the largest count seen in one turn while
 * started.
 */
export class TurnCounter {
  most = 0;
  private inTurn = 0;
  private watching = false;
  private readonly watch = (): void => {
    if (this.inTurn > this.most) this.most = this.inTurn;
    this.inTurn = 0;
    if (this.watching) setImmediate(this.watch);
  };
  hit(): void {
    this.inTurn++;
  }
  /** Starts counting afresh. */
  start(): void {
    this.most = 0;
    this.inTurn = 0;
    this.watching = true;
    setImmediate(this.watch);
  }
  stop(): void {
    this.watching = false;
  }
}

/** What a connection's `close` event said: `closed` once it fired, and its error (undefined: a clean close). */
export function closeOutcome(conn: { on(event: "close", fn: (error: PointSubError | undefined) => void): unknown }): {
  readonly closed: boolean;
  readonly error: PointSubError | undefined;
} {
  const o: { closed: boolean; error: PointSubError | undefined } = { closed: false, error: undefined };
  conn.on("close", (e) => {
    o.closed = true;
    o.error = e;
  });
  return o;
}
