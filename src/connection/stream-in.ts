/**
 * Streams the peer sends (docs/PROTOCOL.md §3.10): each is an
 * {@link IncomingStream} handed to its route's handler through the router;
 * data is charged to the stream's window and the memory budget and credited
 * back as the reader consumes it; COMPRESSED frames are inflated lazily.
 */
import type { CompressionCodec, InflateOwner } from "../codec/compression.ts";
import { F_COMPRESSED, F_END, F_START } from "../codec/frame.ts";
import { decodeMeta, decodeStreamEnd, decodeStreamHead } from "../codec/stream-prefix.ts";
import { readVarint, type VarintResult } from "../codec/varint.ts";
import { codeForErrno, type ErrorCode } from "../errors/codes.ts";
import { answerableError, describeThrown } from "../errors/describe.ts";
import { PointSubError, protocolError } from "../errors/error.ts";
import type { CallContext } from "../router/types.ts";
import { IncomingStream } from "../stream/incoming.ts";
import { Limiter } from "../util/limiter.ts";
import type { MemoryBudget } from "./budget.ts";
import { ServerCall } from "./calls.ts";
import type { Connection, ConnectionShared } from "./connection.ts";
import { type Dispatcher, promiseThen } from "./dispatch.ts";
import type { ReceiveWindow } from "./flow.ts";
import { idKey } from "./id-key.ts";
import { creditDue, type Link } from "./link.ts";
import type { Outbox } from "./outbox.ts";
import type { StreamTrace } from "./publisher.ts";
import type { Stats } from "./stats.ts";
import { streamTrace } from "./stream-out.ts";
import type { HandlerResult } from "./types.ts";

const EMPTY = new Uint8Array(0);
/**
 * Memory budget charged per data frame a stream holds unread, besides its
 * bytes: its queue entry and views (~185-320 B of heap each measured for
 * plain frames, ~365 B for tiny COMPRESSED ones with their pending inflate,
 * ~510 B when each came in a read of its own). The window counts bytes
 * only, so a peer sending 1-byte frames held ~185-470 times what the budget
 * was charged: a 4 MiB window of them ~0.7-2 GB per stream. Not 1 KiB (an
 * unfinished message's): ~3-5 times what a frame holds, a live feed of
 * 64-byte records a reader fell a window behind on was charged ~71 MB for
 * ~18-25 MB held, and refused (`stream/small-chunks-budget.test.ts`).
 */
const HELD_FRAME_COST = 512;
/**
 * Memory budget charged per stream the peer opened, while its handler may
 * hold its head: its state, call, route and parsed metadata. Not charged
 * before (session 52): 64 streams opened with 4 KiB of metadata each and
 * left quiet (a byte now and then keeps them from the progress timeout) held
 * ~6 MB of heap per connection, none of it charged — `[{},{},…]` parses to
 * ~21 times its bytes (`attack/stream-open-heads.test.ts`).
 */
const STREAM_OVERHEAD = 4096;
/** Budget charged per byte of a stream's metadata (its parsed JSON: up to ~21 bytes of heap per byte measured). */
const META_HEAP_FACTOR = 24;

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
  /** When its last frame arrived, or this side's final frame went out if later (then: how long the peer's is owed). */
  lastFrameAt: number;
  /**
   * Content bytes from byte 0 the sender has sent so far (its START's offset plus each data
   * frame's content: a COMPRESSED frame's declared length), checked against its declared total.
   */
  content: number;
  /** The sender's END or CANCEL arrived. */
  inDone: boolean;
  /** This side's RES or CANCEL went out. */
  outDone: boolean;
  /** Diagnostics: start time and bytes reported. */
  trace: StreamTrace;
}

/** A stream whose sender owes its final frame ({@link IncomingStreams.lateFinal}). */
export interface LateStream {
  readonly id: number;
  readonly call: { readonly route: string };
}

/** Inflates one COMPRESSED block, which must decompress to exactly `length` bytes. */
async function inflate(
  codec: CompressionCodec,
  block: Uint8Array,
  length: number,
  owner: InflateOwner,
  group: object,
): Promise<Uint8Array> {
  const out = await codec.decompress(block, length, owner, group);
  if (out.length !== length) {
    throw protocolError(`COMPRESSED frame inflated to ${out.length} bytes, declared ${length}`);
  }
  return out;
}

/** What the incoming streams need from their connection. */
export interface StreamInHost {
  /** The connection handlers see as `ctx.session` (and whose state says whether it closed for good). */
  readonly session: Connection;
  /** The connection's shared settings: its runtime (codecs, CRC32C, allocator). */
  readonly shared: ConnectionShared;
}

/** The connection's window on the peer's data, and its chunked messages (ids are shared with streams). */
export interface StreamInWindow extends ReceiveWindow {
  /** Whether the peer's chunked message `id` is being received. */
  has(id: number): boolean;
}

export class IncomingStreams {
  /** Streams the peer sends, until both directions ended, by {@link idKey} of their id (ids it chose: see `id-key.ts`). */
  private readonly streams = new Map<number, InState>();
  /**
   * Decompression jobs of this connection: at most two at once, so one
   * peer's frames cannot fill the runtime's thread pool ahead of others'
   * (and a queueing codec serves the connection that used it least lately
   * first: this object is their group).
   */
  private readonly inflateJobs = new Limiter(2);
  private readonly v: VarintResult = { value: 0, next: 0 };
  private readonly link: Link;
  private readonly outbox: Outbox;
  private readonly window: StreamInWindow;
  private readonly budget: MemoryBudget;
  private readonly stats: Stats;
  private readonly dispatcher: Dispatcher;
  private readonly host: StreamInHost;

  constructor(
    link: Link,
    outbox: Outbox,
    window: StreamInWindow,
    budget: MemoryBudget,
    stats: Stats,
    dispatcher: Dispatcher,
    host: StreamInHost,
  ) {
    this.link = link;
    this.outbox = outbox;
    this.window = window;
    this.budget = budget;
    this.stats = stats;
    this.dispatcher = dispatcher;
    this.host = host;
  }

  /**
   * Streams this side has not answered or cancelled yet: work in flight (for
   * idleness, a graceful close and `streamsOpen`). Not those waiting only for
   * the peer's final frame (their ids stay in use): a peer that never sent it
   * kept its session in use for ever, past any idleTimeoutMs.
   */
  get size(): number {
    if (this.streams.size === 0) return 0;
    let n = 0;
    for (const st of this.streams.values()) if (!st.outDone) n++;
    return n;
  }

  /** Whether the peer's stream `id` is open here. */
  hasIn(id: number): boolean {
    // Asked for every request the peer starts: no lookup while no stream is open (most of the time).
    return this.streams.size !== 0 && this.streams.has(idKey(id));
  }

  /** FrameSink.wantsPieces for STREAM frames: views of the socket chunks, unless the reader recycles buffers. */
  wantsPieces(id: number, length: number): boolean {
    if (length < 32 * 1024 || this.streams.size === 0) return false;
    const st = this.streams.get(idKey(id));
    return st !== undefined && !st.inDone && !st.stream.recycles;
  }

  /** FrameSink.frameTarget for STREAM data frames: a buffer the reader handed back, if any. */
  frameBuffer(id: number, length: number): Uint8Array | undefined {
    if (this.streams.size === 0) return undefined;
    const st = this.streams.get(idKey(id));
    return st === undefined || st.inDone ? undefined : st.stream.frameBuffer(length);
  }

  /** A STREAM data frame that arrived as pieces (see {@link wantsPieces}). */
  onPieces(id: number, pieces: Uint8Array[], length: number, payloadCrc: number): void {
    this.window.take(length);
    const st = this.streams.get(idKey(id));
    if (st === undefined || st.inDone) throw protocolError(`STREAM frame for unknown stream ${id}`);
    st.lastFrameAt = performance.now();
    this.stats.counts[23] += length; // stream bytes received
    // Counted against the declared total as a frame that arrived whole is (before, a frame of 32 KiB or
    // more spanning reads was not: the reader got all of it, past the total, until END said otherwise).
    if (this.charge(st, length) && this.within(st, length)) st.stream.pushPieces(pieces, length, length, payloadCrc);
  }

  /** A CANCEL frame for one of the peer's streams; false when `id` is not one. */
  onCancel(id: number, errno: number): boolean {
    const st = this.streams.get(idKey(id));
    if (st === undefined) return false;
    this.onCancelled(st, errno);
    return true;
  }

  /** A STREAM frame (START, data or END) for one of the peer's streams. */
  onFrame(flags: number, id: number, buf: Uint8Array, start: number, end: number, payloadCrc: number): void {
    const len = end - start;
    this.window.take(len);
    if (this.link.isMine(id)) throw protocolError(`STREAM on stream ${id} has this side's parity`);
    if ((flags & F_START) !== 0) {
      this.onStart(flags, id, buf, start, end);
      return;
    }
    const st = this.streams.get(idKey(id));
    if (st === undefined || st.inDone) throw protocolError(`STREAM frame for unknown stream ${id}`);
    if ((flags & F_END) !== 0) {
      if ((flags & F_COMPRESSED) !== 0) throw protocolError("STREAM END cannot be compressed");
      const { length, crc } = decodeStreamEnd(buf, start, end);
      st.inDone = true;
      this.stats.counts[21]++; // streams received
      st.stream.end(length, crc);
      this.release(st);
      return;
    }
    this.data(st, flags, buf.subarray(start, end), payloadCrc);
  }

  private onStart(flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    if ((flags & F_END) !== 0) throw protocolError("STREAM START cannot carry END");
    if ((flags & F_COMPRESSED) !== 0) throw protocolError("STREAM START cannot carry COMPRESSED data");
    // A request of the peer's still served on this id counts too: two calls on one id, the
    // stream's end would take the request's place in the table (and its abort at close).
    const serving = this.dispatcher.serving;
    if (this.streams.has(idKey(id)) || this.window.has(id) || (serving.size !== 0 && serving.get(id) !== undefined)) {
      throw protocolError(`stream ${id} started twice`);
    }
    const { head, dataStart } = decodeStreamHead(buf, start, end);
    const local = this.link.local;
    // (An id past 32 is refused as such: a shift by 32 or more wraps in JavaScript, and 33 was taken for 1's bit.)
    if (head.codec !== 0 && (head.codec > 32 || ((local.compression >> (head.codec - 1)) & 1) === 0)) {
      throw PointSubError.fromPeer(
        "ERR_COMPRESSION",
        `peer used compression codec ${head.codec}, which this side did not offer`,
      );
    }
    if (head.total !== undefined && head.total > Number.MAX_SAFE_INTEGER) {
      throw protocolError("stream total out of range");
    }
    if (this.streams.size >= local.maxConcurrentStreams) {
      throw PointSubError.fromPeer("ERR_TOO_MANY_REQUESTS", "peer exceeded maxConcurrentStreams");
    }
    if (++this.dispatcher.openRequests > local.maxConcurrentRequests) {
      throw PointSubError.fromPeer("ERR_TOO_MANY_REQUESTS", "peer exceeded maxConcurrentRequests");
    }
    const meta = decodeMeta(head.meta);
    const call = new ServerCall("stream", this.host.session, head.route, id, EMPTY);
    const st: InState = {
      id,
      stream: undefined as unknown as IncomingStream,
      call,
      codec: head.codec,
      used: 0,
      unacked: 0,
      charged: 0,
      lastFrameAt: performance.now(),
      content: head.offset,
      inDone: false,
      outDone: false,
      trace: streamTrace(),
    };
    st.stream = new IncomingStream(id, head, meta, {
      consumed: (wire) => this.consumed(st, wire),
      cancel: (err) => this.cancel(st, err),
      dropped: () => this.dropCharge(st),
      crc: this.host.shared.runtime.checksums,
      alloc: this.host.shared.runtime.allocBody,
    });
    call.stream = st.stream;
    this.streams.set(idKey(id), st);
    this.stats.diag.streamStart(st.trace, "in", id, head.route, head.total, head.offset);
    // Its head, charged as a request's body is: returned with the call (answered, or its handler settled).
    const held = STREAM_OVERHEAD + head.route.length + head.meta.length * META_HEAP_FACTOR;
    if (this.budget.tryCharge(held)) call.charged = held;
    else {
      const b = this.budget;
      const err = PointSubError.fromPeer(
        "ERR_OVERLOADED",
        `no memory budget for a stream (${b.used} of ${b.limit} in use); retry later`,
      );
      st.stream.fail(err);
      this.cancel(st, err);
    }
    this.charge(st, dataStart - start);
    // The prefix is consumed at once; data after it is credited as it is read.
    this.consumed(st, dataStart - start);
    if (dataStart < end) this.data(st, flags, buf.subarray(dataStart, end));
    // Its handler, at once or with the rest of the turn a client's handshake completed (`Dispatcher.holdEarly`).
    // No closure per stream unless one is held.
    if (this.dispatcher.holding) this.dispatcher.later(() => this.serve(st));
    else this.serve(st);
  }

  /** Runs a new stream's route (its middleware, then its handler). */
  private serve(st: InState): void {
    // Refused already (the budget, at its START; or cancelled while it waited): cancelled and answered, no handler runs.
    if (st.outDone) return;
    // Held (`Dispatcher.holdEarly`): a request held before it on its id was not yet served at its START.
    const serving = this.dispatcher.serving;
    if (serving.size !== 0 && serving.get(st.id) !== undefined) {
      this.host.session.terminate(protocolError(`stream ${st.id} started twice`));
      return;
    }
    const { call, stream } = st;
    const local = this.link.local;
    this.stats.requestsHandled++;
    if (this.dispatcher.abandoned >= local.maxConcurrentRequests) {
      this.finishHandler(
        st,
        undefined,
        PointSubError.fromPeer("ERR_OVERLOADED", this.dispatcher.abandonedReason()),
        true,
      );
      return;
    }
    const router = this.dispatcher.router;
    let result: HandlerResult | Promise<HandlerResult>;
    if (router.hasMiddleware) {
      this.dispatcher.serve(call);
      result = router.run(call, this.endpoint);
    } else {
      const route = router.streamRoute(call.route);
      if (route === undefined) {
        this.finishHandler(
          st,
          undefined,
          PointSubError.fromPeer("ERR_NO_ROUTE", `no stream handler for route ${call.route}`),
          true,
        );
        return;
      }
      this.dispatcher.serve(call);
      call.routed = true;
      try {
        result = route.handler(stream, call);
      } catch (err) {
        this.finishHandler(st, undefined, err, true);
        return;
      }
    }
    let pending: Promise<HandlerResult>;
    try {
      pending = Promise.resolve(result); // (a promise whose `constructor` getter throws)
    } catch (err) {
      this.finishHandler(st, undefined, err, true);
      return;
    }
    promiseThen.call(
      pending,
      (value) => this.finishHandler(st, value, undefined, false),
      (err) => this.finishHandler(st, undefined, err, true),
    );
  }

  /** The end of a stream's middleware chain: its route's handler, or ERR_NO_ROUTE. */
  private readonly endpoint = (ctx: CallContext): HandlerResult | Promise<HandlerResult> => {
    const call = ctx as ServerCall;
    // Ended (cancelled, connection closed) while a middleware awaited: not started (as a request, dispatch.ts).
    if (call.done && call.signal.aborted) throw call.signal.reason;
    const route = this.dispatcher.router.streamRoute(call.route);
    if (route === undefined) throw PointSubError.fromPeer("ERR_NO_ROUTE", `no stream handler for route ${call.route}`);
    call.routed = true;
    return route.handler(call.stream as IncomingStream, call);
  };

  /**
   * Counts `n` received payload bytes against stream `st`'s window and the
   * memory budget. When the budget is exhausted the stream is cancelled
   * with ERR_OVERLOADED (the sender may resume it later); returns false then.
   */
  private charge(st: InState, n: number): boolean {
    st.used += n;
    if (st.used > this.link.local.streamWindow) {
      throw PointSubError.fromPeer("ERR_FLOW_CONTROL", `peer exceeded the window of stream ${st.id}`);
    }
    // Answered, or its reader left (the handler works on before it answers): its frames are dropped, not held.
    if (st.outDone || st.stream.abandoned) return false;
    // What holding the frame costs besides its bytes, charged too (and returned with them, `consumed`).
    n += HELD_FRAME_COST;
    if (!this.budget.tryCharge(n)) {
      const b = this.budget;
      const err = PointSubError.fromPeer(
        "ERR_OVERLOADED",
        `no memory budget for stream data (${b.used} of ${b.limit} in use); retry later`,
      );
      st.stream.fail(err);
      this.cancel(st, err);
      return false;
    }
    st.charged += n;
    return true;
  }

  /**
   * Counts `n` content bytes of stream `st`; false when they run past the
   * total its START declared: the stream fails and is cancelled with
   * ERR_PROTOCOL at once (only it: docs/PROTOCOL.md §3.10), not at its END,
   * so a receiver never stores more than it was told (a file sink's
   * partial).
   */
  private within(st: InState, n: number): boolean {
    st.content += n;
    const total = st.stream.total;
    if (total === undefined || st.content <= total) return true;
    const err = protocolError(`stream ${st.id} carried more than the ${total} bytes it declared`);
    st.stream.fail(err);
    this.cancel(st, err);
    return false;
  }

  /** Returns everything stream `st` holds of the budget (it was answered, cancelled or closed). */
  private dropCharge(st: InState): void {
    if (st.charged !== 0) {
      this.budget.release(st.charged);
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
  private data(st: InState, flags: number, data: Uint8Array, crc = -1): void {
    st.lastFrameAt = performance.now();
    if ((flags & F_COMPRESSED) === 0) {
      this.stats.counts[23] += data.length; // stream bytes received
      if (this.charge(st, data.length) && this.within(st, data.length)) st.stream.push(data, data.length, crc);
      return;
    }
    const codec = this.host.shared.runtime.codecs.get(st.codec);
    if (codec === undefined) throw protocolError("COMPRESSED frame on a stream without a codec");
    const v = this.v;
    if (readVarint(data, 0, data.length, 4, v) !== 1 || v.value === 0) {
      throw protocolError("COMPRESSED frame without a valid decompressed length");
    }
    const length = v.value;
    const block = data.subarray(v.next);
    const local = this.link.local;
    if (length > local.maxFrameSize) {
      throw protocolError(`COMPRESSED frame declares ${length} bytes, over maxFrameSize`);
    }
    if (length > block.length * local.maxCompressionRatio) {
      throw PointSubError.fromPeer(
        "ERR_COMPRESSION",
        `COMPRESSED frame would expand ${block.length} bytes to ${length}, over maxCompressionRatio ${local.maxCompressionRatio}`,
      );
    }
    const cost = Math.max(data.length, length);
    this.stats.counts[23] += length; // stream bytes received (content, inflated)
    if (!this.charge(st, cost) || !this.within(st, length)) return;
    const jobs = this.inflateJobs;
    const stream = st.stream;
    stream.pushCompressed(block, cost, () => jobs.run(() => inflate(codec, block, length, stream, this)));
  }

  /** The reader consumed `wire` bytes of stream `st`: return credit in quarter-window steps. */
  private consumed(st: InState, wire: number): void {
    const held = wire + HELD_FRAME_COST;
    const r = held < st.charged ? held : st.charged;
    if (r !== 0) {
      this.budget.release(r);
      st.charged -= r;
    }
    st.unacked += wire;
    if (st.outDone || this.host.session.state === "closed") return;
    this.stats.diag.streamProgress(st.trace, "in", st.id, st.call.route, st.stream.bytesRead, st.stream.total);
    if (creditDue(st.unacked, this.link.local.streamWindow)) {
      this.outbox.sendCredit(st.id, st.unacked);
      st.used -= st.unacked;
      st.unacked = 0;
    }
  }

  /** This side cancels stream `st` (its reader did, or it made no progress). */
  private cancel(st: InState, err: PointSubError): void {
    if (st.outDone || this.host.session.state === "closed") return;
    st.outDone = true;
    st.lastFrameAt = performance.now();
    this.ended(st, err.code);
    st.stream.discard();
    this.dropCharge(st);
    // Its handler, when one runs (it has not answered), is counted until it settles; else its head is returned.
    if (this.handlerRuns(st)) this.dispatcher.abandon(st.call);
    else this.dispatcher.releaseCall(st.call);
    st.call.done = true;
    // As the sender's CANCEL does: a handler awaiting other work with ctx.signal stops too.
    st.call.abort(err);
    this.dispatcher.serving.delete(st.id);
    this.dispatcher.closeRequest();
    this.stats.error(err.code);
    this.outbox.sendCancel(st.id, err.code);
    this.release(st);
  }

  /** Whether stream `st`'s handler was started (it is served: see `onStart`) and has not settled. */
  private handlerRuns(st: InState): boolean {
    return this.dispatcher.serving.size !== 0 && this.dispatcher.serving.get(st.id) === st.call;
  }

  /** The sender cancelled its stream (or its source failed). */
  private onCancelled(st: InState, errno: number): void {
    const code = codeForErrno(errno) ?? "ERR_CANCELLED";
    const err = PointSubError.fromPeer(
      code,
      code === "ERR_SOURCE" ? "the sender's stream source failed" : `the sender cancelled the stream (${code})`,
    );
    st.inDone = true;
    st.stream.fail(err);
    this.dropCharge(st);
    if (!st.outDone) {
      st.outDone = true;
      this.ended(st, code);
      if (this.handlerRuns(st)) this.dispatcher.abandon(st.call);
      else this.dispatcher.releaseCall(st.call);
      st.call.done = true;
      st.call.abort(err);
      this.dispatcher.serving.delete(st.id);
      this.dispatcher.closeRequest();
      this.outbox.sendCancel(st.id, "ERR_CANCELLED");
    } else if (this.dispatcher.serving.size !== 0 && this.dispatcher.serving.get(st.id) === st.call) {
      // Answered, the answer still queued (served until handed to the transport: a large one on a slow
      // link): its rest is dropped and CANCEL answers, as for a request (§3.4). Sent on, its end came
      // after the PING the sender probes its CANCEL with (a control frame overtakes it): the sender cut
      // an honest connection.
      this.dispatcher.cancelServed(st.id, "ERR_CANCELLED");
    }
    this.release(st);
  }

  private finishHandler(st: InState, value: HandlerResult, err: unknown, failed: boolean): void {
    if (st.call.done || this.host.session.state === "closed") {
      this.dispatcher.handlerSettled(st.call);
      return;
    }
    // §3.10: a stream whose END did not match what was read is never a success, whatever the handler returned.
    const bad = failed ? undefined : st.stream.endFailure;
    const error = bad ?? err;
    const fails = failed || bad !== undefined;
    const answered = this.dispatcher.finishHandler(st.call, value, error, fails);
    st.outDone = true;
    st.lastFrameAt = performance.now();
    // What was answered: the handler's error, or one in place of its result (ERR_OVERLOADED, a bad result).
    const own = fails ? answerableError(error) : undefined;
    const code = fails ? (own?.code ?? "ERR_HANDLER") : answered;
    this.ended(st, code);
    st.stream.discard(
      code === undefined
        ? undefined
        : (own ??
            new PointSubError(code, fails ? describeThrown(error) : `answered with ${code} in place of the result`)),
    );
    this.dropCharge(st);
    this.release(st);
  }

  /** Diagnostics: stream `st` is over for this side (`code` undefined: answered ok). */
  private ended(st: InState, code: ErrorCode | undefined): void {
    this.stats.diag.streamEnd(st.trace, "in", st.id, st.call.route, code, st.stream.bytesRead);
  }

  private release(st: InState): void {
    if (st.inDone && st.outDone && this.streams.get(idKey(st.id)) === st) this.streams.delete(idKey(st.id));
  }

  /**
   * A stream whose sender still owes its final frame (END or CANCEL,
   * docs/PROTOCOL.md §3.10) `timeoutMs` after this side's answer or CANCEL
   * and its own last frame (or `floor`, if later); undefined when none.
   */
  lateFinal(now: number, timeoutMs: number, floor: number): LateStream | undefined {
    // None while answers wait to be written: the probe's PING (a control frame) would overtake them, and an
    // honest peer whose answer is still on its way (a large one on a slow link) would answer it first and be
    // cut; answers the peer does not take are minAnswerBytesPerSecond's to judge.
    if (this.streams.size === 0 || this.outbox.writer.answerQueued !== 0) return undefined;
    for (const st of this.streams.values()) {
      if (!st.outDone || st.inDone) continue;
      const last = st.lastFrameAt > floor ? st.lastFrameAt : floor;
      if (now - last >= timeoutMs) return st;
    }
    return undefined;
  }

  /** Whether `late` (from {@link lateFinal}) still holds its id, its sender's final frame not come. */
  stillLate(late: LateStream): boolean {
    return this.streams.get(idKey(late.id)) === late;
  }

  /**
   * Cancels streams that made no progress for `timeoutMs` although they
   * could: the reader has read everything (the sender has credit) and no
   * frame came since `floor`. Not `confirmed` (a tick): true, cancelling
   * none, once one is due, for a check after this turn's I/O (a stall ran the
   * timers before the frames that came meanwhile were read).
   */
  checkProgress(now: number, timeoutMs: number, floor: number, confirmed: boolean): boolean {
    const eighth = this.link.local.streamWindow >>> 3;
    for (const st of this.streams.values()) {
      if (!st.outDone && st.unacked >= eighth && this.host.session.state !== "closed") {
        // Read and not yet returned, short of a quarter window: returned now. A sender counts credit of an
        // eighth of the window as progress (progressTimeoutMs); in quarter steps only, an upload slower than
        // a quarter window per progressTimeoutMs (1 MiB per 60 s: 17.5 KB/s) was failed while it moved.
        this.outbox.sendCredit(st.id, st.unacked);
        st.used -= st.unacked;
        st.unacked = 0;
      }
      if (st.inDone || st.outDone || st.stream.buffered !== 0) continue;
      const last = st.lastFrameAt > floor ? st.lastFrameAt : floor;
      if (now - last < timeoutMs) continue;
      if (!confirmed) return true;
      const err = PointSubError.fromPeer(
        "ERR_TIMEOUT",
        `stream ${st.id} received nothing for ${Math.round(now - last)} ms`,
        { phase: "progress" },
      );
      st.stream.fail(err);
      this.cancel(st, err);
    }
    return false;
  }

  /** The connection closed: fail every stream. */
  teardown(failure: PointSubError): void {
    for (const st of this.streams.values()) {
      if (!st.outDone) this.ended(st, failure.code);
      this.dropCharge(st);
      // A stream whose handler never ran (held for the next turn): its head goes back (served ones: the dispatcher's).
      if (!st.call.done) this.dispatcher.releaseCall(st.call);
      st.stream.fail(failure, true);
      st.call.done = true;
      st.call.abort(failure);
    }
    this.streams.clear();
  }
}
