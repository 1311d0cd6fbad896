/**
 * The Node.js runtime: sockets, zlib, native CRC32C, unzeroed allocation and
 * a memory budget from the machine. Built on demand, never on import.
 */
import * as dc from "node:diagnostics_channel";
import { CodecRegistry } from "../codec/codec-registry.ts";
import { ConnectionDiagnostics } from "../connection/diagnostics.ts";
import { Housekeeper } from "../connection/housekeeping.ts";
import { useHousekeeper } from "../connection/housekeeping-lazy.ts";
import { useDiagnostics } from "../connection/publisher.ts";
import { useStreamEngine } from "../connection/stream-engine.ts";
import * as streams from "../connection/streams.ts";
import { useSuggestions } from "../errors/codes.ts";
import { PointSubError } from "../errors/error.ts";
import { checkOptions } from "../errors/options.ts";
import { SUGGESTIONS } from "../errors/suggestions.ts";
import { createRuntime, type Diagnostics, type Runtime } from "../runtime/runtime.ts";
import { memoryTransport } from "../transport/memory.ts";
import type { TransportAdapter } from "../transport/transport.ts";
import { lazyNativeCrc32c } from "./crc32c-native.ts";
import { installDebugOutput } from "./debug.ts";
import { lpTcpTransport, lpUnixTransport } from "./lp-adapter.ts";
import { nodeMemoryLimit } from "./memory.ts";
import { tcpTransport, tlsTransport, unixTransport } from "./net-adapter.ts";
import { wsTransport } from "./ws-adapter.ts";
import { zlibCodecs } from "./zlib-codecs.ts";

/** Options of {@link createNodeRuntime}. */
export interface NodeRuntimeOptions {
  /** More adapters, added after tcp, tls, unix, ws/wss, memory, lp+tcp and lp+unix (one for a scheme they serve replaces it). */
  transports?: readonly TransportAdapter[];
  /**
   * Use `@node-rs/crc32` when it is installed (loaded once 4 MiB were checksummed in JS: a short-lived
   * process never pays its ~10 ms load). Default true.
   */
  nativeCrc32c?: boolean;
  /** Offer node:zlib codecs (deflate-raw, gzip, brotli, zstd). Default true. */
  compression?: boolean;
  /** A function returning the default memory budget in bytes (`() => 512 * 2 ** 20`). Default: the smaller of 1 GiB and ¼ of the memory the process may use. */
  memoryLimit?: () => number;
  /** Where connections publish (docs/OBSERVABILITY.md). Default {@link nodeDiagnostics}: `node:diagnostics_channel`. */
  diagnostics?: Diagnostics;
}

/**
 * `node:diagnostics_channel` as a runtime's diagnostics: process-wide
 * channels by name, so `diagnostics_channel.subscribe("pointsub:…", fn)`
 * sees the connections of every Node runtime (each message names its
 * connection).
 */
export const nodeDiagnostics: Diagnostics = {
  channel: (name) => dc.channel(name),
  subscribe: (name, listener) => dc.subscribe(name, listener),
  unsubscribe: (name, listener) => dc.unsubscribe(name, listener),
};

/**
 * Frame bodies are filled completely before use: skip zero-filling them.
 * A plain Uint8Array view, not the Buffer: every message of a BATCH body is
 * handed out as a `subarray` of it, and Buffer's `subarray` costs ~3× a
 * Uint8Array's (it builds a FastBuffer) — and messages are Uint8Arrays
 * whichever read they came in.
 */
function allocBody(n: number): Uint8Array {
  const b = Buffer.allocUnsafeSlow(n);
  return new Uint8Array(b.buffer, b.byteOffset, n);
}

/**
 * Builds a Node.js runtime: `tcp://`, `tls://`, `unix://`, `ws://`, `wss://` and `memory://`
 * transports (the memory namespace is this runtime's own; also `lp+tcp://`
 * and `lp+unix://` for length-prefix peers), node:zlib codecs,
 * native CRC32C when available (loaded on demand), unzeroed frame-body allocation, a memory
 * budget from the machine's (or cgroup's) memory, and diagnostics on
 * `node:diagnostics_channel` (printed to stderr when `NODE_DEBUG=pointsub`
 * or `DEBUG=pointsub*`).
 *
 * The connections of this runtime take codecs, CRC32C, allocator and
 * memory default from it; building one changes nothing process-wide.
 */
export function createNodeRuntime(options: NodeRuntimeOptions = {}): Runtime {
  // An end-of-life Node (20 and older) would fail mid-connection (its first keepalive): say so up front.
  if (typeof (Promise as { withResolvers?: unknown }).withResolvers !== "function") {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `pointsub needs Node.js 22.18 or later; this is ${process.version} (no Promise.withResolvers)`,
    );
  }
  checkRuntimeOptions(options);
  // Node loads the stream halves up front: a connection's first stream starts synchronously.
  useStreamEngine(streams);
  useSuggestions(SUGGESTIONS);
  useDiagnostics(ConnectionDiagnostics);
  useHousekeeper(Housekeeper);
  const crc32c = options.nativeCrc32c === false ? undefined : lazyNativeCrc32c();
  // The machine's memory (a cgroup read) is looked up once per runtime, not per connection.
  let machine: number | undefined;
  const given = options.memoryLimit;
  const memoryLimit =
    given === undefined
      ? () => (machine ??= nodeMemoryLimit())
      : () => {
          const n = given();
          // NaN turned every budget off (nothing is ever over NaN); 0 or less refused every message.
          if (!Number.isSafeInteger(n) || n < 1) {
            throw new PointSubError(
              "ERR_INVALID_ARGUMENT",
              `memoryLimit() must return an integer >= 1 (got ${String(n)})`,
            );
          }
          return n;
        };
  const codecs = new CodecRegistry(options.compression === false ? [] : zlibCodecs());
  const diagnostics = options.diagnostics ?? nodeDiagnostics;
  // NODE_DEBUG=pointsub or DEBUG=pointsub*: print the channels (once per process for the Node channels).
  installDebugOutput(diagnostics);
  return createRuntime({
    name: "node",
    transports: [
      tcpTransport,
      tlsTransport,
      unixTransport,
      wsTransport,
      memoryTransport(),
      // Plain length-prefix peers (the lp mode only: docs/PROTOCOL.md §8).
      lpTcpTransport,
      lpUnixTransport,
      ...(options.transports ?? []),
    ],
    codecs,
    crc32c,
    allocBody,
    memoryLimit,
    diagnostics,
  });
}

/**
 * ERR_INVALID_ARGUMENT for options of {@link createNodeRuntime} of the wrong type: they were kept, and
 * the first connect or createServer with the runtime threw a raw TypeError ("memoryLimit is not a
 * function", "d.channel is not a function", "adapter.schemes is not iterable").
 */
function checkRuntimeOptions(o: NodeRuntimeOptions): void {
  const bad = (why: string) => new PointSubError("ERR_INVALID_ARGUMENT", `createNodeRuntime: ${why}`);
  checkOptions(o, "createNodeRuntime:");
  const t: unknown = o.transports;
  if (t !== undefined) {
    if (!Array.isArray(t)) throw bad("transports must be an array of transport adapters");
    for (const a of t as unknown[]) {
      const adapter = a as Partial<TransportAdapter> | null;
      if (typeof adapter?.schemes?.[Symbol.iterator] !== "function" || typeof adapter.connect !== "function") {
        throw bad("each transport must be a TransportAdapter (schemes, connect, listen)");
      }
    }
  }
  if (o.memoryLimit !== undefined && typeof o.memoryLimit !== "function") {
    throw bad("memoryLimit must be a function returning bytes");
  }
  const d = o.diagnostics as Partial<Diagnostics> | null | undefined;
  if (d !== undefined && typeof d?.channel !== "function")
    throw bad("diagnostics must be a Diagnostics (with channel)");
}

let defaultNodeRuntime: Runtime | undefined;

/**
 * The runtime `connect` and `createServer` use when given none: a
 * {@link createNodeRuntime} with default options, built on first use.
 */
export function defaultRuntime(): Runtime {
  defaultNodeRuntime ??= createNodeRuntime();
  return defaultNodeRuntime;
}
