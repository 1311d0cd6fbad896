/**
 * pointsub: messages of any size, request/response and streams over one
 * multiplexed connection, on tcp://, tls:// and unix:// (Node.js entry point).
 *
 * @packageDocumentation
 */
import { installNativeCrc32c } from "./node/crc32c-native.ts";
import { tcpTransport, tlsTransport, unixTransport } from "./node/net-adapter.ts";
import { registerTransport } from "./transport/registry.ts";

registerTransport(tcpTransport);
registerTransport(tlsTransport);
registerTransport(unixTransport);
installNativeCrc32c();

export { type ConnectOptions, connect } from "./client/connect.ts";
export { Connection, type ConnectionEvents, type ConnectionState } from "./connection/connection.ts";
export { SIZE_CLASSES, type SizeClass } from "./connection/size-class.ts";
export type { ClassCounters, StatsSnapshot } from "./connection/stats.ts";
export type {
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
export { isPointSubError, PointSubError, type PointSubErrorOptions } from "./errors/error.ts";
export { createServer, Server, type ServerEvents, type ServerOptions } from "./server/server.ts";
export { registerTransport } from "./transport/registry.ts";
export type {
  TlsOptions,
  Transport,
  TransportAdapter,
  TransportHandlers,
  TransportListener,
  TransportOptions,
} from "./transport/transport.ts";
