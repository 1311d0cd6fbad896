/**
 * `pointsub serve --workers N`: N worker processes (`node:cluster`) share
 * the listening port and form a cluster through the primary (pointsub/
 * cluster's `runWorkers` / `workerCluster`), so sessions, broadcasts and
 * the idempotency store span them. The primary forks, prints the
 * `listening` lines once every worker listens, restarts a worker that
 * dies, and on SIGINT/SIGTERM asks each to close gracefully. `--workers 1`
 * is one process.
 */
import nodeCluster from "node:cluster";
import { availableParallelism } from "node:os";
import type { ServerCluster } from "../cluster/index.ts";
import { PointSubError } from "../errors/error.ts";
import { relayOutput, writeOut } from "./output.ts";

/** What this process is in `serve`. */
export type ServeRole =
  | { readonly kind: "single" }
  | { readonly kind: "primary"; readonly workers: number }
  | {
      readonly kind: "worker";
      readonly cluster: ServerCluster;
      /** Tells the primary the server listens. */
      ready(urls: readonly string[]): void;
      /** Leaves the primary once the server closed (the process then ends). */
      done(): void;
    };

/** Environment variable through which the primary tells each worker how many workers share the limits. */
const WORKERS_ENV = "POINTSUB_SERVE_WORKERS";

/** The IPC message field of a worker's output lines, which the primary writes to stdout. */
const OUTPUT_FIELD = "pointsubServeOutput";

/** A worker's lines for the primary's stdout: false when the primary is gone (written to stdout then). */
function toPrimary(text: string): boolean {
  if (process.send === undefined || !process.connected) return false;
  process.send({ [OUTPUT_FIELD]: text }, undefined, undefined, () => {});
  return true;
}

/**
 * Each worker's share of a limit of the whole server (`--max-bytes`,
 * `--max-connections`, the per-address limit, the default memory budget):
 * `limit / workers`, rounded
 * down but at least 1, so N workers together never allow more than the
 * limit. Unchanged in a single process (or when the limit is unset).
 */
export function workerShare(limit: number | undefined): number | undefined {
  const n = nodeCluster.isWorker ? Number(process.env[WORKERS_ENV] ?? 1) : 1;
  if (limit === undefined || limit <= 0 || !(n > 1)) return limit;
  return Math.max(1, Math.floor(limit / n));
}

/**
 * Why `--metrics` or `--dashboard` (`flag`) could not listen on `address`: ERR_CONNECT naming the
 * option, as the server's own listeners say. (Node's error came through untyped: `ERR_HANDLER: listen
 * EADDRINUSE: …`, as if a handler had thrown, the option not named.) A PointSubError passes as it is.
 */
export function listenFailure(flag: string, address: string, err: unknown): PointSubError {
  if (err instanceof PointSubError) return err;
  const why = err instanceof Error ? err.message : String(err);
  return new PointSubError("ERR_CONNECT", `${flag} ${address}: cannot listen: ${why}`, { cause: err });
}

/** The largest `--workers` accepted is 4 per core, and never less than this. */
const MAX_WORKERS_MIN = 16;

/**
 * The role from `--workers`: by default one worker per core
 * (`os.availableParallelism()`), or this process alone with `--dashboard`
 * (one process's figures), and never more workers than the smallest
 * connection limit. The server's limits are divided among the workers
 * ({@link workerShare}); partial uploads resume on any worker.
 */
export async function serveRole(
  workers: number | undefined,
  dashboard: boolean,
  limits: readonly (number | undefined)[] = [],
): Promise<ServeRole> {
  if (nodeCluster.isWorker) {
    const { workerCluster, workerReady } = await import("../cluster/workers.ts");
    return {
      kind: "worker",
      cluster: workerCluster(),
      // From now on (listening) the primary writes this worker's lines: one writer of the shared stdout
      // keeps every line whole. (Until then, and after, lines are few: a start-up error's.)
      ready: (urls) => {
        relayOutput(toPrimary);
        workerReady(urls);
      },
      done: () => {
        relayOutput(undefined);
        nodeCluster.worker?.disconnect();
      },
    };
  }
  if (dashboard && workers !== undefined && workers > 1) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      "--dashboard serves one process's figures: use it with --workers 1 (its default)",
    );
  }
  // A typo (--workers 1000) must not start a thousand processes of ~75 MB each.
  const most = Math.max(MAX_WORKERS_MIN, 4 * availableParallelism());
  if (workers !== undefined && workers > most) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `--workers ${workers}: at most ${most} on this machine (4 per core, at least ${MAX_WORKERS_MIN})`,
    );
  }
  // Each worker gets at least one of every connection limit: no more workers than the smallest.
  let smallest = Number.POSITIVE_INFINITY;
  for (const l of limits) if (l !== undefined && l > 0) smallest = Math.min(smallest, l);
  if (workers !== undefined && workers > smallest) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `--workers ${workers} with a connection limit of ${smallest}: the limits are divided among the workers, each needs at least 1`,
    );
  }
  const n = workers ?? (dashboard ? 1 : Math.min(availableParallelism(), smallest));
  return n > 1 ? { kind: "primary", workers: n } : { kind: "single" };
}

/**
 * The primary: forks `workers` copies of this command, calls `announce`
 * with the first worker's URLs once all listen, and resolves once they all
 * closed (SIGINT/SIGTERM: each gets `shutdownMs` to finish; killed after).
 * Rejects when the first workers cannot start. With `metrics` (`host:port`,
 * `--metrics`), serves the workers' metrics aggregated there (each worker
 * answers with `workerMetrics`) from when they listen until they closed.
 */
export async function servePrimary(
  workers: number,
  shutdownMs: number,
  announce: (urls: readonly string[]) => void,
  say: (event: string, fields: Record<string, unknown>, line: string) => void,
  metrics?: string,
): Promise<void> {
  const { runWorkers } = await import("../cluster/workers.ts");
  const pool = runWorkers({ workers, shutdownTimeoutMs: shutdownMs, env: { [WORKERS_ENV]: String(workers) } });
  // The workers' lines, written here whole (see relayOutput).
  pool.on("message", (_w, m) => {
    const text = (m as { [OUTPUT_FIELD]?: unknown } | null)?.[OUTPUT_FIELD];
    if (typeof text === "string") writeOut(text);
  });
  pool.on("exit", (w, code, signal, replacement) =>
    say(
      "workerExit",
      { worker: w.id, pid: w.pid, code, signal, replacement: replacement?.id ?? null },
      `worker ${w.id} (pid ${w.pid}) exited (${signal ?? `code ${code}`})${replacement === undefined ? "" : `, worker ${replacement.id} started in its place`}`,
    ),
  );
  pool.on("gaveUp", (w) => say("workerGaveUp", { worker: w.id }, `worker ${w.id} not replaced: too many restarts`));
  // From the fork on: the pool closes its workers on SIGINT/SIGTERM (its own listeners), also while
  // they start. A stop asked for then ends as one asked for later does: closing, closed, exit 0 (it
  // said "the workers could not start (see their errors above)", no errors above, exit 1).
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      // A second signal ends it at once, as it ends one process (its handler gone, the signal's own action):
      // the workers killed, then this process by the signal. Before, this listener swallowed it and the
      // workers drained for up to --shutdown-timeout (+1 s) whatever the signals.
      stopListening();
      for (const w of pool.workers()) {
        try {
          process.kill(w.pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      process.kill(process.pid, signal);
      return;
    }
    signalled = true;
    say("closing", { timeoutMs: shutdownMs }, `closing: work in flight has ${shutdownMs / 1000} s to finish`);
  };
  const stopListening = () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  let first: Awaited<typeof pool.ready>;
  try {
    first = await pool.ready;
  } catch (e) {
    await pool.close();
    stopListening();
    if (signalled) {
      say("closed", {}, "closed");
      return;
    }
    const why = e instanceof PointSubError && e.code === "ERR_TIMEOUT" ? e.message : "see their errors above";
    throw new PointSubError("ERR_CONNECT", `the workers could not start (${why})`, { cause: e });
  }
  say(
    "workers",
    { workers: first.map((w) => ({ id: w.id, pid: w.pid })) },
    `${first.length} workers (pids ${first.map((w) => w.pid).join(", ")})`,
  );
  let metricsServer: { url: string; close(): Promise<void> } | undefined;
  if (metrics !== undefined) {
    try {
      metricsServer = await (await import("../metrics/cluster.ts")).serveClusterMetrics(metrics);
    } catch (e) {
      await pool.close();
      stopListening();
      throw listenFailure("--metrics", metrics, e);
    }
    say("metrics", { url: metricsServer.url }, `metrics on ${metricsServer.url} (every worker's, aggregated)`);
  }
  announce(first[0]?.urls ?? []);
  await pool.closed;
  await metricsServer?.close();
  stopListening();
  if (!signalled) throw new PointSubError("ERR_CONNECTION_CLOSED", "every worker exited");
  say("closed", {}, "closed");
}
