/**
 * Metrics of every worker of a `node:cluster` pool as one exposition
 * (`pointsub serve --workers N --metrics host:port`), with prom-client's
 * `AggregatorRegistry`: each worker keeps its own registry
 * ({@link workerMetrics}) and answers prom-client's IPC request with its
 * metrics as JSON; on each scrape the primary's endpoint
 * ({@link serveClusterMetrics}) asks every connected worker and answers
 * their aggregate — counters, histograms and most gauges summed,
 * per-process figures by prom-client's per-metric aggregator (e.g.
 * `first`, `max`). A worker that exits meanwhile is counted out (the
 * scrape answers the others, as the next one would); one that does not
 * answer within 5 s makes that scrape answer 500.
 */
import type { Cluster, Worker } from "node:cluster";
import type { MetricObjectWithValues, MetricValue, Registry } from "prom-client";
import { PointSubError } from "../index.ts";
import { type MetricsHttpOptions, type MetricsServer, serveMetrics } from "./http.ts";
import { type PromClientModule, promClient } from "./prom-client.ts";

/** prom-client's IPC messages (its worker side answers them). */
const GET_METRICS_REQ = "prom-client:getMetricsReq";
const GET_METRICS_RES = "prom-client:getMetricsRes";
/** How long a scrape waits for the workers (prom-client's own wait). */
const SCRAPE_TIMEOUT_MS = 5000;

type WorkerMetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/**
 * `inner`'s metrics as plain data: prom-client's JSON form can hold
 * functions, which `runWorkers`' IPC channel (`serialization: "advanced"`,
 * structured clone) refuses where JSON would drop them.
 */
function plainRegistry(pc: PromClientModule, inner: Registry): Registry {
  class PlainRegistry extends pc.Registry {
    override async getMetricsAsJSON(): Promise<WorkerMetricsJson> {
      return JSON.parse(JSON.stringify(await inner.getMetricsAsJSON()));
    }
  }
  return new PlainRegistry();
}

/**
 * In a worker: `registry` (e.g. `prometheusMetrics().registry`) is what
 * this worker answers when the primary aggregates. Call once per worker.
 */
export function workerMetrics(registry: Registry): void {
  const pc = promClient();
  // Anything else (`workerMetrics(metrics)` for `metrics.registry`) was taken, and every scrape failed on it.
  if (typeof (registry as Partial<Registry> | null)?.getMetricsAsJSON !== "function") {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      "workerMetrics needs a prom-client Registry (prometheusMetrics().registry)",
    );
  }
  pc.AggregatorRegistry.setRegistries([plainRegistry(pc, registry)]);
  // Its constructor adds the worker's IPC listener (once per process).
  new pc.AggregatorRegistry();
}

/** One scrape waiting for the workers it asked. */
interface Scrape {
  /** Workers asked that have not answered, by id. */
  readonly waiting: Set<number>;
  readonly answers: WorkerMetricsJson[];
  readonly timer: ReturnType<typeof setTimeout>;
  resolve(text: Promise<string>): void;
  reject(err: Error): void;
}

/**
 * The workers' metrics aggregated, asked over prom-client's IPC messages. Not prom-client's
 * `clusterMetrics()`: a worker that died while a scrape waited made it wait the whole 5 s and answer 500,
 * and a scrape that timed out stayed in its table (with the answers it had) for the life of the process.
 */
class ClusterScraper {
  private readonly cluster: Cluster;
  private readonly scrapes = new Map<number, Scrape>();
  private next = 0;

  constructor(cluster: Cluster) {
    this.cluster = cluster;
    cluster.on("message", this.onMessage);
    cluster.on("exit", this.onExit);
  }

  close(): void {
    this.cluster.off("message", this.onMessage);
    this.cluster.off("exit", this.onExit);
    for (const [id, s] of this.scrapes) this.end(id, s, new Error("the metrics endpoint closed"));
  }

  metrics(): Promise<string> {
    const id = this.next++;
    return new Promise<string>((resolve, reject) => {
      const waiting = new Set<number>();
      const timer = setTimeout(() => {
        const s = this.scrapes.get(id);
        if (s === undefined) return;
        const ids = [...s.waiting].join(", ");
        this.end(id, s, new Error(`worker ${ids} did not answer for its metrics within ${SCRAPE_TIMEOUT_MS} ms`));
      }, SCRAPE_TIMEOUT_MS);
      const scrape: Scrape = { waiting, answers: [], timer, resolve, reject };
      this.scrapes.set(id, scrape);
      for (const w of Object.values(this.cluster.workers ?? {})) {
        if (w === undefined || !w.isConnected()) continue;
        waiting.add(w.id);
        // A send to a worker that just died: its exit counts it out.
        w.send({ type: GET_METRICS_REQ, requestId: id }, (err: Error | null) => {
          if (err !== null) this.answered(id, w.id, undefined);
        });
      }
      this.settle(id, scrape);
    });
  }

  private readonly onMessage = (worker: Worker, m: unknown): void => {
    const msg = m as { type?: unknown; requestId?: unknown; metrics?: unknown; error?: unknown } | null;
    if (msg?.type !== GET_METRICS_RES || typeof msg.requestId !== "number") return;
    const s = this.scrapes.get(msg.requestId);
    if (s === undefined || !s.waiting.has(worker.id)) return; // late (after its scrape ended), or not asked
    if (msg.error !== undefined) {
      this.end(msg.requestId, s, new Error(`worker ${worker.id}: ${String(msg.error)}`));
      return;
    }
    this.answered(msg.requestId, worker.id, Array.isArray(msg.metrics) ? (msg.metrics as WorkerMetricsJson[]) : []);
  };

  private readonly onExit = (worker: Worker): void => {
    for (const id of [...this.scrapes.keys()]) this.answered(id, worker.id, undefined);
  };

  /** Worker `worker` answered scrape `id` (`metrics` undefined: it is gone, counted out). */
  private answered(id: number, worker: number, metrics: WorkerMetricsJson[] | undefined): void {
    const s = this.scrapes.get(id);
    if (s === undefined || !s.waiting.delete(worker)) return;
    if (metrics !== undefined) s.answers.push(...metrics);
    this.settle(id, s);
  }

  private settle(id: number, s: Scrape): void {
    if (s.waiting.size !== 0) return;
    clearTimeout(s.timer);
    this.scrapes.delete(id);
    try {
      s.resolve(promClient().AggregatorRegistry.aggregate(s.answers).metrics());
    } catch (err) {
      s.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private end(id: number, s: Scrape, err: Error): void {
    clearTimeout(s.timer);
    this.scrapes.delete(id);
    s.reject(err);
  }
}

/**
 * In the primary: `GET /metrics` on `address` (`host:port`) answers the workers' metrics aggregated
 * (bounded as {@link serveMetrics}).
 */
export async function serveClusterMetrics(address: string, options?: MetricsHttpOptions): Promise<MetricsServer> {
  const pc = promClient();
  // Loaded here, as prom-client does: importing node:cluster crashed some application servers (Passenger).
  const scraper = new ClusterScraper((await import("node:cluster")).default);
  let server: MetricsServer;
  try {
    server = await serveMetrics(
      { contentType: pc.Registry.PROMETHEUS_CONTENT_TYPE, metrics: () => scraper.metrics() },
      address,
      options,
    );
  } catch (err) {
    scraper.close();
    throw err;
  }
  return {
    ...server,
    close: async () => {
      scraper.close();
      await server.close();
    },
  };
}
