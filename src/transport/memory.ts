/**
 * An in-memory transport: `memory://name` listeners and connections inside
 * one process, for tests and for wiring two parts of one program together.
 * Portable (no Node APIs). Behaves like the socket transport where the
 * connection can tell: writes are copied (the caller may reuse its buffers
 * once `write` returns), data arrives on a later event-loop turn (never
 * inside the call that wrote it), `write` returns false above a high-water
 * mark and `onDrain` follows once the reader caught up, `pause` stops
 * delivery, `end` flushes then closes both sides, `destroy` closes at once.
 */
import { PointSubError } from "../errors/error.ts";
import { nextTurn } from "../util/next-turn.ts";
import type {
  Transport,
  TransportAdapter,
  TransportAddress,
  TransportConnectOptions,
  TransportHandlers,
  TransportListener,
} from "./transport.ts";

/** Options of {@link memoryTransport}. */
export interface MemoryTransportOptions {
  /**
   * Bytes written and not yet delivered to the reader above which `write`
   * returns false (the writer should wait for `onDrain`). Default 1 MiB,
   * like the socket transport.
   */
  highWaterMark?: number;
  /** Most bytes handed to the reader in one `onData` call. Default 64 KiB (a socket read). */
  readSize?: number;
  /** Most `onData` calls per event-loop turn before yielding to other work. Default 16. */
  readsPerTurn?: number;
}

const DEFAULT_HIGH_WATER = 1024 * 1024;
const DEFAULT_READ_SIZE = 64 * 1024;
const DEFAULT_READS_PER_TURN = 16;

interface Limits {
  readonly highWater: number;
  readonly readSize: number;
  readonly readsPerTurn: number;
}

/** One end of an in-memory connection. */
class MemoryEndpoint implements Transport {
  readonly localUrl: string;
  readonly remoteUrl: string;
  /** The other end; set right after both are created. */
  peer!: MemoryEndpoint;
  private readonly limits: Limits;
  private handlers: TransportHandlers | undefined;
  /** Copies of what the peer wrote, not yet delivered here. */
  private inbound: Uint8Array[] = [];
  /** Bytes of `inbound[0]` already delivered. */
  private head = 0;
  /** Bytes in `inbound` not yet delivered. */
  inboundBytes = 0;
  /** The peer ended: after `inbound`, deliver the end. */
  private eofQueued = false;
  private paused = false;
  private scheduled = false;
  /** This side stopped writing (end, destroy, or the peer's end). */
  private ended = false;
  private closed = false;
  private closeError: Error | undefined;
  private closeReported = false;
  /** A write returned false: call onDrain once the peer caught up. */
  private needDrain = false;

  constructor(localUrl: string, remoteUrl: string, limits: Limits) {
    this.localUrl = localUrl;
    this.remoteUrl = remoteUrl;
    this.limits = limits;
  }

  attach(handlers: TransportHandlers): void {
    if (this.handlers !== undefined) throw new PointSubError("ERR_INVALID_ARGUMENT", "transport attached twice");
    this.handlers = handlers;
    if (this.closed) queueMicrotask(this.reportClose);
    else this.schedule();
  }

  write(chunks: readonly Uint8Array[]): boolean {
    if (this.ended || this.closed) return false;
    let total = 0;
    for (let i = 0; i < chunks.length; i++) total += chunks[i].length;
    if (total === 0) return true;
    // Copy, as a socket would: the caller may reuse its buffers at once, and
    // the reader may keep views of what it receives.
    const copy = new Uint8Array(total);
    let off = 0;
    for (let i = 0; i < chunks.length; i++) {
      copy.set(chunks[i], off);
      off += chunks[i].length;
    }
    const peer = this.peer;
    if (!peer.enqueue(copy)) return true;
    if (peer.inboundBytes < this.limits.highWater) return true;
    this.needDrain = true;
    return false;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.schedule();
  }

  end(): void {
    if (this.ended || this.closed) return;
    this.ended = true;
    this.peer.enqueueEnd();
  }

  destroy(error?: Error): void {
    if (this.closed) return;
    // The peer reads what was written before, then sees the end (a FIN).
    if (!this.ended) {
      this.ended = true;
      this.peer.enqueueEnd();
    }
    this.close(error);
  }

  /** Queues bytes the peer wrote; false if this end is closed (they are dropped). */
  private enqueue(bytes: Uint8Array): boolean {
    if (this.closed) return false;
    this.inbound.push(bytes);
    this.inboundBytes += bytes.length;
    this.schedule();
    return true;
  }

  private enqueueEnd(): void {
    if (this.closed) return;
    this.eofQueued = true;
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.paused || this.closed || this.handlers === undefined) return;
    if (this.inboundBytes === 0 && !this.eofQueued) return;
    this.scheduled = true;
    nextTurn(this.deliver);
  }

  /** One event-loop turn of reading: up to `readsPerTurn` pieces, then the end or the next turn. */
  private readonly deliver = (): void => {
    this.scheduled = false;
    const h = this.handlers;
    if (h === undefined || this.closed) return;
    const { readSize, readsPerTurn } = this.limits;
    for (let reads = 0; reads < readsPerTurn && !this.paused && !this.closed && this.inbound.length > 0; reads++) {
      const buf = this.inbound[0];
      const avail = buf.length - this.head;
      const target = h.readTarget?.();
      let piece: Uint8Array;
      if (target !== undefined && target.length > 0) {
        // Read straight into the receiver's memory, as the socket reader does.
        const n = Math.min(target.length, avail);
        target.set(buf.subarray(this.head, this.head + n));
        piece = target.subarray(0, n);
      } else {
        piece = buf.subarray(this.head, this.head + Math.min(readSize, avail));
      }
      this.head += piece.length;
      this.inboundBytes -= piece.length;
      if (this.head === buf.length) {
        this.inbound.shift();
        this.head = 0;
      }
      // The chunk is this end's own copy, never reused: the answer (kept or not) does not matter.
      h.onData(piece);
    }
    if (this.closed) return;
    this.peer.caughtUp();
    if (this.inbound.length > 0) this.schedule();
    else if (this.eofQueued && !this.paused) this.receivedEnd();
  };

  /** The reader at the other end consumed bytes: wake this writer if it waits and the queue is short. */
  private caughtUp(): void {
    if (!this.needDrain || this.closed || this.peer.inboundBytes >= this.limits.highWater) return;
    this.needDrain = false;
    this.handlers?.onDrain();
  }

  /** Everything the peer wrote was read, then its end: end this side too (no half-open), and close. */
  private receivedEnd(): void {
    this.eofQueued = false;
    if (!this.ended) {
      this.ended = true;
      this.peer.enqueueEnd();
    }
    this.close(undefined);
  }

  private close(error: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.closeError = error;
    this.inbound = [];
    this.inboundBytes = 0;
    this.head = 0;
    if (this.handlers !== undefined) queueMicrotask(this.reportClose);
  }

  private readonly reportClose = (): void => {
    if (this.closeReported) return;
    this.closeReported = true;
    this.handlers?.onClose(this.closeError);
  };
}

/** The URL of an address, or ERR_UNSUPPORTED_URL (this transport takes no multiaddrs or peer ids). */
function memoryUrl(address: TransportAddress): URL {
  if (!(address instanceof URL) || address.protocol !== "memory:") {
    throw new PointSubError("ERR_UNSUPPORTED_URL", `the memory transport takes memory://name URLs, not ${address}`);
  }
  return address;
}

/** `memory://name/x/` → `name/x`. */
function nameOf(url: URL): string {
  return (url.host + url.pathname).replace(/\/+$/, "");
}

function cancelled(url: URL, signal: AbortSignal): PointSubError {
  return new PointSubError("ERR_CANCELLED", `connect to ${url.href} aborted`, { cause: signal.reason });
}

/**
 * A new in-memory transport for the `memory` scheme. Each call makes its own
 * namespace of listener names: connections reach only listeners of the same
 * adapter (so of the same runtime). `listen("memory://")` picks a free name.
 */
export function memoryTransport(options: MemoryTransportOptions = {}): TransportAdapter {
  const limits: Limits = {
    highWater: positive("highWaterMark", options.highWaterMark, DEFAULT_HIGH_WATER),
    readSize: positive("readSize", options.readSize, DEFAULT_READ_SIZE),
    readsPerTurn: positive("readsPerTurn", options.readsPerTurn, DEFAULT_READS_PER_TURN),
  };
  const listeners = new Map<string, (t: Transport) => void>();
  let seq = 0;
  return {
    schemes: ["memory"],
    async connect(address: TransportAddress, o: TransportConnectOptions): Promise<Transport> {
      const url = memoryUrl(address);
      const signal = o.signal;
      if (signal?.aborted) throw cancelled(url, signal);
      // Connecting takes a turn, as with a socket.
      await new Promise<void>((resolve) => nextTurn(resolve));
      if (signal?.aborted) throw cancelled(url, signal);
      const name = nameOf(url);
      const onTransport = listeners.get(name);
      if (onTransport === undefined) {
        throw new PointSubError("ERR_CONNECT", `cannot connect to memory://${name}: nobody listens there`);
      }
      const here = `memory://${name}`;
      const there = `memory://peer-${++seq}`;
      const client = new MemoryEndpoint(there, here, limits);
      const server = new MemoryEndpoint(here, there, limits);
      client.peer = server;
      server.peer = client;
      onTransport(server);
      return client;
    },
    async listen(address, _o, onTransport): Promise<TransportListener> {
      const url = memoryUrl(address);
      let name = nameOf(url);
      if (name === "") name = `listener-${++seq}`;
      if (listeners.has(name)) {
        throw new PointSubError("ERR_CONNECT", `cannot listen on memory://${name}: in use`);
      }
      listeners.set(name, onTransport);
      return {
        url: `memory://${name}`,
        close: async () => {
          if (listeners.get(name) === onTransport) listeners.delete(name);
        },
      };
    },
  };
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a positive integer, got ${value}`);
  }
  return value;
}
