/**
 * The stream half of a connection (docs/PROTOCOL.md §3.10, §3.11): streams
 * this side sends (OutgoingStream, one writer entry each), streams the peer
 * sends (IncomingStream, credit returned as the reader consumes), stream
 * routes and resume queries. A connection creates it on first use, so idle
 * connections pay nothing for it, and hands it the narrow view of itself it
 * needs ({@link StreamHost}).
 */
import { AUTO_ORDER, type CompressionCodec, codecById } from "../codec/compression.ts";
import { Flag, FrameType } from "../codec/frame.ts";
import { Feature, type Settings } from "../codec/settings.ts";
import { decodeMeta, decodeStreamEnd, decodeStreamHead, encodeMeta, encodeStreamHead } from "../codec/stream-prefix.ts";
import { readVarint, type VarintResult, varintLength, writeVarint } from "../codec/varint.ts";
import { codeForErrno, type ErrorCode } from "../errors/codes.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import { IncomingStream } from "../stream/incoming.ts";
import { OutgoingStream, planCompression } from "../stream/outgoing.ts";
import { Transfer } from "../stream/transfer.ts";
import type { SendStreamOptions, StreamHandler, StreamSource } from "../stream/types.ts";
import { newTransferId, Progress } from "../transfer/progress.ts";
import { deferred } from "../util/deferred.ts";
import { Limiter } from "../util/limiter.ts";
import type { MemoryBudget } from "./budget.ts";
import type { CallTable } from "./call-table.ts";
import { type PendingCall, ServerCall } from "./calls.ts";
import type { Connection, ConnectionState } from "./connection.ts";
import { chunkSizeFor } from "./size-class.ts";
import type { Stats } from "./stats.ts";
import type { Handler, HandlerResult, RequestOptions } from "./types.ts";
import { type FrameWriter, type OutMessage, type StreamItem, streamCost } from "./writer.ts";

/** Where a resumable receiver stands on a transfer: content bytes it holds and their CRC32C. */
export interface ResumePoint {
  offset: number;
  crc: number;
}

/** Who asks a resume query: the stream route it is about and the session asking (its `principal`). */
export interface ResumeContext {
  route: string;
  session: Connection;
}

/** Answers a resume query for `transferId` (docs/PROTOCOL.md §3.11). */
export type ResumeLookup = (transferId: string, ctx: ResumeContext) => ResumePoint | Promise<ResumePoint>;

/** A stream route: its handler and, when it can resume, where a transfer stands. */
export interface StreamRoute {
  handler: StreamHandler;
  resume?: ResumeLookup;
}

/** The built-in route of resume queries. */
export const RESUME_ROUTE = "/pointsub/resume/1";

/** What the stream half needs from its connection. */
export interface StreamHost {
  readonly conn: Connection;
  readonly state: ConnectionState;
  /** The peer's settings (its limits) and this side's. */
  readonly peer: Settings;
  readonly local: Settings;
  readonly writer: FrameWriter;
  readonly stats: Stats;
  /** What the peer may make this side hold (stream data not yet read is charged to it). */
  readonly budget: MemoryBudget;
  /** Calls this side made (a stream is one, answered by the receiver's RES). */
  readonly pending: CallTable<PendingCall>;
  /** Handlers running for the peer's calls (a received stream's handler is one). */
  readonly serving: CallTable<ServerCall>;
  /** Ids of this side's multi-frame messages and streams in flight. */
  readonly outChunked: Set<number>;
  /** CRC32C of the payload of the frame being delivered, when the decoder computed it separately; else -1. */
  readonly payloadCrc: number;
  unusableError(): PointSubError;
  allocId(): number;
  settle(call: PendingCall, data: Uint8Array | undefined, err: PointSubError | undefined): void;
  abandon(call: PendingCall, err: PointSubError): void;
  sendCancel(id: number, code: ErrorCode): void;
  sendCredit(id: number, n: number): void;
  /** Counts received data bytes against the connection window. */
  connectionFlow(len: number): void;
  isMine(id: number): boolean;
  /** Whether a chunked message with this id is being received. */
  hasAssembly(id: number): boolean;
  /** Counts one more call of the peer's in progress; returns how many are. */
  openRequest(): number;
  closeRequest(): void;
  finishHandler(call: ServerCall, value: HandlerResult, err: unknown, failed: boolean): void;
}

/** A stream this side is sending. */
interface OutState {
  out: OutgoingStream;
  msg: OutMessage;
  call: PendingCall;
  /** END or CANCEL went out. */
  outEnded: boolean;
  /** The receiver's final frame (RES or CANCEL) arrived. */
  answered: boolean;
}

/** A stream the peer is sending. */
interface InState {
  id: number;
  stream: IncomingStream;
  call: ServerCall;
  codec: number;
  /** Stream credit used and not yet returned. */
  used: number;
  /** Consumed and not yet returned. */
  unacked: number;
  /** Bytes of the memory budget its unread data holds. */
  charged: number;
  /** When its last frame arrived. */
  lastFrameAt: number;
  /** The sender's END or CANCEL arrived. */
  inDone: boolean;
  /** This side's RES or CANCEL went out. */
  outDone: boolean;
}

const EMPTY = new Uint8Array(0);
const MIB = 1024 * 1024;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Inflates one COMPRESSED block, which must decompress to exactly `length` bytes. */
async function inflate(codec: CompressionCodec, block: Uint8Array, length: number): Promise<Uint8Array> {
  const out = await codec.decompress(block, length);
  if (out.length !== length) {
    throw new PointSubError("ERR_PROTOCOL", `COMPRESSED frame inflated to ${out.length} bytes, declared ${length}`);
  }
  return out;
}

/** The streams of one connection. */
export class Streams {
  private readonly host: StreamHost;
  private readonly routes = new Map<string, StreamRoute>();
  private readonly sharedRoutes: ReadonlyMap<string, StreamRoute> | undefined;
  /** Streams this side sends, by id, until both directions ended. */
  private readonly outStreams = new Map<number, OutState>();
  /** Streams the peer sends, by id, until both directions ended. */
  private readonly inStreams = new Map<number, InState>();
  private streamsInUse = 0;
  /** Streams waiting for a free slot (maxConcurrentStreams). */
  private readonly streamWaiters: (() => void)[] = [];
  /**
   * Decompression jobs of this connection: at most two at once, so one
   * peer's frames cannot fill the runtime's thread pool ahead of others'.
   */
  private readonly inflateJobs = new Limiter(2);
  private readonly v: VarintResult = { value: 0, next: 0 };

  constructor(host: StreamHost, sharedRoutes: ReadonlyMap<string, StreamRoute> | undefined) {
    this.host = host;
    this.sharedRoutes = sharedRoutes;
  }

  /** Whether any stream is open in either direction (work in flight for a graceful close). */
  get busy(): boolean {
    return this.inStreams.size !== 0 || this.outStreams.size !== 0;
  }

  /** Whether the peer's stream `id` is open here. */
  hasIn(id: number): boolean {
    return this.inStreams.has(id);
  }

  /** FrameSink.wantsPieces for STREAM frames: views of the socket chunks, unless the reader recycles buffers. */
  wantsPieces(id: number, length: number): boolean {
    if (length < 32 * 1024 || this.inStreams.size === 0) return false;
    const st = this.inStreams.get(id);
    return st !== undefined && !st.inDone && !st.stream.recycles;
  }

  /** FrameSink.frameTarget for STREAM data frames: a buffer the reader handed back, if any. */
  frameBuffer(id: number, length: number): Uint8Array | undefined {
    if (this.inStreams.size === 0) return undefined;
    const st = this.inStreams.get(id);
    return st === undefined || st.inDone ? undefined : st.stream.frameBuffer(length);
  }

  /** A STREAM data frame that arrived as pieces (see {@link wantsPieces}). */
  onPieces(id: number, pieces: Uint8Array[], length: number): void {
    this.host.connectionFlow(length);
    const st = this.inStreams.get(id);
    if (st === undefined || st.inDone) throw new PointSubError("ERR_PROTOCOL", `STREAM frame for unknown stream ${id}`);
    st.lastFrameAt = Date.now();
    if (this.chargeStream(st, length)) st.stream.pushPieces(pieces, length, length, this.host.payloadCrc);
  }

  /** A CREDIT frame for stream `id`: progress for a stream this side sends. */
  onAck(id: number, n: number): void {
    if (this.outStreams.size !== 0) this.outStreams.get(id)?.out.onAck(n);
  }

  /** A CANCEL frame for one of the peer's streams; false when `id` is not one. */
  onCancel(id: number, errno: number): boolean {
    const st = this.inStreams.get(id);
    if (st === undefined) return false;
    this.onStreamCancelled(st, errno);
    return true;
  }

  /** This side gave up on its stream `id` (timeout, abort): stop the producer, which sends CANCEL. */
  stopOut(id: number, err: PointSubError): void {
    this.outStreams.get(id)?.out.stop(err);
  }

  /**
   * Cancels streams that made no progress for `timeoutMs` although they
   * could: one the peer sends whose reader has read everything (the sender
   * has credit) and no frame came since `floor`; one this side sends that
   * waits for stream credit the receiver has not returned.
   */
  checkProgress(now: number, timeoutMs: number, floor: number): void {
    for (const st of this.inStreams.values()) {
      if (st.inDone || st.outDone || st.stream.buffered !== 0) continue;
      const last = st.lastFrameAt > floor ? st.lastFrameAt : floor;
      if (now - last < timeoutMs) continue;
      const err = new PointSubError("ERR_TIMEOUT", `stream ${st.id} received nothing for ${now - last} ms`);
      st.stream.fail(err);
      this.cancelInStream(st, err);
    }
    for (const st of this.outStreams.values()) {
      if (st.outEnded || st.call.settled) continue;
      const head = st.msg.items?.peek();
      if (head === undefined || streamCost(head) <= st.msg.credit) continue;
      const last = st.out.lastAckAt > floor ? st.out.lastAckAt : floor;
      if (now - last < timeoutMs) continue;
      this.host.abandon(
        st.call,
        new PointSubError(
          "ERR_TIMEOUT",
          `the receiver returned no credit for stream ${st.msg.id} for ${now - last} ms`,
        ),
      );
    }
  }

  /** The connection closed: fail every stream in both directions. */
  teardown(failure: PointSubError): void {
    for (const st of this.inStreams.values()) {
      this.dropCharge(st);
      st.stream.fail(failure, true);
      st.call.done = true;
      st.call.abort(failure);
    }
    this.inStreams.clear();
    for (const st of this.outStreams.values()) st.out.stop(failure);
    this.outStreams.clear();
    for (const w of this.streamWaiters.splice(0)) w();
  }

  /**
   * Registers a handler for streams the peer sends to `route` on this
   * connection (before a server's stream routes). `resume` makes the route
   * resumable: it says how far a transfer already got.
   */
  handle(route: string, handler: StreamHandler, options: { resume?: ResumeLookup }): void {
    this.routes.set(route, { handler, resume: options.resume });
  }

  /**
   * Sends a stream of any size to `route` on the peer: a Node Readable, a
   * web ReadableStream or any (async) iterable of Uint8Array. Memory stays
   * bounded by the flow-control window whatever the size. The returned
   * {@link Transfer} resolves to the route handler's answer once the
   * receiver verified the whole content (CRC32C end to end), and reports
   * progress as the receiver acknowledges bytes.
   */
  sendStream(route: string, source: StreamSource, options: SendStreamOptions = {}): Transfer {
    const transferId = options.transferId ?? newTransferId();
    const progress = new Progress(transferId, options.total, options.progressIntervalMs ?? 100);
    if (options.onProgress !== undefined) progress.on("progress", options.onProgress);
    const d = deferred<Uint8Array>();
    const call: PendingCall = {
      id: 0,
      type: FrameType.STREAM,
      route,
      head: EMPTY,
      data: EMPTY,
      resolve: (data) => {
        progress.setStatus("completed");
        d.resolve(data);
      },
      reject: (err) => {
        progress.setStatus(err.code === "ERR_CANCELLED" ? "cancelled" : "failed", err);
        d.reject(err);
      },
      deadline: 0,
      timeoutMs: 0,
      signal: options.signal,
      onAbort: undefined,
      settled: false,
      started: false,
    };
    const cancel = (reason: string) => this.host.abandon(call, new PointSubError("ERR_CANCELLED", reason));
    const transfer = new Transfer(progress, d.promise, cancel);
    let head: Uint8Array;
    let plan: ReturnType<typeof planCompression>;
    const offset = options.offset ?? 0;
    try {
      if (this.host.state !== "open") throw this.host.unusableError();
      if ((this.host.peer.features & Feature.STREAMS) === 0) {
        throw new PointSubError("ERR_PROTOCOL", "the peer does not accept streams");
      }
      const total = options.total;
      if (total !== undefined && (!Number.isSafeInteger(total) || total < 0)) {
        throw new PointSubError("ERR_INVALID_ARGUMENT", "total must be a non-negative integer");
      }
      if (!Number.isSafeInteger(offset) || offset < 0 || (total !== undefined && offset > total)) {
        throw new PointSubError("ERR_INVALID_ARGUMENT", "offset must be an integer between 0 and total");
      }
      plan = planCompression(options.compress, this.host.peer.compression, this.host.local.compression, AUTO_ORDER);
      head = encodeStreamHead({
        total,
        offset,
        prefixCrc: (options.prefixCrc ?? 0) >>> 0,
        route,
        codec: plan.codec?.id ?? 0,
        meta: encodeMeta({ ...options.meta, transferId }),
      });
      if (options.signal?.aborted) {
        throw new PointSubError("ERR_CANCELLED", `stream to ${route} aborted`, { cause: options.signal.reason });
      }
    } catch (err) {
      call.settled = true;
      call.reject(toPointSubError(err, "ERR_INVALID_ARGUMENT"));
      return transfer;
    }
    if (options.signal !== undefined) {
      const signal = options.signal;
      call.onAbort = () =>
        this.host.abandon(
          call,
          new PointSubError("ERR_CANCELLED", `stream to ${route} aborted`, { cause: signal.reason }),
        );
      signal.addEventListener("abort", call.onAbort, { once: true });
    }
    progress.setBase(offset);
    void this.runStream(call, head, source, plan, offset, options.prefixCrc ?? 0, progress);
    return transfer;
  }

  /**
   * Asks the peer how much of transfer `transferId` to stream route `route`
   * it already holds. `{ offset: 0 }` when the route cannot resume.
   */
  async queryResume(route: string, transferId: string, options: RequestOptions = {}): Promise<ResumePoint> {
    if ((this.host.peer.features & Feature.RESUME) === 0) return { offset: 0, crc: 0 };
    const r = encoder.encode(route);
    const t = encoder.encode(transferId);
    const q = new Uint8Array(varintLength(r.length) + r.length + varintLength(t.length) + t.length);
    let p = writeVarint(q, 0, r.length);
    q.set(r, p);
    p = writeVarint(q, p + r.length, t.length);
    q.set(t, p);
    const a = await this.host.conn.request(RESUME_ROUTE, q, options);
    const v: VarintResult = { value: 0, next: 0 };
    if (readVarint(a, 0, a.length, 8, v) !== 1 || v.next + 4 !== a.length) {
      throw new PointSubError("ERR_PROTOCOL", "bad resume answer");
    }
    const crc = ((a[v.next] << 24) | (a[v.next + 1] << 16) | (a[v.next + 2] << 8) | a[v.next + 3]) >>> 0;
    return { offset: v.value, crc };
  }

  private async runStream(
    call: PendingCall,
    head: Uint8Array,
    source: StreamSource,
    plan: ReturnType<typeof planCompression>,
    offset: number,
    prefixCrc: number,
    progress: Progress,
  ): Promise<void> {
    while (
      this.host.state === "open" &&
      !call.settled &&
      (this.streamsInUse >= this.host.peer.maxConcurrentStreams ||
        this.host.pending.size >= this.host.peer.maxConcurrentRequests)
    ) {
      await new Promise<void>((r) => {
        this.streamWaiters.push(r);
      });
    }
    if (call.settled) return;
    if (this.host.state !== "open") {
      this.host.settle(call, undefined, this.host.unusableError());
      return;
    }
    const id = this.host.allocId();
    call.id = id;
    call.started = true;
    this.host.pending.add(call);
    this.host.outChunked.add(id);
    this.streamsInUse++;
    const p = this.host.peer;
    const base = progress.total !== undefined ? chunkSizeFor(progress.total) : 256 * 1024;
    const chunk = Math.max(4096, Math.min(base, p.maxFrameSize, p.streamWindow >>> 1, p.connectionWindow >>> 1));
    const out: OutgoingStream = new OutgoingStream(
      id,
      {
        itemsAdded: () => this.host.writer.itemsAdded(),
        compressed: (codec, before, after, used) => this.host.stats.compressed(codec, before, after, used),
      },
      progress,
      {
        chunk,
        highWater: Math.max(2 * chunk, Math.min(p.streamWindow, 4 * MIB)),
        offset,
        prefixCrc,
        plan,
        maxRatio: p.maxCompressionRatio,
      },
    );
    const msg: OutMessage = {
      type: FrameType.STREAM,
      id,
      head: EMPTY,
      data: EMPTY,
      offset: 0,
      started: false,
      credit: p.streamWindow,
      chunk,
      single: false,
      resolve: undefined,
      reject: (e) => out.stop(e),
      items: out.items,
      onItem: (item: StreamItem) => {
        out.onItemSent(item);
        if ((item.flags & Flag.END) !== 0) this.streamOutEnded(st);
      },
    };
    const st: OutState = { out, msg, call, outEnded: false, answered: false };
    this.outStreams.set(id, st);
    this.host.stats.streams.sent++;
    out.start(head);
    this.host.writer.enqueue(msg);
    progress.setStatus("transferring");
    try {
      await out.run(source);
    } catch (err) {
      const e = toPointSubError(err, "ERR_SOURCE");
      if (!st.outEnded && (this.host.state as ConnectionState) !== "closed") {
        this.host.writer.remove(FrameType.STREAM, id, e);
        this.host.sendCancel(id, e.code);
        this.streamOutEnded(st);
      }
      if (!call.settled) this.host.settle(call, undefined, e);
    }
    this.host.stats.streams.bytesSent += out.produced - offset;
  }

  /** This side's half of stream `st` ended (END or CANCEL sent). */
  private streamOutEnded(st: OutState): void {
    if (st.outEnded) return;
    st.outEnded = true;
    this.releaseOutStream(st);
  }

  /** The receiver's final frame for stream `id` arrived. */
  streamAnswered(id: number): void {
    const st = this.outStreams.get(id);
    if (st === undefined) return;
    st.answered = true;
    if (!st.outEnded) st.out.stop(new PointSubError("ERR_CANCELLED", "the receiver answered before the stream ended"));
    this.releaseOutStream(st);
  }

  private releaseOutStream(st: OutState): void {
    if (!st.outEnded || !st.answered) return;
    const id = st.msg.id;
    if (this.outStreams.get(id) !== st) return;
    this.outStreams.delete(id);
    this.host.outChunked.delete(id);
    this.streamsInUse--;
    this.streamWaiters.shift()?.();
  }

  /** A STREAM frame (START, data or END) for one of the peer's streams. */
  onFrame(flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    const len = end - start;
    this.host.connectionFlow(len);
    if (this.host.isMine(id)) throw new PointSubError("ERR_PROTOCOL", `STREAM on stream ${id} has this side's parity`);
    if ((flags & Flag.START) !== 0) {
      this.onStreamStart(flags, id, buf, start, end);
      return;
    }
    const st = this.inStreams.get(id);
    if (st === undefined || st.inDone) throw new PointSubError("ERR_PROTOCOL", `STREAM frame for unknown stream ${id}`);
    if ((flags & Flag.END) !== 0) {
      if ((flags & Flag.COMPRESSED) !== 0) throw new PointSubError("ERR_PROTOCOL", "STREAM END cannot be compressed");
      const { length, crc } = decodeStreamEnd(buf, start, end);
      st.inDone = true;
      this.host.stats.streams.received++;
      st.stream.end(length, crc);
      this.releaseInStream(st);
      return;
    }
    this.streamData(st, flags, buf.subarray(start, end), this.host.payloadCrc);
  }

  private onStreamStart(flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    if ((flags & Flag.END) !== 0) throw new PointSubError("ERR_PROTOCOL", "STREAM START cannot carry END");
    if (this.inStreams.has(id) || this.host.hasAssembly(id)) {
      throw new PointSubError("ERR_PROTOCOL", `stream ${id} started twice`);
    }
    const { head, dataStart } = decodeStreamHead(buf, start, end);
    if (head.codec !== 0 && ((this.host.local.compression >> (head.codec - 1)) & 1) === 0) {
      throw new PointSubError(
        "ERR_COMPRESSION",
        `peer used compression codec ${head.codec}, which this side did not offer`,
      );
    }
    if (head.total !== undefined && head.total > Number.MAX_SAFE_INTEGER) {
      throw new PointSubError("ERR_PROTOCOL", "stream total out of range");
    }
    if (this.inStreams.size >= this.host.local.maxConcurrentStreams) {
      throw new PointSubError("ERR_TOO_MANY_REQUESTS", "peer exceeded maxConcurrentStreams");
    }
    if (this.host.openRequest() > this.host.local.maxConcurrentRequests) {
      throw new PointSubError("ERR_TOO_MANY_REQUESTS", "peer exceeded maxConcurrentRequests");
    }
    const meta = decodeMeta(head.meta);
    const call = new ServerCall(this.host.conn, head.route, id, EMPTY);
    const st: InState = {
      id,
      stream: undefined as unknown as IncomingStream,
      call,
      codec: head.codec,
      used: 0,
      unacked: 0,
      charged: 0,
      lastFrameAt: Date.now(),
      inDone: false,
      outDone: false,
    };
    st.stream = new IncomingStream(id, head, meta, {
      consumed: (wire) => this.streamConsumed(st, wire),
      cancel: (err) => this.cancelInStream(st, err),
    });
    this.inStreams.set(id, st);
    this.chargeStream(st, dataStart - start);
    // The prefix is consumed at once; data after it is credited as it is read.
    this.streamConsumed(st, dataStart - start);
    if (dataStart < end) this.streamData(st, flags, buf.subarray(dataStart, end));
    this.host.stats.requestsHandled++;
    const route = this.routes.get(head.route) ?? this.sharedRoutes?.get(head.route);
    if (route === undefined) {
      this.finishStreamHandler(
        st,
        undefined,
        new PointSubError("ERR_NO_ROUTE", `no stream handler for route ${head.route}`),
        true,
      );
      return;
    }
    this.host.serving.add(call);
    let result: HandlerResult | Promise<HandlerResult>;
    try {
      result = route.handler(st.stream, call);
    } catch (err) {
      this.finishStreamHandler(st, undefined, err, true);
      return;
    }
    Promise.resolve(result).then(
      (value) => this.finishStreamHandler(st, value, undefined, false),
      (err) => this.finishStreamHandler(st, undefined, err, true),
    );
  }

  /**
   * Counts `n` received payload bytes against stream `st`'s window and the
   * memory budget. When the budget is exhausted the stream is cancelled
   * with ERR_OVERLOADED (the sender may resume it later); returns false then.
   */
  private chargeStream(st: InState, n: number): boolean {
    st.used += n;
    if (st.used > this.host.local.streamWindow) {
      throw new PointSubError("ERR_FLOW_CONTROL", `peer exceeded the window of stream ${st.id}`);
    }
    if (st.outDone) return false; // answered: its frames are dropped
    if (!this.host.budget.tryCharge(n)) {
      const b = this.host.budget;
      const err = new PointSubError(
        "ERR_OVERLOADED",
        `no memory budget for stream data (${b.used} of ${b.limit} in use); retry later`,
      );
      st.stream.fail(err);
      this.cancelInStream(st, err);
      return false;
    }
    st.charged += n;
    return true;
  }

  /** Returns everything stream `st` holds of the budget (it was answered, cancelled or closed). */
  private dropCharge(st: InState): void {
    if (st.charged !== 0) {
      this.host.budget.release(st.charged);
      st.charged = 0;
    }
  }

  /**
   * Charges a data frame to its stream's window and queues its content for
   * the reader; the charge is returned as credit once it is read. A
   * COMPRESSED frame (`varint length`, then one block of the stream's codec)
   * is charged for the larger of its payload and its declared decompressed
   * length, checked against maxFrameSize and maxCompressionRatio before
   * anything is inflated, and inflated only when the reader gets to it, on
   * this connection's share of the decompression jobs.
   */
  private streamData(st: InState, flags: number, data: Uint8Array, crc = -1): void {
    st.lastFrameAt = Date.now();
    if ((flags & Flag.COMPRESSED) === 0) {
      if (this.chargeStream(st, data.length)) st.stream.push(data, data.length, crc);
      return;
    }
    const codec = codecById(st.codec);
    if (codec === undefined) throw new PointSubError("ERR_PROTOCOL", "COMPRESSED frame on a stream without a codec");
    const v = this.v;
    if (readVarint(data, 0, data.length, 4, v) !== 1 || v.value === 0) {
      throw new PointSubError("ERR_PROTOCOL", "COMPRESSED frame without a valid decompressed length");
    }
    const length = v.value;
    const block = data.subarray(v.next);
    const local = this.host.local;
    if (length > local.maxFrameSize) {
      throw new PointSubError("ERR_PROTOCOL", `COMPRESSED frame declares ${length} bytes, over maxFrameSize`);
    }
    if (length > block.length * local.maxCompressionRatio) {
      throw new PointSubError(
        "ERR_COMPRESSION",
        `COMPRESSED frame would expand ${block.length} bytes to ${length}, over maxCompressionRatio ${local.maxCompressionRatio}`,
      );
    }
    const cost = Math.max(data.length, length);
    if (!this.chargeStream(st, cost)) return;
    const jobs = this.inflateJobs;
    st.stream.pushCompressed(block, cost, () => jobs.run(() => inflate(codec, block, length)));
  }

  /** The reader consumed `wire` bytes of stream `st`: return credit in quarter-window steps. */
  private streamConsumed(st: InState, wire: number): void {
    const r = wire < st.charged ? wire : st.charged;
    if (r !== 0) {
      this.host.budget.release(r);
      st.charged -= r;
    }
    st.unacked += wire;
    if (st.outDone || this.host.state === "closed") return;
    if (st.unacked >= this.host.local.streamWindow >>> 2) {
      this.host.sendCredit(st.id, st.unacked);
      st.used -= st.unacked;
      st.unacked = 0;
    }
  }

  /** The receiver's reader cancelled stream `st`. */
  private cancelInStream(st: InState, err: PointSubError): void {
    if (st.outDone || this.host.state === "closed") return;
    st.outDone = true;
    st.stream.discard();
    this.dropCharge(st);
    st.call.done = true;
    this.host.serving.delete(st.id);
    this.host.closeRequest();
    this.host.stats.error(err.code);
    this.host.sendCancel(st.id, err.code);
    this.releaseInStream(st);
  }

  /** The sender cancelled its stream (or its source failed). */
  private onStreamCancelled(st: InState, errno: number): void {
    const code = codeForErrno(errno) ?? "ERR_CANCELLED";
    const err = new PointSubError(
      code,
      code === "ERR_SOURCE" ? "the sender's stream source failed" : `the sender cancelled the stream (${code})`,
    );
    st.inDone = true;
    st.stream.fail(err);
    this.dropCharge(st);
    if (!st.outDone) {
      st.outDone = true;
      st.call.done = true;
      st.call.abort(err);
      this.host.serving.delete(st.id);
      this.host.closeRequest();
      this.host.sendCancel(st.id, "ERR_CANCELLED");
    }
    this.releaseInStream(st);
  }

  private finishStreamHandler(st: InState, value: HandlerResult, err: unknown, failed: boolean): void {
    if (st.call.done || this.host.state === "closed") return;
    this.host.finishHandler(st.call, value, err, failed);
    st.outDone = true;
    st.stream.discard();
    this.dropCharge(st);
    this.releaseInStream(st);
  }

  private releaseInStream(st: InState): void {
    if (st.inDone && st.outDone && this.inStreams.get(st.id) === st) this.inStreams.delete(st.id);
  }

  /** Answers resume queries (docs/PROTOCOL.md §3.11) from the stream routes' `resume` lookups. */
  readonly resumeHandler: Handler = async (req, ctx) => {
    const q = req.data;
    const v: VarintResult = { value: 0, next: 0 };
    const bad = () => new PointSubError("ERR_PROTOCOL", "bad resume query");
    if (readVarint(q, 0, q.length, 2, v) !== 1 || v.next + v.value > q.length) throw bad();
    const route = decoder.decode(q.subarray(v.next, v.next + v.value));
    const p = v.next + v.value;
    if (readVarint(q, p, q.length, 2, v) !== 1 || v.next + v.value !== q.length) throw bad();
    const transferId = decoder.decode(q.subarray(v.next));
    const sr = this.routes.get(route) ?? this.sharedRoutes?.get(route);
    const point =
      sr?.resume === undefined ? { offset: 0, crc: 0 } : await sr.resume(transferId, { route, session: ctx.session });
    const out = new Uint8Array(varintLength(point.offset) + 4);
    const o = writeVarint(out, 0, point.offset);
    out[o] = point.crc >>> 24;
    out[o + 1] = (point.crc >>> 16) & 0xff;
    out[o + 2] = (point.crc >>> 8) & 0xff;
    out[o + 3] = point.crc & 0xff;
    return out;
  };
}
