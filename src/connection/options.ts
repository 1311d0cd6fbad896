/**
 * Checks the options of a connection (and so of a server's sessions) once,
 * at construction, with messages that name the field and its allowed range.
 * The protocol limits (maxMessageSize, windows, …) are checked as settings
 * (`codec/settings.ts`); this covers the times and byte counts.
 *
 * Sixteen numeric fields of four kinds: a table and one function rather
 * than a schema library, which would be most of the bytes the engine's
 * option checking adds to a browser bundle.
 */
import { PointSubError } from "../errors/error.ts";
import { checkOptions } from "../errors/options.ts";
import type { ConnectionOptions } from "./types.ts";

/** What a field may hold: milliseconds (finite, >= 0), bytes (integer, >= 0), a count (integer, >= 1), a rate (finite, > 0). */
type Kind = "ms" | "bytes" | "count" | "rate";

const FIELDS: Readonly<Record<string, Kind>> = {
  maxMessageSize: "count",
  // A server's options (clients have none): checked here so that every option fails the same way.
  maxConnections: "count",
  maxConnectionsPerAddress: "count",
  requestTimeoutMs: "ms",
  // connect's own (servers have none): checked before the transport connects, by its name.
  connectTimeoutMs: "ms",
  handshakeTimeoutMs: "ms",
  closeTimeoutMs: "ms",
  keepAliveMs: "ms",
  slowPeerTimeoutMs: "ms",
  progressTimeoutMs: "ms",
  // A rate that may be 0 (no minimum): finite and >= 0, as milliseconds are.
  minProgressBytesPerSecond: "ms",
  minAnswerBytesPerSecond: "ms",
  idleTimeoutMs: "ms",
  slowPeerBytes: "bytes",
  memoryBudget: "bytes",
  requestBytesPerSecond: "rate",
};

/** Why `x` is not a valid value of `kind`, or undefined when it is. */
function problem(x: unknown, kind: Kind): string | undefined {
  if (typeof x !== "number" || Number.isNaN(x)) return "must be a number";
  const whole = kind === "bytes" || kind === "count";
  if (whole ? !Number.isSafeInteger(x) : !Number.isFinite(x)) return whole ? "must be an integer" : "must be finite";
  if (kind === "count") return x >= 1 ? undefined : "must be >= 1";
  if (kind === "rate") return x > 0 ? undefined : "must be > 0";
  return x >= 0 ? undefined : "must be >= 0";
}

/** Throws ERR_INVALID_ARGUMENT naming the first invalid option, e.g. `keepAliveMs must be >= 0 (got -5)`. */
export function checkConnectionOptions(o: ConnectionOptions): void {
  checkOptions(o);
  for (const key in FIELDS) {
    const x = (o as Record<string, unknown>)[key];
    if (x === undefined) continue;
    const why = problem(x, FIELDS[key]);
    if (why !== undefined) throw new PointSubError("ERR_INVALID_ARGUMENT", `${key} ${why} (got ${String(x)})`);
  }
}
