/**
 * Value parsers of the CLI's number options, for commander's `argParser`:
 * a bad value throws commander's InvalidArgumentError, which commander
 * reports as one line naming the option and the value (exit 2).
 */
import { InvalidArgumentError } from "commander";
import { MAX_ROUTE } from "../codec/frame.ts";

/** A whole number in [min, max], written in decimal digits only (no sign, point, exponent or hex). */
export function integer(min: number, max: number = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const n = /^\s*\d+\s*$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(
        max === Number.MAX_SAFE_INTEGER
          ? `Expected a whole number of at least ${min}.`
          : `Expected a whole number from ${min} to ${max}.`,
      );
    }
    return n;
  };
}

const UNITS: Record<string, number> = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/**
 * A byte count: a whole number, optionally with a binary unit (`512k`,
 * `10M`, `4GiB`, `1T`), at least `min`.
 */
export function bytes(min = 0): (value: string) => number {
  return (value) => {
    const m = /^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(value);
    const n = m === null ? Number.NaN : Number(m[1]) * UNITS[m[2].toLowerCase()];
    if (!Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgumentError(
        `Expected a byte count${min > 0 ? ` of at least ${min}` : ""} (e.g. 1048576, 512k, 10M, 4GiB).`,
      );
    }
    return n;
  };
}

/** A non-negative byte count (see {@link bytes}). */
export const parseBytes: (value: string) => number = bytes(0);

/**
 * Most seconds an option takes: in milliseconds still a safe integer (before, `--partial-ttl 9007199254741`
 * passed here and failed in each worker as the library's "partialTtlMs must be a non-negative integer", exit 1).
 */
export const MAX_SECONDS = Math.floor(Number.MAX_SAFE_INTEGER / 1000);

/** A non-negative whole number of seconds, at most {@link MAX_SECONDS}. */
export const parseSeconds: (value: string) => number = (value) => {
  try {
    return integer(0, MAX_SECONDS)(value);
  } catch {
    throw new InvalidArgumentError(`Expected a whole number of seconds (at most ${MAX_SECONDS}).`);
  }
};

/**
 * A `host:port` address (`--metrics`, `--dashboard`): a host name or IPv4
 * address, or an IPv6 address in brackets (`[::1]:9464`; with a zone too,
 * `[fe80::1%eth0]:8080`, which `--dashboard` serves on, as it did before
 * this check; `--metrics`' own parser refuses a zone), and a port 0..65535
 * (0: a free one).
 */
export const parseHostPort: (value: string) => string = (value) => {
  const m = /^(?:\[[0-9a-fA-F:.]+(?:%[^\]\s%]+)?\]|[^:[\]\s]+):(\d{1,5})$/.exec(value);
  if (m === null || Number(m[1]) > 65535) {
    throw new InvalidArgumentError("Expected host:port, e.g. 127.0.0.1:9464 or [::1]:9464.");
  }
  return value;
};

/**
 * `request --route`: a non-empty route of at most {@link MAX_ROUTE} UTF-8 bytes, as the protocol
 * takes (before: "" or a longer one was ERR_INVALID_ARGUMENT from the library once connected, exit 1).
 */
export const parseRoute: (value: string) => string = (value) => {
  if (value.length === 0 || Buffer.byteLength(value) > MAX_ROUTE) {
    throw new InvalidArgumentError(`Expected a route of 1 to ${MAX_ROUTE} bytes, e.g. /echo/1.0.0.`);
  }
  return value;
};

/**
 * A variadic argument of names (`send`'s files, `get`'s names): each non-empty, collected in order.
 * An empty one ("" from a script's unset variable) is a usage error (exit 2); before, `get ""` asked
 * the server for its root and said `" is a directory (get it with -r)"`, exit 1, and `send ""` said
 * `" is not a readable file"`.
 */
export const nonEmptyName: (value: string, previous: string[] | undefined) => string[] = (value, previous) => {
  if (value.length === 0) throw new InvalidArgumentError("Expected a name, not an empty string.");
  // Collected in place (the array is this parser's own, made for the first name): a copy per name
  // made `send dir/*` of 40,000 files spend 24 s before connecting.
  if (previous === undefined) return [value];
  previous.push(value);
  return previous;
};

/** The oldest Node.js the CLI runs on (package.json's `engines`). */
export const NODE_MIN: readonly [number, number] = [22, 18];

/** Why Node.js `version` (`process.versions.node`) cannot run the CLI, or undefined when it can. */
export function nodeTooOld(version: string): string | undefined {
  const [major, minor] = version.split(".").map(Number);
  if (major > NODE_MIN[0] || (major === NODE_MIN[0] && minor >= NODE_MIN[1])) return undefined;
  return `pointsub needs Node.js ${NODE_MIN.join(".")} or later; this is ${version}`;
}
