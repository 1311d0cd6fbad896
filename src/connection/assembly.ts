/**
 * The peer's chunked MSG, REQ and RES messages being received
 * (docs/PROTOCOL.md §3.1–§3.4): each is assembled in a buffer, charged to
 * the memory budget and its per-message window, and handed back to
 * {@link Inbound} when its END arrives; messages this side refuses are
 * cancelled and their late frames dropped (tombstones). Comes with the
 * stream engine (`streams.ts`): a browser page that only sends and
 * receives single-frame messages never loads it; the frame router holds a
 * connection's frames from the first chunked one on until it is loaded.
 */

import { F_END, T_REQ, T_RES } from "../codec/frame.ts";
import { PointSubError, protocolError } from "../errors/error.ts";
import type { PendingCall } from "./calls.ts";
import { idKey } from "./id-key.ts";
import { type Inbound, inputTime } from "./inbound.ts";
import { creditDue } from "./link.ts";
import { answering } from "./request-progress.ts";

/** Bytes charged per unfinished message on top of its declared size: its bookkeeping and buffer headers. */
export const ASSEMBLY_OVERHEAD = 1024;

/**
 * Unfinished chunked messages one peer may have open here; more are refused
 * with ERR_OVERLOADED (senders keep at most MAX_OPEN_CHUNKED open, far fewer).
 * Each costs a buffer allocation, so this bounds the work a flood of cheap
 * START frames causes, whatever the budget.
 */
const MAX_OPEN_ASSEMBLIES = 1024;
/** Ids of refused messages whose remaining frames are dropped, at most this many. */
const MAX_TOMBSTONES = 4096;
/**
 * An assembly buffer starts with room for {@link FIRST_CHUNKS} times the
 * first chunk (at least {@link MIN_CAPACITY}, never past the declared
 * length) and doubles (at least) as bytes arrive while that stays under
 * {@link WHOLE_FROM}; past that the whole message is allocated
 * and the bytes so far copied once. A START that declares 256 MiB and sends
 * nothing more costs a few KiB, not a 256 MiB allocation (untouched, but V8
 * counts it as external memory; a fuzz run allocated 4.6 GiB that way).
 * A START whose first chunk alone would double past {@link WHOLE_FROM}
 * (32 KiB or more: a sender's large message, whose frames are 16 KiB and up)
 * gets the whole buffer at once, as its next frame would: the full GC that
 * V8 starts on so much new external memory then begins a frame earlier —
 * ~10 ms over a new libp2p connection, whose first frames are slow — and
 * is over sooner for the requests that follow the message's start (issue
 * 15: the first pings of `hol` waited 20-35 ms behind it).
 * Growing large messages step by step (4x) was tried: it made the longest
 * turn of a server receiving 16 MiB messages ~3x longer; below 64 KiB the
 * steps copy under 128 KiB in all. They are what a peer gets once its (or
 * others') abandoned buffers passed {@link WASTE_MAX}. The budget is charged on the declared
 * length from the START either way.
 *
 * Why small steps matter: V8 starts a full GC after some megabytes of new
 * ArrayBuffers whether or not they die young. Under the mutation fuzzer
 * ~90 % of chunked messages never complete (the connection dies first),
 * most after a chunk or two; with a 64 KiB first buffer they were over half
 * of the server's ArrayBuffer bytes (~210 MiB per 300k frames, 32 MiB of
 * it filled).
 */
const MIN_CAPACITY = 4 * 1024;
const WHOLE_FROM = 64 * 1024;
const FIRST_CHUNKS = 4;

/**
 * Bytes of assembly buffers allocated but never filled (their message
 * dropped unfinished: cancelled, timed out, connection closed), in this
 * JavaScript realm, leaking away at {@link WASTE_PER_MS}. The whole
 * declared length is allocated early only while this stays under
 * {@link WASTE_MAX}; past it buffers grow 4x at a time as bytes arrive.
 * Else a peer that starts 256 MiB messages, sends 33 KiB of each and
 * cancels them (or reconnects) makes V8 run a full GC every few of them
 * (external memory): ~35 ms of GC per MiB sent, honest p99 ~250 ms at
 * 7 MB/s (the same bytes as whole messages: ~1 ms of GC per MiB). Per
 * realm, not per connection, as V8's external memory is and as reconnects
 * are; an honest sender's completed messages add nothing.
 */
const WASTE_MAX = 512 * 1024 * 1024;
const WASTE_PER_MS = 256 * 1024;
let waste = 0;
let wasteAt = 0;

/**
 * Assembly buffers of messages that were dropped unfinished (or outgrown)
 * and never handed to anyone, kept for the next messages of any connection
 * of this realm: {@link POOL_PER_CLASS} per power-of-two size class from
 * {@link POOL_MIN} up to {@link POOL_MAX} bytes (under 1 MiB in all). New
 * ArrayBuffer bytes are what start V8's full GCs, and under the mutation
 * fuzzer ~90 % of chunked messages never complete (the connection dies a
 * frame or two after their START): without reuse each cost a new 4-16 KiB
 * buffer (~250 MiB of the ~1.1 GiB of ArrayBuffers per million frames).
 * A delivered message's buffer is the application's and never comes here;
 * neither does the buffer the frame decoder may still be writing into
 * ({@link Assemblies.frameTarget}'s, until that frame is decoded). The
 * bytes a reused buffer held before are never visible: a message is
 * delivered only once all of its bytes were written.
 */
const POOL_MIN = 1024;
const POOL_MAX = 32 * 1024;
const POOL_PER_CLASS = 8;
/** Free buffers by size class: `pool[k]` holds buffers of 2^k to 2^(k+1) - 1 bytes. */
const pool: Uint8Array[][] = [];

/** Keeps `buf` (a whole buffer nobody else holds) for reuse, if its class has room. */
function recycle(buf: Uint8Array): void {
  const n = buf.buffer.byteLength;
  if (n < POOL_MIN || n > POOL_MAX || buf.byteOffset !== 0) return;
  const k = 31 - Math.clz32(n);
  pool[k] ??= [];
  const list = pool[k];
  if (list.length < POOL_PER_CLASS) list.push(buf.length === n ? buf : new Uint8Array(buf.buffer, 0, n));
}

/** A free buffer of at least `n` bytes (at most ~4n) from {@link pool}, or undefined. */
function reuse(n: number): Uint8Array | undefined {
  if (n > POOL_MAX) return undefined;
  const k = n <= POOL_MIN ? 10 : 32 - Math.clz32(n - 1);
  return pool[k]?.pop() ?? pool[k + 1]?.pop();
}

/** Whether a message may get its whole buffer before its bytes arrive (see {@link WASTE_MAX}). */
function wholeOk(now: number): boolean {
  if (now > wasteAt) {
    waste = Math.max(0, waste - (now - wasteAt) * WASTE_PER_MS);
    wasteAt = now;
  }
  return waste < WASTE_MAX;
}

/** A chunked message being received. */
interface Assembly {
  /** Its stream id (the table's key is {@link idKey} of it). */
  id: number;
  type: number;
  total: number;
  /**
   * The bytes so far, in a buffer that grows as they arrive (exactly
   * `total` long once complete); null when they are being discarded (a
   * cancelled call's response).
   */
  buf: Uint8Array | null;
  filled: number;
  route: string;
  /** A keyed request's idempotency key (a copy), else undefined. */
  key: Uint8Array | undefined;
  streamUsed: number;
  streamUnacked: number;
  /** Bytes of the memory budget this assembly holds (0 when discarding). */
  charged: number;
  /** When its last frame arrived (the connection's last input time). */
  lastFrameAt: number;
  /** Start of the current progress window (see {@link Assemblies.checkProgress}). */
  windowAt: number;
  /** `filled` when that window started. */
  windowFilled: number;
}

/** The chunked messages of one connection's inbound side (created on the first one). */
export class Assemblies {
  private readonly map = new Map<number, Assembly>();
  private bytes = 0;
  /** Ids of the peer's messages this side refused or timed out: their late frames are dropped until END. */
  private tombstones: Set<number> | undefined;
  /**
   * The memory of the last {@link frameTarget} handed out, while the
   * decoder may still be filling it (until the next frame is decoded): never
   * recycled then.
   */
  private target: ArrayBufferLike | undefined;
  declare private readonly inbound: Inbound;

  constructor(inbound: Inbound) {
    this.inbound = inbound;
  }

  /** Chunked messages being received. */
  get size(): number {
    return this.map.size;
  }

  /** Whether a chunked message with this id is being received. */
  has(id: number): boolean {
    return this.map.has(idKey(id));
  }

  /** A new message on `id` started: if this side refused one there before, the peer has moved on. */
  started(id: number): void {
    this.tombstones?.delete(id);
  }

  /** FrameSink.frameTarget for MSG/REQ/RES continuations: the assembly buffer, so bytes land in place. */
  frameTarget(type: number, id: number, length: number): Uint8Array | undefined {
    const a = this.map.get(idKey(id));
    if (a === undefined || a.buf === null || a.type !== type || a.filled + length > a.total) return undefined;
    const buf = a.filled + length > a.buf.length ? this.grow(a, a.filled + length) : a.buf;
    this.target = buf.buffer;
    return buf.subarray(a.filled, a.filled + length);
  }

  /** Recycles `buf` (dropped or outgrown, never delivered) unless the decoder may be writing into it. */
  private free(buf: Uint8Array): void {
    if (buf.buffer !== this.target) recycle(buf);
  }

  /**
   * Gives `a` a buffer for at least `need` bytes, with the bytes so far
   * copied: twice that while under {@link WHOLE_FROM},
   * else its whole declared length (never more).
   */
  private grow(a: Assembly, need: number): Uint8Array {
    const old = a.buf as Uint8Array;
    const step = need * 2;
    const n =
      step < WHOLE_FROM && step < a.total ? step : wholeOk(inputTime.now) ? a.total : Math.min(a.total, need * 4);
    const buf = this.alloc(n, a.total);
    if (a.filled > 0) buf.set(old.subarray(0, a.filled), 0);
    a.buf = buf;
    this.free(old);
    return buf;
  }

  /**
   * At least `n` bytes (never more than `total`) for a message of `total`:
   * a recycled buffer if one fits, else a new one (ERR_MESSAGE_TOO_LARGE
   * when it cannot be allocated).
   */
  private alloc(n: number, total: number): Uint8Array {
    const b = reuse(n);
    if (b !== undefined) {
      if (b.length <= total) return b;
      // The message is delivered as a view of this buffer: the bytes past it (another
      // message's, maybe another connection's) must not be reachable through `data.buffer`.
      b.fill(0, total);
      return b.subarray(0, total);
    }
    try {
      return this.inbound.alloc(n);
    } catch (cause) {
      throw PointSubError.fromPeer("ERR_MESSAGE_TOO_LARGE", `cannot allocate ${total} bytes`, { cause });
    }
  }

  /**
   * The START frame of a chunked message of `total` bytes (its head parsed
   * by {@link Inbound}): `data` is its first chunk, `frameBytes` the frame's
   * payload length (counted on the message's window), `call` this side's
   * call for a RES.
   */
  start(
    type: number,
    id: number,
    total: number,
    route: string,
    key: Uint8Array | undefined,
    call: PendingCall | undefined,
    data: Uint8Array,
    frameBytes: number,
  ): void {
    this.target = undefined; // a whole frame was decoded: the decoder holds no target now
    if (data.length > total) throw protocolError("first chunk larger than the message");
    const inb = this.inbound;
    if (frameBytes > inb.link.local.streamWindow)
      throw PointSubError.fromPeer("ERR_FLOW_CONTROL", `peer exceeded the window of stream ${id}`);
    let discard = call?.settled === true;
    if (!discard) {
      if (this.bytes + total > inb.link.local.maxAssemblyBytes) {
        throw PointSubError.fromPeer("ERR_FLOW_CONTROL", "peer exceeded maxAssemblyBytes with unfinished messages");
      }
      const tooMany = this.map.size >= MAX_OPEN_ASSEMBLIES;
      if (tooMany || !inb.budget.tryCharge(total + ASSEMBLY_OVERHEAD)) {
        const b = inb.budget;
        const err = PointSubError.fromPeer(
          "ERR_OVERLOADED",
          tooMany
            ? `more than ${MAX_OPEN_ASSEMBLIES} unfinished messages; retry later`
            : `no memory budget for ${total} more bytes (${b.used} of ${b.limit} in use); retry later`,
        );
        if (call === undefined) {
          this.refuse(type, id, err);
          return;
        }
        // The response to this side's own call: give up on it, tell the
        // responder, and absorb the rest of it without storing.
        inb.caller.settle(call, undefined, err);
        inb.outbox.sendCancel(id, err.code);
        discard = true;
      } else {
        this.bytes += total;
      }
    }
    let target: Uint8Array | null = null;
    if (!discard) {
      // Delivered only once all `total` bytes were written into it (grown as they arrive).
      const n =
        data.length * 2 < WHOLE_FROM || !wholeOk(inputTime.now)
          ? Math.max(MIN_CAPACITY, data.length * FIRST_CHUNKS)
          : total;
      target = this.alloc(n < total ? n : total, total);
      target.set(data, 0);
    }
    const a: Assembly = {
      id,
      type,
      total,
      buf: target,
      filled: data.length,
      route,
      key,
      streamUsed: frameBytes,
      streamUnacked: frameBytes,
      charged: discard ? 0 : total + ASSEMBLY_OVERHEAD,
      lastFrameAt: inputTime.now,
      windowAt: inputTime.now,
      windowFilled: 0,
    };
    this.map.set(idKey(id), a);
    // An answer arriving in frames: how far it got is how a request timed by default moves (request-progress.ts).
    if (call !== undefined) answering.set(call, a);
    this.messageCredit(id, a);
  }

  /** A frame after the START of message `id`. */
  continuation(type: number, flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    this.target = undefined; // a whole frame was decoded: the decoder holds no target now
    const a = this.map.get(idKey(id));
    if (a === undefined || a.type !== type) {
      if (a === undefined && this.tombstones?.has(id) === true) {
        // A refused message's frames still in flight: dropped (connection credit was counted).
        if ((flags & F_END) !== 0) this.tombstones.delete(id);
        return;
      }
      throw protocolError(`continuation of unknown stream ${id}`);
    }
    const inb = this.inbound;
    a.lastFrameAt = inputTime.now;
    const len = end - start;
    if (a.filled + len > a.total) throw protocolError(`stream ${id} overruns its declared length`);
    a.streamUsed += len;
    if (a.streamUsed > inb.link.local.streamWindow)
      throw PointSubError.fromPeer("ERR_FLOW_CONTROL", `peer exceeded the window of stream ${id}`);
    a.streamUnacked += len;
    // This side gave up on the call (its CANCEL went out): the rest of the answer is absorbed, not stored.
    if (a.buf !== null && type === T_RES && inb.caller.pending.get(id)?.settled !== false) this.release(a);
    if (a.buf !== null) {
      const inPlace = buf.buffer === a.buf.buffer && buf.byteOffset + start === a.buf.byteOffset + a.filled;
      if (!inPlace)
        (a.filled + len > a.buf.length ? this.grow(a, a.filled + len) : a.buf).set(buf.subarray(start, end), a.filled);
    }
    a.filled += len;
    if ((flags & F_END) === 0) {
      this.messageCredit(id, a);
      return;
    }
    if (a.filled !== a.total) throw protocolError(`stream ${id} ended short of its declared length`);
    this.map.delete(idKey(id));
    const pending = inb.caller.pending;
    if (a.buf === null) {
      // Discarded response of a call already settled: its id is free now.
      const call = pending.get(id);
      if (call !== undefined) inb.caller.finishCall(call);
      return;
    }
    this.bytes -= a.total;
    inb.deliver(type, id, a.route, a.buf, type === T_RES ? pending.get(id) : undefined, a.charged, a.key);
  }

  /**
   * Refuses the peer's message or request `id` (CANCEL with `err`'s errno);
   * its frames still in flight are dropped.
   */
  private refuse(type: number, id: number, err: PointSubError): void {
    const inb = this.inbound;
    if (type === T_REQ) inb.dispatcher.openRequests--;
    inb.stats.error(err.code);
    inb.outbox.sendCancel(id, err.code);
    this.tombstones ??= new Set();
    if (this.tombstones.size >= MAX_TOMBSTONES) {
      const oldest = this.tombstones.values().next().value as number;
      this.tombstones.delete(oldest);
    }
    this.tombstones.add(id);
  }

  /** Removes the unfinished message `id` and returns what it held of the budget; returns its type or -1. */
  drop(id: number): number {
    const a = this.map.get(idKey(id));
    if (a === undefined) return -1;
    this.map.delete(idKey(id));
    this.release(a);
    return a.type;
  }

  /** Stops storing `a`: its memory and budget charge go back; its frames are still counted. */
  private release(a: Assembly): void {
    if (a.buf === null) return;
    wholeOk(inputTime.now);
    waste += a.buf.length - a.filled;
    this.bytes -= a.total;
    this.inbound.budget.release(a.charged);
    a.charged = 0;
    this.free(a.buf);
    a.buf = null;
  }

  /** Returns credit on a chunked message's own window in quarter-window steps. */
  private messageCredit(id: number, a: Assembly): void {
    if (creditDue(a.streamUnacked, this.inbound.link.local.streamWindow)) {
      this.inbound.outbox.sendCredit(id, a.streamUnacked);
      a.streamUsed -= a.streamUnacked;
      a.streamUnacked = 0;
    }
  }

  /** See {@link Inbound.checkProgress}. */
  checkProgress(now: number, timeoutMs: number, floor: number, minBytesPerSecond: number, confirmed: boolean): boolean {
    const perWindow = (minBytesPerSecond * timeoutMs) / 1000;
    for (const a of this.map.values()) {
      const id = a.id;
      if (a.type === T_RES) continue; // this side's call: its request timeout rules
      const last = a.lastFrameAt > floor ? a.lastFrameAt : floor;
      let why: string;
      if (now - last >= timeoutMs) {
        why = `received nothing for ${Math.round(now - last)} ms`;
      } else {
        if (a.windowAt < floor) {
          // Nothing could arrive while reading was paused: a new window from the resume.
          a.windowAt = floor;
          a.windowFilled = a.filled;
        }
        const span = now - a.windowAt;
        if (span < timeoutMs) continue;
        const got = a.filled - a.windowFilled;
        const lacked = a.total - a.windowFilled;
        if (got >= (lacked < perWindow ? lacked : perWindow)) {
          a.windowAt = now;
          a.windowFilled = a.filled;
          continue;
        }
        why = `received ${got} bytes in ${Math.round(span)} ms (minProgressBytesPerSecond ${minBytesPerSecond})`;
      }
      if (!confirmed) return true;
      this.drop(id);
      this.refuse(a.type, id, PointSubError.fromPeer("ERR_TIMEOUT", `message ${id} ${why}; cancelled`));
    }
    return false;
  }

  /** The connection closed: drop every unfinished message. */
  teardown(): void {
    for (const a of [...this.map.values()]) this.drop(a.id);
    this.bytes = 0;
  }
}
