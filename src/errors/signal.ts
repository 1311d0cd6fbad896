/**
 * The check of a caller's `signal` option, shared by every place that adds
 * a listener to one (the transports, requests, the stream engine, the
 * resilient client). Short: requests and the web transport need it in a
 * page's first load.
 */
import { PointSubError } from "./error.ts";

/**
 * ERR_INVALID_ARGUMENT unless `options.signal` is absent or an AbortSignal:
 * checked before anything starts (an AbortController given for its signal
 * made `addEventListener` throw an untyped TypeError, after a socket was
 * opened, a request registered or a stream's Transfer handed out).
 */
export function checkSignal(options: { signal?: unknown }): void {
  // By its shape, not its class: a signal of another realm (an iframe's) or a polyfill's is one too; null is not.
  const s = options.signal as { addEventListener?: unknown } | undefined;
  if (s !== undefined && typeof s?.addEventListener !== "function") {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "signal must be an AbortSignal");
  }
}
