/**
 * All cores of one machine: worker processes (`node:cluster`) share one
 * listening port and form a cluster through their primary (the IPC relay,
 * no Redis or NATS), so `broadcast`, `sendTo` and `sessionsInfo({ cluster:
 * true })` span every worker and the idempotency store is shared.
 *
 * ```ts
 * import { createServer } from "pointsub";
 * import { serveWorkers } from "pointsub/cluster";
 * await serveWorkers(async (cluster) => {
 *   const server = createServer({ cluster, idempotency: true });
 *   server.handle("/echo", (req) => req.data);
 *   await server.listen("tcp://0.0.0.0:4000");
 *   return server;
 * }, { workers: 4 });
 * ```
 *
 * The script runs in the primary (which forks and supervises, and never
 * calls `setup`) and in each worker (which calls it). Connections are
 * spread by `node:cluster`'s round-robin: the primary accepts and hands
 * each connection to the next worker, which then serves it alone.
 */
import nodeCluster, { type Worker } from "node:cluster";
import { availableParallelism } from "node:os";
import { PointSubError } from "../errors/error.ts";
import { Emitter } from "../util/emitter.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import { DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES } from "./idempotency-store.ts";
import { ipcEngine } from "./ipc-engine.ts";
import { IpcRelay } from "./ipc-relay.ts";
import { isTagged, SERIALIZATION_ENV, TAG } from "./ipc-wire.ts";
import { Cluster, type ClusterOptions } from "./member.ts";

/** Options of {@link runWorkers}. */
export interface WorkersOptions {
  /** Worker processes. Default: the machine's cores (`os.availableParallelism()`). */
  workers?: number;
  /**
   * Most workers restarted within `restartWindowMs`; beyond, a worker that
   * dies is not replaced (`gaveUp`). Default 10. A first worker that exits
   * before it is ready is not restarted: the pool did not start (its
   * listen failed, a port in use, a bad certificate…: a new process would
   * fail alike), so `ready` rejects and the pool closes.
   */
  maxRestarts?: number;
  /** The window of `maxRestarts`, in ms. Default 60,000. */
  restartWindowMs?: number;
  /**
   * How long a worker may take from its fork to ready (its server listening:
   * `serveWorkers` / {@link workerReady}), in ms. One that takes longer is
   * killed (SIGKILL; event `startTimeout`): a first worker makes `ready`
   * reject with `ERR_TIMEOUT` and the pool close; a replacement counts as a
   * restart that died (replaced within `maxRestarts`). Default 30,000.
   */
  startTimeoutMs?: number;
  /** On `close` (SIGINT/SIGTERM), how long workers get to close gracefully before they are killed, in ms. Default 10,000. */
  shutdownTimeoutMs?: number;
  /** Close on SIGINT and SIGTERM of the primary. Default true. */
  signals?: boolean;
  /** The script workers run (`node:cluster`'s `exec`). Default: this process's main script. */
  exec?: string;
  /** Its arguments. Default: this process's. */
  args?: string[];
  /** Node options of the workers. Default: this process's. */
  execArgv?: string[];
  /** Environment added to the workers'. */
  env?: Record<string, string>;
  /** Most keys of the workers' shared key-value store (the idempotency store). Default 100,000. */
  maxSharedKeys?: number;
  /** Most bytes of it. Default 64 MiB. */
  maxSharedBytes?: number;
}

/** A worker of a {@link WorkerPool}. */
export interface WorkerInfo {
  /** `node:cluster`'s worker id (never reused: a replacement gets a new one). */
  readonly id: number;
  readonly pid: number;
  /** Its cluster node id (`w<id>`): the prefix of its session ids. */
  readonly nodeId: string;
  /** Its server's URLs, once it told (`serveWorkers` / {@link workerReady}). */
  readonly urls: readonly string[];
}

/** Events of a {@link WorkerPool}. */
export interface WorkerPoolEvents {
  /** A worker's server listens (`serveWorkers` / {@link workerReady}). */
  ready: [worker: WorkerInfo];
  /** A worker exited; `replacement` is the worker started in its place, if any. */
  exit: [worker: WorkerInfo, code: number | null, signal: string | null, replacement: WorkerInfo | undefined];
  /** A worker was not ready within `startTimeoutMs`: it is killed now (its `exit` follows). */
  startTimeout: [worker: WorkerInfo];
  /** A worker died and was not replaced: `maxRestarts` reached within `restartWindowMs`. */
  gaveUp: [worker: WorkerInfo];
  /** An IPC message of the application from a worker (pointsub's own are not emitted). */
  message: [worker: WorkerInfo, message: unknown];
}

interface Entry {
  worker: Worker;
  info: { id: number; pid: number; nodeId: string; urls: string[] };
  /** Until it is ready: kills it at `startTimeoutMs`. */
  startTimer: ReturnType<typeof setTimeout> | undefined;
  /** One of the pool's first workers (`ready` waits for them), not a replacement. */
  initial: boolean;
  /** It said it is ready (its server listens: on `info.urls`, which may be none). */
  ready: boolean;
}

/** prom-client's `AggregatorRegistry` answers (`{ type: "prom-client:…" }`): not the application's. */
function isPromClientMessage(m: unknown): boolean {
  const type = typeof m === "object" && m !== null ? (m as { type?: unknown }).type : undefined;
  return typeof type === "string" && type.startsWith("prom-client:");
}

function count(name: string, v: number | undefined, fallback: number, min: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be an integer ≥ ${min}, not ${String(v)}`);
  }
  return v;
}

/**
 * The primary's pool of workers: forks them, relays their cluster, replaces
 * one that dies (bounded), and closes them gracefully. Built by
 * {@link runWorkers}.
 */
export class WorkerPool extends Emitter<WorkerPoolEvents> {
  /**
   * Resolves once every first worker is ready (told its URLs) and no
   * replacement is still starting: every worker it lists is ready (a
   * replacement of a first worker that died after it was ready, forked while
   * another first worker still started, was listed not ready yet, without
   * its URLs).
   */
  readonly ready: Promise<WorkerInfo[]>;
  /** Resolves once the pool closed: every worker exited (after `close`, or when all died and none could be replaced). */
  readonly closed: Promise<void>;
  private readonly relay: IpcRelay;
  private readonly entries = new Map<number, Entry>();
  private readonly restarts: number[] = [];
  private readonly maxRestarts: number;
  private readonly restartWindowMs: number;
  private readonly shutdownTimeoutMs: number;
  private readonly startTimeoutMs: number;
  private closing: Promise<void> | undefined;
  private readonly signalsOn: boolean;
  private resolveClosed!: () => void;
  private readyLeft: number;
  /** `ready` resolved. */
  private readyDone = false;
  private resolveReady!: (w: WorkerInfo[]) => void;
  private rejectReady!: (e: Error) => void;

  /** Use {@link runWorkers}. */
  constructor(options: WorkersOptions = {}) {
    super();
    if (!nodeCluster.isPrimary) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "runWorkers runs in the primary process");
    }
    const n = count("workers", options.workers, availableParallelism(), 1);
    this.maxRestarts = count("maxRestarts", options.maxRestarts, 10, 0);
    this.restartWindowMs = count("restartWindowMs", options.restartWindowMs, 60_000, 1);
    this.shutdownTimeoutMs = count("shutdownTimeoutMs", options.shutdownTimeoutMs, 10_000, 0);
    this.startTimeoutMs = count("startTimeoutMs", options.startTimeoutMs, 30_000, 1);
    this.signalsOn = options.signals !== false;
    this.relay = new IpcRelay({
      advanced: true,
      maxKeys: options.maxSharedKeys,
      maxBytes: options.maxSharedBytes,
    });
    this.readyLeft = n;
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {}); // also reported by closed / gaveUp
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    nodeCluster.setupPrimary({
      serialization: "advanced",
      ...(options.exec === undefined ? {} : { exec: options.exec }),
      ...(options.args === undefined ? {} : { args: options.args }),
      ...(options.execArgv === undefined ? {} : { execArgv: options.execArgv }),
    });
    // Node removes its own serialization variable from a child's environment: tell the workers in ours.
    // And each worker's share of the shared store (workerCluster bounds its idempotency answers by it): each
    // node keeps up to idempotencyMaxEntries / idempotencyMaxBytes (10,000, 32 MiB), so 3 workers' answers
    // (10 of one principal's) were over the store's 64 MiB — one client flooding unique keys filled it, and
    // every keyed request and cluster rate-limit lease of every client failed ERR_OVERLOADED for up to 10 min.
    // Half the store among them: an answer is written before the oldest past the quota is deleted, and claims and
    // rate-limit leases need room too (shares of the whole store filled it, and nothing was deleted again).
    const share = (total: number | undefined, fallback: number) => Math.max(1, Math.floor((total ?? fallback) / 2 / n));
    this.env = {
      ...options.env,
      [SERIALIZATION_ENV]: "advanced",
      [SHARE_ENV]: `${share(options.maxSharedKeys, 100_000)},${share(options.maxSharedBytes, 64 * 1024 * 1024)}`,
    };
    if (this.signalsOn) {
      process.on("SIGINT", this.onSignal);
      process.on("SIGTERM", this.onSignal);
    }
    for (let i = 0; i < n; i++) this.fork(true);
  }

  private readonly env: Record<string, string>;

  private readonly onSignal = (): void => {
    void this.close();
  };

  /** The live workers. */
  workers(): WorkerInfo[] {
    return [...this.entries.values()].map((e) => ({ ...e.info, urls: [...e.info.urls] }));
  }

  /** Keys in the workers' shared store. */
  get sharedKeys(): number {
    return this.relay.keys;
  }

  private fork(initial = false): Entry {
    const worker = nodeCluster.fork(this.env);
    const entry: Entry = {
      worker,
      info: { id: worker.id, pid: worker.process.pid ?? 0, nodeId: `w${worker.id}`, urls: [] },
      startTimer: undefined,
      initial,
      ready: false,
    };
    // A timer's range at most: past it Node fires the timer at once (startTimeoutMs 3e9 killed every worker).
    entry.startTimer = setTimeout(() => this.onStartTimeout(entry), Math.min(this.startTimeoutMs, MAX_TIMER_MS));
    this.entries.set(worker.id, entry);
    worker.on("message", (m: unknown) => {
      if (isTagged(m) && m[TAG] === "ready") {
        if (Array.isArray(m.urls)) this.onReady(entry, m.urls);
        return;
      }
      if (this.relay.receive(worker, m)) return;
      if (isPromClientMessage(m)) return; // metrics aggregation (pointsub/metrics' serveClusterMetrics) has its own listener
      this.tell("message", { ...entry.info }, m);
    });
    worker.on("error", () => {}); // a send to a worker that just died: its exit follows
    worker.once("exit", (code, signal) => this.onExit(entry, code, signal));
    return entry;
  }

  /**
   * Emits `event` to the application's listeners. One that throws is the application's bug: it is
   * surfaced (thrown again from a microtask: an uncaught exception), the listeners after it still run,
   * and the pool's own work goes on. Before, it unwound into that work: a throwing `ready` listener
   * left `ready` pending for ever, a throwing `exit` one skipped the close once every worker was gone,
   * and a throwing `startTimeout` one skipped killing the worker.
   */
  private tell<E extends keyof WorkerPoolEvents>(event: E, ...args: WorkerPoolEvents[E]): void {
    try {
      this.emit(event, ...args);
    } catch (err) {
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  private onStartTimeout(entry: Entry): void {
    entry.startTimer = undefined;
    if (!this.entries.has(entry.info.id)) return;
    this.tell("startTimeout", { ...entry.info });
    entry.worker.process.kill("SIGKILL");
    if (entry.initial && this.readyLeft > 0 && this.closing === undefined) {
      // A first worker: the pool did not start.
      this.rejectReady(
        new PointSubError(
          "ERR_TIMEOUT",
          `worker ${entry.info.id} (pid ${entry.info.pid}) not ready within startTimeoutMs (${this.startTimeoutMs} ms)`,
        ),
      );
      void this.close();
    }
  }

  private onReady(entry: Entry, urls: unknown[]): void {
    clearTimeout(entry.startTimer);
    entry.startTimer = undefined;
    const first = !entry.ready;
    entry.ready = true;
    entry.info.urls = urls.filter((u): u is string => typeof u === "string").slice(0, 16);
    if (this.closing !== undefined) {
      // Ready after the close asked it to close: that request came before it listened for one (serveWorkers
      // does once its setup is done), and was lost — it stayed until killed, shutdownTimeoutMs + 1 s later.
      try {
        entry.worker.send({ [TAG]: "shutdown" });
      } catch {
        entry.worker.process.kill("SIGTERM");
      }
    }
    this.tell("ready", { ...entry.info });
    // A first worker's: a replacement's (of one that was ready) is not one of those `ready` waits for.
    if (first && entry.initial && this.readyLeft > 0) this.readyLeft--;
    this.settleReady();
  }

  /** Resolves `ready` once every first worker was ready and every worker now in the pool is (see {@link ready}). */
  private settleReady(): void {
    if (this.readyDone || this.readyLeft > 0 || this.closing !== undefined || this.entries.size === 0) return;
    for (const e of this.entries.values()) if (!e.ready) return;
    this.readyDone = true;
    this.resolveReady(this.workers());
  }

  private onExit(entry: Entry, code: number | null, signal: string | null): void {
    clearTimeout(entry.startTimer);
    entry.startTimer = undefined;
    this.entries.delete(entry.info.id);
    this.relay.detach(entry.worker);
    let replacement: Entry | undefined;
    const voluntary = entry.worker.exitedAfterDisconnect === true;
    if (this.closing === undefined && !voluntary && entry.initial && this.readyLeft > 0 && !entry.ready) {
      // A first worker died before it was ready: the pool did not start. Not restarted (before, a port
      // in use had maxRestarts workers fail one after the other, each printing its error, for seconds).
      this.tell("exit", { ...entry.info }, code, signal, undefined);
      this.rejectReady(
        new PointSubError(
          "ERR_CONNECTION_CLOSED",
          `worker ${entry.info.id} (pid ${entry.info.pid}) exited (${signal ?? `code ${code}`}) before it was ready`,
        ),
      );
      void this.close();
      return;
    }
    if (this.closing === undefined && !voluntary) {
      const now = performance.now();
      while (this.restarts.length > 0 && (this.restarts[0] as number) <= now - this.restartWindowMs)
        this.restarts.shift();
      if (this.restarts.length < this.maxRestarts) {
        this.restarts.push(now);
        replacement = this.fork();
      } else {
        this.tell("gaveUp", { ...entry.info });
      }
    }
    this.tell("exit", { ...entry.info }, code, signal, replacement === undefined ? undefined : { ...replacement.info });
    if (this.entries.size === 0) {
      this.rejectReady(new PointSubError("ERR_CONNECTION_CLOSED", "every worker exited"));
      void this.close();
    } else this.settleReady(); // a replacement still starting died, and none replaced it: the others may all be ready
  }

  /**
   * Closes gracefully: every worker is asked to close (its process gets a
   * `SIGTERM` event through IPC: `serveWorkers` closes its server, with the
   * workers' own handlers a CLI does the same) and is killed if it has not
   * exited within `shutdownTimeoutMs`. No worker is replaced meanwhile.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.signalsOn) {
        process.off("SIGINT", this.onSignal);
        process.off("SIGTERM", this.onSignal);
      }
      const live = [...this.entries.values()];
      const exited = live.map(
        (e) =>
          new Promise<void>((resolve) => {
            if (e.worker.process.exitCode !== null || e.worker.process.signalCode !== null) return resolve();
            e.worker.process.once("exit", () => resolve());
          }),
      );
      for (const e of live) {
        // A worker still starting serves nothing yet, and may not listen for "shutdown" yet (it was lost:
        // a SIGINT to `serve --workers 2` while they started waited out shutdownTimeoutMs + 1 s, 11 s,
        // and killed them): SIGTERM, which a worker that set up its handler takes as the message.
        if (!e.ready) {
          e.worker.process.kill("SIGTERM");
          continue;
        }
        try {
          e.worker.send({ [TAG]: "shutdown" });
        } catch {
          e.worker.process.kill("SIGTERM");
        }
      }
      const kill = setTimeout(
        () => {
          for (const e of live) e.worker.process.kill("SIGKILL");
        },
        Math.min(this.shutdownTimeoutMs + 1_000, MAX_TIMER_MS),
      );
      await Promise.all(exited);
      clearTimeout(kill);
      this.relay.close();
      this.resolveClosed();
    })();
    return this.closing;
  }
}

/**
 * In the primary: forks `workers` worker processes running this script (or
 * `exec`) and relays their cluster. See {@link serveWorkers} for the whole.
 */
export function runWorkers(options: WorkersOptions = {}): WorkerPool {
  return new WorkerPool(options);
}

/** Whether this process is a worker of `node:cluster`. */
export function isWorker(): boolean {
  return nodeCluster.isWorker;
}

let shutdownHooked = false;

/**
 * In a worker: the cluster its server joins (`createServer({ cluster:
 * workerCluster() })`), over the primary's relay. Its node id is
 * `w<worker id>`. When the primary closes, the worker's process gets a
 * `SIGTERM` event (handle it to close the server, then call
 * `process.disconnect()` or let `serveWorkers` do both).
 */
export function workerCluster(options: ClusterOptions = {}): Cluster {
  const worker = nodeCluster.worker;
  if (worker === undefined) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      "workerCluster runs in a worker process (runWorkers / serveWorkers)",
    );
  }
  if (!shutdownHooked) {
    shutdownHooked = true;
    worker.on("message", (m: unknown) => {
      if (isTagged(m) && m[TAG] === "shutdown") process.emit("SIGTERM", "SIGTERM");
    });
  }
  return new Cluster(ipcEngine(), { nodeId: `w${worker.id}`, ...options, ...shareOfStore(options) });
}

/** Each worker's share of half the workers' shared store, `<keys>,<bytes>` (set by the pool: {@link WorkerPool}). */
const SHARE_ENV = "POINTSUB_WORKER_STORE_SHARE";

/**
 * The idempotency quotas of a worker not given its own: its share of half the shared store (at most the
 * defaults), so that the workers' answers together fit in it with room for the next ones, claims and leases.
 */
function shareOfStore(options: ClusterOptions): ClusterOptions {
  const [keys, bytes] = (process.env[SHARE_ENV] ?? "").split(",").map(Number);
  const out: ClusterOptions = {};
  if (options.idempotencyMaxEntries === undefined && Number.isSafeInteger(keys) && keys >= 1) {
    out.idempotencyMaxEntries = Math.min(keys, DEFAULT_MAX_ENTRIES);
  }
  if (options.idempotencyMaxBytes === undefined && Number.isSafeInteger(bytes) && bytes >= 1) {
    out.idempotencyMaxBytes = Math.min(bytes, DEFAULT_MAX_BYTES);
  }
  return out;
}

/** In a worker: tells the primary its server listens on `urls` (the pool's `ready`). `serveWorkers` calls it. */
export function workerReady(urls: readonly string[]): void {
  process.send?.({ [TAG]: "ready", urls: [...urls] });
}

/** What `serveWorkers`' setup returns: the worker's server (or anything closed the same way). */
export interface WorkerServer {
  readonly urls: string[];
  close(options?: { timeoutMs?: number }): Promise<void>;
}

/** Options of {@link serveWorkers}: the pool's and the workers' cluster's. */
export interface ServeWorkersOptions extends WorkersOptions, Omit<ClusterOptions, "nodeId"> {}

/**
 * All cores: in the primary, forks the workers and resolves to the
 * {@link WorkerPool} once they all listen; in a worker, calls `setup` with
 * the workers' cluster — build and listen the server exactly as with
 * `createServer`, passing `cluster` — and resolves to undefined. A worker
 * closes its server gracefully (`shutdownTimeoutMs`) when the primary
 * closes or on its own SIGINT/SIGTERM, then leaves.
 */
export async function serveWorkers(
  setup: (cluster: Cluster) => WorkerServer | Promise<WorkerServer>,
  options: ServeWorkersOptions = {},
): Promise<WorkerPool | undefined> {
  if (nodeCluster.isPrimary) {
    const pool = runWorkers(options);
    await pool.ready;
    return pool;
  }
  const { workers: _w, maxRestarts: _m, restartWindowMs: _r, signals: _s, exec: _e, args: _a, ...rest } = options;
  const cluster = workerCluster(rest);
  const server = await setup(cluster);
  let closing = false;
  const stop = () => {
    if (closing) return;
    closing = true;
    void server
      .close({ timeoutMs: options.shutdownTimeoutMs ?? 10_000 })
      .finally(() => nodeCluster.worker?.disconnect());
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  workerReady(server.urls);
  return undefined;
}
