/**
 * The stable error codes of pointsub, with their numeric `errno` (the ranges
 * of the design: 1xxx network, 2xxx resources, 3xxx protocol, 4xxx
 * application), severity, retryability and a suggestion a user can act on.
 *
 * The `errno` values travel on the wire (CANCEL, GOAWAY and error responses),
 * so they never change meaning once released. docs/PROTOCOL.md lists them.
 */

/** How bad an error is for the thing that raised it. */
export type Severity = "warning" | "error" | "critical";

/** Static facts about one error code. */
export interface ErrorCodeInfo {
  readonly errno: number;
  readonly severity: Severity;
  readonly retryable: boolean;
  readonly suggestion: string;
}

const table = {
  // 1xxx network
  ERR_TIMEOUT: {
    errno: 1001,
    severity: "warning",
    retryable: true,
    suggestion: "The peer did not answer in time; raise timeoutMs or check that the handler finishes.",
  },
  ERR_CONNECTION_CLOSED: {
    errno: 1002,
    severity: "error",
    retryable: true,
    suggestion: "The connection is gone; reconnect and send again.",
  },
  ERR_CONNECT: {
    errno: 1003,
    severity: "error",
    retryable: true,
    suggestion: "Could not reach the peer; check the URL and that the server is listening.",
  },
  ERR_KEEPALIVE: {
    errno: 1004,
    severity: "error",
    retryable: true,
    suggestion: "The peer stopped answering pings; the link or the peer is down.",
  },
  ERR_OFFLINE: {
    errno: 1005,
    severity: "warning",
    retryable: true,
    suggestion: "Not connected: the client is reconnecting; wait for it, or raise the offline queue's limits.",
  },
  // 2xxx resources
  ERR_FLOW_CONTROL: {
    errno: 2001,
    severity: "critical",
    retryable: false,
    suggestion: "The peer sent more than it was allowed to; it is not a conforming pointsub peer.",
  },
  ERR_TOO_MANY_REQUESTS: {
    errno: 2002,
    severity: "critical",
    retryable: false,
    suggestion: "The peer exceeded maxConcurrentRequests; it is not a conforming pointsub peer.",
  },
  ERR_OVERLOADED: {
    errno: 2003,
    severity: "warning",
    retryable: true,
    suggestion:
      "The receiver's memory budget for buffered messages is exhausted; retry later or send smaller messages.",
  },
  ERR_SLOW_PEER: {
    errno: 2004,
    severity: "error",
    retryable: true,
    suggestion:
      "The peer stopped reading what this side sends (its backlog stayed over the bound); it was disconnected.",
  },
  ERR_QUOTA: {
    errno: 2005,
    severity: "error",
    retryable: false,
    suggestion:
      "The receiver's storage quota (file size or total bytes) would be exceeded; free space or raise the limit.",
  },
  ERR_POOL_EXHAUSTED: {
    errno: 2006,
    severity: "warning",
    retryable: true,
    suggestion: "Every pooled connection slot is busy; raise pool.maxTotal or acquireTimeoutMs, or send less at once.",
  },
  ERR_RATE_LIMITED: {
    errno: 2007,
    severity: "warning",
    retryable: true,
    suggestion:
      "The receiver's rate limit refused the request before its handler ran; retry after retryAfterMs (the resilient client does).",
  },
  // 3xxx protocol
  ERR_PROTOCOL: {
    errno: 3001,
    severity: "critical",
    retryable: false,
    suggestion: "The peer sent bytes that are not pointsub protocol v1; check both sides' versions.",
  },
  ERR_CHECKSUM: {
    errno: 3002,
    severity: "critical",
    retryable: true,
    suggestion: "Bytes were corrupted in transit; reconnect, and check proxies or hardware on the path.",
  },
  ERR_VERSION: {
    errno: 3003,
    severity: "critical",
    retryable: false,
    suggestion: "The peers share no protocol version; upgrade the older side.",
  },
  ERR_FRAME_TOO_LARGE: {
    errno: 3004,
    severity: "critical",
    retryable: false,
    suggestion: "The peer declared a frame larger than the negotiated maxFrameSize.",
  },
  // 4xxx application
  ERR_MESSAGE_TOO_LARGE: {
    errno: 4001,
    severity: "error",
    retryable: false,
    suggestion: "Split the payload or raise maxMessageSize on both sides.",
  },
  ERR_NO_ROUTE: {
    errno: 4002,
    severity: "error",
    retryable: false,
    suggestion: "No handler is registered for this route on the peer; check the route name and version.",
  },
  ERR_HANDLER: {
    errno: 4003,
    severity: "error",
    retryable: false,
    suggestion: "The peer's handler threw; see the message for its reason.",
  },
  ERR_CANCELLED: {
    errno: 4004,
    severity: "warning",
    retryable: false,
    suggestion: "The operation was cancelled by an AbortSignal or by the peer.",
  },
  ERR_INVALID_ARGUMENT: {
    errno: 4005,
    severity: "error",
    retryable: false,
    suggestion: "Check the argument named in the message against the API documentation.",
  },
  ERR_UNSUPPORTED_URL: {
    errno: 4006,
    severity: "error",
    retryable: false,
    suggestion: "Use one of the supported schemes: tcp://, tls://, unix://.",
  },
  ERR_GOING_AWAY: {
    errno: 4007,
    severity: "warning",
    retryable: true,
    suggestion: "The connection is closing gracefully; open a new one for new work.",
  },
  ERR_SOURCE: {
    errno: 4008,
    severity: "error",
    retryable: false,
    suggestion: "The sender's data source failed mid-stream; fix the source (file, generator) and send again.",
  },
  ERR_COMPRESSION: {
    errno: 4009,
    severity: "error",
    retryable: false,
    suggestion: 'Use a compression algorithm both sides support (see the peer\'s HELLO), or compress: "auto".',
  },
  ERR_RESUME: {
    errno: 4010,
    severity: "warning",
    retryable: true,
    suggestion: "The receiver's partial data does not match this source; the transfer restarts from the beginning.",
  },
  ERR_UNAUTHORIZED: {
    errno: 4011,
    severity: "error",
    retryable: false,
    suggestion: "The server refused the credentials; pass the right token (--token / POINTSUB_TOKEN) or certificate.",
  },
  ERR_EXISTS: {
    errno: 4012,
    severity: "error",
    retryable: false,
    suggestion: "The receiver already has a file of that name; choose another name or let the server overwrite.",
  },
  ERR_NOT_FOUND: {
    errno: 4013,
    severity: "warning",
    retryable: false,
    suggestion:
      "No such session (or it closed): list the open ones with sessionsInfo(); or no such file on a file server: list them with `pointsub ls`.",
  },
} as const satisfies Record<string, ErrorCodeInfo>;

/** Every stable error code pointsub raises. */
export type ErrorCode = keyof typeof table;

/** Facts about `code`. */
export function codeInfo(code: ErrorCode): ErrorCodeInfo {
  return table[code];
}

const byErrno = new Map<number, ErrorCode>();
for (const code of Object.keys(table) as ErrorCode[]) byErrno.set(table[code].errno, code);

/** The code for a wire `errno`, or `undefined` when it is not one of ours. */
export function codeForErrno(errno: number): ErrorCode | undefined {
  return byErrno.get(errno);
}

/** All codes, for documentation and tests. */
export const ERROR_CODES: readonly ErrorCode[] = Object.keys(table) as ErrorCode[];
