import { PointSubError } from "./error.ts";

/**
 * ERR_INVALID_ARGUMENT when `options` given to `what` (a function's name,
 * or "" for its options alone) is not an object, else undefined: null threw
 * raw TypeErrors where its fields were read, and a number was taken for no
 * options at all.
 */
export function badOptions(options: unknown, what = ""): PointSubError | undefined {
  if (typeof options === "object" && options !== null) return undefined;
  return new PointSubError(
    "ERR_INVALID_ARGUMENT",
    `${what === "" ? "" : `${what} `}options must be an object (got ${String(options)})`,
  );
}

/** {@link badOptions}, thrown. */
export function checkOptions(options: unknown, what = ""): void {
  const bad = badOptions(options, what);
  if (bad !== undefined) throw bad;
}
