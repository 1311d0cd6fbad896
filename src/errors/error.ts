import {
  codeInfo,
  type ErrorCode,
  type ErrorCodeInfo,
  fallbackSuggestion,
  loadSuggestions,
  type Severity,
  suggestionFor,
} from "./codes.ts";

const BRAND = Symbol.for("pointsub.error");

/** Options for constructing a {@link PointSubError}. */
export interface PointSubErrorOptions {
  /** The underlying error, if any. */
  cause?: unknown;
  /** Overrides the default suggestion of the code. */
  suggestion?: string;
  /** When trying again may succeed, in ms from now (see {@link PointSubError.retryAfterMs}). Default: none. */
  retryAfterMs?: number;
  /** For ERR_TIMEOUT: which wait ran out (see {@link PointSubError.phase}). */
  phase?: TimeoutPhase;
}

/**
 * Which wait an `ERR_TIMEOUT` ended: `"connect"` (the transport's
 * connect, `connectTimeoutMs`), `"handshake"` (TLS/WebSocket/pointsub
 * handshake, `handshakeTimeoutMs`), `"request"` (a request's own deadline,
 * `timeoutMs`/`requestTimeoutMs`, or an attempt's `attemptTimeoutMs`),
 * `"progress"` (a message or stream that stopped moving,
 * `progressTimeoutMs`), `"ping"` (`ping()` without a pong).
 */
export type TimeoutPhase = "connect" | "handshake" | "request" | "progress" | "ping";

/**
 * The one error type pointsub throws, rejects with or emits.
 *
 * `instanceof PointSubError` works across two loaded copies of the package
 * (the check uses a global symbol brand, not the prototype chain).
 */
export class PointSubError extends Error {
  /** Stable string code, e.g. `ERR_TIMEOUT`. */
  declare readonly code: ErrorCode;
  /** Numeric code: 1xxx network, 2xxx resources, 3xxx protocol, 4xxx application. */
  declare readonly errno: number;
  /** How serious the error is. */
  declare readonly severity: Severity;
  /** Whether trying the same operation again may succeed. */
  declare readonly retryable: boolean;
  /** A sentence a user can act on. */
  declare readonly suggestion: string;
  /**
   * When the sender knows it: wait at least this many ms before trying
   * again (ERR_RATE_LIMITED carries it, and it crosses the wire in the
   * error response, docs/PROTOCOL.md §3.5). Absent otherwise.
   */
  declare readonly retryAfterMs?: number;
  /** For ERR_TIMEOUT raised on this side: which wait ran out. Absent otherwise (and on a peer's error response). */
  declare readonly phase?: TimeoutPhase;

  /**
   * `code` must be one of `ERROR_CODES` (its errno, severity and retryability come from the
   * table there): another (`"ERR_MINE"` from JavaScript or a cast) throws a `PointSubError`
   * `ERR_INVALID_ARGUMENT` ("invalid code ERR_MINE"). Before, a raw TypeError ("Cannot read
   * properties of undefined"). A code of the application's own can be assigned to `code` after
   * construction (a handler's thrown error then reaches its caller as `ERR_HANDLER`, naming it).
   */
  constructor(code: ErrorCode, message: string, options: PointSubErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    const info = codeInfo(code) as ErrorCodeInfo | undefined;
    if (!info) throw new PointSubError("ERR_INVALID_ARGUMENT", `invalid code ${code}`);
    this.name = "PointSubError";
    this.code = code;
    this.errno = info.errno;
    this.severity = info.severity;
    this.retryable = info.retryable;
    this.suggestion = options.suggestion ?? suggestionFor(code);
    // Set only when known: errors without it show no empty field.
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
    if (options.phase !== undefined) this.phase = options.phase;
  }

  /**
   * Builds an error caused by the peer's bytes (a protocol violation, its
   * CANCEL, its error response, a query it malformed) without capturing a
   * stack trace: the stack would only show this library's frame handling,
   * and a hostile peer can make a server build many of these (capturing a
   * stack costs several times the rest of the construction). `stack` is then
   * just the `name: message` line. Errors the application causes keep their
   * stack: use the constructor for those.
   */
  static fromPeer(code: ErrorCode, message: string, options?: PointSubErrorOptions): PointSubError {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      return new PointSubError(code, message, options);
    } finally {
      Error.stackTraceLimit = limit;
    }
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}

/**
 * `PointSubError.fromPeer("ERR_PROTOCOL", message)`: the peer broke the protocol (one call for the
 * many sites that say so: shorter in a browser's first load; such an error has no stack to show it).
 */
export const protocolError = (message: string): PointSubError => PointSubError.fromPeer("ERR_PROTOCOL", message);

// The brand lives on the prototype (not on each instance: defining a
// property per error was a third of the cost of a peer-caused error).
Object.defineProperty(PointSubError.prototype, BRAND, { value: true });

/**
 * Waits for the suggestion texts (a browser loads them on demand) and gives
 * `err`, when it was built before they arrived and has no suggestion of its
 * own, its code's suggestion; returns `err`.
 */
export async function withSuggestion<E>(err: E): Promise<E> {
  if (!(err instanceof PointSubError)) return err;
  try {
    await loadSuggestions();
  } catch {
    return err;
  }
  if (err.suggestion === fallbackSuggestion(err.code)) {
    (err as { suggestion: string }).suggestion = suggestionFor(err.code);
  }
  return err;
}

/** True when `value` is a {@link PointSubError} with the given code. */
export function isPointSubError(value: unknown, code?: ErrorCode): value is PointSubError {
  return value instanceof PointSubError && (code === undefined || value.code === code);
}

/** Wraps anything thrown into a PointSubError of `code`, keeping PointSubErrors as they are. */
export function toPointSubError(value: unknown, code: ErrorCode, prefix = ""): PointSubError {
  let message = prefix;
  try {
    if (value instanceof PointSubError) return value;
    message += value instanceof Error ? value.message : String(value);
  } catch {
    // Object.create(null), a throwing `message` getter or toString, a Symbol message, a revoked Proxy: its type.
    message += typeof value;
  }
  return new PointSubError(code, message, { cause: value });
}
