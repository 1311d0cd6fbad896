/**
 * Serves a registry's metrics over HTTP: `GET /metrics` (and HEAD), 404 for
 * any other path, 405 for other methods on it. For `pointsub serve
 * --metrics <host:port>`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { type AddressInfo, BlockList, isIP } from "node:net";
import { PointSubError } from "../index.ts";
import { limitRequests } from "../node/http-requests.ts";

/** A running metrics endpoint. */
export interface MetricsServer {
  /** `http://host:port/metrics`, with the port actually bound. */
  readonly url: string;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/**
 * Bounds of the metrics endpoint: it shares its process (and its file
 * descriptors) with the pointsub server, so a peer that opens sockets to it
 * and never finishes a request must not hold them for long or in numbers.
 */
export interface MetricsHttpOptions {
  /** Connections open at once; more are closed as they arrive (a scraper needs one). Default 32. */
  maxConnections?: number;
  /**
   * Time (ms) a connection may take to send a request's headers (and, ×2,
   * the whole request; also ×2 to ×4, the longest an answer may wait
   * without the client reading any of it). An integer from 1 to 2^30 - 1. Default 10,000.
   */
  headersTimeoutMs?: number;
  /**
   * Host names a request's `Host` header may name (port ignored), or `"*"`
   * for any; other requests get 403. Default: on a loopback address
   * (`127.0.0.0/8`, `::1`, `localhost`) only addresses, `localhost` and the
   * listen host — a web page whose own name an attacker made resolve to
   * this machine (DNS rebinding) could otherwise read the metrics from a
   * browser on it; elsewhere any (scrapers name the machine as they like).
   */
  allowedHosts?: readonly string[] | "*";
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

/** Whether `host` names this machine's loopback interface (an address in any of its spellings: `::ffff:127.0.0.1`, `0:0:0:0:0:0:0:1`). */
function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  if (h === "localhost") return true;
  const family = isIP(h);
  return family !== 0 && LOOPBACK.check(h, family === 4 ? "ipv4" : "ipv6");
}

/**
 * Decides from a request's `Host` header whether it is answered (see
 * {@link MetricsHttpOptions.allowedHosts}); `listenHost` is the address the
 * endpoint listens on.
 */
export function hostPolicy(
  listenHost: string,
  allowed: MetricsHttpOptions["allowedHosts"],
  boundAddress?: string,
): (hostHeader: string | undefined) => boolean {
  // The address bound decides (a name such as the machine's own, or `LOCALHOST`, may resolve to loopback).
  const loopback = isLoopback(listenHost) || (boundAddress !== undefined && isLoopback(boundAddress));
  if (allowed === "*" || (allowed === undefined && !loopback)) return () => true;
  if (allowed !== undefined && (!Array.isArray(allowed) || allowed.some((h) => typeof h !== "string"))) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", 'allowedHosts must be a list of host names or "*"');
  }
  const names = new Set((allowed ?? [listenHost, "localhost"]).map((h) => h.toLowerCase().replace(/^\[(.*)\]$/, "$1")));
  return (header) => {
    if (header === undefined) return true; // not a browser: every browser request names its host
    // A Host is a name and a port: userinfo, a path or a query would be parsed away below.
    if (/[@/?#\\]/.test(header)) return false;
    let name: string;
    try {
      name = new URL(`http://${header}`).hostname.replace(/^\[(.*)\]$/, "$1");
    } catch {
      return false;
    }
    return names.has(name) || (allowed === undefined && isIP(name) !== 0);
  };
}

/** Splits `host:port` (`[::1]:9464` for IPv6); ERR_INVALID_ARGUMENT when it is not one. */
export function parseHostPort(address: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(address);
  const port = m === null ? Number.NaN : Number(m[3]);
  if (m === null || port > 65535) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `metrics address must be host:port, got ${JSON.stringify(address)}`,
    );
  }
  return { host: m[1] ?? m[2], port };
}

/**
 * Requests one connection may have unanswered at once (pipelined: each
 * answer waits in memory until the client read those before it); a client
 * that sends more is disconnected. A scraper sends one at a time.
 */
export const METRICS_MAX_PIPELINED = 4;

/** The longest `headersTimeoutMs` (~12 days): twice it is the longest timer Node keeps. */
const MAX_HEADERS_TIMEOUT_MS = 0x3fffffff;

/** Unanswered requests per socket. */
const unanswered = new WeakMap<object, number>();

/** Counts `req` against its socket's {@link METRICS_MAX_PIPELINED}; false (the socket destroyed) past it. */
function admit(req: IncomingMessage, res: ServerResponse): boolean {
  const socket = req.socket;
  const n = (unanswered.get(socket) ?? 0) + 1;
  if (n > METRICS_MAX_PIPELINED) {
    socket.destroy();
    return false;
  }
  unanswered.set(socket, n);
  res.once("close", () => unanswered.set(socket, (unanswered.get(socket) ?? 1) - 1));
  return true;
}

/** What {@link serveMetrics} answers from: a prom-client `Registry`, or anything that renders an exposition the same way. */
export interface MetricsSource {
  /** The exposition's content type. */
  readonly contentType: string;
  /** The exposition text. */
  metrics(): Promise<string>;
}

/**
 * Listens on `address` (`host:port`, port 0 for any) and answers `GET /metrics` from `registry`,
 * within {@link MetricsHttpOptions}' bounds.
 */
export async function serveMetrics(
  registry: MetricsSource,
  address: string,
  options: MetricsHttpOptions = {},
): Promise<MetricsServer> {
  // Anything else was taken, and the first scrape threw in the request handler: an uncaught TypeError, the
  // process gone (`serveMetrics(metrics, …)` for `metrics.registry`).
  const source = registry as Partial<MetricsSource> | null | undefined;
  if (typeof source?.metrics !== "function" || typeof source.contentType !== "string") {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      "serveMetrics needs a MetricsSource: a prom-client Registry (prometheusMetrics().registry) or { contentType, metrics() }",
    );
  }
  const { host, port } = parseHostPort(address);
  const maxConnections = options.maxConnections ?? 32;
  const headersTimeout = options.headersTimeoutMs ?? 10_000;
  // node:http takes only integer timeouts (Infinity or 2.5 threw its untyped ERR_OUT_OF_RANGE), and a
  // socket timeout (twice this) over 2^31 - 1 ms is cut to that with a warning.
  if (
    !Number.isInteger(maxConnections) ||
    maxConnections < 1 ||
    !Number.isInteger(headersTimeout) ||
    headersTimeout < 1 ||
    headersTimeout > MAX_HEADERS_TIMEOUT_MS
  ) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `maxConnections must be an integer ≥ 1 (got ${maxConnections}) and headersTimeoutMs an integer from 1 to ${MAX_HEADERS_TIMEOUT_MS} (got ${headersTimeout})`,
    );
  }
  // Checked now (invalid allowedHosts: nothing listens); made again from the address bound once listening.
  let hostAllowed = hostPolicy(host, options.allowedHosts);
  // Scrapes that arrive while one renders share its text (a render walks every metric: thousands of
  // requests at once each rendering burned the CPU and held a copy each).
  let rendering: Promise<string> | undefined;
  const render = (): Promise<string> => {
    if (rendering === undefined) {
      // A source that throws, or returns no promise, answers 500 (thrown in the request handler, it was uncaught).
      try {
        rendering = Promise.resolve(registry.metrics());
      } catch (err) {
        rendering = Promise.reject(err);
      }
      const done = () => {
        rendering = undefined;
      };
      rendering.then(done, done);
    }
    return rendering;
  };
  const server: Server = createServer(
    {
      headersTimeout,
      requestTimeout: headersTimeout * 2,
      // Node checks those timeouts on this interval (default 30 s).
      connectionsCheckingInterval: Math.min(1000, headersTimeout),
    },
    (req, res) => {
      if (!admit(req, res)) return;
      if (!hostAllowed(req.headers.host)) {
        res.writeHead(403, { "content-type": "text/plain" }).end("host not allowed\n");
        return;
      }
      const path = (req.url ?? "").split("?")[0];
      if (path !== "/metrics") {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
        return;
      }
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("method not allowed\n");
        return;
      }
      render().then(
        (text) => {
          res.writeHead(200, { "content-type": registry.contentType });
          res.end(req.method === "HEAD" ? undefined : text);
        },
        (err: unknown) => {
          res.writeHead(500, { "content-type": "text/plain" }).end(`${err instanceof Error ? err.message : err}\n`);
        },
      );
    },
  );
  server.maxConnections = maxConnections;
  // A socket destroyed past METRICS_MAX_PIPELINED: the rest of its read is not made requests (node:http made
  // each of a 64 KiB read of GETs one, ~1,500; 50 such clients ~1.6 s of CPU).
  server.on("connection", limitRequests);
  // A client that stops reading leaves its answer unsent: the request timeouts no longer apply, and it held
  // its socket (and a slot) for ever. Writes that move keep the socket open.
  server.timeout = headersTimeout * 2;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  hostAllowed = hostPolicy(host, options.allowedHosts, bound.address);
  const shown = bound.family === "IPv6" ? `[${bound.address}]` : bound.address;
  return {
    url: `http://${shown}:${bound.port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Connections mid-request too (a peer that never finishes one must not hold close() up).
        server.closeAllConnections();
      }),
  };
}
