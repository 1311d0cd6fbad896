/**
 * `pointsub/cluster`: pointsub servers on several processes or machines
 * behaving as one server, over an engine the operator already runs —
 * Redis (`redisCluster`, the `redis` package) or NATS (`natsCluster`, the
 * `nats` package); each is an optional peer dependency, loaded only when a
 * cluster of its kind starts — or the worker processes of one machine
 * (`serveWorkers`, `runWorkers` + `workerCluster`: `node:cluster`, the
 * primary relays, nothing else to run).
 *
 * ```ts
 * import { createServer } from "pointsub";
 * import { redisCluster } from "pointsub/cluster";
 * const server = createServer({ cluster: redisCluster({ url: "redis://127.0.0.1:6379" }), idempotency: true });
 * ```
 *
 * See docs/ARCHITECTURE.md ("Cluster") for what crosses the bus and the
 * delivery guarantees.
 */
import { Cluster, type ClusterOptions, MAX_TTL_MS } from "./member.ts";
import { natsEngine } from "./nats-engine.ts";
import { redisEngine } from "./redis-engine.ts";

export type {
  ClusterLocal,
  ClusterMembership,
  ClusterSessionInfo,
  ServerBroadcastOptions,
  ServerCluster,
} from "../server/server.ts";
export type { ClusterSecret } from "./bus-auth.ts";
export type { ClusterEngine, KvEntry } from "./engine.ts";
export {
  type EngineIdempotencyStats,
  type EngineIdempotencyStore,
  type EngineIdempotencyStoreOptions,
  engineIdempotencyStore,
} from "./idempotency-store.ts";
export { type IpcChannel, ipcEngine } from "./ipc-engine.ts";
export { IpcRelay, type IpcRelayOptions, type RelayPeer } from "./ipc-relay.ts";
export {
  Cluster,
  type ClusterEvents,
  type ClusterNode,
  type ClusterOptions,
  type ClusterStats,
  type NamedFilter,
} from "./member.ts";
export { type ClusterRateLimitOptions, clusterRateLimit } from "./rate-limit.ts";
export {
  isWorker,
  runWorkers,
  type ServeWorkersOptions,
  serveWorkers,
  type WorkerInfo,
  WorkerPool,
  type WorkerPoolEvents,
  type WorkerServer,
  type WorkersOptions,
  workerCluster,
  workerReady,
} from "./workers.ts";

/** Options of {@link redisCluster}. */
export interface RedisClusterOptions extends ClusterOptions {
  /** The Redis server: `redis://host:port` (`rediss://` for TLS; user and password in the URL). */
  url: string;
  /** Longest wait between reconnection attempts to Redis, in ms. Default 1,000. */
  maxReconnectDelayMs?: number;
}

/** Options of {@link natsCluster}. */
export interface NatsClusterOptions extends ClusterOptions {
  /** The NATS servers: `"127.0.0.1:4222"`, `"nats://host:port"`, or a list. */
  servers: string | string[];
  /**
   * Keep the shared idempotency store in a JetStream key-value bucket
   * (`pointsub_<name>`; the server must run JetStream, `nats-server -js`).
   * `false`: no shared store (each server keeps its own). Default true.
   */
  jetstream?: boolean;
}

/**
 * A cluster on Redis: PUBLISH/SUBSCRIBE carry heartbeats, broadcasts and
 * sendTo; keys with a time to live hold the shared idempotency store.
 * Pass it to one `createServer({ cluster })`; every server on the same
 * Redis with the same `name` is in the cluster.
 */
export function redisCluster(options: RedisClusterOptions): Cluster {
  return new Cluster(redisEngine({ url: options.url, maxReconnectDelayMs: options.maxReconnectDelayMs }), options);
}

/**
 * A cluster on NATS: core NATS subjects carry heartbeats, broadcasts and
 * sendTo; a JetStream key-value bucket holds the shared idempotency store.
 * Pass it to one `createServer({ cluster })`.
 */
export function natsCluster(options: NatsClusterOptions): Cluster {
  const name = options.name ?? "pointsub";
  return new Cluster(
    natsEngine({
      servers: options.servers,
      jetstream: options.jetstream,
      bucket: `pointsub_${name}`,
      // As the cluster takes it (checked there: a bad one throws before the engine is used).
      bucketTtlMs: Math.min(options.idempotencyTtlMs ?? 600_000, MAX_TTL_MS),
    }),
    options,
  );
}
