/**
 * One pointsub cluster node as a child process for test/cluster/: argv[2] is
 * JSON `{ engine: "redis" | "nats", url, nodeId, slowMs }`. Prints JSON lines:
 * `listening` (url), `started` / `ran` (of the counted handler, with its key).
 * Control routes (the test calls them as a client):
 * - `/ctl/broadcast` (payload: text to broadcast; filter `tag` with arg when the text starts with `tag:<arg>:`),
 * - `/ctl/broadcast-many` (JSON `{ n, gapMs, prefix }`: n broadcasts `<prefix><i>`, a gap between each),
 * - `/ctl/send-to` (JSON `{ id, text }`), `/ctl/sessions` (sessionsInfo({ cluster: true })),
 * - `/ctl/nodes` (the cluster's live nodes), `/whoami` (the caller's session id),
 * - `/count` (idempotent: counts, answers `<node>:<count>`), `/slow-count` (the same after `slowMs`).
 */

import { natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { createServer } from "../../src/index.ts";
import { controlRoutes } from "./control-routes.ts";

const cfg = JSON.parse(process.argv[2]) as { engine: "redis" | "nats"; url: string; nodeId: string; slowMs: number };
const common = {
  nodeId: cfg.nodeId,
  name: "test",
  heartbeatMs: 200,
  deadAfterMs: 700,
  requestTimeoutMs: 3000,
  // Generous: three processes start at once, with the suite, on a 2-core machine.
  connectTimeoutMs: 30_000,
  filters: { tag: (s: { principal: unknown; id: string }, arg: string | undefined) => s.id.endsWith(`${arg}`) },
};
const cluster =
  cfg.engine === "redis" ? redisCluster({ ...common, url: cfg.url }) : natsCluster({ ...common, servers: cfg.url });
const server = createServer({ cluster, idempotency: { leaseMs: 60_000, waitMs: 10_000 } });
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const tally = controlRoutes(server, cfg.nodeId, () => cluster.nodes(), out);

server.handle("/ctl/broadcast", async (req) => {
  const text = req.text();
  const m = /^tag:([^:]*):/.exec(text);
  const r = await server.broadcast(text, m === null ? {} : { filter: "tag", filterArg: m[1] });
  return JSON.stringify({ sent: r.sent, queued: r.queued, failed: r.failed.length });
});
server.handle("/ctl/broadcast-many", async (req) => {
  const { n, gapMs, prefix } = JSON.parse(req.text()) as { n: number; gapMs: number; prefix: string };
  for (let i = 0; i < n; i++) {
    await server.broadcast(`${prefix}${i}`);
    await sleep(gapMs);
  }
  return "done";
});
server.handle("/slow-count", async (req) => {
  out({ event: "started", key: req.text(), node: cfg.nodeId });
  await sleep(cfg.slowMs);
  tally.count++;
  out({ event: "ran", key: req.text(), node: cfg.nodeId });
  return `${cfg.nodeId}:${tally.count}`;
});

const [url] = await server.listen("tcp://127.0.0.1:0");
out({ event: "listening", url, node: cluster.nodeId, startupMs: Math.round(performance.now()) });
process.on("SIGTERM", () => {
  void server.close({ timeoutMs: 1000 }).then(() => process.exit(0));
});
