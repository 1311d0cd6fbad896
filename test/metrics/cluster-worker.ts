/**
 * A `node:cluster` worker for test/metrics/cluster.test.ts: counts
 * `scraped_worker_total` up by its worker id and answers the primary's
 * aggregation (`workerMetrics`). With `POINTSUB_TEST_DIE_ON_SCRAPE` equal
 * to its worker id it exits when asked for its metrics (before answering);
 * with `POINTSUB_TEST_MUTE_ON_SCRAPE`, it never answers.
 */
import cluster from "node:cluster";
import { Counter, Registry } from "prom-client";
import { workerMetrics } from "../../src/metrics/cluster.ts";

const id = String(cluster.worker?.id);
const registry = new Registry();
new Counter({ name: "scraped_worker_total", help: "worker ids", registers: [registry] }).inc(Number(id));
const isScrape = (m: unknown) => (m as { type?: unknown } | null)?.type === "prom-client:getMetricsReq";
if (process.env.POINTSUB_TEST_MUTE_ON_SCRAPE === id) {
  // Its answer never comes: prom-client's listener is not installed.
} else workerMetrics(registry);
if (process.env.POINTSUB_TEST_DIE_ON_SCRAPE === id) {
  process.on("message", (m) => {
    if (isScrape(m)) process.exit(3);
  });
}
setInterval(() => {}, 60_000);
