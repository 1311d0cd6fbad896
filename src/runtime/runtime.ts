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

/** A CRC32C implementation (it must agree with the pure-JS one). */
export interface Crc32cProvider {
  /** Name shown in stats and diagnostics: `"js"`, `"@node-rs/crc32"`, … */
  readonly name: string;
  /** Computes CRC32C of `data`, continuing from `initial`. */
  readonly compute: Crc32cFunction;
  /** Inputs shorter than this are better done in JS (the cost of a native call). */
  readonly minLength: number;
}

/**
 * One named diagnostics channel (the shape of a `node:diagnostics_channel`
 * `Channel`). Publishers check `hasSubscribers` before building a message,
 * so a channel nobody listens to costs one property read.
 */
export interface DiagnosticsChannel {
  readonly hasSubscribers: boolean;
  publish(message: unknown): void;
}

/** Receives the messages of a channel. */
export type DiagnosticsListener = (message: unknown, name: string | symbol) => void;

/**
 * Where the core publishes what happens (connections, requests, streams,
 * errors: docs/OBSERVABILITY.md), without depending on a logger. The Node
 * runtime supplies `node:diagnostics_channel`; the portable default
 * ({@link NO_DIAGNOSTICS}) has no subscribers, ever.
 */
export interface Diagnostics {
  /** The channel `name`; the core asks once per runtime, not per message. */
  channel(name: string): DiagnosticsChannel;
  /** Adds `listener` to channel `name` (what the metrics adapter and debug output use). */
  subscribe(name: string, listener: DiagnosticsListener): void;
  /** Removes it again; true when it was subscribed. */
  unsubscribe(name: string, listener: DiagnosticsListener): boolean;
}

const SILENT: DiagnosticsChannel = Object.freeze({ hasSubscribers: false, publish() {} });

/** Diagnostics that nobody can subscribe to: the default of {@link createRuntime}. */
export const NO_DIAGNOSTICS: Diagnostics = Object.freeze({
  channel: () => SILENT,
  subscribe() {},
  unsubscribe: () => false,
});

/**
 * Portable diagnostics: channels by name in a map of this object's own
 * (for runtimes without `node:diagnostics_channel`, and tests). A
 * listener that throws is reported on a later task; the others still run.
 */
export function localDiagnostics(): Diagnostics {
  const channels = new Map<string, LocalChannel>();
  const get = (name: string): LocalChannel => {
    let c = channels.get(name);
    if (c === undefined) {
      c = new LocalChannel(name);
      channels.set(name, c);
    }
    return c;
  };
  return {
    channel: get,
    subscribe: (name, listener) => {
      const c = get(name);
      c.listeners = [...c.listeners, listener];
    },
    unsubscribe: (name, listener) => {
      const c = channels.get(name);
      const i = c === undefined ? -1 : c.listeners.indexOf(listener);
      if (c === undefined || i < 0) return false;
      c.listeners = c.listeners.filter((_, j) => j !== i);
      return true;
    },
  };
}

class LocalChannel implements DiagnosticsChannel {
  declare readonly name: string;
  /** Replaced, never changed in place: a publish iterates the list it started with. */
  listeners: readonly DiagnosticsListener[] = [];
  constructor(name: string) {
    this.name = name;
  }
  get hasSubscribers(): boolean {
    return this.listeners.length !== 0;
  }
  publish(message: unknown): void {
    for (const l of this.listeners) {
      try {
        l(message, this.name);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
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
  /**
   * Allocates `n` bytes the caller overwrites completely before reading
   * (frame bodies, messages being assembled): may skip zero-filling.
   */
  allocBody(n: number): Uint8Array;
  /** Default memory budget in bytes (`memoryBudget` when the options give none). */
  memoryLimit(): number;
  /** Diagnostics channels the core publishes to (docs/OBSERVABILITY.md). */
  readonly diagnostics: Diagnostics;
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
  /** A function returning the memory budget, in bytes, of a connection or server given no `memoryBudget` (not a function: ERR_INVALID_ARGUMENT). Default: 1 GiB. */
  memoryLimit?: () => number;
  /** Default: {@link NO_DIAGNOSTICS} (nothing is published). */
  diagnostics?: Diagnostics;
}

/** The pure-JS CRC32C, the default of every runtime. */
export const JS_CRC32C: Crc32cProvider = { name: "js", compute: crc32cJs, minLength: 0 };

/** Default of {@link RuntimeParts.memoryLimit}. */
const DEFAULT_MEMORY_LIMIT = 1024 * 1024 * 1024;

/**
 * Builds a runtime from `parts`, with portable defaults for what is missing
 * (no transports, no codecs, JS CRC32C, zero-filled allocation, 1 GiB, no
 * diagnostics). Has
 * no effect on anything else: two runtimes in one process are independent.
 */
export function createRuntime(parts: RuntimeParts = {}): Runtime {
  const transports =
    parts.transports instanceof TransportRegistry ? parts.transports : new TransportRegistry(parts.transports ?? []);
  const codecs = parts.codecs instanceof CodecRegistry ? parts.codecs : new CodecRegistry(parts.codecs ?? []);
  const crc32c = parts.crc32c ?? JS_CRC32C;
  const memoryLimit = parts.memoryLimit ?? (() => DEFAULT_MEMORY_LIMIT);
  // A memoryLimit given as a number was kept, and the first connect or createServer threw a raw TypeError.
  if (typeof crc32c.compute !== "function" || typeof memoryLimit !== "function") {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "runtime crc32c.compute and memoryLimit must be functions");
  }
  return {
    name: parts.name ?? "custom",
    transports,
    codecs,
    crc32c,
    checksums: new Crc32c(crc32c === JS_CRC32C ? undefined : crc32c.compute, crc32c.name, crc32c.minLength),
    allocBody: parts.allocBody ?? ((n) => new Uint8Array(n)),
    memoryLimit,
    diagnostics: parts.diagnostics ?? NO_DIAGNOSTICS,
  };
}
