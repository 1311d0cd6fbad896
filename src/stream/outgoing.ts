import type { CodecRegistry } from "../codec/codec-registry.ts";
import { codecById } from "../codec/codecs.ts";
import type { CompressionCodec } from "../codec/compression.ts";
import { type Crc32c, JS_CRC32C_IMPL } from "../codec/crc32c.ts";
import { crc32cCombine } from "../codec/crc32c-combine.ts";
import { F_COMPRESSED, F_END, F_START } from "../codec/frame.ts";
import { encodeStreamEnd } from "../codec/stream-prefix.ts";
import { varintLength, writeVarint } from "../codec/varint.ts";
import { describeThrown } from "../errors/describe.ts";
import { PointSubError } from "../errors/error.ts";
import type { Progress } from "../transfer/progress.ts";
import { Limiter } from "../util/limiter.ts";
import { Queue } from "../util/queue.ts";
import { takeChunkCrc } from "./chunk-crc.ts";
import { type StreamItem, streamCost } from "./item.ts";
import { takeRelease, takeWritten } from "./release.ts";
import type { Transfer } from "./transfer.ts";
import type { StreamSource } from "./types.ts";

const EMPTY = new Uint8Array(0);
/** Frames smaller than this are never compressed. */
export const COMPRESS_MIN_BYTES = 4096;
/** Bytes of a chunk compressed synchronously to decide whether the chunk compresses. */
const PROBE_BYTES = 8192;
/** Compress only when the probe shrinks to at most this fraction. */
const PROBE_RATIO = 0.9;
/** Compressed frames in flight per stream. */
const COMPRESS_AHEAD = 2;

/** What an outgoing stream needs from its connection. */
export interface OutStreamPort {
  /** Frames were added to `items`: the connection's writer sends them under credit, in order. */
  itemsAdded(): void;
  /**
   * Counts a compression outcome in the connection's stats: `used` true (compressed), false (sent raw:
   * it did not compress, or auto skipped it), undefined (sent raw, too small to try).
   */
  compressed(codec: string, before: number, after: number, used: boolean | undefined): void;
}

/** How an outgoing stream compresses: a codec, and whether to decide per chunk. */
export interface CompressionPlan {
  codec: CompressionCodec | undefined;
  auto: boolean;
}

/**
 * The producing side of one stream: pulls from the source while the
 * writer's queue for it is below `highWater`, slices into frames, computes
 * the end-to-end CRC32C, compresses when it pays, and tracks acknowledged
 * bytes for progress.
 */
/**
 * Sets a transfer's {@link Transfer.contentCrc} (the stream engine and a
 * resumable transfer's last attempt): here, with the code loaded on demand,
 * not in transfer.ts, which a browser page loads up front.
 */
export function setContentCrc(t: Transfer, crc: number | undefined): void {
  (t as { contentCrc: number | undefined }).contentCrc = crc;
}

export class OutgoingStream {
  readonly id: number;
  readonly items = new Queue<StreamItem>();
  /** Wire bytes queued in `items` (not yet handed to the transport). */
  private queued = 0;
  private readonly highWater: number;
  private readonly chunk: number;
  private readonly port: OutStreamPort;
  private readonly progress: Progress;
  private readonly plan: CompressionPlan;
  private readonly maxRatio: number;
  private crc: number;
  private length: number;
  private wake: (() => void) | undefined;
  private stopped: PointSubError | undefined;
  /**
   * While the run waits for the source's next chunk: the source and its
   * iterator, which {@link stop} closes; undefined otherwise (no closure
   * per chunk).
   */
  private waitingSource: StreamSource | undefined;
  private waitingIterator: AsyncIterator<Uint8Array> | Iterator<Uint8Array> | undefined;
  /** Ends that wait (done) when {@link stop} comes: set only while compression jobs are in flight. */
  private waitEnd: ((r: IteratorResult<Uint8Array>) => void) | undefined;
  /** The source was closed by {@link stop} (the run's failure does not close it again). */
  private sourceClosed = false;
  /** Sent frames awaiting the receiver's credit: [wire bytes, content bytes]. */
  private readonly unacked = new Queue<number>();
  private ackCarry = 0;
  /** Auto compression: chunks to skip before probing again, and the current back-off. */
  private skip = 0;
  private backoff = 1;
  private readonly crcImpl: Crc32c;
  private readonly jobs: Limiter;

  constructor(
    id: number,
    port: OutStreamPort,
    progress: Progress,
    opts: {
      chunk: number;
      highWater: number;
      offset: number;
      prefixCrc: number;
      plan: CompressionPlan;
      /** The receiver's maxCompressionRatio: frames that would expand more go uncompressed. */
      maxRatio: number;
      /** The runtime's CRC32C implementation (default: pure JS). */
      crc?: Crc32c;
      /** The runtime's bound on compression jobs at once (default: 4 for this stream alone). */
      jobs?: Limiter;
    },
  ) {
    this.id = id;
    this.port = port;
    this.progress = progress;
    this.chunk = opts.chunk;
    this.highWater = opts.highWater;
    this.length = opts.offset;
    this.crc = opts.offset > 0 ? opts.prefixCrc : 0;
    this.plan = opts.plan;
    this.maxRatio = opts.maxRatio;
    this.crcImpl = opts.crc ?? JS_CRC32C_IMPL;
    this.jobs = opts.jobs ?? new Limiter(4);
  }

  /** Queues the START frame. */
  start(head: Uint8Array): void {
    this.enqueue({ flags: F_START, head, data: EMPTY, content: 0, crc: -1 });
  }

  /**
   * Pulls the source to its end and queues END. Rejects with the reason the
   * stream stopped (ERR_SOURCE when the source failed).
   */
  async run(source: StreamSource): Promise<void> {
    let iterator: AsyncIterator<Uint8Array> | Iterator<Uint8Array> | undefined;
    // Compression jobs in flight, in content order: each frame is queued as soon as it and those before it
    // are ready, not when the next chunk comes (a live feed's last chunk waited for the source's next one,
    // delivered an interval late or never).
    const ahead: Compressing[] = [];
    const flush = (): void => {
      while (ahead.length !== 0 && ahead[0].item !== undefined && this.stopped === undefined)
        this.enqueue((ahead.shift() as Compressing).item as StreamItem);
    };
    try {
      // In the try: a source whose getReader() ([Symbol.asyncIterator](), [Symbol.iterator]()) throws fails the send too.
      try {
        iterator = toIterator(source);
      } catch (err) {
        if (err instanceof PointSubError) throw err;
        throw new PointSubError("ERR_SOURCE", `stream source failed: ${describeThrown(err)}`, { cause: err });
      }
      for (;;) {
        if (this.stopped !== undefined) throw this.stopped;
        let r: IteratorResult<Uint8Array>;
        this.waitingSource = source;
        this.waitingIterator = iterator;
        try {
          // A job in flight may fail meanwhile, which stops the stream: the wait ends then, not when the source
          // next yields (closing an async generator waits for its pending next(): a live feed's next event). A sync
          // iterator never waits: read as before.
          const next = iterator.next();
          r = await (ahead.length === 0 || !(next instanceof Promise) ? next : this.orStop(next));
        } catch (err) {
          if (this.stopped !== undefined) throw this.stopped; // its failure is the close's (a destroyed Readable)
          throw new PointSubError("ERR_SOURCE", `stream source failed: ${describeThrown(err)}`, { cause: err });
        } finally {
          this.waitingIterator = undefined;
          this.waitEnd = undefined;
        }
        if (this.stopped !== undefined) throw this.stopped;
        if (r.done === true) break;
        const value = r.value;
        if (!(value instanceof Uint8Array)) {
          throw new PointSubError("ERR_SOURCE", "stream source yielded something other than a Uint8Array");
        }
        const release = takeRelease(value);
        const written = takeWritten(value);
        const crcNotice = takeChunkCrc(value);
        for (let off = 0; off < value.length; off += this.chunk) {
          const end = Math.min(value.length, off + this.chunk);
          const piece = value.subarray(off, end);
          // The chunk's buffer may be reused once its last frame has left; it was sent then too.
          const last = end === value.length ? release : undefined;
          const wrote = end === value.length ? written : undefined;
          const total = this.progress.total;
          if (total !== undefined && this.length + piece.length > total) {
            throw new PointSubError("ERR_SOURCE", `the source yielded more than its declared ${total} bytes`);
          }
          // Unknown total: END's length may not pass 2^53 - 1 (docs/PROTOCOL.md §2, varint bounds). Reached
          // only from a huge offset: a resume answer of a receiver that claims (nearly) 2^53 bytes held.
          if (this.length + piece.length > Number.MAX_SAFE_INTEGER) {
            throw new PointSubError(
              "ERR_SOURCE",
              `the content would pass 2^53 - 1 bytes, a stream's largest length (${this.length} before this chunk)`,
            );
          }
          const pieceCrc = this.crcImpl.compute(piece);
          this.crc = crc32cCombine(this.crc, pieceCrc, piece.length);
          this.length += piece.length;
          if (this.wantsCompression(piece)) {
            const c: Compressing = { job: this.compress(piece, last, wrote), item: undefined };
            // A failure stops the stream at once, also while the source waits for data (before, the job was
            // awaited only behind the next chunk: an unhandled rejection meanwhile ended a Node process).
            c.job.then(
              (item) => {
                c.item = item;
                flush();
              },
              (err: PointSubError) => this.stop(err),
            );
            ahead.push(c);
            if (ahead.length >= COMPRESS_AHEAD) await ahead[0].job;
          } else {
            await settled(ahead);
            if (this.stopped !== undefined) throw this.stopped;
            const release = wrote === undefined ? last : both(last, wrote);
            this.enqueue({ flags: 0, head: EMPTY, data: piece, content: piece.length, crc: pieceCrc, release });
          }
          while (this.queued >= this.highWater && this.stopped === undefined) {
            await new Promise<void>((r) => (this.wake = r));
          }
          if (this.stopped !== undefined) throw this.stopped;
        }
        // All of the chunk checksummed: its end is a checkpoint of the content (sendFile's resume).
        crcNotice?.(this.length, this.crc >>> 0);
      }
      await settled(ahead);
      if (this.stopped !== undefined) throw this.stopped;
      const total = this.progress.total;
      if (total !== undefined && this.length !== total) {
        // A file truncated while it was sent: said here, not as the receiver's ERR_PROTOCOL about the peer.
        throw new PointSubError(
          "ERR_SOURCE",
          `the source ended after ${this.length} of its declared ${total} bytes (changed while being sent?)`,
        );
      }
      this.enqueue({
        flags: F_END,
        head: EMPTY,
        data: encodeStreamEnd(this.length, this.crc),
        content: 0,
        crc: -1,
      });
    } catch (err) {
      if (!this.sourceClosed) closeSource(undefined, iterator);
      // As toPointSubError, without its String(err): a value String cannot convert (a result whose `done`
      // getter threw one) made that throw a TypeError here, and the send failed with it instead.
      if (err instanceof PointSubError) throw err;
      throw new PointSubError("ERR_SOURCE", describeThrown(err), { cause: err });
    }
  }

  /** Content bytes produced so far (offset included). */
  get produced(): number {
    return this.length;
  }

  /** CRC32C of the content produced so far (offset included): the whole content's once END is queued. */
  get contentCrc(): number {
    return this.crc >>> 0;
  }

  /**
   * Stops producing (answer arrived, cancelled, connection closed). A source
   * the run waits on is closed now, not when it next yields (a live feed, a
   * socket or a pipe with nothing to say held its resources until then, or
   * for ever): its iterator's `return()` (a ReadableStream's reader is
   * cancelled, which ends the wait) and a Node Readable's `destroy()`.
   */
  stop(reason: PointSubError): void {
    if (this.stopped !== undefined) return;
    this.stopped = reason;
    const it = this.waitingIterator;
    if (it !== undefined) {
      this.waitingIterator = undefined;
      this.sourceClosed = true;
      closeSource(this.waitingSource, it);
    }
    this.waitEnd?.({ done: true, value: undefined });
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** The source's next chunk, or the end of the wait when the stream stops first (see {@link waitEnd}). */
  private orStop(next: Promise<IteratorResult<Uint8Array>>): Promise<IteratorResult<Uint8Array>> {
    next.catch(() => {}); // left behind when the stop comes first: its failure is the close's
    return Promise.race([next, new Promise<IteratorResult<Uint8Array>>((r) => (this.waitEnd = r))]);
  }

  /** The writer handed `item` to the transport. */
  onItemSent(item: StreamItem): void {
    const wire = item.head.length + item.data.length;
    this.queued -= wire;
    if (item.content !== 0 || wire !== 0) {
      // The receiver returns credit for what the frame cost on the window.
      this.unacked.push(streamCost(item));
      this.unacked.push(item.content);
    }
    if (this.queued < this.highWater) {
      const w = this.wake;
      this.wake = undefined;
      w?.();
    }
  }

  /** The receiver returned `n` bytes of stream credit: they were consumed. */
  onAck(n: number): void {
    let left = n + this.ackCarry;
    let content = 0;
    for (;;) {
      const wire = this.unacked.peek();
      if (wire === undefined || wire > left) break;
      this.unacked.shift();
      content += this.unacked.shift() as number;
      left -= wire;
    }
    this.ackCarry = left;
    if (content !== 0) this.progress.add(content);
  }

  /**
   * The receiver answered the stream with success: it read all that was sent,
   * including the last part it never credits back. Counts that part as done
   * (a stream of unknown size completed at the bytes acknowledged before:
   * 0 for one that fit in the window).
   */
  onAnswered(): void {
    let content = 0;
    while (this.unacked.length > 0) {
      this.unacked.shift();
      content += this.unacked.shift() as number;
    }
    this.ackCarry = 0;
    if (content !== 0) this.progress.add(content);
  }

  private enqueue(item: StreamItem): void {
    this.queued += item.head.length + item.data.length;
    this.items.push(item);
    this.port.itemsAdded();
  }

  private wantsCompression(piece: Uint8Array): boolean {
    const codec = this.plan.codec;
    if (codec === undefined) return false;
    if (piece.length < COMPRESS_MIN_BYTES) {
      // Its bytes still count (before = after): else a stream of small frames sent with a codec left the
      // counters untouched, and their ratio was that of the large frames alone.
      this.port.compressed(codec.name, piece.length, piece.length, undefined);
      return false;
    }
    if (!this.plan.auto) return true;
    if (this.skip > 0) {
      this.skip--;
      this.port.compressed(codec.name, piece.length, piece.length, false);
      return false;
    }
    const sample = piece.subarray(0, Math.min(PROBE_BYTES, piece.length));
    if (codec.probe(sample) <= sample.length * PROBE_RATIO) {
      this.backoff = 1;
      return true;
    }
    // Incompressible: skip the next chunks, longer each time it stays so.
    this.skip = this.backoff;
    this.backoff = Math.min(this.backoff * 2, 64);
    this.port.compressed(codec.name, piece.length, piece.length, false);
    return false;
  }

  private async compress(
    piece: Uint8Array,
    release: (() => void) | undefined,
    written: (() => void) | undefined,
  ): Promise<StreamItem> {
    const codec = this.plan.codec as CompressionCodec;
    let out: Uint8Array;
    try {
      out = await this.jobs.run(() => codec.compress(piece));
    } catch (err) {
      // The codec's failure, not the source's (it said ERR_SOURCE, "stream source failed").
      throw new PointSubError("ERR_COMPRESSION", `${codec.name} compression failed: ${describeThrown(err)}`, {
        cause: err,
      });
    }
    // A COMPRESSED frame starts with its decompressed length; one that would
    // expand more than the receiver accepts goes uncompressed.
    const head = new Uint8Array(varintLength(piece.length));
    writeVarint(head, 0, piece.length);
    const used = head.length + out.length < piece.length && piece.length <= out.length * this.maxRatio;
    this.port.compressed(codec.name, piece.length, head.length + out.length, used);
    if (!used) {
      const r = written === undefined ? release : both(release, written);
      return { flags: 0, head: EMPTY, data: piece, content: piece.length, crc: -1, release: r };
    }
    // The buffer now (its frame carries the compressed copy); the notice that it was sent once that frame was written.
    release?.();
    return { flags: F_COMPRESSED, head, data: out, content: piece.length, crc: -1, release: written };
  }
}

/** A chunk being compressed: its frame once ready (until then undefined). */
interface Compressing {
  job: Promise<StreamItem>;
  item: StreamItem | undefined;
}

/** Waits until every job of `ahead` is ready (each queued its frame as it was) or one failed (it threw). */
async function settled(ahead: readonly Compressing[]): Promise<void> {
  if (ahead.length !== 0) await Promise.all(ahead.map((c) => c.job));
}

/** A chunk's buffer release and its written notice, as one release (only for a watched source: {@link onChunkWritten}). */
function both(release: (() => void) | undefined, written: () => void): () => void {
  if (release === undefined) return written;
  return () => {
    written();
    release();
  };
}

/**
 * Closes a stream's source: its iterator's `return()` (not awaited; a
 * failure is ignored) and, given `source`, a Node Readable's `destroy()`
 * (its async iterator's `return()` waits for the pending read, which may
 * never come).
 */
function closeSource(
  source: StreamSource | undefined,
  iterator: AsyncIterator<Uint8Array> | Iterator<Uint8Array> | undefined,
): void {
  Promise.resolve()
    .then(() => iterator?.return?.())
    .catch(() => {});
  // A destroy that throws is the source's own failure: thrown here it left sendStream (a refused send) or the
  // connection's teardown (a stopped stream) half done.
  try {
    const destroy = (source as { destroy?: unknown } | undefined)?.destroy;
    if (typeof destroy === "function") destroy.call(source);
  } catch {}
}

/**
 * Closes the source of a stream that ended before any of it was read (given
 * up, or its connection ended, while it waited for a stream slot): a Node
 * Readable is destroyed, a ReadableStream cancelled, an iterator (an async
 * generator) returned. An iterable is not asked for an iterator to close.
 */
export function closeUnread(source: unknown): void {
  // Anything else given (a send refused for its source) is left alone; one whose properties throw (a revoked
  // Proxy) too: sendStream threw it, a refused send's failure is its transfer's.
  try {
    if (!isStreamSource(source)) return;
    const s = source as Record<string, unknown>;
    if (typeof s.destroy === "function") closeSource(source as StreamSource, undefined);
    else if (typeof s.getReader === "function" && typeof s.cancel === "function") {
      // Rejects when the stream is locked (someone else reads it): theirs to close.
      Promise.resolve()
        .then(() => (source as ReadableStream<Uint8Array>).cancel())
        .catch(() => {});
    } else if (typeof s.next === "function") closeSource(undefined, source as AsyncIterator<Uint8Array>);
  } catch {}
}

/** Whether `source` is something {@link toIterator} can read (checked before a stream's START goes out). */
export function isStreamSource(source: unknown): boolean {
  if (source === null || (typeof source !== "object" && typeof source !== "function")) return false;
  const s = source as Record<symbol | string, unknown>;
  return (
    typeof s[Symbol.asyncIterator] === "function" ||
    typeof s.getReader === "function" ||
    typeof s[Symbol.iterator] === "function"
  );
}

function toIterator(source: StreamSource): AsyncIterator<Uint8Array> | Iterator<Uint8Array> {
  const s = source as unknown as Record<symbol | string, unknown>;
  // A ReadableStream through its reader, even where it is async iterable too: the reader's cancel() ends
  // a pending read at once, the async iterator's return() waits for it (which may never come).
  if (typeof s.getReader === "function") {
    const reader = (source as ReadableStream<Uint8Array>).getReader();
    return {
      next: () => reader.read() as Promise<IteratorResult<Uint8Array>>,
      return: async () => {
        await reader.cancel();
        return { done: true, value: undefined };
      },
    };
  }
  if (typeof s[Symbol.asyncIterator] === "function")
    return (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  if (typeof s[Symbol.iterator] === "function") return (source as Iterable<Uint8Array>)[Symbol.iterator]();
  throw new PointSubError(
    "ERR_INVALID_ARGUMENT",
    "stream source must be an AsyncIterable, a ReadableStream or an Iterable of Uint8Array",
  );
}

/** Codecs registered process-wide (the default where no runtime is given). */
const GLOBAL_CODECS: Pick<CodecRegistry, "get"> = { get: codecById };

/** The codec the sender uses for `compress` given what the peer accepts; throws ERR_COMPRESSION. */
export function planCompression(
  compress: string | undefined,
  peerMask: number,
  localMask: number,
  order: readonly number[],
  codecs: Pick<CodecRegistry, "get"> = GLOBAL_CODECS,
): CompressionPlan {
  if (compress === undefined || compress === "off") return { codec: undefined, auto: false };
  // Not a name at all (null, a number): the caller's mistake, not a codec missing here (ERR_COMPRESSION).
  if (typeof compress !== "string") {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `compress must be a codec's name, "auto" or "off" (got ${String(compress)})`,
    );
  }
  if (compress === "auto") {
    for (const id of order) {
      const bit = 1 << (id - 1);
      if ((peerMask & bit) !== 0 && (localMask & bit) !== 0) return { codec: codecs.get(id), auto: true };
    }
    return { codec: undefined, auto: false };
  }
  for (const id of order) {
    const c = codecs.get(id);
    if (c?.name !== compress) continue;
    if ((peerMask & (1 << (id - 1))) === 0) {
      throw new PointSubError("ERR_COMPRESSION", `the peer does not accept ${compress}`);
    }
    return { codec: c, auto: false };
  }
  throw new PointSubError("ERR_COMPRESSION", `compression ${compress} is not available here`);
}
