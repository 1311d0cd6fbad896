import type { Socket } from "node:net";
import type { TransportHandlers } from "../transport/transport.ts";

/** Bytes per read buffer once data flows: what libuv asks for by default. */
const BIG = 64 * 1024;
/**
 * The size of the buffer quiet sockets read into: enough for a handshake, a
 * ping or a small request.
 */
const SMALL = 1024;
/**
 * Reads shorter than this are copied into a buffer of their own size, so a
 * small message kept by the application never pins a whole read buffer.
 */
const COPY_BELOW = 16 * 1024;
/**
 * Bytes per read while a frame body at least this large is missing (a large
 * message's chunks): read through one reusable bulk buffer of this size,
 * never past the body's end, and copied into the body by the decoder.
 *
 * Not read straight into the body (as until 2026-12-04): the kernel's
 * copy into memory the process never touched costs a page fault on the
 * kernel side and another on the process's first read of it (the body's
 * checksum) on a VM with shadow paging, as this machine (Firecracker,
 * PVM): 256 MiB requests, `bench large`, 205 MB/s read in place against
 * 257 MB/s through a 256 KiB bulk buffer (240 through 64 KiB reads); the
 * receiver's CRC32C ran at 1 GB/s over memory the kernel had just written,
 * 5.7 GB/s otherwise. On bare metal the copy costs a memcpy (~10 GB/s).
 */
const BULK = 256 * 1024;
/**
 * Smallest rest of a body read through a bulk buffer. The buffer is made
 * for the first such body, of the next power of two at or above its rest
 * (at most {@link BULK}), and made again, larger, for a larger rest: never
 * more than twice the memory of a body the receiver's budget paid for.
 */
const BULK_MIN = 32 * 1024;
/** Free 64 KiB read buffers kept per thread for the next socket that needs one (closed sockets return theirs). */
const FREE_MAX = 32;

/** See {@link SocketReader.counts}. */
interface ReaderCounts {
  buffers: number;
  reused: number;
  bulkReads: number;
  bulkBuffers: number;
}
const newCounts = (): ReaderCounts => ({ buffers: 0, reused: 0, bulkReads: 0, bulkBuffers: 0 });

/**
 * Reads a socket into reusable buffers (Node's `onread` option) instead of
 * a fresh 64 KiB allocation per read. After each read the connection says
 * whether it kept views of the chunk: if not (a large message is copied into
 * its assembly buffer as it arrives), the next read lands in the same
 * memory, so a multi-gigabyte transfer leaves no garbage behind; if it did,
 * the next read gets a new buffer. A socket starts with a 1 KiB buffer,
 * moves to 64 KiB when a read fills it, and goes back when {@link trim}med
 * (the connection does that once it saw no input for a keep-alive tick).
 */
export class SocketReader {
  /** The counters below, made by the first count (an idle socket keeps no fields for them). */
  private counts: ReaderCounts | undefined;
  private count(): ReaderCounts {
    this.counts ??= newCounts();
    return this.counts;
  }
  /** 64 KiB read buffers allocated so far (1 for a transfer the receiver copies, 0 if it found a free one). */
  get buffers(): number {
    return this.counts?.buffers ?? 0;
  }
  /** 64 KiB read buffers taken from the free list (closed sockets' buffers). */
  get reused(): number {
    return this.counts?.reused ?? 0;
  }
  /** Bulk buffers made (one per large transfer, more if the receiver kept views of its reads). */
  get bulkBuffers(): number {
    return this.counts?.bulkBuffers ?? 0;
  }
  /** Reads of a large frame body through the bulk buffer. */
  get bulkReads(): number {
    return this.counts?.bulkReads ?? 0;
  }
  /** Where the next read lands. */
  private next: Uint8Array = sharedSmallBuffer();
  /** Where chunks go (called as methods: handlers need not be closures). */
  private sink: TransportHandlers | undefined;
  /**
   * The bulk buffer ({@link BULK}), made when a large body is first read; dropped when the
   * socket goes quiet or closes, or when the receiver kept a view of a read in it.
   */
  private bulk: Uint8Array | undefined;
  /** The part of {@link bulk} handed out as the next read's buffer, if any. */
  private staged: Uint8Array | undefined;
  /** Chunks read before {@link attach} (copies); rare. */
  private early: Uint8Array[] | undefined;

  /**
   * The value for `net.connect({ onread })` / `tls.connect({ onread })`
   * (two closures, made when asked for: an accepted socket's reader uses
   * functions shared by every socket instead, see {@link readerForAccepted}).
   */
  get onread(): { buffer: () => Uint8Array; callback: (n: number, landed: Uint8Array) => boolean } {
    return {
      buffer: (): Uint8Array => this.nextBuffer(),
      /** `landed` is the buffer this read went into. Returns true: keep reading (pausing goes through `socket.pause()`). */
      callback: (n: number, landed: Uint8Array): boolean => {
        this.onRead(n, landed);
        return true;
      },
    };
  }

  /** Size of the buffer the next read lands in. */
  get nextSize(): number {
    return this.next.length;
  }

  /**
   * Starts delivering to `h.onData` (chunks read before this are delivered
   * first). `h.readTarget` says where the receiver wants the next bytes:
   * large frame bodies are read straight into their buffer, with no copy
   * out of a read buffer.
   */
  attach(h: TransportHandlers): void {
    this.sink = h;
    const early = this.early;
    this.early = undefined;
    if (early !== undefined) for (const c of early) h.onData(c);
  }

  /** Back to the small buffer (the socket went quiet); takes effect after the next read. */
  trim(): void {
    // Not to the free list: the read already posted still lands in the old buffer.
    this.next = sharedSmallBuffer();
    this.bulk = undefined;
  }

  /**
   * The socket closed (no read will land any more): its read buffer, if a
   * whole one that holds nothing anyone kept, goes to the free list for the
   * next socket — a churn of short connections then allocates no read
   * buffer per connection.
   */
  release(): void {
    const b = this.next;
    this.next = sharedSmallBuffer();
    this.bulk = undefined;
    if (b.length === BIG && b.byteOffset === 0 && free.length < FREE_MAX) {
      // Another socket's reads land in it next, and a message may be delivered as a view of
      // part of it: this connection's bytes must not be reachable through that view's buffer.
      b.fill(0);
      free.push(b);
    }
  }

  /**
   * @internal The buffer for the next read: the bulk buffer, cut at the end of the body the
   * receiver expects (`readTarget`), when a large one is missing; else the read buffer.
   */
  nextBuffer(): Uint8Array {
    const t = this.sink?.readTarget?.();
    if (t !== undefined && t.length >= BULK_MIN) {
      let b = this.bulk;
      if (b === undefined || (b.length < t.length && b.length < BULK)) {
        this.count().bulkBuffers++;
        const size = Math.min(BULK, 2 ** Math.ceil(Math.log2(t.length)));
        const m = Buffer.allocUnsafeSlow(size);
        b = new Uint8Array(m.buffer, m.byteOffset, size);
        this.bulk = b;
      }
      this.staged = t.length >= b.length ? b : b.subarray(0, t.length);
      return this.staged;
    }
    this.staged = undefined;
    return this.next;
  }

  /** @internal A read of `n` bytes landed in `landed`. */
  onRead(n: number, landed: Uint8Array): void {
    const sink = this.sink;
    if (landed === this.staged && sink !== undefined) {
      // Body bytes (the read stopped at the body's end): the decoder copies them out, so the
      // same memory takes the next read — unless the receiver kept a view (input held for a
      // later turn, or the body was done by then: the read holds the next frames).
      this.staged = undefined;
      this.count().bulkReads++;
      if (sink.onData(new Uint8Array(landed.buffer, landed.byteOffset, n)) && this.bulk?.buffer === landed.buffer) {
        this.bulk = undefined;
      }
      return;
    }
    if (n < COPY_BELOW || sink === undefined) {
      const copy = landed.slice(0, n);
      if (sink !== undefined) sink.onData(copy);
      else if (this.early === undefined) this.early = [copy];
      else this.early.push(copy);
      // A full small buffer: more is coming, read it in bigger steps.
      if (n === landed.length && landed.length < BIG && this.next === landed) this.next = this.bigBuffer();
      return;
    }
    if (sink.onData(new Uint8Array(landed.buffer, landed.byteOffset, n)) && this.next === landed) {
      this.next = this.bigBuffer();
    }
  }

  private bigBuffer(): Uint8Array {
    const reused = free.pop();
    if (reused !== undefined) {
      this.count().reused++;
      return reused;
    }
    this.count().buffers++;
    const b = Buffer.allocUnsafeSlow(BIG);
    return new Uint8Array(b.buffer, b.byteOffset, b.length);
  }
}

/** Whole 64 KiB read buffers nobody holds views of, ready for reuse (see {@link SocketReader.release}). */
const free: Uint8Array[] = [];

/**
 * The one small buffer every quiet socket of this thread reads into. Sharing
 * is safe: a read's callback runs right after the read, before any other
 * socket's, and a read this small is always copied out (`COPY_BELOW`), so the
 * memory is free again when the next read of any socket lands in it. An
 * idle connection holds no read buffer of its own. Allocated on first use
 * (nothing happens on import); per thread by design, not per runtime: it
 * holds no state between reads.
 */
let sharedSmall: Uint8Array | undefined;

function sharedSmallBuffer(): Uint8Array {
  if (sharedSmall === undefined) {
    const b = Buffer.allocUnsafeSlow(SMALL);
    sharedSmall = new Uint8Array(b.buffer, b.byteOffset, b.length);
  }
  return sharedSmall;
}

/** Node's private per-socket slots behind the `onread` option, found by name. */
interface OnreadSlots {
  kBuffer: symbol;
  kBufferCb: symbol;
  kBufferGen: symbol;
}
let slots: OnreadSlots | null | undefined;

function onreadSlots(socket: Socket): OnreadSlots | null {
  if (slots !== undefined) return slots;
  const find = (name: string) => Object.getOwnPropertySymbols(socket).find((s) => s.description === name);
  const kBuffer = find("kBuffer");
  const kBufferCb = find("kBufferCb");
  const kBufferGen = find("kBufferGen");
  slots = kBuffer && kBufferCb && kBufferGen ? { kBuffer, kBufferCb, kBufferGen } : null;
  return slots;
}

/**
 * Switches an accepted socket (node:net and node:tls hand servers sockets
 * they created themselves, and offer `onread` only to sockets you create) to
 * read into a {@link SocketReader}: it sets the same private slots the
 * `onread` option sets and points the handle at the first buffer. Call it in
 * the 'connection' (or 'secureConnection') listener; bytes read before that
 * still come as 'data' events, ahead of the reader's. Returns undefined
 * (the socket keeps emitting 'data') when this runtime's internals differ.
 */
export function readerForAccepted(socket: Socket): SocketReader | undefined {
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (b: Uint8Array) => void } })._handle;
  const s = onreadSlots(socket);
  if (s === null || typeof handle?.useUserBuffer !== "function") return undefined;
  const slotsOf = socket as unknown as Record<symbol, unknown>;
  if (slotsOf[s.kBuffer] !== null || slotsOf[s.kBufferCb] !== null) return undefined;
  const reader = new SocketReader();
  const first = reader.nextBuffer();
  slotsOf[READER] = reader;
  slotsOf[s.kBuffer] = first;
  slotsOf[s.kBufferCb] = acceptedRead;
  slotsOf[s.kBufferGen] = acceptedNextBuffer;
  handle.useUserBuffer(first);
  return reader;
}

/** Where an accepted socket keeps its reader, for the two functions below. */
const READER = Symbol("pointsub.reader");
/** The buffer {@link acceptedRead} chose for the socket it just served; taken at once by {@link acceptedNextBuffer}. */
let handOut: Uint8Array | undefined;

/**
 * Node's read callback of every accepted socket (no closures per socket:
 * an idle socket of a slowloris flood costs less). Node calls it as a
 * method of the socket, then, in the same synchronous step, the buffer
 * function below for the next read's buffer.
 */
function acceptedRead(this: Socket, n: number, landed: Uint8Array): boolean {
  const reader = (this as unknown as Record<symbol, SocketReader>)[READER];
  reader.onRead(n, landed);
  handOut = reader.nextBuffer();
  return true;
}

/** The next read's buffer of the socket {@link acceptedRead} just served (Node calls it without `this`). */
function acceptedNextBuffer(): Uint8Array | undefined {
  const b = handOut;
  handOut = undefined;
  return b;
}
