import type { CodecName } from "../codec/compression.ts";
import type { HandlerResult, RequestContext } from "../connection/types.ts";
import type { ProgressSnapshot } from "../transfer/progress.ts";
import type { IncomingStream } from "./incoming.ts";

/**
 * What a stream can be sent from: any async iterable of bytes (a Node
 * `Readable` is one), a web `ReadableStream`, a plain iterable, or a `Blob`
 * (a browser's `File` is one; its size is the default `total`, counted from
 * `offset`).
 */
export type StreamSource = AsyncIterable<Uint8Array> | ReadableStream<Uint8Array> | Iterable<Uint8Array> | Blob;

/** `"auto"` compresses chunks that a sample shows compress; `"off"` never; a name forces that codec. */
export type CompressOption = "auto" | "off" | CodecName;

/** Options of {@link Connection.sendStream}. */
export interface SendStreamOptions {
  /** Small metadata for the receiver (JSON object, at most 4 KiB): name, content type, your own fields. */
  meta?: Record<string, unknown>;
  /**
   * Content length in bytes when known (the receiver checks it; progress
   * shows percentages). Default for a `Blob` source: `offset` plus its size.
   */
  total?: number;
  /** Identifies the transfer across reconnections (resume). Default: a random id. */
  transferId?: string;
  /**
   * Resume: the source starts at this content offset, in bytes; `prefixCrc` is the
   * CRC32C of bytes 0..offset (the receiver checks the whole content). Default 0.
   */
  offset?: number;
  /** With `offset`: the CRC32C of the content's first `offset` bytes (a 32-bit integer). Default 0 (the CRC of no bytes). */
  prefixCrc?: number;
  /** Compression of this stream. Default `"off"`. */
  compress?: CompressOption;
  /** Cancels the transfer (the receiver sees ERR_CANCELLED). */
  signal?: AbortSignal;
  /**
   * How long the receiver may take to answer once this stream's END went
   * out, counted again from each credit it returns (it is still reading
   * what was sent); then the transfer fails with `ERR_TIMEOUT` (phase
   * `"request"`) and CANCEL tells the receiver, which stops its handler.
   * Default: the connection's `requestTimeoutMs` plus the bytes sent at
   * `requestBytesPerSecond`; 0 waits as long as the connection lives.
   */
  answerTimeoutMs?: number;
  /** Progress callback (also available as `transfer.progress`). */
  onProgress?: (snapshot: ProgressSnapshot) => void;
  /** Least time between progress reports. Default 100 ms. */
  progressIntervalMs?: number;
}

/**
 * A handler for streams sent to a route. Read `stream` (for await, or
 * `stream.readable()`); what it returns is the sender's answer. Throw to
 * answer with an error.
 */
export type StreamHandler = (stream: IncomingStream, ctx: RequestContext) => HandlerResult | Promise<HandlerResult>;
