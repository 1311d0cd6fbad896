/**
 * A file route's failure as its peer sees it. An fs error's message names
 * this machine's paths (`open '/srv/inbox/.…lock'`): the peer gets what
 * failed and the error's code only. A full disk is ERR_QUOTA; a
 * PointSubError passes as it is, its message without the paths `hide`
 * names (a file's real path, replaced by the name the peer asked for).
 */
import { relative, sep } from "node:path";
import { answerableError, thrownCode } from "../errors/describe.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";

export function fsFailure(err: unknown, doing: string, hide?: { path: string; shown: string }): PointSubError {
  try {
    return failure(err, doing, hide);
  } catch {
    // A hook's throw whose fields throw when read (a revoked Proxy, a throwing code or message getter): making the
    // error threw in its place (onGetEnd was not told). ERR_HANDLER saying what failed, nothing of the value.
    return new PointSubError("ERR_HANDLER", doing, { cause: err });
  }
}

function failure(err: unknown, doing: string, hide?: { path: string; shown: string }): PointSubError {
  // A hook's (onGet's) throw may be null or undefined: reading its code threw a TypeError, and onGetEnd was not told.
  const code = (err as { code?: unknown } | null | undefined)?.code;
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new PointSubError("ERR_QUOTA", "the receiver's disk is full", { cause: err });
  }
  if (err instanceof PointSubError) {
    if (hide === undefined || !err.message.includes(hide.path)) return err;
    const message = err.message.split(hide.path).join(hide.shown);
    // One given a code of the application's own, which the constructor refuses (the asker got ERR_INVALID_ARGUMENT
    // "invalid code …"): ERR_HANDLER naming it, as a handler's is answered.
    if (answerableError(err) === undefined)
      return new PointSubError("ERR_HANDLER", thrownCode(err) + message, { cause: err });
    return new PointSubError(err.code, message, { cause: err });
  }
  if (typeof code === "string" && /^E[A-Z0-9]+$/.test(code)) {
    return new PointSubError("ERR_HANDLER", `${doing} (${code})`, { cause: err });
  }
  return toPointSubError(err, "ERR_HANDLER");
}

/**
 * `path`, a file under `dir`, as the peer knows it: relative to `dir`,
 * `/`-separated (what receipts and errors name; never this side's own path).
 */
export function nameUnder(dir: string, path: string): string {
  return relative(dir, path).split(sep).join("/");
}
