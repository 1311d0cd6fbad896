/**
 * Prometheus metrics for pointsub (`pointsub/metrics`), fed by the
 * diagnostics channels (docs/OBSERVABILITY.md). prom-client is an optional
 * peer dependency: only this module imports it.
 *
 * Per-request cost is one listener (`pointsub:request:end`) adding to
 * plain numbers of this adapter. Messages, bytes and errors are not
 * listened to at all: they are the connections' own counters
 * (`conn.stats()`), read when the registry is scraped — from the
 * connections open then, plus the totals of those that closed. The
 * prom-client metrics are filled from all this at scrape time (`collect`):
 * a labelled prom-client `inc` costs ~0.3 µs and an `observe` ~0.4 µs,
 * too much to pay several times per request.
 */
import type {
  Aggregator,
  Counter,
  Gauge,
  Histogram,
  MetricObjectWithValues,
  MetricType,
  MetricValueWithName,
  Registry,
} from "prom-client";
import {
  CHANNELS,
  type Connection,
  type ConnectionCloseMessage,
  type ConnectionOpenMessage,
  type DiagnosticsListener,
  defaultRuntime,
  type HandshakeErrorMessage,
  PointSubError,
  type RefusedMessage,
  type RequestEndMessage,
  type Runtime,
  SIZE_CLASSES,
  type StatsSnapshot,
  type StreamEndMessage,
  type StreamProgressMessage,
} from "../index.ts";
import { type PromClientModule, promClient } from "./prom-client.ts";

/** Options of {@link prometheusMetrics}. */
export interface PrometheusMetricsOptions {
  /** Where the metrics are registered. Default: a new `Registry` of their own. */
  registry?: Registry;
  /** Prefix of every metric name. Default `"pointsub_"`. */
  prefix?: string;
  /** Whose diagnostics to subscribe to. Default: the Node entry's `defaultRuntime()` (node:diagnostics_channel: every Node runtime's connections). */
  runtime?: Runtime;
  /**
   * Distinct `route` label values kept; later routes are counted under
   * `"other"` (routes are chosen by peers). Requests to no route at all are
   * always `"unrouted"`. Default 100.
   */
  maxRoutes?: number;
  /** Upper bounds of the request duration histogram, seconds. Default {@link DEFAULT_BUCKETS}: 0.1 ms to 10 s. */
  buckets?: readonly number[];
}

/** What {@link prometheusMetrics} returns. */
export interface PrometheusMetrics {
  /** The registry holding the metrics (`await registry.metrics()` is the exposition text). */
  readonly registry: Registry;
  /** Unsubscribes from the channels and removes the metrics from the registry. */
  close(): void;
}

/** Default request duration buckets, seconds: 0.1 ms to 10 s. */
export const DEFAULT_BUCKETS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

const ROLES = ["client", "server"] as const;
const DIRECTIONS = ["in", "out"] as const;
/** The route label of requests no route took (ERR_NO_ROUTE): never one of the kept routes. */
const UNROUTED = "unrouted";
/** The route label of routes beyond `maxRoutes`. */
const OTHER = "other";

/** Counts of one route. */
class RouteStats {
  /** Requests answered ok. */
  ok = 0;
  /** Requests answered with an error, by code. */
  readonly byCode = new Map<string, number>();
  /** Per bucket (not cumulative), the last one is +Inf. */
  readonly buckets: Float64Array;
  sum = 0;
  count = 0;
  constructor(n: number) {
    this.buckets = new Float64Array(n + 1);
  }
}

/** Adds 1 to `m[key]`. */
function bump(m: Map<string, number>, key: string, n = 1): void {
  m.set(key, (m.get(key) ?? 0) + n);
}

/**
 * A histogram whose observations are counted by the adapter (per route, in
 * plain arrays) and read when the registry is scraped.
 */
function routeHistogramClass(pc: PromClientModule) {
  return class RouteHistogram extends pc.Histogram<"route"> {
    private readonly source: () => Map<string, RouteStats>;
    private readonly bounds: readonly number[];
    constructor(name: string, help: string, bounds: readonly number[], source: () => Map<string, RouteStats>) {
      super({ name, help, labelNames: ["route"], buckets: [...bounds], registers: [] });
      this.source = source;
      this.bounds = bounds;
    }

    override async get(): Promise<MetricObjectWithValues<MetricValueWithName<"route">>> {
      // Set by prom-client's constructor (not all of them in its types).
      const self = this as unknown as { name: string; help: string; type: MetricType; aggregator: Aggregator };
      const name = self.name;
      const values: MetricValueWithName<"route">[] = [];
      for (const [route, r] of this.source()) {
        if (r.count === 0) continue;
        let acc = 0;
        for (let i = 0; i < this.bounds.length; i++) {
          acc += r.buckets[i];
          values.push({
            metricName: `${name}_bucket`,
            labels: { route, le: this.bounds[i] } as never,
            value: acc,
          });
        }
        values.push({ metricName: `${name}_bucket`, labels: { route, le: "+Inf" } as never, value: r.count });
        values.push({ metricName: `${name}_sum`, labels: { route }, value: r.sum });
        values.push({ metricName: `${name}_count`, labels: { route }, value: r.count });
      }
      return { name, help: self.help, type: self.type, aggregator: self.aggregator, collect: () => {}, values };
    }

    /** The registry's text exposition reads this when present (prom-client's own histogram defines it). */
    getForPromString(): Promise<MetricObjectWithValues<MetricValueWithName<"route">>> {
      return this.get();
    }
  };
}

/** The class above, made once prom-client is loaded (its base is prom-client's Histogram). */
let RouteHistogram: ReturnType<typeof routeHistogramClass> | undefined;

/**
 * Throws ERR_INVALID_ARGUMENT naming the field for options that would make wrong metrics: a `maxRoutes`
 * of NaN kept no bound (every route got a label), a negative one gave none; `buckets` of NaN, strings or
 * duplicates became `le` labels as given; a `prefix` prom-client refuses threw its untyped Error.
 */
function checkOptions(o: PrometheusMetricsOptions): void {
  const bad = (field: string, rule: string, value: unknown): PointSubError =>
    new PointSubError("ERR_INVALID_ARGUMENT", `prometheusMetrics: ${field} must be ${rule} (got ${String(value)})`);
  // These were taken: options "x" as none, a runtime or registry of another type threw a raw TypeError.
  if (typeof o !== "object" || o === null) throw bad("options", "an object", o);
  const rt = o.runtime as Partial<Runtime> | null | undefined;
  if (rt !== undefined && typeof rt?.diagnostics?.subscribe !== "function") {
    throw bad("runtime", "a pointsub runtime (createNodeRuntime())", rt);
  }
  const reg = o.registry as Partial<Registry> | null | undefined;
  if (reg !== undefined && typeof reg?.getSingleMetric !== "function") {
    throw bad("registry", "a prom-client Registry", reg);
  }
  if (o.maxRoutes !== undefined && !(Number.isSafeInteger(o.maxRoutes) && o.maxRoutes >= 0)) {
    throw bad("maxRoutes", "an integer >= 0", o.maxRoutes);
  }
  const b: unknown = o.buckets;
  if (
    b !== undefined &&
    (!Array.isArray(b) ||
      b.some((x) => typeof x !== "number" || !Number.isFinite(x) || x < 0) ||
      new Set(b).size !== b.length)
  ) {
    throw bad(
      "buckets",
      "a list of distinct finite numbers >= 0 (seconds)",
      Array.isArray(b) ? `[${b.join(", ")}]` : b,
    );
  }
  if (o.prefix !== undefined && !(typeof o.prefix === "string" && /^([a-zA-Z_:][a-zA-Z0-9_:]*)?$/.test(o.prefix))) {
    throw bad("prefix", "empty or a metric name's start ([a-zA-Z_:][a-zA-Z0-9_:]*)", o.prefix);
  }
}

/**
 * Subscribes Prometheus metrics to the diagnostics of `options.runtime`:
 *
 * | metric | type | labels |
 * | --- | --- | --- |
 * | `pointsub_connections_opened_total` | counter | `role` |
 * | `pointsub_connections_closed_total` | counter | `role`, `reason` (`graceful` or the error code) |
 * | `pointsub_connections_open` | gauge | `role` (`server`: the server's sessions) |
 * | `pointsub_handshake_failures_total` | counter | `role`, `code` |
 * | `pointsub_messages_total` | counter | `direction`, `size_class` |
 * | `pointsub_message_bytes_total` | counter | `direction`, `size_class` |
 * | `pointsub_requests_total` | counter | `route`, `status` (`ok` or the error code) |
 * | `pointsub_request_duration_seconds` | histogram | `route` |
 * | `pointsub_errors_total` | counter | `code` |
 * | `pointsub_refusals_total` | counter | `reason` (`rate-limit`; from `pointsub:refused`: `connection-limit`, `address-limit`, `closing`) |
 * | `pointsub_streams_total` | counter | `direction`, `status` |
 * | `pointsub_transfer_bytes_total` | counter | `direction` |
 *
 * Requests and their durations are those of the peer that this side
 * handled (a server's sessions). Every label has a bounded set of values.
 * Invalid options throw ERR_INVALID_ARGUMENT naming the field, and so does a
 * `registry` that already holds one of the metrics' names (nothing is then
 * registered or subscribed).
 */
export function prometheusMetrics(options: PrometheusMetricsOptions = {}): PrometheusMetrics {
  // prom-client first: without it, that is what to fix, whatever the options.
  const pc = promClient();
  RouteHistogram ??= routeHistogramClass(pc);
  const RouteHistogramOf = RouteHistogram;
  checkOptions(options);
  const registry = options.registry ?? new pc.Registry();
  const prefix = options.prefix ?? "pointsub_";
  const diagnostics = (options.runtime ?? defaultRuntime()).diagnostics;
  const maxRoutes = options.maxRoutes ?? 100;
  const bounds = [...(options.buckets ?? DEFAULT_BUCKETS)].sort((a, b) => a - b);

  // ---- the adapter's own counts (what the listeners touch)
  const opened = [0, 0];
  const open = [0, 0];
  /** Connections open now that opened after the subscription: their counters are read at each scrape. */
  const live = new Set<Connection>();
  const closed = new Map<string, number>();
  const handshakeFailures = new Map<string, number>();
  /** What connections that closed had counted: messages and bytes per direction (in 0, out 1) and size class, errors. */
  const gone = { messages: new Float64Array(10), bytes: new Float64Array(10), errors: new Map<string, number>() };
  const routes = new Map<string, RouteStats>();
  const refusals = new Map<string, number>();
  const streams = new Map<string, number>();
  const transferBytes = [0, 0];

  /** Routes that have a label of their own (at most maxRoutes, besides the two fixed ones). */
  let slots = 0;
  const fixed = (label: string): RouteStats => {
    let r = routes.get(label);
    if (r === undefined) {
      r = new RouteStats(bounds.length);
      routes.set(label, r);
    }
    return r;
  };
  const routeStats = (e: RequestEndMessage): RouteStats => {
    if (e.code === "ERR_NO_ROUTE") return fixed(UNROUTED);
    const route = e.route;
    const r = routes.get(route);
    if (r !== undefined && route !== UNROUTED) return r;
    // Only a route whose handler ran earns a label (a peer's made-up names refused by a
    // middleware would take them all); past the cap, everything shares "other".
    if (!e.routed || slots >= maxRoutes || route === OTHER || route === UNROUTED) return fixed(OTHER);
    slots++;
    return fixed(route);
  };

  /** Adds a connection's counters into `into`. */
  const fold = (into: typeof gone, s: StatsSnapshot): void => {
    SIZE_CLASSES.forEach((c, i) => {
      into.messages[i] += s.received[c].messages;
      into.bytes[i] += s.received[c].bytes;
      into.messages[5 + i] += s.sent[c].messages;
      into.bytes[5 + i] += s.sent[c].bytes;
    });
    for (const [code, n] of Object.entries(s.errors)) bump(into.errors, code, n);
  };
  /**
   * Closed connections' totals plus the live ones' counters now. A scrape
   * runs every metric's collect in one synchronous pass: the sum is made
   * once per scrape, not once per metric.
   */
  let memo: typeof gone | undefined;
  const current = (): typeof gone => {
    if (memo !== undefined) return memo;
    const now = { messages: gone.messages.slice(), bytes: gone.bytes.slice(), errors: new Map(gone.errors) };
    for (const c of live) fold(now, c.stats());
    memo = now;
    queueMicrotask(() => {
      memo = undefined;
    });
    return now;
  };

  const listeners: [string, DiagnosticsListener][] = [
    [
      CHANNELS.connectionOpen,
      (m) => {
        const e = m as ConnectionOpenMessage;
        const i = e.role === "client" ? 0 : 1;
        opened[i]++;
        open[i]++;
        live.add(e.connection);
      },
    ],
    [
      CHANNELS.connectionClose,
      (m) => {
        const e = m as ConnectionCloseMessage;
        // Only those counted opened: one open before the subscription made closed exceed opened.
        if (!live.delete(e.connection)) return;
        open[e.role === "client" ? 0 : 1]--;
        fold(gone, e.connection.stats());
        bump(closed, `${e.role}\n${e.error?.code ?? "graceful"}`);
      },
    ],
    [
      CHANNELS.handshakeError,
      (m) => {
        const e = m as HandshakeErrorMessage;
        bump(handshakeFailures, `${e.role}\n${e.error.code}`);
      },
    ],
    [
      CHANNELS.requestEnd,
      (m) => {
        const e = m as RequestEndMessage;
        const r = routeStats(e);
        if (e.code === undefined) r.ok++;
        else {
          bump(r.byCode, e.code);
          // The rate limiter is a middleware: its refusals are requests that end with its code.
          if (e.code === "ERR_RATE_LIMITED") bump(refusals, "rate-limit");
        }
        if (e.durationMs < 0) return;
        const s = e.durationMs / 1000;
        let b = 0;
        while (b < bounds.length && s > bounds[b]) b++;
        r.buckets[b]++;
        r.sum += s;
        r.count++;
      },
    ],
    [CHANNELS.refused, (m) => bump(refusals, (m as RefusedMessage).reason)],
    [
      CHANNELS.streamProgress,
      (m) => {
        const e = m as StreamProgressMessage;
        transferBytes[e.direction === "in" ? 0 : 1] += e.delta;
      },
    ],
    [
      CHANNELS.streamEnd,
      (m) => {
        const e = m as StreamEndMessage;
        transferBytes[e.direction === "in" ? 0 : 1] += e.delta;
        bump(streams, `${e.direction}\n${e.code ?? "ok"}`);
      },
    ],
  ];

  // ---- the prom-client metrics, filled from those counts when scraped
  /** The metrics made, registered together once none of their names is taken. */
  const made: (Counter<string> | Gauge<string> | Histogram<string>)[] = [];
  const add = (m: Counter<string> | Gauge<string> | Histogram<string>): void => {
    made.push(m);
  };
  /** A counter set from `fill` at each scrape: `fill(set)` calls `set(labels, total)`. */
  const counter = <L extends string>(
    name: string,
    help: string,
    labelNames: L[],
    fill: (set: (labels: Record<L, string>, value: number) => void) => void,
  ) =>
    add(
      new pc.Counter<L>({
        name: prefix + name,
        help,
        labelNames,
        registers: [],
        collect() {
          this.reset();
          fill((labels, value) => this.inc(labels as never, value));
        },
      }),
    );
  const pairs = (m: Map<string, number>, a: string, b: string, set: (l: never, v: number) => void) => {
    for (const [k, v] of m) {
      const [x, y] = k.split("\n");
      set({ [a]: x, [b]: y } as never, v);
    }
  };

  counter("connections_opened_total", "Connections whose handshake completed.", ["role"], (set) => {
    ROLES.forEach((role, i) => {
      set({ role }, opened[i]);
    });
  });
  counter("connections_closed_total", "Open connections that closed, by reason.", ["role", "reason"], (set) =>
    pairs(closed, "role", "reason", set),
  );
  add(
    new pc.Gauge<"role">({
      name: `${prefix}connections_open`,
      help: 'Connections open now (role="server": the sessions of servers).',
      labelNames: ["role"],
      registers: [],
      collect() {
        ROLES.forEach((role, i) => {
          this.set({ role }, open[i]);
        });
      },
    }),
  );
  counter(
    "handshake_failures_total",
    "Connections that closed before their handshake completed.",
    ["role", "code"],
    (set) => pairs(handshakeFailures, "role", "code", set),
  );
  counter(
    "messages_total",
    "Messages, request and response bodies sent (out) and received (in).",
    ["direction", "size_class"],
    (set) => {
      const now = current();
      DIRECTIONS.forEach((direction, d) => {
        SIZE_CLASSES.forEach((size_class, c) => {
          set({ direction, size_class }, now.messages[d * 5 + c]);
        });
      });
    },
  );
  counter("message_bytes_total", "Data bytes of those messages.", ["direction", "size_class"], (set) => {
    const now = current();
    DIRECTIONS.forEach((direction, d) => {
      SIZE_CLASSES.forEach((size_class, c) => {
        set({ direction, size_class }, now.bytes[d * 5 + c]);
      });
    });
  });
  counter("requests_total", "Requests of peers handled, by route and status.", ["route", "status"], (set) => {
    for (const [route, r] of routes) {
      if (r.ok !== 0) set({ route, status: "ok" }, r.ok);
      for (const [status, n] of r.byCode) set({ route, status }, n);
    }
  });
  add(
    new RouteHistogramOf(
      `${prefix}request_duration_seconds`,
      "Time from a request's arrival to its answer, by route.",
      bounds,
      () => routes,
    ),
  );
  counter("errors_total", "Errors counted by connections, by code.", ["code"], (set) => {
    for (const [code, n] of current().errors) set({ code }, n);
  });
  counter(
    "refusals_total",
    "Work refused before it reached a route (connection limit, rate limit).",
    ["reason"],
    (set) => {
      for (const [reason, n] of refusals) set({ reason }, n);
    },
  );
  counter("streams_total", "Streams ended, by direction and status.", ["direction", "status"], (set) =>
    pairs(streams, "direction", "status", set),
  );
  counter("transfer_bytes_total", "Stream content bytes transferred.", ["direction"], (set) => {
    DIRECTIONS.forEach((direction, d) => {
      set({ direction }, transferBytes[d]);
    });
  });

  // A name the registry already holds (its owner's metric, or another adapter's with this prefix): prom-client
  // threw its untyped Error there, leaving the metrics registered before it in the registry for good.
  const names = made.map((m) => (m as unknown as { name: string }).name);
  const taken = names.filter((name) => registry.getSingleMetric(name) !== undefined);
  if (taken.length !== 0) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `prometheusMetrics: the registry already has ${taken.join(", ")} (choose another prefix, or close() the metrics that registered them)`,
    );
  }
  for (const m of made) registry.registerMetric(m);
  for (const [name, l] of listeners) diagnostics.subscribe(name, l);
  let closedOnce = false;
  return {
    registry,
    close() {
      if (closedOnce) return;
      closedOnce = true;
      for (const [name, l] of listeners) diagnostics.unsubscribe(name, l);
      live.clear();
      for (const name of names) registry.removeSingleMetric(name);
    },
  };
}
