/** Error codes read back from the bus or the store: only pointsub's own are trusted as codes. */
import { ERROR_CODES, type ErrorCode } from "../errors/codes.ts";

const KNOWN: ReadonlySet<string> = new Set(ERROR_CODES);

/** Whether `code` is one of pointsub's error codes. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === "string" && KNOWN.has(code);
}
