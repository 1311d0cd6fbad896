import { type Crc32c, JS_CRC32C_IMPL } from "../codec/crc32c.ts";
import { crc32cCombine } from "../codec/crc32c-combine.ts";
import { allocateUninitialized } from "../codec/decoder.ts";
import type { StreamHead } from "../codec/stream-prefix.ts";
import { answerableError, describeThrown, thrownCode } from "../errors/describe.ts";
import { PointSubError, protocolError } from "../errors/error.ts";
import { Progress } from "../transfer/progress.ts";
import { Queue } from "../util/queue.ts";

/** What an incoming stream needs from its connection. */
export interface InStreamPort {
  /** The reader consumed `wire` bytes of frames: return that much stream credit. */
  consumed(wire: number): void;
  /** The reader cancelled: tell the sender. */
  cancel(err: PointSubError): void;
  /** What was received and not read is dropped, and nothing more will be kept: its memory is free. */
  dropped?(): void;
  /** The runtime's CRC32C implementation (default: pure JS). */
  readonly crc?: Crc32c;
  /** The runtime's allocator of buffers written completely before use (default: zero-filled). */
  readonly alloc?: (n: number) => Uint8Array;
}

interface Entry {
  /** One frame's content: bytes, bytes still decompressing, or views of the chunks it arrived in. */
  data: Uint8Array | Promise<Uint8Array> | Uint8Array[];
  /** A compressed frame not inflated yet: starts inflating it (when the reader gets near). */
  inflate: (() => Promise<Uint8Array>) | undefined;
  wire: number;
  /** CRC32C of the whole content when already known (computed with the frame checksum), else -1. */
  crc: number;
  /** Pieces: content bytes in all, and the next piece to read. */
  length: number;
  index: number;
}

/** Released frame buffers kept for reuse, at most (a window's worth of frames and then some). */
const POOL_MAX = 16;

/**
 * A stream being received: an async iterable of its chunks, with
 * backpressure (the sender gets credit only as chunks are read), metadata,
 * progress, and an end-to-end CRC32C check when it ends: iteration throws
 * ERR_CHECKSUM if the content differs from what the sender read, and the
 * sender's typed error if the sender failed or cancelled.
 */
export class IncomingStream implements AsyncIterable<Uint8Array>, AsyncIterator<Uint8Array> {
  /** The stream id on the connection. */
  readonly id: number;
  readonly route: string;
  /** The sender's metadata (name, type, transferId, your fields). */
  readonly meta: Readonly<Record<string, unknown>>;
  /** Content length from byte 0, when the sender declared it. */
  readonly total: number | undefined;
  /** Content offset of the first byte of this stream (non-zero when resuming). */
  readonly offset: number;
  /** CRC32C the sender declared for content bytes 0..offset (resume). */
  readonly prefixCrc: number;
  /** Receiver-side progress (bytes read by the consumer). */
  readonly progress: Progress;

  private readonly port: InStreamPort;
  private readonly entries = new Queue<Entry>();
  private endInfo: { length: number; crc: number } | undefined;
  private error: PointSubError | undefined;
  private endError: PointSubError | undefined;
  private waiter: (() => void) | undefined;
  /**
   * The read in progress while one waits (for data, END or inflation):
   * later `next()` calls queue behind it, as an async generator's do (a
   * second concurrent read took the only waiter slot, and the first never
   * woke: `Promise.all([s.next(), s.next()])` hung the handler and held the
   * stream open).
   */
  private busy: Promise<IteratorResult<Uint8Array>> | undefined;
  private crc: number;
  private received = 0;
  private finished = false;
  private discarding = false;
  private drainFirst = false;
  /**
   * Whether the reader asked for a chunk yet: until it does, nothing is
   * inflated ahead of it (a handler that answers or fails without reading
   * — a file sink refusing the metadata — or a peer that leaves first
   * costs no inflation: under the mutation fuzzer ~a fifth of the inflated
   * bytes, 1 MiB buffers, were never read).
   */
  private reading = false;
  /** Frame buffers handed back by the reader ({@link release}); undefined until it first does. */
  private pool: Uint8Array[] | undefined;
  /** The frame buffers this stream allocated, by their memory (only those can be released). */
  private owned: WeakMap<ArrayBufferLike, Uint8Array> | undefined;

  private readonly crcImpl: Crc32c;

  /** @internal Created by the connection. */
  constructor(id: number, head: StreamHead, meta: Record<string, unknown>, port: InStreamPort, intervalMs = 100) {
    this.id = id;
    this.route = head.route;
    this.meta = meta;
    this.total = head.total;
    this.offset = head.offset;
    this.prefixCrc = head.prefixCrc;
    this.crc = head.offset > 0 ? head.prefixCrc : 0;
    this.port = port;
    this.crcImpl = port.crc ?? JS_CRC32C_IMPL;
    const tid = typeof meta.transferId === "string" ? meta.transferId : `stream-${id}`;
    this.progress = new Progress(tid, head.total, intervalMs);
    this.progress.setBase(head.offset);
    this.progress.setStatus(head.offset > 0 ? "resuming" : "transferring");
  }

  /** `n` bytes read: counted; a resumed stream is transferring from its first byte on. */
  private moved(n: number): void {
    const p = this.progress;
    if (p.status === "resuming") p.setStatus("transferring");
    p.add(n);
  }

  /** The sender's transfer id (from metadata), if it gave one. */
  get transferId(): string | undefined {
    return typeof this.meta.transferId === "string" ? this.meta.transferId : undefined;
  }

  /** CRC32C of the content from byte 0 up to what was read (verified against the sender's at the end). */
  get contentCrc(): number {
    return this.crc >>> 0;
  }

  /**
   * @internal Why the sender's END did not match what was read (length or
   * CRC32C), once the reader reached it: such a stream is never answered OK.
   */
  get endFailure(): PointSubError | undefined {
    return this.endError;
  }

  /** @internal Frames received and not yet read. */
  get buffered(): number {
    return this.entries.length;
  }

  /** Content bytes read so far in this stream (the offset not included). */
  get bytesRead(): number {
    return this.received;
  }

  /** @internal A data frame arrived (`data` may still be decompressing). */
  push(data: Uint8Array | Promise<Uint8Array>, wire: number, crc = -1): void {
    if (data instanceof Promise) data.catch(() => {}); // surfaced when read
    if (this.finished || this.discarding) return;
    this.entries.push({ data, inflate: undefined, wire, crc, length: 0, index: 0 });
    this.wakeReader();
  }

  /**
   * @internal A compressed data frame arrived. It stays compressed until the
   * reader is one frame away from it: a peer cannot make this side inflate
   * what nobody reads.
   */
  pushCompressed(block: Uint8Array, wire: number, inflate: () => Promise<Uint8Array>): void {
    if (this.finished || this.discarding) return;
    this.entries.push({ data: block, inflate, wire, crc: -1, length: 0, index: 0 });
    if (this.reading && this.entries.length <= 2)
      this.startInflate(this.entries.peekAt(this.entries.length - 1) as Entry);
    this.wakeReader();
  }

  /** Starts inflating `e` if it is a compressed frame waiting. */
  private startInflate(e: Entry): void {
    const f = e.inflate;
    if (f === undefined) return;
    e.inflate = undefined;
    const p = f();
    p.catch(() => {}); // surfaced when read
    e.data = p;
  }

  /** @internal A data frame arrived as views of the transport chunks it lay in. */
  pushPieces(pieces: Uint8Array[], length: number, wire: number, crc: number): void {
    if (this.finished || this.discarding) return;
    this.entries.push({ data: pieces, inflate: undefined, wire, crc, length, index: 0 });
    this.wakeReader();
  }

  /**
   * Hands chunks this stream gave you back once you are completely done
   * with them (written to a file, copied): later data may be received into
   * their memory, so the transfer needs no new buffers and leaves no
   * garbage. Chunks it did not allocate are ignored. Never touch a released
   * chunk again. Optional: without it chunks are simply garbage-collected.
   */
  release(chunks: Iterable<Uint8Array>): void {
    this.pool ??= [];
    this.owned ??= new WeakMap();
    for (const c of chunks) {
      const whole = this.owned.get(c.buffer);
      if (whole === undefined || this.pool.length >= POOL_MAX) continue;
      if (this.pool.includes(whole)) continue; // released twice
      this.pool.push(whole);
    }
  }

  /** @internal Whether the reader releases chunks (frames then land in recycled buffers). */
  get recycles(): boolean {
    return this.pool !== undefined;
  }

  /**
   * @internal A buffer for a data frame of `length` bytes, from the released
   * ones when one is large enough; undefined when the reader never released.
   */
  frameBuffer(length: number): Uint8Array | undefined {
    const pool = this.pool;
    if (pool === undefined || this.owned === undefined) return undefined;
    let b = pool.pop();
    if (b === undefined || b.length < length) {
      b = (this.port.alloc ?? allocateUninitialized)(length);
      this.owned.set(b.buffer, b);
    }
    return b.length === length ? b : b.subarray(0, length);
  }

  /** @internal The sender's END frame arrived. */
  end(length: number, crc: number): void {
    this.endInfo = { length, crc };
    this.wakeReader();
  }

  /**
   * @internal The stream failed (sender cancelled, connection closed). With
   * `drain`, data already received stays readable before the error (it was
   * checksummed; a resumable sink keeps it).
   */
  fail(err: PointSubError, drain = false): void {
    if (this.finished || this.error !== undefined) return;
    this.error = err;
    this.drainFirst = drain;
    // What is still compressed is dropped, not inflated for the reader: its peer is gone and
    // its bytes are no longer charged to the budget (a peer that leaves after sending must not
    // leave inflation work behind). What was plain stays readable, in order.
    if (drain) this.dropFromCompressed();
    this.progress.setStatus(err.code === "ERR_CANCELLED" ? "cancelled" : "failed", err);
    this.wakeReader();
  }

  /** Drops the entries from the first one not yet inflated (or inflating) on. */
  private dropFromCompressed(): void {
    const q = this.entries;
    let k = 0;
    for (
      let e = q.peekAt(0);
      e !== undefined && e.inflate === undefined && !(e.data instanceof Promise);
      e = q.peekAt(k)
    )
      k++;
    if (k === q.length) return;
    const all = q.drain();
    for (let i = 0; i < k; i++) q.push(all[i]);
  }

  /**
   * @internal Nothing more of this stream will be read (it failed, finished
   * or was discarded): blocks still waiting to be inflated need not be.
   */
  get abandoned(): boolean {
    return this.error !== undefined || this.finished || this.discarding;
  }

  /**
   * @internal Stop buffering: the handler answered (`failure`: with that
   * error) or the reader left. Progress ends here unless it ended already:
   * `cancelled` (nothing more is read), or `failed` with `failure` — a
   * handler that answered before reading to the END left it "transferring"
   * for good, and an iterator over it waiting for ever.
   */
  discard(failure?: PointSubError): void {
    this.discarding = true;
    while (this.entries.length !== 0) {
      const e = this.entries.shift() as Entry;
      if (e.data instanceof Promise) e.data.catch(() => {});
    }
    this.port.dropped?.();
    if (!this.progress.done) this.progress.setStatus(failure === undefined ? "cancelled" : "failed", failure);
  }

  /** Cancels the transfer: the sender's transfer rejects with ERR_CANCELLED. */
  cancel(reason = "cancelled by the receiver"): void {
    if (this.finished) return;
    const err = new PointSubError("ERR_CANCELLED", reason);
    this.fail(err);
    this.discard();
    this.port.cancel(err);
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this;
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    this.reading = true;
    const busy = this.busy;
    if (busy !== undefined) {
      const after = (): Promise<IteratorResult<Uint8Array>> => this.next();
      return busy.then(after, after);
    }
    // A chunk is ready: answered without an async function's frame (a `for await` over a busy stream
    // reads most chunks this way; the garbage per chunk is one promise and its result).
    const e = this.error === undefined && !this.finished && !this.discarding ? this.entries.peek() : undefined;
    if (e !== undefined && e.inflate === undefined && !(e.data instanceof Promise)) {
      try {
        return Promise.resolve({ done: false, value: this.take(e) });
      } catch (err) {
        return Promise.reject(err);
      }
    }
    const read = this.nextSlow();
    this.busy = read;
    const done = (): void => {
      if (this.busy === read) this.busy = undefined;
    };
    read.then(done, done);
    return read;
  }

  private async nextSlow(): Promise<IteratorResult<Uint8Array>> {
    for (;;) {
      if (this.error !== undefined && !this.finished && !(this.drainFirst && this.entries.length !== 0)) {
        throw this.error;
      }
      if (this.finished || this.discarding) return { done: true, value: undefined };
      const e = this.entries.peek();
      if (e !== undefined) {
        if (e.inflate !== undefined) this.startInflate(e);
        if (e.data instanceof Promise) {
          // Inflate the next frame while this one finishes.
          const after = this.entries.peekAt(1);
          if (after !== undefined) this.startInflate(after);
          let data: Uint8Array;
          try {
            data = await e.data;
          } catch (err) {
            // The stream failed meanwhile (its sender's CANCEL, the connection's end) and its queued block was
            // dropped as abandoned (ERR_CANCELLED): the reader gets the stream's error, not that one (a file
            // sink removes its partial after ERR_CANCELLED, and a resume would start again from 0).
            if (this.error !== undefined) throw this.error;
            // The codec's error as it is when a CANCEL can carry its code; else ERR_PROTOCOL naming it. Before, one
            // given a code of the application's own (a custom codec's) threw sending the CANCEL: the reader got a
            // TypeError, and the sender, told nothing, waited for the stream's answer.
            const pe =
              answerableError(err) ??
              new PointSubError("ERR_PROTOCOL", thrownCode(err) + describeThrown(err), { cause: err });
            this.fail(pe);
            this.port.cancel(pe);
            throw pe;
          }
          if (this.entries.peek() !== e) continue; // discarded meanwhile
          e.data = data;
        }
        if (this.error !== undefined && !this.drainFirst) throw this.error;
        return { done: false, value: this.take(e) };
      }
      if (this.endInfo !== undefined) {
        this.verifyEnd(this.endInfo);
        return { done: true, value: undefined };
      }
      await new Promise<void>((r) => (this.waiter = r));
    }
  }

  /**
   * Reads what is available now as one batch (at least one chunk, waiting
   * if none; at most about `maxBytes`), or null at the end. Lets a writer
   * hand many chunks to one `writev`.
   */
  async readBatch(maxBytes = 4 * 1024 * 1024): Promise<Uint8Array[] | null> {
    const first = await this.next();
    if (first.done === true) return null;
    const out = [first.value];
    let n = first.value.length;
    while (n < maxBytes && this.error === undefined && !this.discarding) {
      const e = this.entries.peek();
      if (e === undefined) break;
      if (e.inflate !== undefined || e.data instanceof Promise) {
        this.startInflate(e);
        break;
      }
      const piece = this.take(e);
      out.push(piece);
      n += piece.length;
    }
    return out;
  }

  /** Takes the next piece of `e`, the first entry, whose data is ready; counts it. */
  private take(e: Entry): Uint8Array {
    let piece: Uint8Array;
    if (Array.isArray(e.data)) {
      if (e.index === 0 && e.crc >= 0) this.crc = crc32cCombine(this.crc, e.crc, e.length);
      piece = e.data[e.index++];
      if (e.crc < 0) this.crc = this.crcImpl.compute(piece, this.crc);
      if (e.index < e.data.length) {
        this.received += piece.length;
        this.moved(piece.length);
        return piece;
      }
    } else {
      piece = e.data as Uint8Array;
      this.crc = e.crc >= 0 ? crc32cCombine(this.crc, e.crc, piece.length) : this.crcImpl.compute(piece, this.crc);
    }
    this.entries.shift();
    this.received += piece.length;
    this.port.consumed(e.wire);
    this.moved(piece.length);
    return piece;
  }

  /** Leaving a `for await` early stops buffering; the handler's answer ends the transfer. */
  async return(): Promise<IteratorResult<Uint8Array>> {
    if (!this.finished) this.discard();
    return { done: true, value: undefined };
  }

  /**
   * Reads the whole stream into one buffer (at most `maxBytes`, default 256 MiB). Past `maxBytes` it
   * throws ERR_MESSAGE_TOO_LARGE and the rest is discarded; a handler that lets the error out answers
   * the sender with it (its transfer rejects with ERR_MESSAGE_TOO_LARGE).
   */
  async bytes(maxBytes = 256 * 1024 * 1024): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let n = 0;
    for await (const c of this) {
      n += c.length;
      // Over the limit: thrown (leaving the loop discards the rest), not cancelled, so the handler's
      // error answer reaches the sender as ERR_MESSAGE_TOO_LARGE (a CANCEL would say only ERR_CANCELLED).
      if (n > maxBytes) throw new PointSubError("ERR_MESSAGE_TOO_LARGE", `stream larger than ${maxBytes} bytes`);
      parts.push(c);
    }
    const out = new Uint8Array(n);
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }

  /** The stream as a web ReadableStream (pull-based: backpressure is kept). */
  readable(): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          const r = await this.next();
          if (r.done === true) controller.close();
          else controller.enqueue(r.value);
        },
        cancel: () => {
          this.cancel("reader cancelled");
        },
      },
      { highWaterMark: 0 },
    );
  }

  private verifyEnd(info: { length: number; crc: number }): void {
    const have = this.offset + this.received;
    let err: PointSubError | undefined;
    if (info.length !== have) {
      err = protocolError(`stream ended at ${have} bytes but the sender counted ${info.length}`);
    } else if (this.total !== undefined && this.total !== have) {
      err = protocolError(`stream declared ${this.total} bytes and carried ${have}`);
    } else if (info.crc !== this.crc) {
      err = PointSubError.fromPeer(
        "ERR_CHECKSUM",
        "end-to-end CRC32C of the stream content does not match the sender's",
      );
    }
    if (err !== undefined) {
      this.endError = err;
      this.fail(err);
      throw err;
    }
    this.finished = true;
    this.progress.setStatus("completed");
  }

  private wakeReader(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
}
