import type { Progress, ProgressSnapshot } from "../transfer/progress.ts";

/**
 * A stream being sent: a promise of the receiver's answer (`await transfer`
 * or `transfer.done`) with its progress and a way to cancel it.
 */
export class Transfer implements PromiseLike<Uint8Array> {
  /** Progress: `transfer.progress.on("progress", fn)` or `for await (const p of transfer.progress)`. */
  declare readonly progress: Progress;
  /** Resolves to the receiver's answer once it verified the whole stream; rejects with a PointSubError. */
  declare readonly done: Promise<Uint8Array>;
  private readonly cancelFn: (reason: string) => void;

  /** @internal Created by `Connection.sendStream`. */
  constructor(progress: Progress, done: Promise<Uint8Array>, cancel: (reason: string) => void) {
    this.progress = progress;
    this.done = done;
    this.cancelFn = cancel;
    done.catch(() => {});
  }

  /** The transfer id (stable across resumes when you pass one). */
  get id(): string {
    return this.progress.transferId;
  }

  /** The latest progress. */
  snapshot(): ProgressSnapshot {
    return this.progress.snapshot();
  }

  /** Cancels: the receiver sees ERR_CANCELLED, `done` rejects with ERR_CANCELLED. */
  cancel(reason = "cancelled by the sender"): void {
    this.cancelFn(reason);
  }

  // biome-ignore lint/suspicious/noThenProperty: a Transfer is deliberately awaitable.
  then<A = Uint8Array, B = never>(
    onfulfilled?: ((value: Uint8Array) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.done.then(onfulfilled, onrejected);
  }
}
