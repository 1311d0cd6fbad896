/**
 * The progress of a `sendStream` made before the stream engine is loaded (a
 * browser's first stream). `Progress` comes with the engine (it is not in a
 * page's first load), so until the transfer starts this stands in for it with
 * the same reading API — `transferId`, `total`, `status`, `bytes`, `done`,
 * `snapshot()`, the `progress` event, async iteration — and then reports the
 * real progress and re-emits its events.
 */
import type { PointSubError } from "../errors/error.ts";
import type { Progress, ProgressEvents, ProgressSnapshot, TransferStatus } from "../transfer/progress.ts";
import { Emitter } from "../util/emitter.ts";

export class LateProgress extends Emitter<ProgressEvents> implements AsyncIterable<ProgressSnapshot> {
  declare readonly transferId: string;
  declare private readonly total_: number | undefined;
  private readonly started = performance.now();
  /** The transfer's own progress, once it started. */
  private real: Progress | undefined;
  /** Why it failed before it started (the engine could not be loaded). */
  private error: PointSubError | undefined;
  /** Settles when the transfer started or failed before. */
  private readonly settled = Promise.withResolvers<void>();

  constructor(transferId: string, total: number | undefined) {
    super();
    this.transferId = transferId;
    this.total_ = total;
  }

  get total(): number | undefined {
    return this.real === undefined ? this.total_ : this.real.total;
  }

  get status(): TransferStatus {
    if (this.real !== undefined) return this.real.status;
    return this.error === undefined ? "initializing" : "failed";
  }

  get bytes(): number {
    return this.real === undefined ? 0 : this.real.bytes;
  }

  get done(): boolean {
    return this.real === undefined ? this.error !== undefined : this.real.done;
  }

  /** The current state (before the start: nothing done yet). */
  snapshot(now = performance.now()): ProgressSnapshot {
    if (this.real !== undefined) return this.real.snapshot(now);
    const total = this.total_;
    const s: ProgressSnapshot = {
      transferId: this.transferId,
      total,
      bytes: 0,
      percent: total === undefined ? undefined : 0,
      rate: 0,
      etaSeconds: undefined,
      status: this.status,
      elapsedMs: now - this.started,
    };
    if (this.error !== undefined) s.error = this.error;
    return s;
  }

  /** The transfer started with `real` (before any of its reports): its events are re-emitted here. */
  follow(real: Progress): void {
    this.real = real;
    real.on("progress", (s) => this.emit("progress", s));
    this.settled.resolve();
  }

  /** The transfer failed before it started. */
  fail(err: PointSubError): void {
    this.error = err;
    // Settled first: a listener that throws does not leave an iteration waiting for ever.
    this.settled.resolve();
    this.emit("progress", this.snapshot());
  }

  /** The snapshots until the final one, as `Progress` gives them (before the start: the first one, then the transfer's). */
  async *[Symbol.asyncIterator](): AsyncIterator<ProgressSnapshot> {
    if (this.real === undefined) {
      yield this.snapshot();
      if (this.error !== undefined) return;
      await this.settled.promise;
      if (this.real === undefined) {
        yield this.snapshot();
        return;
      }
    }
    yield* this.real;
  }
}
