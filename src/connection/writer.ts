import { type Crc32c, combineCrcs, JS_CRC32C_IMPL } from "../codec/crc32c.ts";
import { headerLength, writeCrc, writeHeader } from "../codec/encoder.ts";
import { BATCH_RESERVE, CRC_LENGTH, F_END, F_START, MIN_FRAME_SIZE, T_BATCH, T_RES } from "../codec/frame.ts";
import { varintLength, writeVarint } from "../codec/varint.ts";
import type { PointSubError } from "../errors/error.ts";
import type { StreamItem } from "../stream/item.ts";
import { Queue } from "../util/queue.ts";
import type { Pacer } from "./pacer.ts";
import { streamEngine } from "./stream-engine.ts";

export type { StreamItem } from "../stream/item.ts";

/** Payloads smaller than this are copied into the write slab; larger ones are written by reference. */
const COPY_THRESHOLD = 16 * 1024;
/**
 * Size of the process-wide write pool every writer encodes into. A writer
 * takes a region at the pool's end (growing it in place while it stays the
 * last taker) and gives it up at each flush: an idle connection holds no
 * write memory, and a broadcast to 1,000 sessions fills a few shared pools
 * instead of keeping 1,000 private slabs.
 */
const POOL_SIZE = 64 * 1024;
/** Largest in-place growth of a writer's region at once (a flood's regions double up to this). */
const MAX_STEP = 16 * 1024;
/** Flush as soon as this many bytes are batched. */
export const FLUSH_BYTES = 16 * 1024;
/**
 * Single-frame messages written in one synchronous run (a flood) are handed
 * to the transport once this many bytes are batched: two BATCH frames per
 * write, half the writes (and syscalls) of {@link FLUSH_BYTES}.
 */
const SINGLES_FLUSH_BYTES = 32 * 1024;
/**
 * Room a new region needs after its first frame at the pool's end, else it
 * starts a new pool: a batch flushed at {@link FLUSH_BYTES} (a turn's
 * requests or answers) then grows in place and goes out as one buffer (at
 * most this much of a pool's end is left unused). A flood's 32 KiB flushes
 * fill pools to the end instead (every other one goes out as two buffers):
 * room for a whole one would leave half of each pool unused, and twice the
 * pools meant twice the fresh pages a flooding client touches.
 */
const REGION_ROOM = FLUSH_BYTES + 1024;
/**
 * Paced chunks of chunked messages and streams encoded in one pump are
 * handed to the transport together up to this many bytes (one writev): the
 * pacer cuts frames to a quarter of its window (tens of KiB on a fast link),
 * and one write per frame cost the sender 2.5-3.8x the writes per MB of
 * unpaced 256 KiB frames. Frames, their order and the pacer's accounting are
 * unchanged (positions count bytes batched; the window still bounds what is
 * in flight); only the grouping into writes differs. Unpaced, every frame
 * over {@link FLUSH_BYTES} is written at once, so a transport that asks to
 * wait stops the pump before the next chunk.
 */
export const BULK_FLUSH_BYTES = 256 * 1024;

/** One outgoing message (MSG, REQ or RES body), single-frame or chunked. */
export interface OutMessage {
  type: number;
  id: number;
  /** Type-specific prefix (route for REQ, status for RES); empty for MSG. */
  head: Uint8Array;
  data: Uint8Array;
  /** Chunked: bytes of `data` already sent. */
  offset: number;
  /** Chunked: whether the START frame went out. */
  started: boolean;
  /** Chunked: credit left on this message's stream window. */
  credit: number;
  /** Chunked: payload bytes per frame. */
  chunk: number;
  /** Whether this message goes out as one frame. */
  single: boolean;
  /** Extra flags of the START frame (REQ: KEYED); 0 or absent for none. */
  startFlags?: number;
  /** Single-frame: CRC32C of `data` computed once by the sender (a broadcast), or -1. */
  crc: number;
  resolve: (() => void) | undefined;
  reject: ((err: PointSubError) => void) | undefined;
  /**
   * STREAM only: frames supplied one at a time by the stream's producer
   * (`data` is unused). The message stays in the rotation while the queue is
   * empty and leaves it after the item with END.
   */
  items?: Queue<StreamItem>;
  /** STREAM only: called after each item is handed to the transport. */
  onItem?: (item: StreamItem) => void;
}

/** What the writer needs from its connection. */
export interface WriterSink {
  write(chunks: readonly Uint8Array[]): boolean;
  /**
   * True when every chunk handed to `write` so far has left the transport's
   * buffers, so their memory may be reused (a socket whose writes all went
   * to the kernel); false or undefined (the transport cannot tell) otherwise. Optional: without it, write memory is never recycled.
   */
  idle?(): boolean | undefined;
  /**
   * Chunked messages wait for the stream engine (`bulk-pump.ts` comes with
   * it): load it and {@link FrameWriter.wake} the writer once loaded.
   * Called at every pump while it loads. Optional: without it, they wait
   * until someone else loads the engine.
   */
  awaitEngine?(): void;
}

/**
 * Encodes frames into a slab and hands batches to the transport, scheduling
 * data by priority: control frames first, then single-frame messages in send
 * order, then one chunk of one chunked message at a time, round robin. Honors
 * the peer's connection and per-message credit.
 */
export class FrameWriter {
  checksum = true;
  /** Credit the peer granted on the connection. */
  connCredit = 0;
  /**
   * Pack small frames written in one turn into BATCH frames (one CRC for
   * many frames). Turned on by the connection once its HELLO is out, when
   * checksums are on.
   */
  batching = false;
  /** Largest BATCH payload: the peer's maxFrameSize, capped by the slab. */
  batchMax = MIN_FRAME_SIZE;
  /**
   * The peer's maxAssemblyBytes: declared totals of chunked messages open at
   * once (set at the handshake; until then 2^31 - 1, a small integer: a
   * larger start would keep the field a boxed double in every connection).
   */
  assemblyBudget = 2 ** 31 - 1;
  /** False after the transport asked us to wait for a drain. */
  writable = true;
  /**
   * Bytes of responses (RES messages) queued and not yet handed to the
   * transport: what this side owes the peer. With {@link controlBacklog}
   * it tells the connection when a peer that does not read must be read no
   * further.
   */
  answerQueued = 0;
  /** Bytes of queued messages (not streams) not yet encoded: what `Connection.bufferedAmount` reports. */
  queuedBytes = 0;
  /** Bytes of control frames written since the transport last asked to wait (reset on drain). */
  controlBacklog = 0;
  /**
   * `performance.now()` since when the writer has had work it cannot hand over —
   * the transport asked to wait, or queued messages lack the peer's
   * connection or message credit — without any frame going out; 0 when not
   * blocked. Streams waiting for credit do not count, whether stream or
   * connection credit (a slow reader is the receiving application's choice;
   * `progressTimeoutMs` bounds a stream that gets none).
   */
  blockedSince = 0;
  /** Frames and bytes handed to the transport. */
  framesOut = 0;
  bytesOut = 0;
  /**
   * Makes the pacer of chunked messages and streams (pacer.ts), on the
   * first one; undefined: bulk is not paced.
   */
  pacing: ((writer: FrameWriter) => Pacer | undefined) | undefined;
  /**
   * Paced bulk frames go to the transport together up to this many bytes
   * ({@link BULK_FLUSH_BYTES}); a transport with its own `maxFrameSize` sets
   * it to that (connection.ts), and then a write holds at most that many
   * bytes of bulk: a libp2p (yamux) stream queues what its
   * window cannot take of one write, and a small frame waited behind up to
   * 230 KiB of such a 256 KiB write at p99 (trace column `ystream`).
   */
  bulkFlushBytes = BULK_FLUSH_BYTES;

  declare private readonly sink: WriterSink;
  /**
   * This writer's region of the shared write pool (see {@link ensure}):
   * `slabStart..slabPos` is encoded and not yet cut, the rest reserved.
   * Empty when nothing is being encoded.
   */
  private slab = EMPTY;
  private slabStart = 0;
  private slabPos = 0;
  /** Where the region starts in `pool` (valid while `slab` is a view of the current pool). */
  private slabAt = 0;
  /** Bytes the next in-place growth reserves beyond what a frame needs (doubles per growth within a flush). */
  private step = 0;
  /** Open batch: offset of its reserved header, or -1. */
  private batchStart = -1;
  private batchInner = 0;
  private batchCount = 0;
  /** What the next flush hands to the transport (a shared empty array when nothing: {@link emit}). */
  private out: Uint8Array[] = NO_CHUNKS;
  private outBytes = 0;
  private flushScheduled = false;
  private pumping = false;
  private closed = false;
  /** Callers of whenDrained (a shared empty array until the first). */
  private drainWaiters: (() => void)[] = NO_CALLBACKS;
  /** Single-frame messages waiting (a shared empty queue, never pushed to, until the first). */
  private singles = NO_SINGLES;
  /**
   * Pools this writer took regions of whose bytes the transport may still
   * hold (see {@link PoolEntry}); confirmed at a flush or drain that finds
   * the transport idle. Undefined until the first region.
   */
  private unconfirmed: PoolEntry | PoolEntry[] | undefined;
  /**
   * @internal What waits for the bytes handed over so far to leave the
   * transport (a drain — a transport with `idle` reports one once a write it
   * held part of went out —, a write it took whole, or its close): buffer
   * releases of stream frames, and the budget
   * charges of answers sent as views of their handler's memory. A shared
   * empty array until the first.
   */
  releases: (() => void)[] = NO_CALLBACKS;
  /** @internal Chunked messages and streams and their round robin's state, made by the first one. */
  bulkState: BulkState | undefined;
  /**
   * @internal Connection credit the queued bulk needs before any of it can
   * go, set by the bulk pump when a pump sent none of it; reset by every
   * pump (what else changes — a message queued or removed, stream credit,
   * stream items, the pacer's window, a drain — pumps). Unset: unknown.
   * Added by the bulk pump, not the constructor (first-load bytes), and only
   * reset once set: a pump adding it to every writer changed the writers'
   * shape mid-run and cost rpc-pipe ~10 % (its hot paths saw two shapes).
   */
  declare need: number;

  declare private readonly crc: Crc32c;

  /** `crc` is the runtime's CRC32C implementation. */
  constructor(sink: WriterSink, crc: Crc32c = JS_CRC32C_IMPL) {
    this.sink = sink;
    this.crc = crc;
  }

  /** Resolves when nothing is queued and the transport is writable, or the writer closed. */
  whenDrained(): Promise<void> {
    if (this.closed || (this.writable && this.pending === 0)) return Promise.resolve();
    return new Promise((resolve) => {
      if (this.drainWaiters === NO_CALLBACKS) this.drainWaiters = [];
      this.drainWaiters.push(resolve);
    });
  }

  private notifyDrained(): void {
    if (this.drainWaiters.length === 0) return;
    if (!this.closed && (!this.writable || this.pending !== 0)) return;
    const waiters = this.drainWaiters;
    this.drainWaiters = NO_CALLBACKS;
    for (const w of waiters) w();
  }

  /** Messages waiting or in progress. */
  get pending(): number {
    return this.singles.length + (this.bulkState?.list.length ?? 0);
  }

  /** Paces bulk by the link's measured delivery (made by {@link pacing} with the first chunked message or stream). */
  get pacer(): Pacer | undefined {
    return this.bulkState?.pacer;
  }

  /** Writes a control frame (not flow-controlled) now. */
  control(type: number, flags: number, id: number, payload: Uint8Array): void {
    if (this.closed) return;
    if (!this.writable) this.controlBacklog += payload.length + 16;
    this.encode(type, flags, id, -1, payload, payload, 0, 0);
    this.scheduleFlush();
  }

  /**
   * Tries to write a single-frame message right away. Returns false when it
   * must be queued (not writable, credit short, or others waiting).
   */
  trySendNow(type: number, id: number, head: Uint8Array, data: Uint8Array, startFlags = 0, dataCrc = -1): boolean {
    const len = head.length + data.length;
    if (!this.writable || this.pumping || this.singles.length !== 0 || this.connCredit < len || this.closed) {
      return false;
    }
    this.connCredit -= len;
    const flags = WHOLE | startFlags;
    const n = headerLength(id, len) + len;
    // An open BATCH with room (its frames are at most batchMax, below COPY_THRESHOLD): appended
    // to it, without encode's general path (a flood's messages, a turn's answers).
    if (
      this.batchStart >= 0 &&
      this.slabPos + n - this.batchInner <= this.batchMax &&
      this.slab.length - this.slabPos >= n + CRC_LENGTH
    )
      this.append(type, flags, id, -1, head, data, 0, data.length, len);
    else this.encode(type, flags, id, -1, head, data, 0, data.length, dataCrc);
    if (this.batched() >= SINGLES_FLUSH_BYTES) this.flush();
    else this.scheduleFlush();
    return true;
  }

  /** Queues a message; it resolves when its last frame is handed to the transport. */
  enqueue(m: OutMessage): void {
    if (m.type === T_RES) this.answerQueued += m.head.length + m.data.length;
    if (m.items === undefined) this.queuedBytes += m.head.length + m.data.length;
    if (m.single) {
      if (this.singles === NO_SINGLES) this.singles = new Queue();
      this.singles.push(m);
    } else {
      let b = this.bulkState;
      if (b === undefined) {
        b = { list: [], rr: 0, pacer: undefined, probeFirst: false, assemblyOpen: 0, chunkedOpen: 0 };
        this.bulkState = b;
      }
      if (b.pacer === undefined && this.pacing !== undefined) b.pacer = this.pacing(this);
      b.list.push(m);
    }
    this.pump();
  }

  /**
   * Whether what this side owes cannot go out now: the transport asked to
   * wait, or bulk waits for the pacer's acknowledgements. With
   * {@link answerQueued} it tells the read gate that a peer must be read no
   * further.
   */
  get stalled(): boolean {
    if (!this.writable) return true;
    const b = this.bulkState;
    return b !== undefined && b.pacer !== undefined && b.list.length !== 0 && b.pacer.room(this.position) <= 0;
  }

  /** Byte-stream position of the next frame: every byte encoded so far. */
  get position(): number {
    return this.bytesOut + this.batched();
  }

  /**
   * Something that waited can go now: the pacer's window opened, the stream
   * engine loaded, or a stream's producer queued more items (on a message
   * that must be enqueued). Sends what waits.
   */
  wake(): void {
    this.pump();
  }

  /**
   * The peer granted more connection credit. Below {@link need} it cannot
   * move any queued bulk: no pump (each scans every queued message; a peer
   * owed many chunked answers made every CREDIT frame of a flood cost that).
   */
  addConnCredit(n: number): void {
    this.connCredit += n;
    if (!(this.connCredit < this.need)) this.pump();
  }

  /**
   * The peer granted more credit on message `id`; false if no such message
   * is in progress, undefined before the stream engine loaded (`bulk-pump.ts`:
   * no chunked message has started then, and a peer credits none it has not seen).
   */
  addStreamCredit(id: number, n: number): boolean | undefined {
    return streamEngine()?.streamCredit(this, id, n);
  }

  /** The transport drained. */
  onDrain(): void {
    this.writable = true;
    this.controlBacklog = 0;
    if (this.slab === EMPTY && this.out.length === 0 && this.sink.idle?.()) this.confirmWritten();
    // Everything written before the drain has left the transport's buffers.
    this.written();
    this.pump();
  }

  /**
   * Removes message `id` (of `type`) from the queues. Returns "none" if not
   * queued, "queued" if removed before any byte went out, "started" if some
   * frames were sent (the caller must send CANCEL).
   */
  remove(type: number, id: number, err: PointSubError): "none" | "queued" | "started" {
    let queued: OutMessage | undefined;
    this.singles.remove((m) => {
      if (m.id !== id || m.type !== type) return false;
      queued = m;
      return true;
    });
    if (queued !== undefined) {
      this.unqueue(queued);
      queued.reject?.(err);
      return "queued";
    }
    return this.removeChunked(type, id, err);
  }

  /** Chunked messages waiting or in progress. */
  get chunkedPending(): number {
    return this.bulkState?.list.length ?? 0;
  }

  /** {@link remove} for a chunked message only (single-frame ones are left alone). */
  removeChunked(type: number, id: number, err: PointSubError): "none" | "queued" | "started" {
    const b = this.bulkState;
    const i = b === undefined ? -1 : b.list.findIndex((m) => m.id === id && m.type === type);
    if (b === undefined || i < 0) return "none";
    const [m] = b.list.splice(i, 1);
    this.unqueue(m);
    m.reject?.(err);
    if (m.started && m.items === undefined) {
      b.assemblyOpen -= m.data.length;
      b.chunkedOpen--;
    }
    this.pump();
    return m.started ? "started" : "queued";
  }

  /** A queued message leaves without being sent: it no longer counts as owed. */
  private unqueue(m: OutMessage): void {
    const owed = (m.started ? 0 : m.head.length) + m.data.length - m.offset;
    if (m.type === T_RES) this.answerQueued -= owed;
    if (m.items === undefined) this.queuedBytes -= owed;
  }

  /** Fails everything queued and stops writing. */
  close(err: PointSubError): void {
    if (this.closed) return;
    this.closed = true;
    this.answerQueued = 0;
    this.queuedBytes = 0;
    // The transport drops what it holds: budget charges waiting for the write are returned.
    this.written();
    for (const m of this.singles.drain()) m.reject?.(err);
    const bulk = this.bulkState?.list.splice(0) ?? NO_BULK;
    for (const m of bulk) m.reject?.(err);
    this.notifyDrained();
  }

  /**
   * Releases the slab when nothing is batched or queued, so an idle
   * connection holds no write buffer; the next write allocates a new one.
   */
  trim(): void {
    if (this.slabPos !== this.slabStart || this.batchStart >= 0 || this.pending !== 0 || this.out.length !== 0) return;
    this.release();
  }

  /**
   * Gives the region back: what it reserved beyond the bytes cut is returned
   * to the pool when nobody took pool bytes after it. The cut bytes stay
   * untouched (the transport may still hold them).
   */
  private release(): void {
    if (this.slab !== EMPTY && this.slab.buffer === pool.buffer && this.slabAt + this.slab.length === poolPos) {
      poolPos = this.slabAt + this.slabStart;
    }
    this.slab = EMPTY;
    this.slabStart = 0;
    this.slabPos = 0;
    // A writer that grew its region keeps half its step for the next flush.
    this.step >>= 1;
  }

  /** @internal The microtask of {@link scheduleFlush} came. */
  scheduledFlush(): void {
    this.flushScheduled = false;
    this.flush();
  }

  /** Hands everything batched to the transport now. */
  flush(): void {
    this.cut();
    this.release();
    if (this.out.length === 0) return;
    const chunks = this.out;
    this.out = NO_CHUNKS;
    this.bytesOut += this.outBytes;
    this.outBytes = 0;
    if (this.closed) return;
    if (!this.sink.write(chunks)) {
      this.writable = false;
      if (this.blockedSince === 0) this.blockedSince = performance.now();
    } else if (this.sink.idle?.()) {
      // Everything handed over went to the kernel: its pool memory may be reused.
      this.confirmWritten();
    }
  }

  /** @internal Everything handed to the transport so far left it (or never will): runs {@link releases}. */
  written(): void {
    const r = this.releases;
    this.releases = NO_CALLBACKS;
    for (const f of r) f();
  }

  /**
   * The transport holds none of this writer's bytes any more (and the writer
   * holds no region): the pools it took regions of lose it as a holder, and
   * a retired pool nobody holds goes back to the free list.
   */
  private confirmWritten(): void {
    const u = this.unconfirmed;
    if (Array.isArray(u)) {
      for (let i = 0; i < u.length; i++) unhold(u[i]);
      u.length = 0;
    } else if (u !== undefined) {
      // One pool, the usual case (a request's answer): nothing is kept once it is confirmed.
      unhold(u);
      this.unconfirmed = undefined;
    }
    // And so do the releases waiting for it.
    this.written();
  }

  /** @internal Bytes encoded and not yet handed to the transport. */
  batched(): number {
    return this.outBytes + this.slabPos - this.slabStart;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // One microtask flushes every writer that wrote this turn (no closure per writer).
    if (toFlush.length === 0) queueMicrotask(flushAll);
    toFlush.push(this);
  }

  private pump(): void {
    if (this.pumping || this.closed) return;
    this.pumping = true;
    this.need &&= 0;
    const before = this.framesOut;
    try {
      this.pumpLoop();
    } finally {
      this.pumping = false;
    }
    if (!this.writable || this.singles.length !== 0 || this.messageWaiting()) {
      if (this.blockedSince === 0 || this.framesOut !== before) this.blockedSince = performance.now();
    } else {
      this.blockedSince = 0;
    }
    if (this.outBytes > 0 || this.slabPos > this.slabStart) this.scheduleFlush();
    this.notifyDrained();
  }

  /** Whether a chunked message (not a stream) is still queued after a pump: it waits for credit. */
  private messageWaiting(): boolean {
    for (const m of this.bulkState?.list ?? NO_BULK) if (m.items === undefined) return true;
    return false;
  }

  private pumpLoop(): void {
    while (this.writable && !this.closed) {
      let progressed = false;
      // 1. single-frame messages, in send order
      for (let m = this.singles.peek(); m !== undefined; m = this.singles.peek()) {
        const len = m.head.length + m.data.length;
        if (this.connCredit < len) break;
        this.singles.shift();
        this.connCredit -= len;
        if (m.type === T_RES) this.answerQueued -= len;
        this.queuedBytes -= len;
        this.encode(m.type, WHOLE | (m.startFlags ?? 0), m.id, -1, m.head, m.data, 0, m.data.length, m.crc);
        progressed = true;
        m.resolve?.();
        if (this.batched() >= SINGLES_FLUSH_BYTES) {
          this.flush();
          if (!this.writable) return;
        }
      }
      if (this.singles.length !== 0) break; // blocked on credit: keep order, wait
      // 2. one chunk of one chunked message, within the pacer's window
      const b = this.bulkState;
      if (b !== undefined && b.list.length !== 0 && this.pumpBulk(b)) progressed = true;
      if (!progressed) break;
    }
  }

  /**
   * One frame of one chunked message or stream, round robin, within the
   * pacer's window: `bulk-pump.ts`, which comes with the stream engine (a
   * browser page loads it the first time it sends a message of several
   * frames: they wait in the queue meanwhile, as for credit); false when
   * none could go.
   */
  private pumpBulk(b: BulkState): boolean {
    const engine = streamEngine();
    if (engine !== undefined) return engine.pumpBulk(this, b);
    this.sink.awaitEngine?.();
    return false;
  }

  /**
   * Encodes one frame: header, optional total-length varint (`total` >= 0),
   * `head`, `data[start..end)` and the CRC trailer.
   */
  /** @internal (`bulk-pump.ts` encodes through it.) */
  encode(
    type: number,
    flags: number,
    id: number,
    total: number,
    head: Uint8Array,
    data: Uint8Array,
    start: number,
    end: number,
    dataCrc = -1,
  ): void {
    const dataLen = end - start;
    const preLen = (total >= 0 ? varintLength(total) : 0) + head.length;
    const len = preLen + dataLen;
    const hlen = headerLength(id, len);
    const copy = dataLen < COPY_THRESHOLD;
    if (copy && this.batching && hlen + len <= this.batchMax) {
      this.encodeBatched(type, flags, id, total, head, data, start, end, len);
      return;
    }
    this.closeBatch();
    this.ensure(hlen + preLen + (copy ? dataLen : 0) + CRC_LENGTH);
    const slab = this.slab;
    const frameStart = this.slabPos;
    let p = writeFrameHead(slab, frameStart, type, flags, id, len, total, head);
    if (copy) {
      p = copyData(slab, p, data, start, end);
      if (this.checksum) p = writeCrc(slab, p, this.crc.range(slab, frameStart, p));
      this.slabPos = p;
    } else {
      const view = data.subarray(start, end);
      let crc = 0;
      if (this.checksum) {
        const headCrc = this.crc.range(slab, frameStart, p);
        const combine = combineCrcs;
        crc =
          dataCrc >= 0 && combine !== undefined ? combine(headCrc, dataCrc, dataLen) : this.crc.compute(view, headCrc);
      }
      this.slabPos = p;
      this.cut();
      this.emit(view, dataLen);
      if (this.checksum) {
        this.slabPos = writeCrc(slab, this.slabPos, crc);
      }
    }
    this.framesOut++;
  }

  /** Appends a small frame, without its own CRC, to the open BATCH (opening one if needed). */
  private encodeBatched(
    type: number,
    flags: number,
    id: number,
    total: number,
    head: Uint8Array,
    data: Uint8Array,
    start: number,
    end: number,
    len: number,
  ): void {
    const frameBytes = headerLength(id, len) + len;
    if (
      this.batchStart >= 0 &&
      (this.slabPos + frameBytes - this.batchInner > this.batchMax ||
        (this.slab.length - this.slabPos < frameBytes + CRC_LENGTH && !this.grow(frameBytes + CRC_LENGTH)))
    ) {
      this.closeBatch();
    }
    if (this.batchStart < 0) {
      this.ensure(BATCH_RESERVE + frameBytes + CRC_LENGTH);
      this.batchStart = this.slabPos;
      this.slabPos += BATCH_RESERVE;
      this.batchInner = this.slabPos;
      this.batchCount = 0;
    }
    this.append(type, flags, id, total, head, data, start, end, len);
  }

  /** Appends a small frame, without its own CRC, to the open BATCH, which has room for it. */
  private append(
    type: number,
    flags: number,
    id: number,
    total: number,
    head: Uint8Array,
    data: Uint8Array,
    start: number,
    end: number,
    len: number,
  ): void {
    const slab = this.slab;
    this.slabPos = copyData(
      slab,
      writeFrameHead(slab, this.slabPos, type, flags, id, len, total, head),
      data,
      start,
      end,
    );
    this.batchCount++;
    this.framesOut++;
  }

  /**
   * Closes the open batch: a lone frame gets its own CRC and no BATCH
   * header; several get a BATCH header written just before them (in the
   * reserved bytes) and one CRC over the whole frame.
   */
  private closeBatch(): void {
    if (this.batchStart < 0) return;
    const slab = this.slab;
    const inner = this.batchInner;
    const end = this.slabPos;
    let hs = inner;
    if (this.batchCount > 1) {
      const len = end - inner;
      hs = inner - headerLength(0, len);
      writeHeader(slab, hs, T_BATCH, 0, 0, len);
    }
    if (this.batchStart > this.slabStart) {
      this.emit(slab.subarray(this.slabStart, this.batchStart), this.batchStart - this.slabStart);
    }
    this.slabStart = hs;
    this.slabPos = writeCrc(slab, end, this.crc.range(slab, hs, end));
    this.batchStart = -1;
  }

  /** Makes room for `need` contiguous bytes in the slab. */
  private ensure(need: number): void {
    if (this.slab.length - this.slabPos >= need) return;
    if (this.grow(need)) return;
    this.cut();
    // A new region at the pool's end (a fresh pool when this one is short):
    // exactly what is needed, plus a step that doubles while this writer
    // keeps growing it in place before a flush (a flood's few regions per
    // flush; a broadcast's one-frame writers take no slack).
    // A region starts only where a whole flush's batch fits after it (a batch split between two
    // pools goes out as two buffers: one writev instead of one write).
    if (pool.length - poolPos < need + REGION_ROOM) newPool(need);
    // This writer holds the pool until the transport wrote its bytes (counted once per pool).
    // One pool is held as itself (no list: a connection that answered a request keeps nothing once its write
    // is confirmed); a list once a writer spans pools before a confirmation (a flood), kept from then on.
    const u = this.unconfirmed;
    if (u !== poolEntry && (!Array.isArray(u) || u[u.length - 1] !== poolEntry)) {
      poolEntry.holders++;
      if (u === undefined) this.unconfirmed = poolEntry;
      else if (!Array.isArray(u)) this.unconfirmed = [u, poolEntry];
      else {
        // A transport never found idle: the oldest pool is given up (never
        // recycled, collected once unreferenced), so the list stays short.
        if (u.length === MAX_UNCONFIRMED) u.shift();
        u.push(poolEntry);
      }
    }
    const size = Math.min(need + this.step, pool.length - poolPos);
    this.slab = pool.subarray(poolPos, poolPos + size);
    this.slabAt = poolPos;
    poolPos += size;
    this.slabStart = 0;
    this.slabPos = 0;
  }

  /**
   * Grows the region in place to `need` more bytes after `slabPos` when it is
   * still the last taker of the current pool and the pool has room; the
   * offsets into the region stay valid.
   */
  private grow(need: number): boolean {
    const slab = this.slab;
    if (slab === EMPTY || slab.buffer !== pool.buffer || this.slabAt + slab.length !== poolPos) return false;
    const extra = need - (slab.length - this.slabPos);
    if (pool.length - poolPos < extra) return false;
    this.step = Math.min(MAX_STEP, Math.max(2 * this.step, 256));
    const add = Math.min(extra + this.step, pool.length - poolPos);
    poolPos += add;
    this.slab = pool.subarray(this.slabAt, poolPos);
    return true;
  }

  /** Adds `chunk` (`n` bytes of data) to what the next flush hands to the transport. */
  private emit(chunk: Uint8Array, n: number): void {
    if (this.out === NO_CHUNKS) this.out = [];
    this.out.push(chunk);
    this.outBytes += n;
  }

  /** Moves the encoded slab region into the list handed to the transport. */
  private cut(): void {
    this.closeBatch();
    if (this.slabPos > this.slabStart) {
      this.emit(this.slab.subarray(this.slabStart, this.slabPos), this.slabPos - this.slabStart);
      this.slabStart = this.slabPos;
    }
  }
}

const EMPTY = new Uint8Array(0);
/** The flags of a message in one frame. */
const WHOLE = F_START | F_END;

/**
 * A write pool and how many writers may still have bytes of it in a
 * transport's buffers or their own region. A retired pool (no longer the
 * current one) that nobody holds is reused instead of allocating a fresh
 * one: fresh memory costs a page fault per 4 KiB page on first touch, which
 * was most of a flooding client's CPU per message (issue 9).
 */
interface PoolEntry {
  readonly buf: Uint8Array<ArrayBuffer>;
  holders: number;
  retired: boolean;
}

/**
 * Most pools one writer waits to confirm (see {@link FrameWriter.unconfirmed}):
 * a transport holds up to its write high-water mark (1 MiB over node:net:
 * 16 pools) plus what the batch being written spans. With 8, a flooding
 * client lost pools at every full transport and allocated a fresh one for
 * each (100–470 fresh 64 KiB pools per 3M messages of a flood).
 */
const MAX_UNCONFIRMED = 32;
/**
 * Most retired pools kept for reuse (1.5 MiB per thread): what a node:net
 * transport full to its 1 MiB high-water mark returns at once when it drains,
 * with the batches that overshoot it. With 4, each such drain dropped a dozen.
 */
const MAX_FREE_POOLS = 24;
const freePools: PoolEntry[] = [];

/** The shared write pool and the offset of its first untaken byte (see {@link POOL_SIZE}). */
let poolEntry: PoolEntry = { buf: new Uint8Array(POOL_SIZE), holders: 0, retired: false };
let pool = poolEntry.buf;
let poolPos = 0;

let poolsAllocated = 1;

/** @internal Write pools allocated by this thread so far (the rest were reused), for tests. */
export function writePoolsAllocated(): number {
  return poolsAllocated;
}

/** Retires the current pool and takes a free one (or a fresh one) of at least `need` bytes. */
function newPool(need: number): void {
  const old = poolEntry;
  old.retired = true;
  if (old.holders === 0) recycle(old);
  const reused = need <= POOL_SIZE ? freePools.pop() : undefined;
  if (reused !== undefined) reused.retired = false;
  if (reused === undefined) poolsAllocated++;
  poolEntry = reused ?? { buf: new Uint8Array(Math.max(POOL_SIZE, need)), holders: 0, retired: false };
  pool = poolEntry.buf;
  poolPos = 0;
}

function unhold(e: PoolEntry): void {
  if (--e.holders === 0 && e.retired) recycle(e);
}

function recycle(e: PoolEntry): void {
  if (e.buf.length === POOL_SIZE && freePools.length < MAX_FREE_POOLS) freePools.push(e);
}

/** Writers with a flush scheduled, flushed together by one microtask (two arrays taking turns: no garbage). */
let toFlush: FrameWriter[] = [];
let flushing: FrameWriter[] = [];

function flushAll(): void {
  const writers = toFlush;
  toFlush = flushing;
  for (let i = 0; i < writers.length; i++) writers[i].scheduledFlush();
  writers.length = 0;
  flushing = writers;
}

/** Shared empty stand-in for callback lists (never pushed to). */
const NO_CALLBACKS: (() => void)[] = [];
/** The list of a writer with nothing to hand over (never written). */
const NO_CHUNKS: Uint8Array[] = [];
/** The bulk list of every writer that queued no chunked message yet (never pushed to). */
const NO_BULK: OutMessage[] = [];
/** The single-frame queue of every writer that queued none yet (never pushed to). */
const NO_SINGLES = new Queue<OutMessage>();

/**
 * @internal A writer's chunked messages and streams and the state of their
 * round robin (`bulk-pump.ts`), made with the first one: a writer that never
 * queued one (an idle connection, one that only sends small messages)
 * holds none of it.
 */
export interface BulkState {
  /** Chunked messages and streams, sent one frame at a time round robin (entries are removed once found). */
  readonly list: OutMessage[];
  /** Where the round robin resumes. */
  rr: number;
  /** Paces bulk by the link's measured delivery (made by `FrameWriter.pacing`), or undefined: not paced. */
  pacer: Pacer | undefined;
  /** The next bulk frame starts on an idle pipe: the pacer sends a probe before it (`FrameWriter.beforeBulk`). */
  probeFirst: boolean;
  /** Totals of the chunked messages started and not yet ended. */
  assemblyOpen: number;
  /** Chunked messages started and not yet ended (at most MAX_OPEN_CHUNKED). */
  chunkedOpen: number;
}

/** Writes a frame header, the total-length varint (when `total` >= 0) and `head`; returns the offset after them. */
function writeFrameHead(
  slab: Uint8Array,
  offset: number,
  type: number,
  flags: number,
  id: number,
  len: number,
  total: number,
  head: Uint8Array,
): number {
  let p = writeHeader(slab, offset, type, flags, id, len);
  if (total >= 0) p = writeVarint(slab, p, total);
  // A response's status byte, a request's route prefix: byte by byte (a `set` call costs more for a few bytes).
  for (let i = 0; i < head.length; i++) slab[p++] = head[i];
  return p;
}

/** Copies `data[start..end)` to `slab` at `offset`; returns the offset after it. */
function copyData(slab: Uint8Array, offset: number, data: Uint8Array, start: number, end: number): number {
  const n = end - start;
  if (n !== 0) slab.set(n === data.length ? data : data.subarray(start, end), offset);
  return offset + n;
}
