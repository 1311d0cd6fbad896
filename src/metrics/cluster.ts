/**
 * Metrics of every worker of a `node:cluster` pool as one exposition
 * (`pointsub serve --workers N --metrics host:port`), with prom-client's
 * `AggregatorRegistry`: each worker keeps its own registry
 * ({@link workerMetrics}); on each scrape the primary's endpoint
 * ({@link serveClusterMetrics}) asks every connected worker over IPC for its
 * metrics as JSON and answers their aggregate — counters, histograms and
 * most gauges summed, per-process figures by prom-client's per-metric
 * aggregator (e.g. `first`, `max`). A worker that does not answer within
 * prom-client's 5 s makes that scrape answer 500.
 */
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue, Registry } from "prom-client";
import { type MetricsHttpOptions, type MetricsServer, serveMetrics } from "./http.ts";

/**
 * `inner`'s metrics as plain data: prom-client's JSON form can hold
 * functions, which `runWorkers`' IPC channel (`serialization: "advanced"`,
 * structured clone) refuses where JSON would drop them.
 */
class PlainRegistry extends Registry {
  private readonly inner: Registry;

  constructor(inner: Registry) {
    super();
    this.inner = inner;
  }

  override async getMetricsAsJSON(): Promise<MetricObjectWithValues<MetricValue<string>>[]> {
    return JSON.parse(JSON.stringify(await this.inner.getMetricsAsJSON()));
  }
}

/**
 * In a worker: `registry` (e.g. `prometheusMetrics().registry`) is what
 * this worker answers when the primary aggregates. Call once per worker.
 */
export function workerMetrics(registry: Registry): void {
  AggregatorRegistry.setRegistries([new PlainRegistry(registry)]);
  // Its constructor adds the worker's IPC listener (once per process).
  new AggregatorRegistry();
}

/**
 * In the primary: `GET /metrics` on `address` (`host:port`) answers the workers' metrics aggregated
 * (bounded as {@link serveMetrics}).
 */
export function serveClusterMetrics(address: string, options?: MetricsHttpOptions): Promise<MetricsServer> {
  const aggregator = new AggregatorRegistry();
  return serveMetrics(
    { contentType: aggregator.contentType, metrics: () => aggregator.clusterMetrics() },
    address,
    options,
  );
}
