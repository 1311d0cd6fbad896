/**
 * What the dashboard shows, gathered on the server: its sessions (from
 * `server.sessionsInfo()`), throughput sampled twice a second, transfers in
 * progress, requests by route with latency percentiles and errors by code
 * (from the diagnostics channels, docs/OBSERVABILITY.md). Every table is
 * bounded: a peer cannot grow what the dashboard holds.
 */
import {
  CHANNELS,
  type Connection,
  type Diagnostics,
  type ErrorMessage,
  type RequestEndMessage,
  type Server,
  type StreamEndMessage,
  type StreamProgressMessage,
  type StreamStartMessage,
} from "../index.ts";

/** One session as the page shows it. */
export interface DashboardSession {
  id: string;
  principal: string;
  transport: string;
  address: string;
  ageMs: number;
  bytesIn: number;
  bytesOut: number;
}

/** A transfer (stream) in progress. */
export interface DashboardTransfer {
  session: string;
  direction: "in" | "out";
  route: string;
  bytes: number;
  total: number | undefined;
  /** Bytes per second since the transfer started. */
  rate: number;
  /** Seconds left at that rate, when the total is known. */
  etaSeconds: number | undefined;
}

/** Requests the server answered on one route. */
export interface DashboardRoute {
  route: string;
  count: number;
  errors: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
}

/** Everything the page draws, as one JSON document. */
export interface DashboardSnapshot {
  now: number;
  sessions: DashboardSession[];
  /** Wire bytes per second over all sessions, a point every 500 ms, oldest first. */
  throughput: { t: number; inBps: number; outBps: number }[];
  transfers: DashboardTransfer[];
  routes: DashboardRoute[];
  errors: { code: string; count: number }[];
}

/** Points of the throughput chart (two a second: the last two minutes). */
const HISTORY = 240;
/** Time between two throughput points (ms). */
const SAMPLE_MS = 500;
/** Latencies kept per route for the percentiles (the newest). */
const LATENCIES = 1024;
/** Most routes, transfers and error codes tracked (further ones are not). */
const MAX_ROUTES = 256;
/** The row of requests to routes no handler serves (ERR_NO_ROUTE), whatever the peer named. */
export const UNROUTED = "(no route)";
const MAX_TRANSFERS = 1024;

interface RouteStats {
  count: number;
  errors: number;
  latencies: Float64Array;
  next: number;
}

interface TransferState {
  session: string;
  direction: "in" | "out";
  route: string;
  bytes: number;
  total: number | undefined;
  startedAt: number;
}

/**
 * A principal as text. It is any value the authenticator returned: `String()` threw for one without a
 * way to become text (`Object.create(null)`, a throwing `toString`), and with it every viewer's figures.
 */
function principalText(p: unknown): string {
  if (p === undefined) return "";
  try {
    return String(p);
  } catch {
    return "(not text)";
  }
}

/** Percentile `q` (0..1) of the sorted `xs`. */
function percentile(xs: Float64Array, q: number): number {
  if (xs.length === 0) return 0;
  return xs[Math.min(xs.length - 1, Math.floor(q * xs.length))];
}

/** Gathers the dashboard's figures for one server until {@link Collector.close}. */
export class Collector {
  private readonly server: Server;
  private readonly diagnostics: Diagnostics;
  private readonly history: { t: number; inBps: number; outBps: number }[] = [];
  private readonly lastBytes = new Map<string, { in: number; out: number }>();
  /** Bytes of sessions that closed since the last point, moved after the point before their close. */
  private closedIn = 0;
  private closedOut = 0;
  /** Adds a closing session's last bytes to the next point (a session gone before it moved them unseen). */
  private readonly sessionClosed = (conn: Connection): void => {
    const info = conn.info();
    const last = this.lastBytes.get(conn.id) ?? { in: 0, out: 0 };
    this.closedIn += info.bytesIn - last.in;
    this.closedOut += info.bytesOut - last.out;
    this.lastBytes.delete(conn.id);
  };
  private lastSample = Date.now();
  private readonly routes = new Map<string, RouteStats>();
  private readonly transfers = new Map<string, TransferState>();
  private readonly errors = new Map<string, number>();
  private readonly timer: ReturnType<typeof setInterval>;
  private readonly listeners: [string, (m: unknown) => void][];

  constructor(server: Server, diagnostics: Diagnostics) {
    this.server = server;
    this.diagnostics = diagnostics;
    const mine = (c: unknown): boolean => server.sessions.has(c as never);
    this.listeners = [
      [
        CHANNELS.requestEnd,
        (m) => {
          const r = m as RequestEndMessage;
          if (mine(r.connection)) this.requestEnded(r);
        },
      ],
      [
        CHANNELS.error,
        (m) => {
          const e = m as ErrorMessage;
          if (!mine(e.connection)) return;
          if (this.errors.has(e.code) || this.errors.size < MAX_ROUTES) {
            this.errors.set(e.code, (this.errors.get(e.code) ?? 0) + 1);
          }
        },
      ],
      [
        CHANNELS.streamStart,
        (m) => {
          const s = m as StreamStartMessage;
          if (!mine(s.connection) || this.transfers.size >= MAX_TRANSFERS) return;
          this.transfers.set(`${s.connection.id}/${s.direction}/${s.id}`, {
            session: s.connection.id,
            direction: s.direction,
            route: s.route,
            bytes: 0,
            total: s.total === undefined ? undefined : s.total - s.offset,
            startedAt: Date.now(),
          });
        },
      ],
      [
        CHANNELS.streamProgress,
        (m) => {
          const p = m as StreamProgressMessage;
          const t = this.transfers.get(`${p.connection.id}/${p.direction}/${p.id}`);
          if (t !== undefined) t.bytes = p.bytes;
        },
      ],
      [
        CHANNELS.streamEnd,
        (m) => {
          const e = m as StreamEndMessage;
          this.transfers.delete(`${e.connection.id}/${e.direction}/${e.id}`);
        },
      ],
    ];
    for (const [name, l] of this.listeners) diagnostics.subscribe(name, l);
    // The sessions open now count from here: the first point counted every byte they moved since they
    // connected (a session that sent 1 GB an hour ago made a first point of 2 GB/s).
    for (const s of server.sessionsInfo()) this.lastBytes.set(s.id, { in: s.bytesIn, out: s.bytesOut });
    server.on("sessionClose", this.sessionClosed);
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
    this.timer.unref?.();
  }

  private requestEnded(r: RequestEndMessage): void {
    // A route no handler serves is the peer's text: one row for all (made-up names filled the table's
    // slots, so the server's own routes were never shown). A request refused before its handler (a rate
    // limit, a middleware's authorization) on a route that has a row counts there: all of them went to
    // the "(no route)" row, as if the server had no such route.
    const route = r.routed || this.routes.has(r.route) ? r.route : UNROUTED;
    let s = this.routes.get(route);
    if (s === undefined) {
      if (this.routes.size >= MAX_ROUTES) return;
      s = { count: 0, errors: 0, latencies: new Float64Array(LATENCIES), next: 0 };
      this.routes.set(route, s);
    }
    s.count++;
    if (r.status === "error") s.errors++;
    if (r.durationMs >= 0) s.latencies[s.next++ % LATENCIES] = r.durationMs;
  }

  /** One throughput point: the bytes every session moved since the last one, per second. */
  private sample(): void {
    const now = Date.now();
    const seconds = Math.max(0.001, (now - this.lastSample) / 1000);
    this.lastSample = now;
    let inB = this.closedIn;
    let outB = this.closedOut;
    this.closedIn = 0;
    this.closedOut = 0;
    const seen = new Set<string>();
    for (const s of this.server.sessionsInfo()) {
      seen.add(s.id);
      const last = this.lastBytes.get(s.id) ?? { in: 0, out: 0 };
      inB += s.bytesIn - last.in;
      outB += s.bytesOut - last.out;
      this.lastBytes.set(s.id, { in: s.bytesIn, out: s.bytesOut });
    }
    for (const id of this.lastBytes.keys()) if (!seen.has(id)) this.lastBytes.delete(id);
    this.history.push({ t: now, inBps: inB / seconds, outBps: outB / seconds });
    if (this.history.length > HISTORY) this.history.shift();
  }

  /** The figures now. */
  snapshot(): DashboardSnapshot {
    const now = Date.now();
    const live = new Set<string>();
    const sessions = this.server.sessionsInfo().map((s): DashboardSession => {
      live.add(s.id);
      return {
        id: s.id,
        principal: principalText(s.principal),
        transport: s.transport,
        address: s.remoteUrl,
        ageMs: now - s.connectedAt,
        bytesIn: s.bytesIn,
        bytesOut: s.bytesOut,
      };
    });
    const transfers: DashboardTransfer[] = [];
    for (const [key, t] of this.transfers) {
      if (!live.has(t.session)) {
        this.transfers.delete(key);
        continue;
      }
      const rate = t.bytes / Math.max(0.001, (now - t.startedAt) / 1000);
      const left = t.total === undefined ? undefined : Math.max(0, t.total - t.bytes);
      transfers.push({
        session: t.session,
        direction: t.direction,
        route: t.route,
        bytes: t.bytes,
        total: t.total,
        rate,
        etaSeconds: left === undefined || rate === 0 ? undefined : left / rate,
      });
    }
    const routes = [...this.routes].map(([route, s]): DashboardRoute => {
      // The latencies recorded (`next`), not the requests: one with no duration (in flight when the
      // dashboard started) counted a slot never written, a 0 ms latency in the percentiles.
      const xs = s.latencies.slice(0, Math.min(s.next, LATENCIES)).sort();
      return {
        route,
        count: s.count,
        errors: s.errors,
        p50Ms: percentile(xs, 0.5),
        p90Ms: percentile(xs, 0.9),
        p99Ms: percentile(xs, 0.99),
      };
    });
    return {
      now,
      sessions,
      throughput: [...this.history],
      transfers,
      routes,
      errors: [...this.errors].map(([code, count]) => ({ code, count })),
    };
  }

  /** Stops gathering. */
  close(): void {
    clearInterval(this.timer);
    this.server.off("sessionClose", this.sessionClosed);
    for (const [name, l] of this.listeners) this.diagnostics.unsubscribe(name, l);
  }
}
