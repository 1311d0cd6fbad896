import type { Connection } from "../connection/connection.ts";
import { thrownError } from "../errors/describe.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import { checkOptions } from "../errors/options.ts";
import { checkSignal } from "../errors/signal.ts";
import { Transfer } from "../stream/transfer.ts";
import type { SendStreamOptions, StreamSource } from "../stream/types.ts";
import { Progress } from "../transfer/progress.ts";
import { answerWithin, watchLastSent } from "./answer-deadline.ts";
import { fullJitterBackoff } from "./backoff.ts";

/** A source that can be reopened at any offset: what a resumable transfer needs. */
export interface ResumableSource {
  /** Content length, when known. */
  size: number | undefined;
  /**
   * Stable id of this content: the same id on every attempt (and every re-run). A file sink takes
   * it as the capability to query and resume the transfer (per principal: with anonymous peers or one
   * shared token, anyone who learns it may append to it), so make it unguessable: 128 random bits, or
   * an HMAC keyed by a secret as `sendFile`'s — never a hash of the file's name or content alone.
   */
  transferId: string;
  /** The content from `offset` on. */
  open(offset: number): StreamSource;
  /**
   * CRC32C of the first `length` bytes, to check that what the receiver
   * holds is a prefix of this content. Without it the receiver's offset
   * and CRC are taken on trust: the end-to-end CRC then checks the bytes
   * sent after that offset, combined with the CRC the receiver claimed
   * for what it holds (a receiver holding other bytes is not caught).
   * It may return the number itself.
   */
  prefixCrc?(length: number): Promise<number> | number;
}

/** Marks SharedConnections across copies of pointsub (see {@link SharedConnection.isSharedConnection}). */
const SHARED_BRAND = Symbol.for("pointsub.shared-connection");

/**
 * One connection shared by many resumable transfers (many files over one
 * multiplexed connection): opened on first use; once it closed (or is
 * going away) the next transfer that needs it opens a new one, and every
 * transfer waiting at that moment gets the same one. Transfers do not close
 * it: its owner does, with {@link SharedConnection.close}.
 */
export class SharedConnection {
  /**
   * Whether `value` is a SharedConnection, also one made by another copy of pointsub in the same
   * process (two versions installed side by side), which `instanceof` does not see.
   */
  static isSharedConnection(value: unknown): value is SharedConnection {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[SHARED_BRAND] === true;
  }

  private readonly open: (signal: AbortSignal) => Promise<Connection>;
  private current: Connection | undefined;
  private opening: Promise<Connection> | undefined;
  /** Aborts the open under way (its signal) when this closes. */
  private abortOpening: AbortController | undefined;
  private closed = false;
  /**
   * Connections that began closing gracefully (the peer's GOAWAY): no new transfer goes on them, those
   * they carry finish there (bounded by the close's timeout); {@link close} waits for them, {@link destroy} ends them.
   */
  private readonly draining = new Set<Connection>();
  /** Connections opened so far (1 unless one dropped). */
  opened = 0;
  /** Transfers waiting before a retry: woken by {@link close} and {@link destroy} (the retry then fails at once). */
  private readonly waiting = new Set<() => void>();

  /**
   * @param open - opens a connection; `signal` aborts when this closes while the open is under way (pass it
   *   to `connect`: a hung connect then ends at once instead of at its timeout).
   */
  constructor(open: (signal: AbortSignal) => Promise<Connection>) {
    // A URL or a connection given instead was kept: each transfer then retried "this.open is not a
    // function" as ERR_CONNECT (retryable) for ~11 s before failing with it.
    if (typeof open !== "function") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `SharedConnection takes a function that opens a connection, e.g. () => connect(url) (got ${typeof open})`,
      );
    }
    this.open = open;
  }

  /** The open connection, or a new one when there is none (one attempt, shared by concurrent callers). */
  get(): Promise<Connection> {
    if (this.closed) return Promise.reject(closedError());
    const c = this.current;
    if (c !== undefined && c.state === "open") return Promise.resolve(c);
    if (c !== undefined) this.drop(c);
    this.current = undefined;
    if (this.opening === undefined) {
      const ac = new AbortController();
      this.abortOpening = ac;
      let opened: Promise<Connection>;
      try {
        opened = this.open(ac.signal);
      } catch (err) {
        opened = Promise.reject(err);
      }
      const settled = opened.then(
        (conn) => {
          this.opened++;
          if (this.closed) {
            conn.destroy();
            throw closedError();
          }
          this.current = conn;
          return conn;
        },
        (err: unknown) => {
          if (this.closed) throw closedError();
          throw toPointSubError(err, "ERR_CONNECT");
        },
      );
      // close() rejects the callers waiting at once, whatever the open does (it may ignore the signal).
      const opening = new Promise<Connection>((resolve, reject) => {
        settled.then(resolve, reject);
        ac.signal.addEventListener("abort", () => reject(closedError()), { once: true });
      });
      this.opening = opening;
      const clear = () => {
        if (this.opening === opening) this.opening = undefined;
        if (this.abortOpening === ac) this.abortOpening = undefined;
      };
      settled.then(clear, clear);
    }
    return this.opening;
  }

  /**
   * A transfer on `conn` failed with `err`: a connection that is no longer
   * open is dropped (the next {@link get} opens a new one); an open one is
   * kept for the other transfers (the error was that stream's).
   */
  failed(conn: Connection, _err: PointSubError): void {
    if (conn === this.current && conn.state !== "open") {
      this.drop(conn);
      this.current = undefined;
    }
  }

  /**
   * A connection no longer open: one closing gracefully is left to finish the transfers it carries
   * (before, the next transfer's `get` destroyed it, and those failed over to a new connection mid-way);
   * any other is ended.
   */
  private drop(c: Connection): void {
    if (c.state === "closing") {
      this.draining.add(c);
      const gone = () => this.draining.delete(c);
      c.closed.then(gone, gone);
    } else if (c.state !== "closed") c.destroy();
  }

  /**
   * Closes the connection gracefully; later {@link get} calls reject, and so do those waiting for an open
   * under way (ERR_CANCELLED), whose signal aborts. Before, close waited for that open: a hung connect
   * held it for the connect's whole timeout. Transfers waiting before a retry fail with ERR_CANCELLED at once.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.wakeWaiting();
    const c = this.current;
    this.current = undefined;
    this.abortOpening?.abort();
    await Promise.all([c?.close(), ...[...this.draining].map((d) => d.closed)]);
  }

  /** Ends the connection at once (in-flight transfers fail, an open under way is aborted). */
  destroy(): void {
    this.closed = true;
    this.wakeWaiting();
    this.abortOpening?.abort();
    this.current?.destroy();
    this.current = undefined;
    for (const d of this.draining) d.destroy();
  }

  /**
   * @internal Runs `wake` when this closes (at once if it has): a transfer's wait before its next attempt,
   * which then fails with ERR_CANCELLED instead of waiting out its backoff (up to 5 s). Returns the unsubscribe.
   */
  onClose(wake: () => void): () => void {
    if (this.closed) {
      wake();
      return () => {};
    }
    this.waiting.add(wake);
    return () => this.waiting.delete(wake);
  }

  private wakeWaiting(): void {
    const all = [...this.waiting];
    this.waiting.clear();
    for (const w of all) w();
  }
}

Object.defineProperty(SharedConnection.prototype, SHARED_BRAND, { value: true });

/** What a {@link SharedConnection} closed by its owner fails with. */
function closedError(): PointSubError {
  return new PointSubError("ERR_CANCELLED", "the shared connection was closed");
}

/** Options of {@link sendResumable}. */
export interface SendResumableOptions
  extends Pick<SendStreamOptions, "compress" | "signal" | "onProgress" | "progressIntervalMs" | "meta"> {
  /** Ask the receiver how far a previous attempt got and continue from there. Default true. */
  resume?: boolean;
  /**
   * With a connect function or a {@link SharedConnection}: attempts after a failure a new connection may
   * cure (the error table's `retryable` codes: a dropped or refused
   * connection, a timeout, an overloaded or going-away peer, a corrupted
   * frame, a mismatched resume point). Any other error ends the transfer at
   * once. A retry after `ERR_RESUME` (the receiver's answer: an earlier attempt still winding down there)
   * asks again on the connection that answered it while that one is open. With a plain Connection, only
   * that retry is made (nothing else a retry on the same connection may cure). Default 10; a number >= 0 (Infinity: for ever), else the transfer fails with
   * ERR_INVALID_ARGUMENT before any attempt.
   */
  retries?: number;
  /**
   * Ceiling of the delay before the first retry, doubled each time up to
   * 5 s; each delay is random below its ceiling (full jitter). Default 200 ms; a finite number >= 0
   * (0 starts from 1 ms: it still doubles).
   */
  retryDelayMs?: number;
  /** Called for each attempt with the offset it starts from. */
  onAttempt?: (attempt: number, offset: number) => void;
  /**
   * Called when an attempt failed with an error a new connection may cure
   * and another follows: the error, the retry's number (1 for the first)
   * and the wait before it (ms). For telling a user why a transfer paused.
   */
  onRetry?: (error: PointSubError, attempt: number, delayMs: number) => void;
  /**
   * Fail an attempt with `ERR_TIMEOUT` (retried as `retries` allows, from
   * what the receiver then holds) when the receiver's answer has not arrived
   * this many ms after the transport wrote the attempt's last byte: a
   * receiver that takes the whole content and never answers. Nothing is
   * timed while bytes are being sent (a receiver that stops taking them is
   * the connection's `progressTimeoutMs`). Allow for the receiver's work
   * after the last byte (an fsync of the file). Default: the connection's
   * own deadline for a stream's answer (`SendStreamOptions.answerTimeoutMs`:
   * its `requestTimeoutMs` plus the bytes sent at `requestBytesPerSecond`
   * after END, counted again from each credit returned); 0: the answer is
   * awaited as long as the connection lives. A value given replaces the
   * connection's deadline for each attempt's stream. A finite number >= 0 (else
   * ERR_INVALID_ARGUMENT before any attempt).
   */
  answerTimeoutMs?: number;
}

/**
 * Sends `source` to stream route `route` so that an interrupted transfer
 * continues where the receiver stopped (docs/PROTOCOL.md §3.11): each
 * attempt asks the receiver how much it holds, checks that prefix, and
 * streams the rest. Given a function that opens connections (or a
 * {@link SharedConnection}, for many transfers over one connection), a
 * dropped connection is retried with backoff; progress goes to paused, resuming and
 * transferring across attempts. Given a Connection, only a refusal `ERR_RESUME` (the receiver still
 * winds down an earlier attempt) is retried, on it while it is open. An error that is not `retryable` (see
 * `codeInfo`) ends it at once, and a connection it opened is closed whenever
 * it ends. The route must be resumable on the receiver
 * (`handleStream(route, handler, { resume })`, as `fileSink` provides).
 */
export function sendResumable(
  target: Connection | (() => Promise<Connection>) | SharedConnection,
  route: string,
  source: ResumableSource | Promise<ResumableSource>,
  options: SendResumableOptions = {},
): Transfer {
  return sendResumableWith(target, route, source, options, undefined);
}

/**
 * @internal What a retry refused with an error a new connection cannot cure
 * may still have achieved: `recover` gets the refusal and the connection it
 * came on (still open) and returns the transfer's answer and content CRC
 * when the receiver turns out to hold the content already (`sendFile`: a
 * file stored by an earlier attempt whose receipt was lost with its
 * connection is refused `ERR_EXISTS` on the retry), else undefined. A retryable error it throws (its
 * connection dropped) is the attempt's outcome: retried, and the next refusal is looked at again.
 */
export type Recover = (
  err: PointSubError,
  conn: Connection,
  signal: AbortSignal,
) => Promise<{ answer: Uint8Array; contentCrc: number } | undefined>;

/** @internal {@link sendResumable} with what a refused retry may have achieved looked at (see {@link Recover}). */
export function sendResumableWith(
  target: Connection | (() => Promise<Connection>) | SharedConnection,
  route: string,
  source: ResumableSource | Promise<ResumableSource>,
  options: SendResumableOptions,
  recover: Recover | undefined,
): Transfer {
  // Checked before anything starts (null threw a raw TypeError); the other arguments fail the transfer (run).
  checkOptions(options);
  let cancelled: PointSubError | undefined;
  let current: Transfer | undefined;
  /** Ends the wait between attempts early (cancel, abort). */
  let wake: (() => void) | undefined;
  const progress = new Progress("pending", undefined, options.progressIntervalMs ?? 100);
  // Anything else threw a raw TypeError here: refused by run's checks.
  if (typeof options.onProgress === "function") progress.on("progress", options.onProgress);
  const owned = typeof target === "function";
  // Branded, not instanceof: one made by another copy of pointsub was refused as no Connection.
  const shared = SharedConnection.isSharedConnection(target) ? target : undefined;
  // Aborted by cancel() or the caller's signal: ends a connect, a resume query or a prefix check under
  // way at once (they ran to their own timeouts, and the transfer failed with their error).
  const stop = new AbortController();
  // (One that is no AbortSignal threw a raw TypeError here: run's checks refuse it.)
  const given = options.signal;
  const signal =
    given === undefined || typeof given?.addEventListener !== "function"
      ? stop.signal
      : AbortSignal.any([given, stop.signal]);
  /** Whether an attempt got as far as opening its stream to the receiver (else a refusal is a first one). */
  let streamed = false;

  const attempt = async (conn: Connection, src: ResumableSource, n: number): Promise<Uint8Array> => {
    let offset = 0;
    let prefixCrc = 0;
    if (options.resume !== false) {
      const point = await conn.queryResume(route, src.transferId, { signal });
      const fits = point.offset > 0 && (src.size === undefined || point.offset <= src.size);
      if (
        fits &&
        // Promise.resolve: a prefixCrc that returns the number itself failed every attempt with ERR_SOURCE "p.then is not a function".
        (src.prefixCrc === undefined ||
          (await untilAborted(Promise.resolve(src.prefixCrc(point.offset)), signal)) === point.crc)
      ) {
        offset = point.offset;
        prefixCrc = point.crc;
      }
    }
    options.onAttempt?.(n, offset);
    // The base first: the `resuming` report says where the transfer resumes.
    progress.setBase(offset);
    if (offset > 0 || n > 0) progress.setStatus("resuming");
    if (cancelled !== undefined) throw cancelled;
    const answerMs = options.answerTimeoutMs ?? 0;
    const watched = answerMs > 0 ? watchLastSent(src.open(offset)) : undefined;
    streamed = true;
    const t = conn.sendStream(route, watched?.source ?? src.open(offset), {
      total: src.size,
      offset,
      prefixCrc,
      transferId: src.transferId,
      meta: options.meta,
      compress: options.compress,
      signal: options.signal,
      progressIntervalMs: options.progressIntervalMs,
      // Watched here when given (from the last byte written, its own error), else the connection's default.
      answerTimeoutMs: options.answerTimeoutMs === undefined ? undefined : 0,
    });
    current = t;
    const forward = (s: { bytes: number; status: string }) => {
      // Bytes the receiver took mean the transfer is under way, even if the inner
      // transfer went straight from initializing to completed (a small file).
      const moving = s.status === "transferring" || s.bytes > progress.bytes;
      if (moving && progress.status !== "transferring") progress.setStatus("transferring");
      if (s.bytes > progress.bytes) progress.add(s.bytes - progress.bytes);
    };
    t.progress.on("progress", forward);
    try {
      const answer = await (watched === undefined
        ? t.done
        : answerWithin(t, watched.sent, answerMs, `the receiver did not answer the stream to ${route}`));
      // The last attempt's (its END covered the whole content: offset included).
      (outer as { contentCrc: number | undefined }).contentCrc = t.contentCrc;
      return answer;
    } finally {
      t.progress.off("progress", forward);
      current = undefined;
    }
  };

  /** The Connection given (not a function that opens them, nor a SharedConnection): its transfer is retried only on it. */
  const plain =
    !owned && shared === undefined && typeof (target as Partial<Connection> | null)?.once === "function"
      ? (target as Connection)
      : undefined;

  /** Waits `ms` before the next attempt; a cancel or an abort ends the wait at once. */
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      // Cancelled or aborted already (by onRetry, a progress listener): before, the whole delay was waited out.
      // A plain Connection no longer open: the next attempt, on it, fails at once.
      if (signal.aborted || (plain !== undefined && plain.state !== "open")) return resolve();
      let unsubscribe: (() => void) | undefined;
      const end = () => {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", end);
        unsubscribe?.();
        plain?.off("close", end);
        wake = undefined;
        resolve();
      };
      const timer = setTimeout(end, ms);
      options.signal?.addEventListener("abort", end);
      // The shared connection closed by its owner: the next get() refuses at once (before, the whole delay was waited out).
      // (A copy of an older pointsub has no onClose: its close is seen at the next attempt.)
      unsubscribe = typeof shared?.onClose === "function" ? shared.onClose(end) : undefined;
      // As a plain Connection that closes (the peer hung up while its ERR_RESUME was retried): the transfer
      // fails with that at once, not after the delay (up to 5 s).
      plain?.once("close", end);
      wake = end;
    });

  const run = async (): Promise<Uint8Array> => {
    checkResumableOptions(options);
    // Anything else failed each attempt with ERR_SOURCE ("conn.queryResume is not a function").
    if (!owned && shared === undefined && typeof (target as Partial<Connection> | null)?.sendStream !== "function") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        "target must be a Connection, a function that resolves to one, or a SharedConnection",
      );
    }
    // Raced with cancel() and the signal: a source still being made (a promise that never settled, a stat
    // of a file on a stalled mount) kept the transfer "initializing" and unsettled for ever, whatever ended it.
    const src = await untilAborted(Promise.resolve(source), signal);
    // An open of another type failed every attempt as ERR_SOURCE "src.open is not a function".
    const given = src as Partial<ResumableSource> | null;
    if (typeof given?.open !== "function" || (given.prefixCrc !== undefined && typeof given.prefixCrc !== "function")) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        "source must be a ResumableSource: open (and prefixCrc) functions",
      );
    }
    progress.transferId = src.transferId;
    progress.total = src.size;
    const retries = options.retries ?? 10;
    // At least 1 ms, so that it doubles: 0 kept every delay 0, a refused connect retried ~430 times a second.
    let backoff = fullJitterBackoff(Math.max(options.retryDelayMs ?? 200, 1), 5000);
    /** An owned connection that answered ERR_RESUME: still open, the next attempt asks again on it. */
    let kept: Connection | undefined;
    // However the loop ends (a cancel, an abort, an onRetry or progress listener that throws), a kept
    // connection is closed: closed only on a cancel or an abort, one left by a throwing onRetry stayed open.
    try {
      for (let n = 0; ; n++) {
        if (cancelled !== undefined) throw cancelled;
        if (options.signal?.aborted) throw new PointSubError("ERR_CANCELLED", "aborted by the signal");
        let conn: Connection | undefined;
        // Whether an earlier attempt reached the receiver: only then may a refusal of this one hide its outcome.
        const reached = streamed;
        try {
          conn =
            shared !== undefined
              ? await untilAborted(shared.get(), signal)
              : kept?.state === "open"
                ? kept
                : owned
                  ? await untilAborted(openOwned(target as () => Promise<Connection>), signal, (late) => late.destroy())
                  : (target as Connection);
          kept = undefined;
          const answer = await attempt(conn, src, n);
          progress.setStatus("completed");
          if (owned) await conn.close();
          return answer;
        } catch (err) {
          // Cancelled or aborted: that is the outcome, whatever the step under way failed with.
          let e = stoppedBy(signal) ?? toPointSubError(err, "ERR_SOURCE");
          // A retry refused: an earlier attempt may have finished on the receiver, its answer lost with its connection.
          if (
            recover !== undefined &&
            n > 0 &&
            reached &&
            !e.retryable &&
            cancelled === undefined &&
            !signal.aborted &&
            conn?.state === "open"
          ) {
            // Ended at once by a cancel or an abort (the check, or reading the file for its CRC, may take long).
            // A check cut short by what a new connection may cure (its connection dropped, its answer timed out) is
            // this attempt's outcome, retried (the next attempt is refused and checks again): before, the transfer
            // failed with the refusal (ERR_EXISTS) for a file the receiver held whole, never asked again.
            let cut: PointSubError | undefined;
            const found = await untilAborted(recover(e, conn, signal), signal).catch((x: unknown) => {
              const r = toPointSubError(x, "ERR_SOURCE");
              if (r.retryable) cut = r;
              return undefined;
            });
            if (found !== undefined && cancelled === undefined && !signal.aborted) {
              (outer as { contentCrc: number | undefined }).contentCrc = found.contentCrc;
              progress.setStatus("completed");
              if (owned) await conn.close();
              return found.answer;
            }
            // Cancelled or aborted meanwhile: that is the outcome (not the refusal).
            e = stoppedBy(signal) ?? cut ?? e;
          }
          // ERR_RESUME is the receiver's answer (an earlier attempt still winding down there, a stale resume
          // point), not a broken connection: the retry asks again on the same one — a plain Connection's too,
          // while it is open (before, its transfer failed with the refusal: only a new connection was retried).
          const again = e.code === "ERR_RESUME" && conn?.state === "open";
          const last =
            (!owned && shared === undefined && !again) ||
            !e.retryable ||
            cancelled !== undefined ||
            options.signal?.aborted === true ||
            n >= retries;
          // An owned one is kept for it. Before, each refused retry opened a new connection (one resume after a
          // cut cost up to 4).
          kept = !last && owned && again ? conn : undefined;
          // A connection this transfer opened is its own to end, whatever happens next. Cancelled, it is
          // closed gracefully, in the background: destroyed, the stream's CANCEL queued behind its data
          // never left, and the receiver kept the partial for a resume (as after a dropped connection).
          if (owned && conn !== undefined && conn !== kept && conn.state !== "closed") {
            if (conn.state === "open" && e.code === "ERR_CANCELLED") void conn.close().catch(() => {});
            else conn.destroy();
          }
          if (shared !== undefined && conn !== undefined) shared.failed(conn, e);
          if (last) throw e;
          progress.setStatus("paused", e);
          options.onRetry?.(e, n + 1, backoff.duration);
          await pause(backoff.duration);
          backoff = backoff.next(undefined);
        }
      }
    } finally {
      if (kept !== undefined) void kept.close().catch(() => {});
    }
  };
  const done = run().catch((err: unknown) => {
    // Never throws: a hook's (onRetry's) Object.create(null) threw here, the transfer rejected with a raw
    // TypeError and its progress stayed "paused" for ever.
    const e = thrownError(err, "ERR_SOURCE");
    progress.setStatus(e.code === "ERR_CANCELLED" ? "cancelled" : "failed", e);
    throw e;
  });
  const outer: Transfer = new Transfer(progress, done, (reason) => {
    cancelled = new PointSubError("ERR_CANCELLED", reason);
    stop.abort(cancelled);
    current?.cancel(reason);
    wake?.();
  });
  return outer;
}

/**
 * ERR_INVALID_ARGUMENT for a count or time of {@link SendResumableOptions} that is no number, negative or NaN
 * (`retries` may be Infinity: retry for ever; a time must be finite). Before: `retries` NaN retried for
 * ever, a negative or NaN `retryDelayMs` retried every millisecond, and a negative, NaN or infinite
 * `answerTimeoutMs` waited for the answer for ever or (Infinity) timed every attempt out at its last byte.
 * Also a `signal` that is no AbortSignal and hooks that are not functions (raw TypeErrors, or ERR_SOURCE).
 */
function checkResumableOptions(o: SendResumableOptions): void {
  const check = (name: string, v: number | undefined, infinite: boolean): void => {
    if (v === undefined) return;
    if (typeof v !== "number" || !(v >= 0) || (!infinite && v === Number.POSITIVE_INFINITY)) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `${name} must be a ${infinite ? "" : "finite "}number >= 0, got ${String(v)}`,
      );
    }
  };
  check("retries", o.retries, true);
  check("retryDelayMs", o.retryDelayMs, false);
  check("answerTimeoutMs", o.answerTimeoutMs, false);
  checkSignal(o);
  for (const name of ["onProgress", "onAttempt", "onRetry"] as const) {
    if (o[name] !== undefined && typeof o[name] !== "function") {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a function`);
    }
  }
}

/** ERR_CANCELLED once `signal` is aborted (by cancel(): its error; by the caller's signal), else undefined. */
function stoppedBy(signal: AbortSignal): PointSubError | undefined {
  if (!signal.aborted) return undefined;
  const r: unknown = signal.reason;
  // Its own when it reads as one; a reason whose fields throw when read (a revoked Proxy, a throwing getter) threw
  // here — from the signal's listener an uncaught exception (process exit), the transfer failed ERR_SOURCE.
  try {
    if (
      r instanceof PointSubError &&
      r.code === "ERR_CANCELLED" &&
      typeof r.message === "string" &&
      typeof r.retryable === "boolean"
    )
      return r;
  } catch {}
  return new PointSubError("ERR_CANCELLED", "aborted by the signal", { cause: r });
}

/**
 * The connection a transfer's connect function opens. Anything else failed as the source: a URL returned
 * (ERR_SOURCE "conn.destroy is not a function"), a Connection returned without a promise ("p.then is not a function").
 */
async function openOwned(open: () => Promise<Connection>): Promise<Connection> {
  const conn: unknown = await open();
  if (typeof (conn as Partial<Connection> | null)?.sendStream !== "function") {
    // What it opened is the transfer's to close (a ResilientConnection was left open, reconnecting).
    const close = (conn as { close?: unknown } | null)?.close;
    if (typeof close === "function")
      Promise.resolve()
        .then(() => close.call(conn))
        .catch(() => {});
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `the connect function must resolve to a Connection, e.g. () => connect(url) (got ${typeof conn})`,
    );
  }
  return conn as Connection;
}

/**
 * `p`, or ERR_CANCELLED as soon as `signal` aborts; `p` is then left to
 * settle, and what it resolves to goes to `late` (a connection opened for
 * nothing is destroyed).
 */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal, late?: (v: T) => void): Promise<T> {
  const leave = () => {
    p.then(late, () => {});
  };
  if (signal.aborted) {
    leave();
    return Promise.reject(stoppedBy(signal));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      leave();
      reject(stoppedBy(signal));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
