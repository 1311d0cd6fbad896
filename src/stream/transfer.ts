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
  /**
   * CRC32C of the whole content as this side sent it (offset included, so a
   * resumed transfer's covers the whole content too), once the receiver
   * answered after its END; undefined before, and when the receiver answered
   * before the END (an early answer, which verified only what it read).
   * Compare it with a CRC the receiver's answer names to know it stored
   * exactly what was sent. (Declared only: set by the stream engine, so the
   * browser's first load carries no code for it.)
   */
  declare readonly contentCrc: number | undefined;
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
