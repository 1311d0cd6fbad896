/**
 * pointsub: messages of any size, request/response and streams over one
 * multiplexed connection, on tcp://, tls://, unix://, ws://, wss:// and memory:// (Node.js
 * entry point); and plain length-prefixed messages with existing peers on
 * lp+tcp:// and lp+unix:// (`connect("lp+…")`, `createLpServer`).
 *
 * Importing it has no side effects: the Node runtime (transports, codecs,
 * native CRC32C, allocator, memory default) is built by `defaultRuntime()`
 * the first time `connect` or `createServer` needs it, or explicitly with
 * `createNodeRuntime()` / `createRuntime()` and passed as `options.runtime`.
 *
 * @packageDocumentation
 */

import { Client as CoreClient, type ClientOptions as CoreClientOptions } from "./client/client.ts";
import { type ConnectOptions as CoreConnectOptions, connect as coreConnect } from "./client/connect.ts";
import {
  connectResilient as coreConnectResilient,
  type ResilientConnection,
  type ResilientOptions,
} from "./client/resilient.ts";
import type { Connection } from "./connection/connection.ts";
import { checkOptions } from "./errors/options.ts";
import { connectLp as connectLpCore } from "./lp/connect.ts";
import type { LpConnection } from "./lp/connection.ts";
import { isLpAddress, type LpConnectOptions } from "./lp/options.ts";
import {
  connectLpResilient as connectLpResilientCore,
  type LpResilientConnection,
  type LpResilientOptions,
} from "./lp/resilient.ts";
import { LpServer, type LpServerOptions } from "./lp/server.ts";
import { loadNativeCrc32c } from "./node/crc32c-native.ts";
import type { NodeTransportOptions } from "./node/net-adapter.ts";
import { defaultRuntime } from "./node/runtime.ts";
import type { Runtime } from "./runtime/runtime.ts";
import { type ServerOptions as CoreServerOptions, Server } from "./server/server.ts";
import type { Address, TransportAdapter } from "./transport/transport.ts";

/**
 * `options` with the default runtime unless it names one. Options that are
 * not an object are ERR_INVALID_ARGUMENT (null threw a raw TypeError, a
 * number was taken as no options).
 */
function withRuntime<T extends { runtime?: Runtime }>(options: T): T {
  checkOptions(options);
  return options.runtime === undefined ? { ...options, runtime: defaultRuntime() } : options;
}

/** {@link withRuntime} for a function that returns a promise: its error as a rejection. */
function runtimeOrReject<T extends { runtime?: Runtime }>(options: T): T | Promise<never> {
  try {
    return withRuntime(options);
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * Options of {@link connect}: connection options, `runtime`,
 * `connectTimeoutMs`, `signal`, and the Node transports' options (`tls` for
 * `tls://` and `wss://` URLs: CA to trust, client certificate…; `ws.headers`).
 */
export interface ConnectOptions extends CoreConnectOptions, NodeTransportOptions {}

/**
 * Options of {@link createServer}: every session's connection options,
 * `runtime`, server limits, and the Node transports' options (`tls`:
 * certificate and key for `tls://` and `wss://` listeners, CA / requestCert
 * for mutual TLS; `maxPendingHandshakes`; `ws.httpServer` to share a web
 * server's port, `ws.upgrade` to take upgrade requests the application
 * routes, `ws.maxPendingUpgrades`).
 */
export interface ServerOptions extends CoreServerOptions, NodeTransportOptions {}

/**
 * Connects to a length-prefix peer (`lp+tcp://host:port`, `lp+unix:///path`):
 * see {@link connectLp}. An address typed only as `string` takes the
 * overload below; call `connectLp` for an `lp+` URL known only at run time.
 */
export function connect(address: `lp+${string}`, options?: LpConnectOptions): Promise<LpConnection>;
/**
 * Connects to a pointsub server at `address` (`tcp://`, `tls://`, `unix://`,
 * `ws://`, `wss://`, `memory://`, or whatever `options.runtime`'s transports take) and
 * resolves once the handshake completed. Uses {@link defaultRuntime} unless
 * `options.runtime` is given.
 */
export function connect(address: Address, options?: ConnectOptions): Promise<Connection>;
export function connect(
  address: Address,
  options: ConnectOptions & LpConnectOptions = {},
): Promise<Connection> | Promise<LpConnection> {
  const o = runtimeOrReject(options);
  if (o instanceof Promise) return o;
  if (isLpAddress(address)) return connectLpCore(address, o);
  return coreConnect(address, o);
}

/**
 * Connects to a peer that speaks plain length-prefixed messages (a 4-byte
 * big-endian length, then the message): `lp+tcp://host:port` or
 * `lp+unix:///path`. Resolves once the socket is connected (the format has
 * no handshake) to an {@link LpConnection}: `send` / `on("message")` /
 * `close`, no requests or streams. Uses {@link defaultRuntime} unless
 * `options.runtime` is given.
 */
export function connectLp(address: Address, options: LpConnectOptions = {}): Promise<LpConnection> {
  const o = runtimeOrReject(options);
  return o instanceof Promise ? o : connectLpCore(address, o);
}

/**
 * Creates a server for length-prefix peers: `listen("lp+tcp://…")`, then
 * `on("session")` / `on("message", (msg, session) => …)`. Uses
 * {@link defaultRuntime} unless `options.runtime` is given.
 */
export function createLpServer(options: LpServerOptions = {}): LpServer {
  return new LpServer(withRuntime(options));
}

/** Options of {@link connectResilient}: those of {@link connect} plus reconnection, offline and retry policies. */
export interface ResilientConnectOptions extends ResilientOptions, NodeTransportOptions {}

/**
 * Connects to a length-prefix peer (`lp+tcp://`, `lp+unix://`) and keeps the
 * connection up across drops: see {@link connectLpResilient}.
 */
export function connectResilient(address: `lp+${string}`, options?: LpResilientOptions): Promise<LpResilientConnection>;
/**
 * Connects to `address` and keeps the connection up across drops
 * (reconnection with backoff and full jitter, an offline policy, retries
 * under idempotency keys): resolves once first connected. Uses
 * {@link defaultRuntime} unless `options.runtime` is given.
 */
export function connectResilient(address: Address, options?: ResilientConnectOptions): Promise<ResilientConnection>;
export function connectResilient(
  address: Address,
  options: ResilientConnectOptions & LpResilientOptions = {},
): Promise<ResilientConnection> | Promise<LpResilientConnection> {
  const o = runtimeOrReject(options);
  if (o instanceof Promise) return o;
  if (isLpAddress(address)) return connectLpResilientCore(address, o);
  return coreConnectResilient(address, o);
}

/**
 * Connects to a length-prefix peer and keeps the connection up across drops:
 * the states, reconnection backoff and offline policy of
 * {@link connectResilient}, for one-way messages (sent at most once, never
 * retried). Uses {@link defaultRuntime} unless `options.runtime` is given.
 */
export function connectLpResilient(address: Address, options: LpResilientOptions = {}): Promise<LpResilientConnection> {
  const o = runtimeOrReject(options);
  return o instanceof Promise ? o : connectLpResilientCore(address, o);
}

/**
 * A client of many nodes: pooled connections per node, per-route node
 * lists, `requestClosest` by round-trip time or by key (XOR distance), with
 * failover and a circuit breaker per node. Uses {@link defaultRuntime}
 * unless `options.runtime` is given.
 */
export class Client extends CoreClient {
  constructor(options: ClientOptions = {}) {
    super(withRuntime(options));
  }
}

/** Options of {@link Client}: those of {@link connect} (for every node) plus the pool, breaker and RTT probing. */
export interface ClientOptions extends CoreClientOptions, NodeTransportOptions {}

/**
 * Creates a server. Register routes with `handle`, then `listen`. Uses
 * {@link defaultRuntime} unless `options.runtime` is given; the options are
 * checked here (ERR_INVALID_ARGUMENT for a value out of range).
 */
export function createServer(options: ServerOptions = {}): Server {
  // A server lives long: the native CRC32C (which a Node runtime loads on demand, after 4 MiB) is
  // loaded now, at start-up, not in a turn of some peer's transfer.
  loadNativeCrc32c();
  return new Server(withRuntime(options));
}

/**
 * Adds `adapter` to the default runtime's transports (replacing any earlier
 * adapter of its schemes). Kept for compatibility: prefer building a runtime
 * with the adapter (`createNodeRuntime({ transports: [adapter] })`) and
 * passing it as `options.runtime`.
 */
export function registerTransport(adapter: TransportAdapter): void {
  defaultRuntime().transports.add(adapter);
}

export { type BlobSourceOptions, blobSource } from "./client/blob-source.ts";
export type { BreakerOptions, ClosestOptions, NodeInfo } from "./client/client.ts";
export {
  optionsFromJSON,
  optionsToJSON,
  PRESETS,
  type PresetName,
  type PresetOptions,
  preset,
} from "./client/config.ts";
export type { PoolOptions } from "./client/pool.ts";
export type { ReconnectingEvents } from "./client/reconnecting.ts";
export {
  type OfflineOptions,
  type ReconnectOptions,
  ResilientConnection,
  type ResilientEvents,
  type ResilientOptions,
  type ResilientRequestOptions,
  type ResilientState,
} from "./client/resilient.ts";
export {
  type ResumableSource,
  type SendResumableOptions,
  SharedConnection,
  sendResumable,
} from "./client/resumable.ts";
export { CodecRegistry } from "./codec/codec-registry.ts";
export type { CompressionCodec, InflateOwner } from "./codec/compression.ts";
export { CODEC_NAMES, type CodecName } from "./codec/compression.ts";
export type { Crc32c, Crc32cFunction } from "./codec/crc32c.ts";
export {
  BUNDLE_FILE_MAX,
  BUNDLE_MAX_BYTES,
  BUNDLE_MAX_FILES,
  type BundleFile,
  type BundleResult,
  encodeBundle,
  FILE_BUNDLE_ROUTE,
} from "./codec/file-bundle.ts";
export type { Settings } from "./codec/settings.ts";
export { MemoryBudget } from "./connection/budget.ts";
export {
  Connection,
  type ConnectionEvents,
  type ConnectionState,
  type EventMap,
  type Listener,
  RESUME_ROUTE,
  type ResumeContext,
  type ResumeLookup,
  type ResumePoint,
} from "./connection/connection.ts";
export {
  type CallEndMessage,
  type CallStartMessage,
  CHANNELS,
  type ChannelName,
  type ConnectionCloseMessage,
  type ConnectionOpenMessage,
  type Direction,
  type ErrorMessage,
  type HandshakeErrorMessage,
  type MessageMessage,
  PROGRESS_INTERVAL_MS,
  type RefusedMessage,
  type RequestEndMessage,
  type RequestStartMessage,
  type Role,
  type StreamEndMessage,
  type StreamProgressMessage,
  type StreamStartMessage,
} from "./connection/diagnostics.ts";
export { SIZE_CLASSES, type SizeClass } from "./connection/size-class.ts";
export type { ClassCounters, CompressionCounters, StatsSnapshot } from "./connection/stats.ts";
export type {
  Authenticator,
  AuthInfo,
  CloseOptions,
  ConnectionInfo,
  ConnectionOptions,
  Handler,
  HandlerResult,
  IncomingRequest,
  Message,
  Payload,
  RequestContext,
  RequestOptions,
} from "./connection/types.ts";
export { ERROR_CODES, type ErrorCode, type ErrorCodeInfo, type Severity } from "./errors/codes.ts";
export { isPointSubError, PointSubError, type PointSubErrorOptions, type TimeoutPhase } from "./errors/error.ts";
export {
  LpConnection,
  type LpConnectionEvents,
  type LpStats,
} from "./lp/connection.ts";
export { LP_MAX_LENGTH } from "./lp/decoder.ts";
export type { LpConnectOptions, LpOptions, LpTransportOptions } from "./lp/options.ts";
export {
  LpResilientConnection,
  type LpResilientEvents,
  type LpResilientOptions,
} from "./lp/resilient.ts";
export { LpServer, type LpServerEvents, type LpServerOptions } from "./lp/server.ts";
export {
  FILE_CHECK_MAX,
  FILE_CHECK_ROUTE,
  FILE_ROUTE,
  type FileCheckAnswer,
  type FileCheckQuery,
  type FileReceipt,
  type FileResumeContext,
  type FileSink,
  type FileSinkOptions,
  type FileSinkUsage,
  fileCrc32c,
  fileSink,
  safeFileName,
  safeRelativePath,
} from "./node/file-sink.ts";
export {
  FILE_GET_ROUTE,
  FILE_LIST_MAX,
  FILE_LIST_ROUTE,
  type FileGetAnswer,
  type FileGetRequest,
  type FileHave,
  type FileListAnswer,
  type FileListEntry,
  type FileListRequest,
  type FileSource,
  type FileSourceOptions,
  fileSource,
} from "./node/file-source.ts";
export { lpTcpTransport, lpUnixTransport } from "./node/lp-adapter.ts";
export {
  type NodeTransportOptions,
  type NodeTransportOptionsMap,
  type TcpListenOptions,
  type TlsOptions,
  type TlsTransportOptions,
  tcpTransport,
  tlsTransport,
  unixTransport,
} from "./node/net-adapter.ts";
export { toNodeReadable } from "./node/readable.ts";
export { createNodeRuntime, defaultRuntime, type NodeRuntimeOptions, nodeDiagnostics } from "./node/runtime.ts";
export {
  FileTransfer,
  type FileTransferIdOptions,
  fileTransferId,
  loadResumeKey,
  resumeKeyPath,
  type SendFileOptions,
  type SentFileReceipt,
  sendFile,
} from "./node/send-file.ts";
export {
  WS_MAX_MESSAGE,
  WS_SUBPROTOCOL,
  type WsOptions,
  type WsTransportOptions,
  type WsUpgradeHandler,
  wsTransport,
  wsUpgradeHandler,
} from "./node/ws-adapter.ts";
export {
  type IdempotencyEntry,
  type IdempotencyOptions,
  type IdempotencyOutcome,
  type IdempotencyStore,
  idempotency,
  idempotencyStoreKey,
  MEMORY_ENTRY_OVERHEAD,
  type MemoryIdempotencyStats,
  type MemoryIdempotencyStore,
  type MemoryIdempotencyStoreOptions,
  memoryIdempotencyStore,
  principalScope,
} from "./router/idempotency.ts";
export {
  type RateLimiter,
  type RateLimitOptions,
  type RateLimitRule,
  type RateLimitStats,
  type RateLimits,
  rateLimit,
} from "./router/rate-limit.ts";
export { type Endpoint, Router } from "./router/router.ts";
export type { CallContext, Middleware, StreamRoute } from "./router/types.ts";
export {
  type Crc32cProvider,
  createRuntime,
  type Diagnostics,
  type DiagnosticsChannel,
  type DiagnosticsListener,
  localDiagnostics,
  NO_DIAGNOSTICS,
  type Runtime,
  type RuntimeParts,
} from "./runtime/runtime.ts";
export type { AdaptiveLimitOptions, AdmissionOptions } from "./server/admission.ts";
export type { BroadcastFailure, BroadcastOptions, BroadcastResult } from "./server/broadcast.ts";
export type { ServerEvent, ServerEventOptions, ServerEventStream } from "./server/events.ts";
export {
  type ClusterLocal,
  type ClusterMembership,
  type ClusterSessionInfo,
  type MemoryUsage,
  Server,
  type ServerBroadcastOptions,
  type ServerCluster,
  type ServerEvents,
  tokenAuth,
} from "./server/server.ts";
export { IncomingStream } from "./stream/incoming.ts";
export { Transfer } from "./stream/transfer.ts";
export type { CompressOption, SendStreamOptions, StreamHandler, StreamSource } from "./stream/types.ts";
export { Progress, type ProgressEvents, type ProgressSnapshot, type TransferStatus } from "./transfer/progress.ts";
export { type MemoryTransportOptions, memoryTransport } from "./transport/memory.ts";
export { type ResolvedTransport, TransportRegistry } from "./transport/registry.ts";
export type {
  Address,
  MultiaddrAddress,
  MultiaddrLike,
  PeerCertificate,
  PeerIdAddress,
  Transport,
  TransportAdapter,
  TransportAddress,
  TransportConnectOptions,
  TransportHandlers,
  TransportListener,
  TransportListenOptions,
  TransportOptions,
} from "./transport/transport.ts";
