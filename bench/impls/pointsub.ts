/**
 * pointsub over tcp:// (or unix:// with `--unix`, ws:// with `--ws`), the same workloads as the reference.
 * `--metrics`: the server runs with pointsub/metrics subscribed (its cost on the workloads).
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client, connect, createServer, rateLimit } from "../../src/index.ts";
import { benchRoutes } from "../lib/pointsub-routes.ts";
import { clientArgs, serveRole } from "../lib/role.ts";
import { traceAhead, traceLarge } from "../lib/trace.ts";
import { runWorkload } from "../lib/workload.ts";

const GiB = 1024 ** 3;
const limits = {
  maxMessageSize: GiB,
  maxAssemblyBytes: GiB,
  ...JSON.parse(process.env.POINTSUB_BENCH_OPTIONS ?? "{}"),
};

async function server(): Promise<void> {
  await serveRole(async () => {
    const metrics = process.argv.includes("--metrics")
      ? (await import("../../src/metrics/index.ts")).prometheusMetrics()
      : undefined;
    const srv = createServer(limits);
    // --ops: what a production server runs on every call — a middleware, a rate
    // limiter whose limits are never reached, and metrics (issue 12: together
    // they may cost at most 10 % of rpc-pipe).
    if (process.argv.includes("--ops")) {
      // POINTSUB_BENCH_OPS=mw|rl: only the middleware or only the rate limiter (to split the cost).
      const which = process.env.POINTSUB_BENCH_OPS ?? "all";
      if (which !== "rl") srv.use((_ctx, next) => next());
      if (which !== "mw")
        srv.use(
          rateLimit({
            session: { requests: { perSecond: 1e9 }, messages: { perSecond: 1e9 }, bytes: { perSecond: 1e15 } },
            global: { requests: { perSecond: 1e9 } },
          }),
        );
    }
    benchRoutes(srv);
    const url = process.argv.includes("--unix")
      ? `unix://${join(tmpdir(), `pointsub-bench-${process.pid}.sock`)}`
      : process.argv.includes("--ws")
        ? "ws://127.0.0.1:0/pointsub"
        : "tcp://127.0.0.1:0";
    const [bound] = await srv.listen(url);
    return {
      url: bound,
      close: async () => {
        await srv.close();
        if (metrics !== undefined) await metrics.registry.metrics();
        metrics?.close();
      },
    };
  });
}

async function client(): Promise<void> {
  const { url, workload, params } = clientArgs();
  const conn = await connect(url, limits);
  const decoder = new TextDecoder();
  // --pool: requests go through a Client's connection pool instead of the connection itself.
  const pool = process.argv.includes("--pool") ? new Client(limits) : undefined;
  const echo =
    pool === undefined
      ? (msg: Uint8Array) => conn.request("/echo/1.0.0", msg)
      : (msg: Uint8Array) => pool.request(url, "/echo/1.0.0", msg);
  await runWorkload(
    {
      // The documented high-rate pattern: send without awaiting, wait for drain.
      send: (msg) => {
        conn.send(msg);
        return conn.writable;
      },
      drained: () => conn.drain(),
      count: async () => Number(decoder.decode(await conn.request("/count/1.0.0"))),
      echo,
      sink: (big) => conn.request("/sink/1.0.0", big, { timeoutMs: 0 }),
      traceAhead: () => traceAhead(conn),
      // While tracing, an empty one-way message marks the start for the server's side (pointsub-routes.ts).
      traceLarge: () => traceLarge(conn, () => conn.send(new Uint8Array(0))),
      close: async () => {
        await pool?.close();
        await conn.close();
      },
      open: async () => {
        const c = await connect(url, limits);
        return { close: () => c.destroy(), echo: (msg: Uint8Array) => c.request("/echo/1.0.0", msg) };
      },
    },
    workload,
    params,
  );
}

if (process.argv[2] === "server") await server();
else await client();
