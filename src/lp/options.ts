/**
 * Options of the plain length-prefix mode (`lp+tcp://`, `lp+unix://`):
 * what an {@link LpConnection} and every session of an `LpServer` take, and
 * their checks.
 */
import { PointSubError } from "../errors/error.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { TransportConnectOptions } from "../transport/transport.ts";
import { refuseCredentials } from "../transport/url-credentials.ts";
import { LP_MAX_LENGTH } from "./decoder.ts";

/** Default of {@link LpOptions.maxOwedBytes}. */
export const DEFAULT_MAX_OWED_BYTES = 128 * 1024 * 1024;

/** Options of a length-prefix connection (client) or of every session (server). */
export interface LpOptions {
  /**
   * Largest message, either way: a peer declaring more is disconnected
   * with ERR_MESSAGE_TOO_LARGE before any of it is buffered, and `send`
   * refuses more with the same code before writing anything. At most
   * 4 GiB − 1 (what 4 bytes can declare). Default 16 MiB.
   */
  maxMessageSize?: number;
  /**
   * `lp+tcp://`: TCP keepalive on the socket, first probe after this many
   * ms without traffic (the kernel then closes a dead link). With
   * `heartbeat`, also the period of the zero-length messages. Default
   * 30000; 0 = off.
   */
  keepAliveMs?: number;
  /**
   * Send a zero-length message after `keepAliveMs` without output, and
   * treat zero-length messages received as heartbeats (not emitted). Only
   * for peers that ignore empty messages. Default false.
   */
  heartbeat?: boolean;
  /**
   * Most bytes this side holds for a peer that does not take them: sends
   * queued behind backpressure (each counted 512 bytes more for its
   * bookkeeping) plus what the transport holds. Past it the connection
   * closes with ERR_SLOW_PEER and queued sends reject with it — a peer that
   * floods messages the application answers, and never reads the answers,
   * cannot grow this side's memory (as NATS and Redis cut a slow consumer).
   * Reading is never paused for it: two honest peers that each send more
   * than they read go on. A side that answers a burst of requests larger
   * than this without awaiting `drain()` is cut too. Default 128 MiB;
   * `Infinity` = no bound.
   */
  maxOwedBytes?: number;
  /**
   * How long the peer may take none of what this side sent (the socket
   * holds bytes none of which go out, however few; on a transport that
   * cannot tell, how long it refuses writes) before the connection is
   * closed with ERR_SLOW_PEER; queued sends then reject with that error.
   * (The kernel takes from a backed-up socket in steps of its buffers, up
   * to megabytes: a peer must read that much per timeout.) Default
   * 30000 ms; 0 = never.
   */
  slowPeerTimeoutMs?: number;
  /**
   * A message the peer started (its length, or part of its body, arrived)
   * that gets no further byte for this long closes the connection with
   * ERR_TIMEOUT. Default 60000 ms; 0 = never.
   */
  progressTimeoutMs?: number;
  /** How long `close()` waits for queued sends to be written before closing hard. Default 5000 ms. */
  closeTimeoutMs?: number;
  /**
   * Most bytes of unfinished messages the peer (a server: all its peers
   * together) may make this side hold; a message beyond it closes its
   * connection with ERR_OVERLOADED. On a server, what sessions owe their
   * peers (`owedBytes`) is charged too: past half of it a session owing
   * more than the budget / 16 closes with ERR_SLOW_PEER, and when it is
   * full the sessions owing the most do. Default: the runtime's memory limit.
   */
  memoryBudget?: number;
}

/** Options of `connectLp` (and of `connect` for an `lp+` URL). */
export interface LpConnectOptions extends LpOptions, TransportConnectOptions {
  /** The runtime whose transports to use. Default: the entry point's default runtime. */
  runtime?: Runtime;
  /** Give up connecting after this many ms. Default 10000. */
  connectTimeoutMs?: number;
}

/**
 * The mark an lp transport adapter wants in its options: only the lp mode
 * (which writes lengths, not pointsub frames) sets it, so a pointsub
 * `connect` or `Server.listen` given an `lp+` URL is refused with a clear
 * error instead of writing its preface to a length-prefix peer.
 */
export const LP_FRAMING: unique symbol = Symbol.for("pointsub.lp-framing");

/** What the lp mode hands an lp transport adapter besides the portable options. */
export interface LpTransportOptions {
  /** Set by the lp mode only (see {@link LP_FRAMING}). */
  readonly [LP_FRAMING]?: true;
  /** TCP keepalive delay in ms (the `keepAliveMs` option); 0 = off. Default: off (the lp mode passes its `keepAliveMs`, 30000). */
  keepAliveMs?: number;
}

/**
 * ERR_UNSUPPORTED_URL: `address` is not an lp+ URL — or ERR_INVALID_ARGUMENT for a URL with credentials,
 * which the message would otherwise show (the transports refuse those, url-credentials.ts).
 */
export function notLpAddress(address: unknown): PointSubError {
  const url =
    address instanceof URL
      ? address
      : typeof address === "string" && URL.canParse(address)
        ? new URL(address)
        : undefined;
  if (url !== undefined) refuseCredentials(url);
  return new PointSubError(
    "ERR_UNSUPPORTED_URL",
    `${String(address)} is not a length-prefix URL (want lp+tcp://host:port or lp+unix:///path)`,
  );
}

/** True for `lp+…` addresses (a string or URL whose scheme starts with `lp+`). */
export function isLpAddress(address: unknown): address is string | URL {
  const text = address instanceof URL ? address.protocol : typeof address === "string" ? address : undefined;
  return text !== undefined && /^lp\+/i.test(text);
}

/** The options with defaults, checked (ERR_INVALID_ARGUMENT for a value out of range). */
export interface ResolvedLpOptions {
  maxMessageSize: number;
  keepAliveMs: number;
  heartbeat: boolean;
  maxOwedBytes: number;
  slowPeerTimeoutMs: number;
  progressTimeoutMs: number;
  closeTimeoutMs: number;
}

/** Checks a time option `name` (ms, 0 to 2^31-1; ERR_INVALID_ARGUMENT naming it) or gives its default. */
export function ms(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number" || !(v >= 0 && v <= 2 ** 31 - 1)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a number of ms from 0 to 2^31-1, got ${v}`);
  }
  return v;
}

/** Checks `o` and fills in the defaults. */
export function resolveLpOptions(o: LpOptions): ResolvedLpOptions {
  const max = o.maxMessageSize ?? 16 * 1024 * 1024;
  if (!Number.isSafeInteger(max) || max < 0 || max > LP_MAX_LENGTH) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `maxMessageSize must be an integer from 0 to ${LP_MAX_LENGTH} (a 4-byte length), got ${max}`,
    );
  }
  if (o.heartbeat !== undefined && typeof o.heartbeat !== "boolean") {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `heartbeat must be a boolean, got ${String(o.heartbeat)}`);
  }
  if (o.maxOwedBytes !== undefined && (typeof o.maxOwedBytes !== "number" || !(o.maxOwedBytes >= 0))) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `maxOwedBytes must be a number >= 0, got ${o.maxOwedBytes}`);
  }
  if (o.memoryBudget !== undefined && !(o.memoryBudget >= 0)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `memoryBudget must be a number >= 0, got ${o.memoryBudget}`);
  }
  return {
    maxMessageSize: max,
    keepAliveMs: ms("keepAliveMs", o.keepAliveMs, 30_000),
    heartbeat: o.heartbeat === true,
    maxOwedBytes: o.maxOwedBytes ?? DEFAULT_MAX_OWED_BYTES,
    slowPeerTimeoutMs: ms("slowPeerTimeoutMs", o.slowPeerTimeoutMs, 30_000),
    progressTimeoutMs: ms("progressTimeoutMs", o.progressTimeoutMs, 60_000),
    closeTimeoutMs: ms("closeTimeoutMs", o.closeTimeoutMs, 5_000),
  };
}
