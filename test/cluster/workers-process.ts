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

const cfg = JSON.parse(process.argv[2] ?? "{}") as { workers?: number; reusePortOn?: number };
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

const pool = await serveWorkers(
  async (cluster) => {
    const server = createServer({ cluster, idempotency: true, reusePort: cfg.reusePortOn !== undefined });
    let count = 0;
    server.handle("/whoami", (_req, ctx) => ctx.session.id);
    server.handle("/pid", () => String(process.pid));
    server.handle("/ctl/broadcast", async (req) => {
      const r = await server.broadcast(req.text());
      return String(r.sent + r.queued);
    });
    server.handle("/ctl/send-to", async (req) => {
      const { id, text } = JSON.parse(req.text()) as { id: string; text: string };
      await server.sendTo(id, text);
      return "sent";
    });
    server.handle("/ctl/sessions", async () =>
      JSON.stringify((await server.sessionsInfo({ cluster: true })).map((s) => ({ id: s.id, node: s.node }))),
    );
    server.handle("/ctl/nodes", () => JSON.stringify(cluster.nodes().map((n) => n.id)));
    server.handle("/count", (req) => {
      count++;
      out({ event: "ran", key: req.text(), node: cluster.nodeId });
      return `${cluster.nodeId}:${count}`;
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
