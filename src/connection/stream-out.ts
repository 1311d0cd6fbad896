/**
 * Streams this side sends (docs/PROTOCOL.md §3.10): one writer entry per
 * stream fed by its producer ({@link OutgoingStream}), at most the peer's
 * maxConcurrentStreams at once, each a call answered by the receiver's RES.
 */
import { AUTO_ORDER } from "../codec/codecs.ts";
import { F_END, FEATURE_STREAMS, T_STREAM } from "../codec/frame.ts";
import { encodeMeta, encodeStreamHead } from "../codec/stream-prefix.ts";
import { codeForErrno } from "../errors/codes.ts";
import { answerableError, describeThrown, thrownCode } from "../errors/describe.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import { checkSignal } from "../errors/signal.ts";
import { checkFunction, checkRoute } from "../router/check.ts";
import type { Runtime } from "../runtime/runtime.ts";
import { isBlob } from "../stream/blob.ts";
import { type StreamItem, streamCost } from "../stream/item.ts";
import { closeUnread, isStreamSource, OutgoingStream, planCompression, setContentCrc } from "../stream/outgoing.ts";
import { Transfer } from "../stream/transfer.ts";
import type { SendStreamOptions, StreamSource } from "../stream/types.ts";
import { newTransferId, Progress } from "../transfer/progress.ts";
import { Limiter } from "../util/limiter.ts";
import type { Caller } from "./caller.ts";
import type { PendingCall } from "./calls.ts";
import type { Connection, ConnectionShared } from "./connection.ts";
import type { Link } from "./link.ts";
import type { Outbox } from "./outbox.ts";
import type { StreamTrace } from "./publisher.ts";
import { chunkSizeFor } from "./size-class.ts";
import type { Stats } from "./stats.ts";
import type { OutMessage } from "./writer.ts";

/**
 * A new, empty {@link StreamTrace} (here, not in `diagnostics.ts` or
 * `publisher.ts`: the stream halves make one per stream, and only they).
 */
export function streamTrace(): StreamTrace {
  return { t0: 0, reported: 0, lastProgress: 0 };
}

const EMPTY = new Uint8Array(0);
const MIB = 1024 * 1024;

/** Compression jobs at once, for all connections of one runtime. */
const COMPRESSION_JOBS = 4;
const jobsByRuntime = new WeakMap<Runtime, Limiter>();

/**
 * The bound every connection of `runtime` shares on compression jobs, made
 * with its first compressed stream (here, not in the runtime: a page that
 * never streams does not load it).
 */
function compressionJobs(runtime: Runtime): Limiter {
  let jobs = jobsByRuntime.get(runtime);
  if (jobs === undefined) {
    jobs = new Limiter(COMPRESSION_JOBS);
    jobsByRuntime.set(runtime, jobs);
  }
  return jobs;
}

/** Whether the connection takes new work, and the error when it does not; and the runtime. */
export interface EngineGate {
  /** The connection: its state, and the error a call made while it is not open gets. */
  readonly session: Connection;
  /** The connection's shared settings: its runtime (codecs, CRC32C, the compression-job bound), progressTimeoutMs. */
  readonly shared: ConnectionShared;
}

/** Counts one outgoing STREAM frame's compression outcome (here, in the stream engine: not in a page's first load). */
function countCompression(stats: Stats, codec: string, before: number, after: number, used: boolean | undefined): void {
  stats.compression ??= {};
  let c = stats.compression[codec];
  if (c === undefined) {
    c = { bytesBefore: 0, bytesAfter: 0, compressed: 0, raw: 0 };
    stats.compression[codec] = c;
  }
  c.bytesBefore += before;
  c.bytesAfter += used ? after : before;
  if (used) c.compressed++;
  else if (used === false) c.raw++;
}

/** A stream this side is sending. */
interface OutState {
  out: OutgoingStream;
  msg: OutMessage;
  call: PendingCall;
  /** END or CANCEL went out. */
  outEnded: boolean;
  /** This side sent CANCEL (instead of END, or after it): the receiver's answer is that CANCEL's. */
  cancelSent: boolean;
  /** `SendStreamOptions.answerTimeoutMs` (undefined: the connection's default, {@link OutgoingStreams.answerDue}). */
  answerMs: number | undefined;
  /** Window bytes its frames cost as they went out, and the credit returned for them (what the receiver has yet to read: the difference). */
  sentWire: number;
  ackedWire: number;
  /** Credit returned since the last progress ({@link OutgoingStreams.onAck}). */
  ackRun: number;
  /** `performance.now()` of the last progress: credit of an eighth of the window (or the start). */
  progressAt: number;
  /** The receiver's final frame (RES or CANCEL) arrived. */
  answered: boolean;
  /** Diagnostics: start time and bytes reported. */
  trace: StreamTrace;
  progress: Progress;
  offset: number;
}

export class OutgoingStreams {
  /** Streams this side sends, by id, until both directions ended. */
  private readonly streams = new Map<number, OutState>();
  private inUse = 0;
  /**
   * Streams waiting for a free slot (maxConcurrentStreams): woken without an
   * argument for a slot, with `false` when given up ({@link dropWaiter}).
   */
  private readonly waiters: ((slot?: boolean) => void)[] = [];
  /** The waiter of each call waiting for a slot. */
  private readonly waiting = new Map<PendingCall, (slot?: boolean) => void>();
  private readonly link: Link;
  private readonly outbox: Outbox;
  private readonly caller: Caller;
  private readonly stats: Stats;
  private readonly gate: EngineGate;

  constructor(link: Link, outbox: Outbox, caller: Caller, stats: Stats, gate: EngineGate) {
    this.link = link;
    this.outbox = outbox;
    this.caller = caller;
    this.stats = stats;
    this.gate = gate;
  }
  /** {@link CallerStreams.refuseWaiting}: every waiting stream wakes, finds the connection closing, and fails. */
  refuseWaiting(): void {
    for (const wake of this.waiters.splice(0)) wake();
  }

  /** The connection is open (not handshaking, closing or closed). */
  private isOpen(): boolean {
    return this.gate.session.state === "open";
  }

  /** The connection is closed for good. */
  private isClosed(): boolean {
    return this.gate.session.state === "closed";
  }

  /** Streams open (in flight for a graceful close). */
  get size(): number {
    return this.streams.size;
  }

  /** A CREDIT frame for stream `id`: progress for a stream this side sends. */
  onAck(id: number, n: number): void {
    if (this.streams.size === 0) return;
    const st = this.streams.get(id);
    if (st === undefined) return;
    st.out.onAck(n);
    const owed = st.sentWire - st.ackedWire;
    st.ackRun += n;
    st.ackedWire += n;
    // Progress is credit of an eighth of the window (or all that was still owed) since the last, not any
    // credit: a receiver trickling 1-byte credits would hold a stalled upload (checkProgress) or, after
    // END, the answer's deadline (moved on at most ~8 times this way) for ever.
    if (owed > 0 && st.ackRun >= Math.min(this.link.peer.streamWindow >>> 3, owed)) {
      st.ackRun = 0;
      st.progressAt = performance.now();
      const call = st.call;
      if (call.deadline !== 0 && !call.settled) this.armAnswer(st);
    }
    const p = st.progress;
    this.stats.diag.streamProgress(st.trace, "out", id, st.call.route, p.bytes - st.offset, p.total);
  }

  /**
   * This side gave up on its stream `id` (timeout, abort): its direction
   * ends now with CANCEL — what is queued of it is dropped, and its
   * producer stops (not waiting for a source that may not yield for long)
   * — or, once END went out, CANCEL follows it (the receiver stops its
   * handler and answers it at once, §3.10). Either way the id is freed by
   * the receiver's answer, not by a handler that may never finish.
   */
  stopOut(id: number, err: PointSubError): void {
    const st = this.streams.get(id);
    if (st === undefined) return;
    st.out.stop(err);
    if (st.answered || st.cancelSent || this.isClosed()) return;
    if (!st.outEnded) {
      this.giveUp(st, err);
      return;
    }
    st.cancelSent = true;
    this.outbox.sendCancel(id, err.code);
  }

  /**
   * Ends this side's direction of `st` before its END (given up, or its
   * source failed): its queued frames are dropped and CANCEL goes out — or,
   * when none of it went out (its START still queued), nothing: the
   * receiver never saw the id (it would ignore a CANCEL and never answer),
   * so the id and the slot are freed here.
   */
  private giveUp(st: OutState, err: PointSubError): void {
    const id = st.msg.id;
    st.cancelSent = true;
    if (this.outbox.writer.remove(T_STREAM, id, err) === "queued") {
      st.outEnded = true;
      this.caller.finishCall(st.call);
      return;
    }
    this.outbox.sendCancel(id, err.code);
    this.outEnded(st);
  }

  /**
   * See {@link Connection.sendStream}. `given`: the progress of a transfer
   * the connection handed out before the stream engine was loaded, and
   * `handedOut` that transfer (its {@link Transfer.contentCrc} is set too).
   */
  send(
    route: string,
    source: StreamSource,
    options: SendStreamOptions,
    given?: Progress,
    handedOut?: Transfer,
    refused?: PointSubError,
  ): Transfer {
    let progress: Progress;
    if (given === undefined) {
      progress = new Progress(options.transferId ?? newTransferId(), options.total, options.progressIntervalMs ?? 100);
      // Anything else threw a raw TypeError at the caller: refused below, as the other options are.
      if (typeof options.onProgress === "function") progress.on("progress", options.onProgress);
    } else progress = given;
    const transferId = progress.transferId;
    const d = Promise.withResolvers<Uint8Array>();
    const trace = streamTrace();
    const offset = options.offset ?? 0;
    const call: PendingCall = {
      id: 0,
      type: T_STREAM,
      route,
      head: EMPTY,
      data: EMPTY,
      resolve: (data) => {
        // What the receiver took: "completed" rounds an early answer's progress up to the total.
        const took = progress.bytes;
        progress.setStatus("completed");
        if (call.started) this.stats.diag.streamEnd(trace, "out", call.id, route, undefined, took - offset);
        d.resolve(data);
      },
      reject: (err) => {
        progress.setStatus(err.code === "ERR_CANCELLED" ? "cancelled" : "failed", err);
        if (call.started) this.stats.diag.streamEnd(trace, "out", call.id, route, err.code, progress.bytes - offset);
        d.reject(err);
      },
      deadline: 0,
      timeoutMs: 0,
      signal: options.signal,
      onAbort: undefined,
      settled: false,
      started: false,
    };
    const cancel = (reason: string) => this.giveUpCall(call, new PointSubError("ERR_CANCELLED", reason));
    const transfer = new Transfer(progress, d.promise, cancel);
    let head: Uint8Array;
    let plan: ReturnType<typeof planCompression>;
    try {
      // Its options no object (Connection.sendStream): refused as another option is, its source closed.
      if (refused !== undefined) throw refused;
      if (!this.isOpen()) throw this.gate.session.unusableError();
      checkSignal(options);
      // A route of another type went out as its text (a request's is refused).
      checkRoute(route);
      if (options.onProgress !== undefined) checkFunction(options.onProgress, "onProgress");
      const peer = this.link.peer;
      // (maxConcurrentStreams 0 says the same: a stream would wait for a slot for ever.)
      if ((peer.features & FEATURE_STREAMS) === 0 || peer.maxConcurrentStreams === 0) {
        throw new PointSubError("ERR_PROTOCOL", "the peer does not accept streams");
      }
      let total = options.total;
      // A Blob (a File): read as its stream, its size known (the total counts from the offset, as the
      // source starts there).
      if (isBlob(source)) {
        if (total === undefined && Number.isSafeInteger(offset) && offset >= 0) {
          total = offset + source.size;
          progress.total = total;
        }
        source = source.stream();
      }
      // START carries total + 1 (0: unknown), a varint of at most 2^53 - 1 (docs/PROTOCOL.md §2).
      if (total !== undefined && (!Number.isSafeInteger(total) || total < 0 || total >= Number.MAX_SAFE_INTEGER)) {
        throw new PointSubError("ERR_INVALID_ARGUMENT", "total must be an integer from 0 to 2^53 - 2");
      }
      if (!Number.isSafeInteger(offset) || offset < 0 || (total !== undefined && offset > total)) {
        throw new PointSubError("ERR_INVALID_ARGUMENT", "offset must be an integer between 0 and total");
      }
      const answerMs = options.answerTimeoutMs;
      if (answerMs !== undefined && !(Number.isSafeInteger(answerMs) && answerMs >= 0)) {
        throw new PointSubError("ERR_INVALID_ARGUMENT", "answerTimeoutMs must be a non-negative integer");
      }
      // Taken as they came before: a transferId of another type reached the receiver as none, a prefixCrc
      // past 32 bits went out cut to them, and a NaN or negative progress interval reported at every chunk.
      if (typeof transferId !== "string")
        throw new PointSubError("ERR_INVALID_ARGUMENT", "transferId must be a string");
      // An array or a string was spread into an object: meta "x" reached the receiver as {"0":"x"}.
      const meta: unknown = options.meta;
      if (meta != null && (typeof meta !== "object" || Array.isArray(meta)))
        throw new PointSubError("ERR_INVALID_ARGUMENT", "meta must be an object (a JSON object's fields)");
      const pc = options.prefixCrc;
      if (pc !== undefined && !(Number.isInteger(pc) && pc >= -(2 ** 31) && pc < 2 ** 32)) {
        throw new PointSubError("ERR_INVALID_ARGUMENT", "prefixCrc must be a 32-bit integer");
      }
      const every = options.progressIntervalMs;
      if (every !== undefined && !(every >= 0 && every < Number.POSITIVE_INFINITY)) {
        throw new PointSubError("ERR_INVALID_ARGUMENT", "progressIntervalMs must be a finite number >= 0");
      }
      // Refused here, before the peer's handler is started for a stream that cannot be read.
      if (!isStreamSource(source)) {
        throw new PointSubError(
          "ERR_INVALID_ARGUMENT",
          "stream source must be an AsyncIterable, a ReadableStream, an Iterable of Uint8Array or a Blob",
        );
      }
      plan = planCompression(
        options.compress,
        peer.compression,
        this.link.local.compression,
        AUTO_ORDER,
        this.gate.shared.runtime.codecs,
      );
      head = encodeStreamHead({
        total,
        offset,
        prefixCrc: (options.prefixCrc ?? 0) >>> 0,
        route,
        codec: plan.codec?.id ?? 0,
        meta: encodeMeta({ ...options.meta, transferId }),
      });
      if (options.signal?.aborted) throw abortError(route, options.signal.reason);
    } catch (err) {
      call.settled = true;
      call.reject(toPointSubError(err, "ERR_INVALID_ARGUMENT"));
      // Never to be read: closed, as one given up while it waits for a slot is (a send on a closed connection
      // or with an aborted signal kept a Node Readable's file open, and an async generator suspended, for good).
      closeUnread(source);
      return transfer;
    }
    // A call from here on: it settles through the caller, which counts it as succeeded or failed (before,
    // streams were counted there but not as sent: succeeded + failed ran past sent).
    this.stats.requestsSent++;
    if (options.signal !== undefined) {
      const signal = options.signal;
      call.onAbort = () => this.giveUpCall(call, abortError(route, signal.reason));
      signal.addEventListener("abort", call.onAbort, { once: true });
    }
    progress.setBase(offset);
    void this.run(
      call,
      head,
      source,
      plan,
      offset,
      options.prefixCrc ?? 0,
      progress,
      trace,
      options.answerTimeoutMs,
      transfer,
      handedOut,
    );
    return transfer;
  }

  private async run(
    call: PendingCall,
    head: Uint8Array,
    source: StreamSource,
    plan: ReturnType<typeof planCompression>,
    offset: number,
    prefixCrc: number,
    progress: Progress,
    trace: StreamTrace,
    answerMs: number | undefined,
    transfer: Transfer,
    handedOut: Transfer | undefined,
  ): Promise<void> {
    let woken = false;
    while (
      this.isOpen() &&
      !call.settled &&
      (this.inUse >= this.link.peer.maxConcurrentStreams ||
        this.caller.pending.size >= this.link.peer.maxConcurrentRequests)
    ) {
      woken =
        (await new Promise<boolean | undefined>((r) => {
          this.waiters.push(r);
          this.waiting.set(call, r);
        })) !== false;
      this.waiting.delete(call);
    }
    if (call.settled) {
      // Given up after it was woken: the slot it was woken for goes to the next one.
      if (woken) this.waiters.shift()?.();
      // Never read: closed here, as a running stream closes its source when it stops (a Node Readable kept its file open).
      closeUnread(source);
      return;
    }
    if (!this.isOpen()) {
      this.caller.settle(call, undefined, this.gate.session.unusableError());
      closeUnread(source);
      return;
    }
    const id = this.outbox.allocId();
    call.id = id;
    call.started = true;
    this.caller.pending.add(call);
    this.outbox.outChunked.add(id);
    this.inUse++;
    const p = this.link.peer;
    const base = progress.total !== undefined ? chunkSizeFor(progress.total) : 256 * 1024;
    const writer = this.outbox.writer;
    // Items are cut once, here: on a link the pacer has measured, no bigger than its frames (issue 17).
    const paced = writer.pacer !== undefined && writer.pacer.rate > 0 ? writer.pacer.frameLimit() : base;
    const chunk = Math.max(4096, Math.min(base, paced, p.maxFrameSize, p.streamWindow >>> 1, p.connectionWindow >>> 1));
    const out: OutgoingStream = new OutgoingStream(
      id,
      {
        itemsAdded: () => writer.wake(),
        compressed: (codec, before, after, used) => countCompression(this.stats, codec, before, after, used),
      },
      progress,
      {
        chunk,
        highWater: Math.max(2 * chunk, Math.min(p.streamWindow, 4 * MIB)),
        offset,
        prefixCrc,
        plan,
        maxRatio: p.maxCompressionRatio,
        crc: this.gate.shared.runtime.checksums,
        jobs: compressionJobs(this.gate.shared.runtime),
      },
    );
    const msg: OutMessage = {
      type: T_STREAM,
      id,
      head: EMPTY,
      data: EMPTY,
      offset: 0,
      started: false,
      credit: p.streamWindow,
      chunk,
      single: false,
      crc: -1,
      resolve: undefined,
      reject: (e) => out.stop(e),
      items: out.items,
      onItem: (item: StreamItem) => {
        st.sentWire += streamCost(item);
        out.onItemSent(item);
        if ((item.flags & F_END) !== 0) this.outEnded(st);
      },
    };
    const st: OutState = {
      out,
      msg,
      call,
      outEnded: false,
      cancelSent: false,
      answerMs,
      sentWire: 0,
      ackedWire: 0,
      ackRun: 0,
      progressAt: performance.now(),
      answered: false,
      trace,
      progress,
      offset,
    };
    this.streams.set(id, st);
    // An answer after END: the content's CRC is the one the receiver checked (Transfer.contentCrc).
    const resolve = call.resolve;
    call.resolve = (data) => {
      if (st.outEnded && !st.cancelSent) {
        setContentCrc(transfer, out.contentCrc);
        // A transfer handed out before the engine was loaded: its answer follows this one's.
        if (handedOut !== undefined) setContentCrc(handedOut, out.contentCrc);
        // It read all that was sent, the last part it never credits back too: counted as done (a stream
        // of unknown size that fit in the window completed at 0 bytes).
        out.onAnswered();
      }
      resolve(data);
    };
    this.stats.counts[20]++; // streams sent
    this.stats.diag.streamStart(trace, "out", id, call.route, progress.total, offset);
    out.start(head);
    writer.enqueue(msg);
    progress.setStatus("transferring");
    try {
      await out.run(source);
    } catch (err) {
      // Its code when a CANCEL can carry it; else ERR_SOURCE naming it. Before, a source that threw a PointSubError
      // given a code of the application's own threw sending the CANCEL: an unhandled rejection, the stream unsettled.
      const e =
        answerableError(err) ?? new PointSubError("ERR_SOURCE", thrownCode(err) + describeThrown(err), { cause: err });
      if (!st.outEnded && !this.isClosed()) this.giveUp(st, e);
      if (!call.settled) this.caller.settle(call, undefined, e);
    }
    this.stats.counts[22] += out.produced - offset; // stream bytes sent
  }

  /**
   * Gives up on `call` (the caller's cancel or abort); one still waiting for
   * a slot leaves the queue now — it held its source, its transfer and
   * their memory until a slot freed, for as long as the streams holding the
   * slots ran (a live feed: for ever).
   */
  private giveUpCall(call: PendingCall, err: PointSubError): void {
    this.caller.abandon(call, err);
    const wake = this.waiting.get(call);
    if (wake === undefined) return;
    this.waiting.delete(call);
    const i = this.waiters.indexOf(wake);
    if (i < 0) return; // already woken for a slot: it passes the slot on
    this.waiters.splice(i, 1);
    wake(false);
  }

  /** This side's half of stream `st` ended (END or CANCEL sent). */
  private outEnded(st: OutState): void {
    if (st.outEnded) return;
    st.outEnded = true;
    if (!st.cancelSent && !st.answered && !st.call.settled) {
      // END went out: the answer is due (the caller's deadline timer, moved on by credit, see onAck).
      st.ackRun = 0;
      this.armAnswer(st);
    }
    this.release(st);
  }

  /** The receiver's final frame for stream `id` arrived (or for request `id`: {@link CallerStreams.streamAnswered}). */
  streamAnswered(id: number): void {
    const st = this.streams.get(id);
    if (st === undefined) {
      // A request's slot is free: a stream that has a stream slot may be waiting for it.
      if (this.waiters.length !== 0 && this.inUse < this.link.peer.maxConcurrentStreams) this.waiters.shift()?.();
      return;
    }
    st.answered = true;
    if (!st.outEnded) {
      const err = new PointSubError("ERR_CANCELLED", "the receiver answered before the stream ended");
      st.out.stop(err);
      // CANCEL now, not when the source next yields (a live feed waiting for data held the id and this
      // side's stream slot until then): the source is stopped at its next chunk.
      if (!this.isClosed()) this.giveUp(st, err);
    }
    this.release(st);
  }

  private release(st: OutState): void {
    if (!st.outEnded || !st.answered) return;
    const id = st.msg.id;
    if (this.streams.get(id) !== st) return;
    this.streams.delete(id);
    this.outbox.outChunked.delete(id);
    this.inUse--;
    this.waiters.shift()?.();
  }

  /**
   * Cancels streams waiting for credit the receiver has not returned for
   * `timeoutMs`: the stream's own, or the connection's (a receiver that
   * returns stream credit but never connection credit held a stream for ever).
   * Not `confirmed` (a tick): true, cancelling none, once one is due, for a
   * check after this turn's I/O (a stall ran the timers before the CREDIT
   * that came meanwhile was read: the upload failed with it in the socket).
   */
  checkProgress(now: number, timeoutMs: number, floor: number, confirmed: boolean): boolean {
    const connCredit = this.outbox.writer.connCredit;
    for (const st of this.streams.values()) {
      if (st.outEnded || st.call.settled) continue;
      const head = st.msg.items?.peek();
      if (
        head === undefined ||
        (streamCost(head) <= st.msg.credit && head.head.length + head.data.length <= connCredit)
      ) {
        // Not waiting for credit now: a wait that begins later is measured from here (a stream quiet for
        // long, then a burst, was cut at the first check as if its receiver had owed credit all along).
        st.progressAt = now;
        continue;
      }
      const last = st.progressAt > floor ? st.progressAt : floor;
      if (now - last < timeoutMs) continue;
      if (!confirmed) return true;
      this.caller.abandon(
        st.call,
        new PointSubError(
          "ERR_TIMEOUT",
          `the receiver returned no ${streamCost(head) <= st.msg.credit ? "connection " : ""}credit for stream ${st.msg.id} for ${Math.round(now - last)} ms`,
          { phase: "progress" },
        ),
      );
    }
    return false;
  }

  /**
   * (Re)arms stream `st`'s answer deadline on the caller's timer, from now:
   * {@link answerDue}; by default, while the receiver may have yet to read
   * some of what was sent (not all of it credited back: a receiver credits
   * in steps, and the last part of a stream usually never), at least
   * `progressTimeoutMs` (a reader may take that long between credits before
   * END too). A stream's own `answerTimeoutMs` is kept as given. Nothing
   * when the answer is not timed (0).
   */
  private armAnswer(st: OutState): void {
    const due = this.answerDue(st);
    if (due === 0) return;
    const call = st.call;
    const reading = st.answerMs === undefined && st.sentWire > st.ackedWire;
    call.timeoutMs = reading ? Math.max(due, this.gate.shared.progressTimeoutMs) : due;
    call.deadline = performance.now() + call.timeoutMs;
    this.caller.armDeadline(call.deadline);
  }

  /**
   * How long stream `st`'s receiver may take to answer once its END went
   * out, counted again at each progress of its credit ({@link onAck}): its
   * `answerTimeoutMs`, by default the connection's `requestTimeoutMs` plus
   * the bytes sent at `requestBytesPerSecond` (a file sink verifies and
   * syncs what it got); 0 (never) when that is 0.
   */
  private answerDue(st: OutState): number {
    if (st.answerMs !== undefined) return st.answerMs;
    const base = this.caller.requestTimeoutMs;
    return base === 0 ? 0 : base + Math.ceil(((st.out.produced - st.offset) * 1000) / this.caller.bytesPerSecond);
  }

  /** The connection closed: stop every producer. */
  teardown(failure: PointSubError): void {
    for (const st of this.streams.values()) st.out.stop(failure);
    this.streams.clear();
    for (const w of this.waiters.splice(0)) w();
  }
}

/**
 * The error of a stream whose signal aborted (before it started or while it ran, alike). Stopped for a
 * reason a retry may cure (a server's download pace, ERR_SLOW_PEER): that code, which the receiver is
 * told too (after ERR_CANCELLED a file sink drops the partial a resume would use); else ERR_CANCELLED.
 */
function abortError(route: string, r: unknown): PointSubError {
  // One given a code of the application's own (no code pointsub can carry): ERR_CANCELLED too. Before, it was
  // rebuilt with that code, which threw: from the signal's listener, an uncaught exception, the stream unsettled.
  // Nor one whose fields throw when read (a revoked Proxy, a throwing getter): it threw from the signal's listener too.
  try {
    if (r instanceof PointSubError && r.retryable && r.code !== "ERR_CANCELLED" && codeForErrno(r.errno) === r.code)
      return new PointSubError(r.code, `stream to ${route} stopped: ${r.message}`, { cause: r });
  } catch {}
  return new PointSubError("ERR_CANCELLED", `stream to ${route} aborted`, { cause: r });
}
