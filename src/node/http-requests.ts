/**
 * Requests a node:http server of pointsub's own no longer makes: node:http
 * parses a whole read before it sees a socket destroyed or its last answer
 * sent, and made each request of it an IncomingMessage, a ServerResponse
 * and a queued answer (a 64 KiB read of pipelined GETs ~1,500–2,260 of
 * them). Reaches into node:http's parser (its `onIncoming`, set for each
 * connection: a parser reused for another gets its own again, and a freed
 * one drops this closure); a socket without one is left as it is.
 */
import type * as net from "node:net";

/**
 * Wraps the parser node:http just set up for `socket` (call from the
 * server's `connection` listener, or `secureConnection` on https, after
 * node:http's own) so that at most `most` requests are made of the
 * connection, and none once the socket is destroyed (a pipelining bound):
 * the first request past them stops the parser at its end for the rest of
 * the read ({@link skipRequest}).
 */
export function limitRequests(socket: net.Socket, most = Number.POSITIVE_INFINITY): void {
  const parser = (socket as { parser?: { onIncoming?: unknown } | null }).parser;
  const serve = parser?.onIncoming;
  if (parser == null || typeof serve !== "function") return;
  let left = most;
  parser.onIncoming = (req: unknown, keepAlive: unknown): unknown => {
    if (left <= 0 || socket.destroyed) {
      parser.onIncoming = skipRequest;
      return skipRequest();
    }
    left--;
    return serve(req, keepAlive);
  };
}

/**
 * A request node:http parsed that nobody serves. 2 (llhttp's "no body, an
 * upgrade"): the parser stops at its end and the rest of the read is
 * dropped (node:http emits no upgrade for a request without an Upgrade
 * header). Returning 0, every request of each read until the socket
 * closed was still parsed into an IncomingMessage: ~5,600 for a client
 * writing 1 MiB, 5 times the CPU of a read of junk. A body it declared is
 * read as the next request: a parse error, which closes the socket.
 */
function skipRequest(): number {
  return 2;
}
