/**
 * A sentence a user can act on, for each error code (`PointSubError.suggestion`).
 * Text for people, kept apart from the codes: a browser page loads it while
 * its first connection opens (`codes.ts`, {@link loadSuggestions}).
 */
import type { ErrorCode } from "./codes.ts";

/** The suggestion of each code. */
export const SUGGESTIONS: Readonly<Record<ErrorCode, string>> = {
  // 1xxx network
  ERR_TIMEOUT: "The peer did not answer in time; raise timeoutMs or check that the handler finishes.",
  ERR_CONNECTION_CLOSED: "The connection is gone; reconnect and send again.",
  ERR_CONNECT: "Could not reach the peer; check the URL and that the server is listening.",
  ERR_KEEPALIVE: "The peer stopped answering pings; the link or the peer is down.",
  ERR_OFFLINE: "Not connected: the client is reconnecting; wait for it, or raise the offline queue's limits.",
  // 2xxx resources
  ERR_FLOW_CONTROL: "The peer sent more than it was allowed to; it is not a conforming pointsub peer.",
  ERR_TOO_MANY_REQUESTS: "The peer exceeded maxConcurrentRequests; it is not a conforming pointsub peer.",
  ERR_OVERLOADED:
    "The receiver's memory budget for buffered messages is exhausted; retry later or send smaller messages.",
  ERR_SLOW_PEER:
    "The peer stopped reading what this side sends (its backlog stayed over the bound): a connection closed with this was disconnected; a server's sendTo refused with it queued nothing and the session stays open (send again once its bufferedAmount is back under sendToHighWaterMark).",
  ERR_QUOTA:
    "The receiver's storage quota (file size or total bytes) would be exceeded; free space or raise the limit.",
  ERR_POOL_EXHAUSTED:
    "Every pooled connection slot is busy; raise pool.maxTotal or acquireTimeoutMs, or send less at once.",
  ERR_RATE_LIMITED:
    "The receiver's rate limit refused the request before its handler ran; retry after retryAfterMs (the resilient client does).",
  // 3xxx protocol
  ERR_PROTOCOL: "The peer sent bytes that are not pointsub protocol v1; check both sides' versions.",
  ERR_CHECKSUM: "Bytes were corrupted in transit; reconnect, and check proxies or hardware on the path.",
  ERR_VERSION: "The peers share no protocol version; upgrade the older side.",
  ERR_FRAME_TOO_LARGE: "The peer declared a frame larger than the negotiated maxFrameSize.",
  // 4xxx application
  ERR_MESSAGE_TOO_LARGE: "Split the payload or raise maxMessageSize on both sides.",
  ERR_NO_ROUTE: "No handler is registered for this route on the peer; check the route name and version.",
  ERR_HANDLER: "The peer's handler threw; see the message for its reason.",
  ERR_CANCELLED: "The operation was cancelled by an AbortSignal or by the peer.",
  ERR_INVALID_ARGUMENT: "Check the argument named in the message against the API documentation.",
  ERR_UNSUPPORTED_URL: "Use a scheme the runtime has a transport for (the message names them), or add an adapter.",
  ERR_GOING_AWAY: "The connection is closing gracefully; open a new one for new work.",
  ERR_SOURCE: "The sender's data source failed mid-stream; fix the source (file, generator) and send again.",
  ERR_COMPRESSION: 'Use a compression algorithm both sides support (see the peer\'s HELLO), or compress: "auto".',
  ERR_RESUME: "The receiver's partial data does not match this source; the transfer restarts from the beginning.",
  ERR_UNAUTHORIZED:
    "The server refused the credentials; pass the right token (--token / POINTSUB_TOKEN) or certificate.",
  ERR_EXISTS: "The receiver already has a file of that name; choose another name or let the server overwrite.",
  ERR_NOT_FOUND:
    "No such session (or it closed): list the open ones with sessionsInfo(); or no such file on a file server: list them with `pointsub ls`.",
};
