/**
 * `serveWorkers` for test/cluster/workers.test.ts: the same script is the
 * primary (argv[2]: JSON `{ workers, reusePortOn? }` — with a port, every worker binds it
 * with SO_REUSEPORT instead of node:cluster's round-robin; prints JSON lines `ready` (its
 * workers, url), `exit` (worker, code, signal, replacement), `closed`) and
 * each worker (a server joined to the workers' cluster). Routes: `/whoami`
 * (the caller's session id), `/pid`, `/ctl/broadcast` (text), `/ctl/send-to`
 * (JSON `{ id, text }`), `/ctl/sessions`, `/ctl/nodes`, `/count` (keyed:
 * answers `<node>:<count>`, prints `ran` in the worker).
 */
import { serveWorkers } from "../../src/cluster/index.ts";
import { createServer } from "../../src/index.ts";
import { controlRoutes } from "./control-routes.ts";

const cfg = JSON.parse(process.argv[2] ?? "{}") as { workers?: number; reusePortOn?: number };
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

const pool = await serveWorkers(
  async (cluster) => {
    const server = createServer({ cluster, idempotency: true, reusePort: cfg.reusePortOn !== undefined });
    controlRoutes(server, cluster.nodeId, () => cluster.nodes(), out);
    server.handle("/pid", () => String(process.pid));
    server.handle("/ctl/broadcast", async (req) => {
      const r = await server.broadcast(req.text());
      return String(r.sent + r.queued);
    });
    await server.listen(`tcp://127.0.0.1:${cfg.reusePortOn ?? 0}`);
    return server;
  },
  { workers: cfg.workers ?? 2, maxRestarts: 3, shutdownTimeoutMs: 2000 },
);

if (pool !== undefined) {
  out({ event: "ready", url: pool.workers()[0]?.urls[0], workers: pool.workers() });
  pool.on("exit", (worker, code, signal, replacement) => out({ event: "exit", worker, code, signal, replacement }));
  pool.on("ready", (worker) => out({ event: "workerReady", worker }));
  await pool.closed;
  out({ event: "closed" });
}
