/**
 * The Node.js runtime: sockets, zlib, native CRC32C, unzeroed allocation and
 * a memory budget from the machine. Built on demand, never on import.
 */
import { CodecRegistry } from "../codec/codec-registry.ts";
import { CODEC_NAMES, codecById } from "../codec/compression.ts";
import { setBodyAllocator } from "../codec/decoder.ts";
import { createRuntime, type Runtime } from "../runtime/runtime.ts";
import { memoryTransport } from "../transport/memory.ts";
import type { TransportAdapter } from "../transport/transport.ts";
import { installNativeCrc32c, loadNativeCrc32c } from "./crc32c-native.ts";
import { installMemoryDefaults, nodeMemoryLimit } from "./memory.ts";
import { tcpTransport, tlsTransport, unixTransport } from "./net-adapter.ts";
import { installZlibCodecs } from "./zlib-codecs.ts";

/** Options of {@link createNodeRuntime}. */
export interface NodeRuntimeOptions {
  /** More adapters, added after tcp, tls, unix and memory (one for a scheme they serve replaces it). */
  transports?: readonly TransportAdapter[];
  /** Use `@node-rs/crc32` when it is installed. Default true. */
  nativeCrc32c?: boolean;
  /** Offer node:zlib codecs (deflate-raw, gzip, brotli, zstd). Default true. */
  compression?: boolean;
  /** Default memory budget in bytes. Default: the smaller of 1 GiB and ¼ of the memory the process may use. */
  memoryLimit?: () => number;
}

/** Frame bodies are filled completely before use: skip zero-filling them. */
function allocBody(n: number): Uint8Array {
  return Buffer.allocUnsafeSlow(n);
}

/**
 * Builds a Node.js runtime: `tcp://`, `tls://`, `unix://` and `memory://`
 * transports (the memory namespace is this runtime's own), node:zlib codecs,
 * native CRC32C when available, unzeroed frame-body allocation and a memory
 * budget from the machine's (or cgroup's) memory.
 *
 * Interim, until the core reads everything from the runtime it is given:
 * building a Node runtime also installs native CRC32C, the allocator, the
 * zlib codecs and the memory default process-wide (idempotent; it never
 * happens on import).
 */
export function createNodeRuntime(options: NodeRuntimeOptions = {}): Runtime {
  const crc32c = options.nativeCrc32c === false ? undefined : loadNativeCrc32c();
  const memoryLimit = options.memoryLimit ?? nodeMemoryLimit;
  const codecs = new CodecRegistry();
  if (options.compression !== false) {
    installZlibCodecs();
    for (const id of Object.keys(CODEC_NAMES)) {
      const codec = codecById(Number(id));
      if (codec !== undefined) codecs.add(codec);
    }
  }
  if (crc32c !== undefined) installNativeCrc32c();
  setBodyAllocator(allocBody);
  // A custom limit waits for the core to read it from the runtime; the process-wide default stays the machine's.
  installMemoryDefaults();
  return createRuntime({
    name: "node",
    transports: [tcpTransport, tlsTransport, unixTransport, memoryTransport(), ...(options.transports ?? [])],
    codecs,
    crc32c,
    allocBody,
    memoryLimit,
  });
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
