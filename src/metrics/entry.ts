/**
 * `pointsub/metrics`: Prometheus metrics from the diagnostics channels
 * (docs/OBSERVABILITY.md). Needs the optional peer dependency prom-client
 * (`npm install prom-client`); the main entry never loads it. This entry
 * loads without it: the first call that needs it (`prometheusMetrics`,
 * `new Registry()`, `collectDefaultMetrics`, `workerMetrics`,
 * `serveClusterMetrics`) throws ERR_INVALID_ARGUMENT saying so
 * (`prom-client.ts`); `serveMetrics` of a source of one's own needs none.
 *
 * @packageDocumentation
 */
export { serveClusterMetrics, workerMetrics } from "./cluster.ts";
export {
  METRICS_MAX_PIPELINED,
  type MetricsHttpOptions,
  type MetricsServer,
  type MetricsSource,
  parseHostPort,
  serveMetrics,
} from "./http.ts";
export { collectDefaultMetrics, Registry } from "./prom-client.ts";
export {
  DEFAULT_BUCKETS,
  type PrometheusMetrics,
  type PrometheusMetricsOptions,
  prometheusMetrics,
} from "./prometheus.ts";
