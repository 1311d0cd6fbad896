/**
 * A deadline for a stream's answer, counted from when the transport wrote
 * its last byte: a receiver that takes a whole stream and never answers
 * fails the transfer with ERR_TIMEOUT instead of leaving the sender waiting
 * for as long as the connection lives. Nothing is timed while bytes are
 * still being sent (a slow but healthy transfer of any size is never cut
 * short by it; a receiver that stops taking bytes is the connection's
 * `progressTimeoutMs`).
 */
import { PointSubError } from "../errors/error.ts";
import { isBlob } from "../stream/blob.ts";
import { onChunkWritten } from "../stream/release.ts";
import type { Transfer } from "../stream/transfer.ts";
import type { StreamSource } from "../stream/types.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";

/**
 * `source` as it is, and `sent`: settles once the transport has written
 * (drained past) the last chunk of it, after the source ended
 * ({@link onChunkWritten}: a compressed chunk's frame, not its buffer's
 * release). Each chunk's own release (a file reader's buffer pool) is left as it is.
 */
export function watchLastSent(source: StreamSource): { source: AsyncIterable<Uint8Array>; sent: Promise<void> } {
  const d = Promise.withResolvers<void>();
  let yielded = 0;
  let written = 0;
  let ended = false;
  /** The reader of a ReadableStream read here (cancelled by {@link close}). */
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  async function* chunks(): AsyncGenerator<Uint8Array> {
    for await (const chunk of iterable(source, (r) => (reader = r))) {
      // Written, not released: a compressed chunk's buffer is released once compressed, before its frame
      // is written (the deadline started while a queue of compressed frames still waited for credit).
      if (chunk.length !== 0) {
        // (An empty chunk is never framed: not waited for.)
        yielded++;
        onChunkWritten(chunk, () => {
          written++;
          if (ended && written === yielded) d.resolve();
        });
      }
      yield chunk;
    }
    ended = true;
    if (written === yielded) d.resolve();
  }
  const out = chunks();
  /**
   * Closes what this reads at once, a pending read too (the stream stopped: its sender calls a source's
   * `destroy`). Closing the generator alone waits for that read: a Node Readable or a ReadableStream that had
   * nothing to say stayed open, for good from a live feed, once the transfer was cancelled or failed.
   */
  const close = (): void => {
    const s = source as unknown as Record<string, unknown>;
    if (typeof s.destroy === "function") (s.destroy as () => void).call(source);
    else if (reader !== undefined) reader.cancel().catch(() => {});
    else if (typeof s.getReader === "function" && typeof s.cancel === "function")
      // Never read (its stream ended before it started): cancelled, unless someone else reads it.
      Promise.resolve()
        .then(() => (source as ReadableStream<Uint8Array>).cancel())
        .catch(() => {});
    else if (typeof s.next === "function")
      Promise.resolve()
        .then(() => (source as unknown as AsyncIterator<Uint8Array>).return?.())
        .catch(() => {});
  };
  return { source: Object.assign(out, { destroy: close }), sent: d.promise };
}

/**
 * `source` for `for await`: a ReadableStream (and a Blob's stream) through its reader, handed to
 * `onReader`; anything else as it is.
 */
function iterable(
  source: StreamSource,
  onReader: (reader: ReadableStreamDefaultReader<Uint8Array>) => void,
): AsyncIterable<Uint8Array> | Iterable<Uint8Array> {
  if (isBlob(source)) source = source.stream();
  const s = source as unknown as Record<symbol | string, unknown>;
  // A ReadableStream through its reader, even where it is async iterable too: the reader's cancel() ends a
  // pending read at once, the async iterator's return() waits for it (as the stream's sender reads one).
  if (typeof s.getReader !== "function") return source as AsyncIterable<Uint8Array>;
  const reader = (source as ReadableStream<Uint8Array>).getReader();
  onReader(reader);
  return {
    [Symbol.asyncIterator]: () => ({
      next: () => reader.read() as Promise<IteratorResult<Uint8Array>>,
      return: async () => {
        await reader.cancel();
        return { done: true as const, value: undefined };
      },
    }),
  };
}

/**
 * `t`'s answer, or ERR_TIMEOUT when it has not arrived `ms` after `sent`
 * settled (the transfer is then cancelled: the receiver sees ERR_CANCELLED
 * with the same message). `what` begins the message (`the receiver did
 * not answer the stream to /x`; the deadline follows). `ms`
 * 0 waits for the answer as long as the connection lives.
 */
export function answerWithin(t: Transfer, sent: Promise<void>, ms: number, what: string): Promise<Uint8Array> {
  if (!(ms > 0)) return t.done;
  return new Promise<Uint8Array>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let over = false;
    let confirmed = false;
    sent.then(() => {
      if (over) return;
      const due = performance.now() + ms;
      // A timer takes at most 2^31 - 1 ms (a longer one fired after 1 ms: every attempt of a transfer given
      // answerTimeoutMs 2^31 timed out at its last byte): a longer wait is armed again until it is due.
      const arm = (): void => {
        timer = setTimeout(
          () => {
            if (over) return;
            if (performance.now() < due) return arm();
            // Due: looked at again after this turn's I/O (a new timer runs after the poll phase): after a
            // stall of this process, timers run before the answer that came meanwhile is read.
            if (!confirmed) {
              confirmed = true;
              return arm();
            }
            over = true;
            const e = new PointSubError("ERR_TIMEOUT", `${what} within ${formatMs(ms)} of its last byte`, {
              phase: "request",
            });
            t.cancel(e.message);
            reject(e);
          },
          Math.min(MAX_TIMER_MS, Math.max(0, due - performance.now())),
        );
      };
      arm();
    });
    t.done.then(
      (answer) => {
        over = true;
        clearTimeout(timer);
        resolve(answer);
      },
      (err: unknown) => {
        over = true;
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** `ms` for a message: "300 ms", "30 s", "2.5 s". */
export function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${Number((ms / 1000).toFixed(1))} s`;
}
