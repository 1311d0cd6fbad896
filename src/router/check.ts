/**
 * The argument checks of route and middleware registration, apart from the
 * router: a browser's connection checks `handle`/`use`/`handleStream`
 * synchronously before its router (which comes with the stream engine
 * chunk) is loaded.
 */
import { PointSubError } from "../errors/error.ts";

/** The route check (one copy of it for the codec and the router). */
export { checkRoute } from "../codec/message-head.ts";

/** Throws ERR_INVALID_ARGUMENT unless `fn` is a function (`what`: "handler", "middleware"). */
export function checkFunction(fn: unknown, what: string): void {
  if (typeof fn !== "function") throw new PointSubError("ERR_INVALID_ARGUMENT", `${what} must be a function`);
}
