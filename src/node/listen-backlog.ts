/**
 * The `backlog` listen option of the socket listeners (tcp://, tls://,
 * unix://, ws://, wss://): the kernel's queue of connections not yet
 * accepted.
 */
import { PointSubError } from "../errors/error.ts";

/** Node's listen backlog (`net.Server.listen`'s default). */
export const DEFAULT_BACKLOG = 511;

/** The `backlog` option checked (ERR_INVALID_ARGUMENT), or Node's default. */
export function listenBacklog(value: number | undefined): number {
  if (value === undefined) return DEFAULT_BACKLOG;
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `backlog must be an integer from 1 to 65535, got ${String(value)}`);
  }
  return value;
}
