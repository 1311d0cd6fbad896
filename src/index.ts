/**
 * pointsub: messages of any size, request/response and streams over one
 * multiplexed connection, on tcp://, tls:// and unix:// (Node.js entry point).
 *
 * @packageDocumentation
 */
import { setBodyAllocator } from "./codec/decoder.ts";
import { installNativeCrc32c } from "./node/crc32c-native.ts";
import { installMemoryDefaults } from "./node/memory.ts";
import { tcpTransport, tlsTransport, unixTransport } from "./node/net-adapter.ts";
import { installZlibCodecs } from "./node/zlib-codecs.ts";
import { registerTransport } from "./transport/registry.ts";

registerTransport(tcpTransport);
registerTransport(tlsTransport);
registerTransport(unixTransport);
installNativeCrc32c();
// Frame bodies are filled completely before use: skip zero-filling them.
setBodyAllocator((n) => Buffer.allocUnsafeSlow(n));
installZlibCodecs();
installMemoryDefaults();

export { type ConnectOptions, connect } from "./client/connect.ts";
export { type ResumableSource, type SendResumableOptions, sendResumable } from "./client/resumable.ts";
export { CODEC_NAMES, type CodecName } from "./codec/compression.ts";
export { MemoryBudget } from "./connection/budget.ts";
export {
  Connection,
  type ConnectionEvents,
  type ConnectionState,
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
export {
  FILE_ROUTE,
  type FileReceipt,
  type FileResumeContext,
  type FileSink,
  type FileSinkOptions,
  type FileSinkUsage,
  fileCrc32c,
  fileSink,
  safeFileName,
} from "./node/file-sink.ts";
export { toNodeReadable } from "./node/readable.ts";
export {
  type FileTransferIdOptions,
  fileTransferId,
  loadResumeKey,
  resumeKeyPath,
  type SendFileOptions,
  sendFile,
} from "./node/send-file.ts";
export {
  createServer,
  type MemoryUsage,
  Server,
  type ServerEvents,
  type ServerOptions,
  tokenAuth,
} from "./server/server.ts";
export { IncomingStream } from "./stream/incoming.ts";
export { Transfer } from "./stream/transfer.ts";
export type { CompressOption, SendStreamOptions, StreamHandler, StreamSource } from "./stream/types.ts";
export { Progress, type ProgressSnapshot, type TransferStatus } from "./transfer/progress.ts";
export { registerTransport } from "./transport/registry.ts";
export type {
  PeerCertificate,
  TlsOptions,
  Transport,
  TransportAdapter,
  TransportHandlers,
  TransportListener,
  TransportOptions,
} from "./transport/transport.ts";
