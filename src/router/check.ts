/**
 * The argument checks of route and middleware registration, apart from the
 * router: a browser's connection checks `handle`/`use`/`handleStream`
 * synchronously before its router (which comes with the stream engine
 * chunk) is loaded.
 */
import { PointSubError } from "../errors/error.ts";

/**
 * Throws ERR_INVALID_ARGUMENT unless `route` is a non-empty string of
 * Unicode text: an unpaired surrogate would go out as U+FFFD, and two
 * routes would name one (docs/PROTOCOL.md §3.1).
 */
export function checkRoute(route: string): void {
  if (typeof route !== "string" || route.length === 0 || !route.isWellFormed()) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "route must be a non-empty string of Unicode text");
  }
}

/** Throws ERR_INVALID_ARGUMENT unless `fn` is a function (`what`: "handler", "middleware"). */
export function checkFunction(fn: unknown, what: string): void {
  if (typeof fn !== "function") throw new PointSubError("ERR_INVALID_ARGUMENT", `${what} must be a function`);
}
