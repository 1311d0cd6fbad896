import { codeInfo, type ErrorCode, type ErrorCodeInfo } from "./codes.ts";
import { PointSubError } from "./error.ts";

/**
 * The text of anything thrown: an Error's message, else the value as a
 * string. Never throws itself: a handler may throw (or reject with) a value
 * `String` cannot convert (`Object.create(null)`, a throwing `toString`),
 * and this is called where a throw would leave a call unanswered. (A file of
 * its own: only the dispatcher and the idempotency middleware, loaded on
 * demand in a browser, use it.)
 */
export function describeThrown(value: unknown): string {
  try {
    return String(value instanceof Error ? value.message : value);
  } catch {
    return `a thrown ${typeof value} that cannot be shown as text`;
  }
}

/**
 * `value` when it is a PointSubError that can be sent as an error answer as it is: one of pointsub's
 * codes and text for a message; else undefined (the caller answers ERR_HANDLER). Never throws: a handler may
 * throw a PointSubError whose `code` it changed to its own, a Proxy whose traps throw (a revoked one), or one
 * whose `retryAfterMs` getter throws — before, encoding such an error's answer threw in the dispatcher: synchronously it closed the session as the peer's ERR_PROTOCOL, from a
 * promise it was an unhandled rejection that ended the server's process, the caller left waiting.
 */
export function answerableError(value: unknown): PointSubError | undefined {
  try {
    if (!(value instanceof PointSubError)) return undefined;
    // Read here too, where a throw makes it ERR_HANDLER: its answer sends it (a getter that threw there closed
    // the session as the peer's ERR_PROTOCOL, or from a promise ended the server's process).
    void value.retryAfterMs;
    return (codeInfo(value.code) as ErrorCodeInfo | undefined) !== undefined && typeof value.message === "string"
      ? value
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * "CODE: " for a thrown PointSubError (its code as text; a code of the application's own, which no error
 * answer can carry, is kept so in its ERR_HANDLER's message), else "". Never throws.
 */
export function thrownCode(value: unknown): string {
  try {
    if (!(value instanceof PointSubError)) return "";
    const code: unknown = value.code;
    return typeof code === "string" && code !== "" ? `${code}: ` : "";
  } catch {
    return "";
  }
}

/**
 * What a handler returned that is no answer, for its ERR_HANDLER: an object's class name, else the
 * value as text. Never throws (a revoked Proxy, a throwing `constructor` getter).
 */
export function describeResult(value: unknown): string {
  try {
    return String(typeof value === "object" && value !== null ? (value.constructor?.name ?? "an object") : value);
  } catch {
    return `a ${typeof value} that cannot be shown as text`;
  }
}

/**
 * `toPointSubError(value, code)` that never throws, nor gives back a PointSubError whose `code`, `retryable`,
 * `retryAfterMs` or `message` throws when read, for where a throw would leave something unsettled (a
 * reconnection's loop, a transfer's end): a value `String` cannot convert, a throwing getter or a
 * revoked Proxy — a custom transport's or a hook's — threw there. (Not toPointSubError itself: that one is
 * in a browser page's first load.)
 */
export function thrownError(value: unknown, code: ErrorCode): PointSubError {
  try {
    if (value instanceof PointSubError) {
      // What its callers read (retryability, a breaker's count, a message): a getter of these that throws (or a
      // Proxy's trap) threw there — a reconnection loop's unhandled rejection, connectResilient never settled.
      void value.code;
      void value.retryable;
      void value.retryAfterMs;
      void value.message;
      return value;
    }
  } catch {}
  return new PointSubError(code, describeThrown(value), { cause: value });
}
