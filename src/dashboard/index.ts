/**
 * pointsub/dashboard: a live web page of a server — sessions, throughput,
 * transfers in progress, requests by route with latency percentiles, errors
 * by code. The page is a pointsub browser client of the server itself (the
 * browser entry over ws://), so it passes the server's authentication like
 * any client: open it as `http://host:port/#token=<token>`.
 *
 * ```ts
 * const server = createServer({ authenticate });
 * await server.listen("tcp://0.0.0.0:7000", "ws://127.0.0.1:7001/pointsub");
 * const board = await dashboard(server, { listen: "127.0.0.1:8080" });
 * console.log(board.url);
 * ```
 *
 * @packageDocumentation
 */
import * as http from "node:http";
import { type Diagnostics, nodeDiagnostics, PointSubError, type Server } from "../index.ts";
import { limitRequests } from "../node/http-requests.ts";
import { Collector, type DashboardSnapshot } from "./collector.ts";
import { moduleFiles } from "./modules.ts";
import { DASHBOARD_ROUTE, pageHtml } from "./page.ts";

export type {
  DashboardRoute,
  DashboardSession,
  DashboardSnapshot,
  DashboardTransfer,
} from "./collector.ts";
export { DASHBOARD_ROUTE } from "./page.ts";

/** Options of {@link dashboard}. */
export interface DashboardOptions {
  /** `host:port` of the page's http server. Default `"127.0.0.1:8080"`; port 0 picks a free one. */
  listen?: string;
  /**
   * The `ws://`/`wss://` URL of the server the page connects to. Default:
   * the server's first ws:// or wss:// listener; without one, the dashboard
   * makes the server listen on `ws://<host>:0/pointsub` (same host as the
   * page), a listener that lives as long as the server.
   */
  wsUrl?: string;
  /** Where the server's connections publish. Default `nodeDiagnostics` (that of the default Node runtime). */
  diagnostics?: Diagnostics;
  /**
   * Who may read the figures: called with the requesting session's
   * principal; false refuses with ERR_UNAUTHORIZED. The figures name every
   * session's principal and address, so a server whose principals differ
   * in privilege passes this. Default: every session (after the server's
   * authentication).
   */
  authorize?: (principal: unknown) => boolean;
}

/** A running dashboard. */
export interface Dashboard {
  /** The page's URL (add `#token=<token>` when the server authenticates). */
  readonly url: string;
  /** The ws:// URL the page connects to. */
  readonly wsUrl: string;
  /** The figures now (what the page draws). */
  snapshot(): DashboardSnapshot;
  /**
   * Stops the http server and the figures: the figures route answers ERR_NO_ROUTE from then on (a
   * later `dashboard()` of the same server serves it again, none before); the server and its listeners go on.
   */
  close(): Promise<void>;
}

/** Splits `host:port` (IPv6 in brackets). */
function hostPort(listen: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(listen);
  const port = m === null ? Number.NaN : Number(m[2]);
  if (m === null || !(port >= 0 && port <= 65535)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `dashboard listen must be host:port, got ${listen}`);
  }
  return { host: m[1].replace(/^\[|\]$/g, ""), port };
}

/**
 * The pointsub listener a dashboard adds when its server has no ws:// or
 * wss:// one: `ws://<host>:0/pointsub` on the page's host (`wss://` when
 * `secure`), where the page connects. A CLI checks it like its own
 * listeners (a non-loopback host serves every route to whoever reaches it).
 */
export function dashboardWsUrl(listen: string, secure = false): string {
  const { host } = hostPort(listen);
  return `${secure ? "wss" : "ws"}://${host.includes(":") ? `[${host}]` : host}:0/pointsub`;
}

/** Connections the dashboard's http server holds at once; more are closed as they arrive. */
export const DASHBOARD_MAX_CONNECTIONS = 64;
/**
 * Requests one connection may have unanswered at once (pipelined: each
 * answer waits in memory until the client read those before it); a client
 * that sends more is disconnected. A browser sends one at a time.
 */
export const DASHBOARD_MAX_PIPELINED = 8;

/**
 * How long (ms) an answer may wait without the client reading any of it
 * (Node checks twice: from one to two of these); then the connection is
 * closed (64 clients that stopped reading held every connection slot for
 * ever).
 */
export const DASHBOARD_STALLED_MS = 10_000;

/** How long (ms) one snapshot of the figures answers the dashboard route (the page asks twice a second). */
export const SNAPSHOT_REUSE_MS = 250;

/** Unanswered requests per socket. */
const unanswered = new WeakMap<object, number>();

/** Counts `req` against its socket's {@link DASHBOARD_MAX_PIPELINED}; false (the socket destroyed) past it. */
function admit(req: http.IncomingMessage, res: http.ServerResponse): boolean {
  const socket = req.socket;
  const n = (unanswered.get(socket) ?? 0) + 1;
  if (n > DASHBOARD_MAX_PIPELINED) {
    socket.destroy();
    return false;
  }
  unanswered.set(socket, n);
  res.once("close", () => unanswered.set(socket, (unanswered.get(socket) ?? 1) - 1));
  return true;
}

/** Servers with a dashboard open (or being opened): one at a time, as the server has one figures route. */
const served = new WeakSet<Server>();

/**
 * Serves a live dashboard of `server` over http (see the module comment).
 * It registers the route {@link DASHBOARD_ROUTE} on the server (the page's
 * requests), answered only to sessions, hence only after the server's
 * authentication. One dashboard per server at a time: another call before
 * its `close()` rejects with ERR_INVALID_ARGUMENT (the two would share the
 * one route, and closing either took it from both).
 */
export async function dashboard(server: Server, options: DashboardOptions = {}): Promise<Dashboard> {
  checkDashboardOptions(options);
  const { host, port } = hostPort(options.listen ?? "127.0.0.1:8080");
  if (served.has(server)) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      "this server already has a dashboard: close() it first (one page can be opened by any number of browsers)",
    );
  }
  served.add(server);
  try {
    return await open(server, options, host, port);
  } catch (err) {
    served.delete(server);
    throw err;
  }
}

/**
 * ERR_INVALID_ARGUMENT before anything is set up. Before: a wsUrl that is no URL failed with the URL
 * constructor's raw TypeError once the figures route was registered, and the route went on serving the
 * figures to every session with no dashboard; options "x" listened on the default port; a diagnostics of
 * another type threw a raw TypeError; an authorize that is no function refused every page's figures.
 */
function checkDashboardOptions(options: DashboardOptions): void {
  const bad = (why: string) => new PointSubError("ERR_INVALID_ARGUMENT", `dashboard ${why}`);
  if (typeof options !== "object" || options === null) throw bad(`options must be an object (got ${String(options)})`);
  if (options.authorize !== undefined && typeof options.authorize !== "function") {
    throw bad("authorize must be a function");
  }
  const d = options.diagnostics as Partial<Diagnostics> | null | undefined;
  if (d !== undefined && (typeof d?.subscribe !== "function" || typeof d.unsubscribe !== "function")) {
    throw bad("diagnostics must be a Diagnostics (subscribe, unsubscribe)");
  }
  const ws = options.wsUrl;
  if (ws !== undefined && !(typeof ws === "string" && /^wss?:$/.test(URL.parse(ws)?.protocol ?? ""))) {
    throw bad(`wsUrl must be a ws:// or wss:// URL, got ${String(ws)}`);
  }
}

async function open(server: Server, options: DashboardOptions, host: string, port: number): Promise<Dashboard> {
  const files = await moduleFiles();
  let wsUrl = options.wsUrl ?? server.urls.find((u) => u.startsWith("ws://") || u.startsWith("wss://"));
  if (wsUrl === undefined) [wsUrl] = await server.listen(dashboardWsUrl(options.listen ?? "127.0.0.1:8080"));
  const collector = new Collector(server, options.diagnostics ?? nodeDiagnostics);
  const authorize = options.authorize;
  // One snapshot serves every request within SNAPSHOT_REUSE_MS (a snapshot sorts every route's
  // latencies: requests in a burst each paid 15-34 ms of it).
  let snapshotAt = Number.NEGATIVE_INFINITY;
  let snapshotJson = "";
  let closed = false;
  server.handle(DASHBOARD_ROUTE, (_req, ctx) => {
    // The server has no way to take a route back: a closed dashboard's route answers as if it had none
    // (its figures, live sessions' principals and addresses, were still served to every session).
    if (closed) throw new PointSubError("ERR_NO_ROUTE", `no handler for route ${DASHBOARD_ROUTE}`);
    if (authorize !== undefined && !authorize(ctx.session.principal)) {
      throw new PointSubError("ERR_UNAUTHORIZED", "this principal may not read the dashboard");
    }
    const now = performance.now();
    if (now - snapshotAt >= SNAPSHOT_REUSE_MS) {
      snapshotJson = JSON.stringify(collector.snapshot());
      snapshotAt = now;
    }
    return snapshotJson;
  });
  const wsHost = new URL(wsUrl).hostname.replace(/^\[(.*)\]$/, "$1");
  const page = pageHtml(files.importMap, files.entry, wsUrl, wsHost === host);
  // Bounded like the metrics endpoint (it shares the server's process and file descriptors): a
  // browser opens a few connections; sockets that never finish a request are closed after 10 s.
  const web = http.createServer(
    { headersTimeout: 10_000, requestTimeout: 20_000, connectionsCheckingInterval: 1000 },
    (req, res) => {
      if (!admit(req, res)) return;
      const path = (req.url ?? "/").split("?")[0];
      // HEAD as GET without the body (Node sends none); a 405 says what is allowed (RFC 9110 §15.5.6).
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.writeHead(405, { Allow: "GET, HEAD" }).end();
        return;
      }
      if (path === "/favicon.ico") {
        res.writeHead(204).end();
        return;
      }
      if (path === "/") {
        res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" }).end(page);
        return;
      }
      files.read(path).then(
        (js) => {
          if (js === undefined) res.writeHead(404).end();
          else res.writeHead(200, { "Content-Type": "text/javascript; charset=utf-8" }).end(js);
        },
        () => res.writeHead(500).end(),
      );
    },
  );
  web.maxConnections = DASHBOARD_MAX_CONNECTIONS;
  // A socket destroyed past DASHBOARD_MAX_PIPELINED: the rest of its read is not made requests (node:http
  // made each of a 64 KiB read of GETs one, ~1,500; 50 such clients ~1.6 s of CPU).
  web.on("connection", limitRequests);
  // A client that stops reading leaves its answers unsent: the request timeouts no longer apply, and it held
  // its socket (and a slot) for ever. Writes that move keep the socket open.
  web.timeout = DASHBOARD_STALLED_MS;
  try {
    await new Promise<void>((resolve, reject) => {
      web.once("error", reject);
      web.listen(port, host, () => {
        web.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    // No dashboard (the port is taken): its route and figures go too (they were served on, and the
    // figures gathered, for the server's life).
    closed = true;
    collector.close();
    throw err;
  }
  const bound = web.address() as { port: number };
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${bound.port}/`;
  let closing: Promise<void> | undefined;
  return {
    url,
    wsUrl,
    snapshot: () => collector.snapshot(),
    close() {
      // Once: a second call waits for the same close.
      closing ??= (async () => {
        closed = true;
        served.delete(server);
        snapshotJson = "";
        collector.close();
        web.closeAllConnections();
        await new Promise((resolve) => web.close(resolve));
      })();
      return closing;
    },
  };
}
