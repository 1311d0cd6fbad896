/**
 * A runtime: everything the portable core needs from its environment,
 * gathered in one object that `connect` and `createServer` are given (or
 * take from their entry point's default) instead of process-wide state that
 * importing a module would install. Portable: no `node:` imports.
 */
import { CodecRegistry } from "../codec/codec-registry.ts";
import type { CompressionCodec } from "../codec/compression.ts";
import { Crc32c, type Crc32cFunction, crc32cJs } from "../codec/crc32c.ts";
import { PointSubError } from "../errors/error.ts";
import { TransportRegistry } from "../transport/registry.ts";
import type { TransportAdapter } from "../transport/transport.ts";
import { Limiter } from "../util/limiter.ts";

/** A CRC32C implementation (it must agree with the pure-JS one). */
export interface Crc32cProvider {
  /** Name shown in stats and diagnostics: `"js"`, `"@node-rs/crc32"`, … */
  readonly name: string;
  /** Computes CRC32C of `data`, continuing from `initial`. */
  readonly compute: Crc32cFunction;
  /** Inputs shorter than this are better done in JS (the cost of a native call). */
  readonly minLength: number;
}

/** Everything the core takes from its environment. Build one with {@link createRuntime}. */
export interface Runtime {
  /** A name for diagnostics, e.g. `"node"`. */
  readonly name: string;
  /** The transports `connect` and `listen` choose from, by address. */
  readonly transports: TransportRegistry;
  /** The compression codecs offered to peers and used for streams. */
  readonly codecs: CodecRegistry;
  /** The CRC32C implementation for frame and stream checksums. */
  readonly crc32c: Crc32cProvider;
  /** The same, as the object the decoder, writer and streams call. */
  readonly checksums: Crc32c;
  /** Compression jobs of all connections of this runtime share this bound (4 at once). */
  readonly compressionJobs: Limiter;
  /**
   * Allocates `n` bytes the caller overwrites completely before reading
   * (frame bodies, messages being assembled): may skip zero-filling.
   */
  allocBody(n: number): Uint8Array;
  /** Default memory budget in bytes (`memoryBudget` when the options give none). */
  memoryLimit(): number;
}

/** The parts of a runtime; every one has a portable default. */
export interface RuntimeParts {
  /** Default `"custom"`. */
  name?: string;
  /** A registry, or adapters to put in a new one. Default none. */
  transports?: TransportRegistry | Iterable<TransportAdapter>;
  /** A registry, or codecs to put in a new one. Default none (streams go uncompressed). */
  codecs?: CodecRegistry | Iterable<CompressionCodec>;
  /** Default: the pure-JS slicing-by-8 implementation. */
  crc32c?: Crc32cProvider;
  /** Default: `new Uint8Array(n)`. */
  allocBody?: (n: number) => Uint8Array;
  /** Default: 1 GiB. */
  memoryLimit?: () => number;
}

/** The pure-JS CRC32C, the default of every runtime. */
export const JS_CRC32C: Crc32cProvider = { name: "js", compute: crc32cJs, minLength: 0 };

/** Default of {@link RuntimeParts.memoryLimit}. */
const DEFAULT_MEMORY_LIMIT = 1024 * 1024 * 1024;

/**
 * Builds a runtime from `parts`, with portable defaults for what is missing
 * (no transports, no codecs, JS CRC32C, zero-filled allocation, 1 GiB). Has
 * no effect on anything else: two runtimes in one process are independent.
 */
export function createRuntime(parts: RuntimeParts = {}): Runtime {
  const transports =
    parts.transports instanceof TransportRegistry ? parts.transports : new TransportRegistry(parts.transports ?? []);
  const codecs = parts.codecs instanceof CodecRegistry ? parts.codecs : new CodecRegistry(parts.codecs ?? []);
  const crc32c = parts.crc32c ?? JS_CRC32C;
  if (typeof crc32c.compute !== "function") {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "runtime crc32c.compute must be a function");
  }
  const memoryLimit = parts.memoryLimit ?? (() => DEFAULT_MEMORY_LIMIT);
  return {
    name: parts.name ?? "custom",
    transports,
    codecs,
    crc32c,
    checksums: new Crc32c(crc32c === JS_CRC32C ? undefined : crc32c.compute, crc32c.name, crc32c.minLength),
    compressionJobs: new Limiter(4),
    allocBody: parts.allocBody ?? ((n) => new Uint8Array(n)),
    memoryLimit,
  };
}
