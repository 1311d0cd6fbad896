/**
 * pointsub for browsers (and any runtime with a WHATWG `WebSocket` and no
 * Node APIs: workers, Deno, Bun): the same `connect`, `connectResilient`,
 * `Client` and types as the Node entry point, over `ws://`/`wss://` (the
 * global `WebSocket`). Selected by the `"browser"` export
 * condition of package.json. No servers listening on sockets, no files, no
 * zlib: the browser runtime has the pure-JS CRC32C and no codecs.
 *
 * Importing it has no side effects: the browser runtime is built by
 * `defaultRuntime()` the first time `connect` needs it.
 *
 * @packageDocumentation
 */

import { Client as CoreClient, type ClientOptions as CoreClientOptions } from "./client/client.ts";
import { type ConnectOptions, connect as coreConnect } from "./client/connect.ts";
import {
  connectResilient as coreConnectResilient,
  type ResilientConnection,
  type ResilientOptions,
} from "./client/resilient.ts";
import type { Connection } from "./connection/connection.ts";
import { type StreamEngine, useStreamLoader } from "./connection/stream-engine.ts";
import { loadSuggestions } from "./errors/codes.ts";
import { withSuggestion } from "./errors/error.ts";
import { badOptions } from "./errors/options.ts";
import type { Runtime } from "./runtime/runtime.ts";
import type { Address } from "./transport/transport.ts";
import { defaultRuntime } from "./web/runtime.ts";

export type { ConnectOptions } from "./client/connect.ts";

const noop = (): void => {};

/** The stream engine's chunk, loaded the first time a connection streams (the only dynamic import of it). */
const loadStreams = (): Promise<StreamEngine> => import("./web/stream-chunk.ts");

/** `options` with the default runtime when they name none; installs the stream chunk's loader. */
function withRuntime<O extends { runtime?: Runtime }>(options: O): O {
  useStreamLoader(loadStreams);
  // Null or a number (a raw TypeError here before) goes on as it is: the core's check refuses it (ERR_INVALID_ARGUMENT).
  return options?.runtime !== undefined || badOptions(options) ? options : { ...options, runtime: defaultRuntime() };
}

/**
 * Settles like `opening`, at once; fetches the error suggestions (`PointSubError.suggestion`,
 * text loaded on demand, not in a page's first load) meanwhile, and a failed
 * connect's error gets its suggestion once they arrived. Neither waits for the
 * texts: an open connection would have handed over late (a message or close
 * the peer sent meanwhile found no listener), a failure (an abort, a timeout)
 * was reported only once the texts' chunk came, never if its download stalled.
 */
function withTexts<T>(opening: Promise<T>): Promise<T> {
  loadSuggestions().catch(noop);
  return opening.catch((err: unknown) => {
    // Awaited by nobody: a revoked Proxy (a custom transport's) made it reject, an unhandled rejection.
    withSuggestion(err).catch(noop);
    throw err;
  });
}

/**
 * Connects to a pointsub server at `address` (`ws://`, `wss://`, or whatever `options.runtime`'s transports take) and resolves
 * once the handshake completed. Uses {@link defaultRuntime} unless
 * `options.runtime` is given.
 */
export function connect(address: Address, options: ConnectOptions = {}): Promise<Connection> {
  return withTexts(coreConnect(address, withRuntime(options)));
}

/** Options of {@link connectResilient}: those of {@link connect} plus reconnection, offline and retry policies. */
export interface ResilientConnectOptions extends ResilientOptions {}

/**
 * Connects to `address` and keeps the connection up across drops
 * (reconnection with backoff and full jitter, an offline policy, retries
 * under idempotency keys): resolves once first connected.
 */
export function connectResilient(
  address: Address,
  options: ResilientConnectOptions = {},
): Promise<ResilientConnection> {
  return withTexts(coreConnectResilient(address, withRuntime(options)));
}

/**
 * A client of many nodes: pooled connections per node, per-route node
 * lists, `requestClosest` by round-trip time or by key, with failover and a
 * circuit breaker per node.
 */
export class Client extends CoreClient {
  constructor(options: ClientOptions = {}) {
    super(withRuntime(options));
    loadSuggestions().catch(noop);
  }
}

/** Options of {@link Client}. */
export interface ClientOptions extends CoreClientOptions {}

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
export type { Settings } from "./codec/settings.ts";
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
// A type only: the class comes with the request dispatcher (the stream chunk), not in a page's first load.
export type { Endpoint, Router } from "./router/router.ts";
export type { CallContext, Middleware, StreamRoute } from "./router/types.ts";
export {
  type Crc32cProvider,
  createRuntime,
  type Diagnostics,
  type DiagnosticsChannel,
  type DiagnosticsListener,
  type Runtime,
  type RuntimeParts,
} from "./runtime/runtime.ts";
export type { IncomingStream } from "./stream/incoming.ts";
export { Transfer } from "./stream/transfer.ts";
export type { CompressOption, SendStreamOptions, StreamHandler, StreamSource } from "./stream/types.ts";
// Types only: the class comes with the stream chunk (a `sendStream` made before it arrived reports through a stand-in).
export type { Progress, ProgressEvents, ProgressSnapshot, TransferStatus } from "./transfer/progress.ts";
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
export { webCompressionCodecs } from "./web/compression.ts";
export {
  type BrowserRuntimeOptions,
  createBrowserRuntime,
  defaultRuntime,
} from "./web/runtime.ts";
export { WEB_SUBPROTOCOL, type WebSocketTransportOptions, webSocketTransport } from "./web/websocket.ts";
