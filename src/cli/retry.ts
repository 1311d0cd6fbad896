import type { SharedConnection } from "../client/resumable.ts";
import type { PointSubError } from "../errors/error.ts";
import { jsonLine, type OutputMode, printable } from "./output.ts";

/**
 * The wait (ms) before retry `n` (0 for the first) of a command's own
 * requests: 200 ms, doubled each time up to 5 s.
 */
export function retryDelay(n: number): number {
  return Math.min(200 * 2 ** n, 5000);
}

/**
 * Retries of a connection that never opened (the command's first one
 * refused, not found, not answered or closed before its handshake): 0.2 + 0.4 + 0.8 + 1.6 + 3.2 s, ~6 s,
 * enough for a server started with the command (a script that runs `serve`
 * then `send`; a Node process starts in ~0.1–2 s).
 */
export const NEVER_REACHED_RETRIES = 5;

/**
 * Whether a command stops retrying after `e`, its attempt `n` (0 for the
 * first) failed: the error is not one a new connection may cure, the
 * `retries` are used up, or the server was never reached and
 * {@link NEVER_REACHED_RETRIES} are used up. A wrong address or a server
 * that is not running is said in ~6 s, not after ~32 s of retries; the
 * full `retries` are for a server that was there and dropped.
 */
export function stopRetrying(e: PointSubError, n: number, retries: number, shared: SharedConnection): boolean {
  return !e.retryable || n >= retries || (n >= NEVER_REACHED_RETRIES && neverReached(e, shared));
}

/**
 * Whether `e` is a failure to reach a server `shared` never had a connection to. A connection closed
 * before any opened is one too: the peer accepted and closed before the handshake, as an `ssh -L`
 * tunnel, a Docker published port or `kubectl port-forward` does while nothing listens behind it
 * (before: the full `retries`, ~32 s of backoff and ten notices for a server that is not running).
 */
function neverReached(e: PointSubError, shared: SharedConnection): boolean {
  return (
    shared.opened === 0 &&
    (e.code === "ERR_CONNECT" || e.code === "ERR_CONNECTION_CLOSED" || e.phase === "connect" || e.phase === "handshake")
  );
}

/** Longest wait a server's own "retry in" hint gets (a peer cannot hold a command for ever). */
export const MAX_HINTED_DELAY_MS = 60_000;

/**
 * Waits before retry `n` (0 for the first) after `error` — at least as long as
 * the server said to (`retryAfterMs`, ERR_RATE_LIMITED's hint; at most
 * {@link MAX_HINTED_DELAY_MS}) — having said so through `notices` (if any).
 * Before, the backoff alone: 0.2 s after "retry in 999 ms", each retry too
 * early, limited again, and the `--retries` spent in ~3 s.
 */
export function retryAfter(error: PointSubError, n: number, notices: RetryNotices | undefined): Promise<void> {
  const hint = error.retryAfterMs;
  const hinted = typeof hint === "number" && hint > 0 ? Math.min(Math.ceil(hint), MAX_HINTED_DELAY_MS) : 0;
  const delay = Math.max(retryDelay(n), hinted);
  notices?.note(error, n + 1, delay);
  return new Promise((r) => setTimeout(r, delay));
}

/** Where a notice goes on a terminal while bars are drawn (above them): it makes the line printable. */
interface LineSink {
  log(line: string): void;
}

/**
 * Says that a command is retrying, once per round: every bundle, check or
 * file that failed together (a dropped or silent server fails them all)
 * makes one line, `pointsub: retrying (1 of 10) in 0.2 s after ERR_TIMEOUT: …`,
 * on stderr (above the bars on a terminal), or a `retry` event with
 * `--json`. Without it a server that never answers kept `send` silent for
 * minutes (`--retries` 10 of `--timeout` 30 s each) before its one error line.
 */
export class RetryNotices {
  /** The highest retry number announced. */
  private announced = 0;
  private readonly mode: OutputMode;
  private readonly retries: number;
  /** Where lines go on a terminal while bars are drawn (set once there are bars). */
  view: LineSink | undefined;
  /** The command's connection: a server it never reached gets {@link NEVER_REACHED_RETRIES}, and the line says so. */
  private readonly shared: SharedConnection | undefined;
  /** Set once the command was interrupted: the connection it cut itself is no failure to announce. */
  muted = false;

  constructor(mode: OutputMode, retries: number, shared?: SharedConnection, view?: LineSink) {
    this.mode = mode;
    this.retries = retries;
    this.shared = shared;
    this.view = view;
  }

  /** Retry `attempt` (1 for the first) follows `error` after `delayMs`. */
  note(error: PointSubError, attempt: number, delayMs: number): void {
    if (this.muted || attempt <= this.announced) return;
    this.announced = attempt;
    // (A server never reached is retried fewer times: "1 of 5", not "1 of 10" and then an error after 5.)
    const retries =
      this.shared !== undefined && neverReached(error, this.shared)
        ? Math.min(this.retries, NEVER_REACHED_RETRIES)
        : this.retries;
    if (this.mode === "json") {
      jsonLine({ event: "retry", attempt, retries, delayMs, code: error.code, message: error.message });
      return;
    }
    const line = `pointsub: retrying (${attempt} of ${retries}) in ${(delayMs / 1000).toFixed(1)} s after ${error.code}: ${error.message}`;
    // (The view makes what it logs printable: escaped here too, a peer's U+202E showed as \\u202e.)
    if (this.mode === "tty" && this.view !== undefined) this.view.log(line);
    else process.stderr.write(`${printable(line)}\n`);
  }
}
