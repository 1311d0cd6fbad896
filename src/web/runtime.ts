/**
 * The browser runtime: the global `WebSocket` for `ws://`/`wss://` (add
 * `memoryTransport()` through `transports` for `memory://`), the pure-JS CRC32C and no compression codecs unless given
 * (`codecs: webCompressionCodecs()`: deflate-raw and gzip on `CompressionStream`; without, streams a browser sends go
 * uncompressed and a peer compresses for it only with codecs it offers). Portable; built on demand, never on import.
 */
import type { CompressionCodec } from "../codec/compression.ts";
import { createRuntime, type Runtime } from "../runtime/runtime.ts";
import type { TransportAdapter } from "../transport/transport.ts";
import { type WebSocketTransportOptions, webSocketTransport } from "./websocket.ts";

/** Options of {@link createBrowserRuntime}. */
export interface BrowserRuntimeOptions {
  /** Options of the WebSocket transport. */
  webSocket?: WebSocketTransportOptions;
  /** More adapters, added after ws/wss (one for a scheme they serve replaces it). */
  transports?: readonly TransportAdapter[];
  /** A function returning the default memory budget in bytes (`() => 128 * 2 ** 20`). Default 256 MiB. */
  memoryLimit?: () => number;
  /**
   * Compression codecs offered to peers and used for streams. Default none;
   * `webCompressionCodecs()` gives deflate-raw and gzip on `CompressionStream`.
   */
  codecs?: Iterable<CompressionCodec>;
}

const DEFAULT_MEMORY_LIMIT = 256 * 1024 * 1024;

/** Builds a browser runtime (see the module comment); building one changes nothing global. */
export function createBrowserRuntime(options: BrowserRuntimeOptions = {}): Runtime {
  return createRuntime({
    name: "browser",
    transports: [webSocketTransport(options.webSocket), ...(options.transports ?? [])],
    memoryLimit: options.memoryLimit ?? (() => DEFAULT_MEMORY_LIMIT),
    codecs: options.codecs,
  });
}

let defaultBrowserRuntime: Runtime | undefined;

/** The runtime the browser entry's `connect` uses when given none, built on first use. */
export function defaultRuntime(): Runtime {
  defaultBrowserRuntime ??= createBrowserRuntime();
  return defaultBrowserRuntime;
}
