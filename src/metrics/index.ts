/**
 * `pointsub/metrics`: Prometheus metrics from the diagnostics channels
 * (docs/OBSERVABILITY.md). Needs the optional peer dependency prom-client
 * (`npm install prom-client`); the main entry never loads it.
 *
 * @packageDocumentation
 */
export { collectDefaultMetrics, Registry } from "prom-client";
export { serveClusterMetrics, workerMetrics } from "./cluster.ts";
export {
  METRICS_MAX_PIPELINED,
  type MetricsHttpOptions,
  type MetricsServer,
  type MetricsSource,
  parseHostPort,
  serveMetrics,
} from "./http.ts";
export {
  DEFAULT_BUCKETS,
  type PrometheusMetrics,
  type PrometheusMetricsOptions,
  prometheusMetrics,
} from "./prometheus.ts";
