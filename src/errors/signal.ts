/**
 * The check of a caller's `signal` option, shared by the places that add a
 * listener to it (the Node transports, the stream engine, the resilient
 * client): not in a page's first load (the web transport writes its own,
 * shorter one).
 */
import { PointSubError } from "./error.ts";

/**
 * ERR_INVALID_ARGUMENT unless `options.signal` is absent or an AbortSignal:
 * checked before anything starts (an AbortController given for its signal
 * made `addEventListener` throw an untyped TypeError, after a socket was
 * opened or a stream's Transfer handed out).
 */
export function checkSignal(options: { signal?: unknown }): void {
  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `signal must be an AbortSignal (got ${Object.prototype.toString.call(signal)}; an AbortController's is its .signal)`,
    );
  }
}
