/**
 * Checks the options of a connection (and so of a server's sessions) once,
 * at construction, with messages that name the field and its allowed range.
 * The protocol limits (maxMessageSize, windows, …) are checked as settings
 * (`codec/settings.ts`); this covers the times and byte counts.
 */
import * as v from "valibot";
import { PointSubError } from "../errors/error.ts";
import type { ConnectionOptions } from "./types.ts";

const ms = v.optional(v.pipe(v.number("must be a number"), v.finite("must be finite"), v.minValue(0, "must be >= 0")));
const bytes = v.optional(
  v.pipe(v.number("must be a number"), v.safeInteger("must be an integer"), v.minValue(0, "must be >= 0")),
);

const count = v.optional(
  v.pipe(v.number("must be a number"), v.safeInteger("must be an integer"), v.minValue(1, "must be >= 1")),
);

const schema = v.object({
  maxMessageSize: count,
  // A server's option (clients have none): checked here so that every option fails the same way.
  maxConnections: count,
  maxConnectionsPerAddress: count,
  requestTimeoutMs: ms,
  handshakeTimeoutMs: ms,
  closeTimeoutMs: ms,
  keepAliveMs: ms,
  slowPeerTimeoutMs: ms,
  progressTimeoutMs: ms,
  minProgressBytesPerSecond: v.optional(
    v.pipe(v.number("must be a number"), v.finite("must be finite"), v.minValue(0, "must be >= 0")),
  ),
  idleTimeoutMs: ms,
  slowPeerBytes: bytes,
  memoryBudget: bytes,
  requestBytesPerSecond: v.optional(
    v.pipe(v.number("must be a number"), v.finite("must be finite"), v.gtValue(0, "must be > 0")),
  ),
});

/** Throws ERR_INVALID_ARGUMENT naming the first invalid option, e.g. `keepAliveMs must be >= 0 (got -5)`. */
export function checkConnectionOptions(o: ConnectionOptions): void {
  const r = v.safeParse(schema, o);
  if (r.success) return;
  const issue = r.issues[0];
  const key = issue.path?.map((p) => String(p.key)).join(".") ?? "option";
  throw new PointSubError("ERR_INVALID_ARGUMENT", `${key} ${issue.message} (got ${String(issue.input)})`);
}
