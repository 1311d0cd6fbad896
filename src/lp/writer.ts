/**
 * The sending half of a length-prefix connection: every message becomes a
 * u32 big-endian length and its bytes. Small messages are copied into a
 * slab that goes to the transport once per turn (or when it holds 32 KiB):
 * one write for a burst of thousands. Large ones go as they are (their
 * length in a 4-byte buffer of its own, no copy of the payload). While the
 * transport is backed up, messages queue in order; each send's promise
 * settles when its bytes are handed to the transport, or rejects when the
 * connection closes first.
 *
 * A transport that says when it no longer holds a write's memory
 * ({@link ReleasingWrite}: the lp+tcp sockets) gets its big slabs back for
 * reuse: a flood then leaves no 64 KiB of garbage per 64 KiB sent, which
 * the GC would only collect once tens of MB of them had piled up (fresh
 * pages for every slab: twice the CPU per message, measured).
 */
import type { PointSubError } from "../errors/error.ts";
import type { Transport } from "../transport/transport.ts";

/** Largest message copied into the slab. */
const SLAB_MAX_MESSAGE = 16 * 1024;
/** A slab holding this much is written at once, not at the end of the turn. */
const FLUSH_BYTES = 32 * 1024;
/** Slab of a quiet connection (what one small message a turn needs), and of a busy one. */
const SMALL_SLAB = 1024;
const BIG_SLAB = 64 * 1024;
/** Big slabs kept for reuse by a busy connection (dropped when it goes quiet). */
const MAX_FREE_SLABS = 16;
/**
 * Writes a releasing transport may hold before the writer waits for some
 * back (~1 MiB of 32 KiB writes): a burst of sends in one turn must let the
 * releases run, or every slab of the burst stays referenced until it ends.
 */
const MAX_UNRELEASED = 32;

/**
 * Optional transport capability: writes `chunk` and calls `released` once
 * the transport no longer references its memory (written, or dropped when
 * the transport closed). Returns what `Transport.write` returns.
 */
export interface ReleasingWrite {
  writeReleasing(chunk: Uint8Array, released: () => void): boolean;
}

/** A slab and the writes of it a releasing transport still holds. */
class Slab {
  readonly buf: Uint8Array;
  /** Writes of this slab not yet released. */
  held = 0;
  /** Full: nothing more goes in; reusable once `held` is back to 0. */
  retired = false;
  /** Passed with every write of this slab (one closure per slab, reused with it). */
  readonly release: () => void;
  constructor(buf: Uint8Array, writer: LpWriter) {
    this.buf = buf;
    this.release = () => writer.released(this);
  }
}

interface Queued {
  data: Uint8Array;
  resolve: () => void;
  reject: (err: PointSubError) => void;
}

/** What the writer tells its connection. */
export interface LpWriterHooks {
  /** The transport stopped (true) or resumed (false) taking bytes. */
  blocked(on: boolean): void;
  /** Bytes were handed to the transport (once per write, not per message). */
  wrote(): void;
}

/** Writes length-prefixed messages to a transport, with backpressure. */
export class LpWriter {
  /** Bytes and messages handed to the transport (lengths included). */
  bytesOut = 0;
  messagesOut = 0;
  /** Payload bytes queued behind backpressure. */
  queuedBytes = 0;
  /** Whether the transport takes bytes now (false after `write` said so, until its drain; or while too many writes are unreleased). */
  transportWritable = true;
  /** When the last bytes went to the transport (`performance.now()`, coarse: per flush). */
  lastOutput = 0;
  private readonly transport: Transport;
  private readonly hooks: LpWriterHooks;
  private readonly alloc: (n: number) => Uint8Array;
  /** The transport's `writeReleasing`, when it has one. */
  private readonly releasing: ReleasingWrite | undefined;
  /** Big slabs free for reuse (only with a releasing transport). */
  private readonly free: Slab[] = [];
  /** Writes given to the releasing transport and not released yet. */
  private unreleased = 0;
  /** The transport said to wait (until its drain); or too many writes are unreleased. */
  private transportBlocked = false;
  private releaseBlocked = false;
  /** The slab being filled, and its memory. */
  private cur: Slab | undefined;
  private slab: Uint8Array | undefined;
  private slabSize = SMALL_SLAB;
  /** Written to the transport up to `start`; filled up to `pos`. */
  private start = 0;
  private pos = 0;
  private flushScheduled = false;
  /** Bytes put in slabs this turn (decides the next slab's size). */
  private turnBytes = 0;
  private queue: Queued[] = [];
  private queueHead = 0;
  private drainWaiters: (() => void)[] = [];
  private closed = false;
  /** What {@link close} was given: sends queued after it reject with it. */
  private closeError: PointSubError | undefined;

  /**
   * @param alloc - makes slabs; they are always written before they are
   *   sent, so it need not zero them (the runtime's `allocBody`).
   */
  constructor(transport: Transport, hooks: LpWriterHooks, alloc: (n: number) => Uint8Array = (n) => new Uint8Array(n)) {
    this.transport = transport;
    this.hooks = hooks;
    this.alloc = alloc;
    const r = transport as Transport & Partial<ReleasingWrite>;
    this.releasing = typeof r.writeReleasing === "function" ? (r as Transport & ReleasingWrite) : undefined;
  }

  /** True while a message would go out at once (nothing queued, the transport not backed up). */
  get writable(): boolean {
    return this.transportWritable && this.queueHead === this.queue.length && !this.closed;
  }

  /** {@link close} was called: nothing more is written. */
  get ended(): boolean {
    return this.closed;
  }

  /** Messages queued behind backpressure. */
  get pending(): number {
    return this.queue.length - this.queueHead;
  }

  /**
   * Writes `data` now if the transport takes it (returns true), else
   * returns false: the caller then queues it with {@link enqueue}.
   */
  tryWrite(data: Uint8Array): boolean {
    if (!this.transportWritable || this.queueHead !== this.queue.length || this.closed) return false;
    this.write(data);
    return true;
  }

  /** Queues `data` behind what is queued; the promise settles when it is handed to the transport. */
  enqueue(data: Uint8Array): Promise<void> {
    // Closed (the peer ended the stream while the connection is still open): nothing more goes out.
    if (this.closed) return Promise.reject(this.closeError);
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ data, resolve, reject });
      this.queuedBytes += data.length;
    });
  }

  /** Resolves once nothing is queued and the transport takes bytes (or the writer closed). */
  whenDrained(): Promise<void> {
    if (this.writable || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** The transport drained: write what is queued. */
  onDrain(): void {
    if (this.closed) return;
    this.transportBlocked = false;
    this.updateWritable();
  }

  /** Recomputes `transportWritable`; when it turns true, writes what is queued. */
  private updateWritable(): void {
    const writable = !this.transportBlocked && !this.releaseBlocked;
    if (writable === this.transportWritable) {
      if (writable) this.pump();
      return;
    }
    this.transportWritable = writable;
    this.hooks.blocked(!writable);
    if (writable) this.pump();
  }

  /** Writes whatever the slab holds. */
  flush(): void {
    const slab = this.slab;
    if (slab === undefined || this.pos === this.start || this.closed) return;
    const region = slab.subarray(this.start, this.pos);
    const cur = this.cur;
    let ok: boolean;
    if (this.releasing !== undefined && cur !== undefined) {
      cur.held++;
      ok = this.releasing.writeReleasing(region, cur.release);
      if (++this.unreleased >= MAX_UNRELEASED && !this.releaseBlocked) {
        this.releaseBlocked = true;
        this.updateWritable();
      }
    } else ok = this.transport.write([region]);
    this.start = this.pos;
    this.lastOutput = performance.now();
    this.hooks.wrote();
    if (!ok) this.setBlocked();
  }

  /** Fails everything queued, and every later {@link enqueue}, with `err`; writes nothing more. */
  close(err: PointSubError): void {
    if (this.closed) return;
    this.closed = true;
    this.closeError = err;
    this.slab = undefined;
    this.cur = undefined;
    this.free.length = 0;
    const queue = this.queue;
    const head = this.queueHead;
    this.queue = [];
    this.queueHead = 0;
    this.queuedBytes = 0;
    for (let i = head; i < queue.length; i++) queue[i].reject(err);
    this.wakeDrainWaiters();
  }

  private write(data: Uint8Array): void {
    const len = data.length;
    this.bytesOut += len + 4;
    this.messagesOut++;
    if (len > SLAB_MAX_MESSAGE) {
      this.flush();
      const head = new Uint8Array(4);
      writeLength(head, 0, len);
      this.lastOutput = performance.now();
      const ok = this.transport.write([head, data]);
      this.hooks.wrote();
      if (!ok) this.setBlocked();
      return;
    }
    let slab = this.slab;
    if (slab === undefined || slab.length - this.pos < len + 4) {
      this.flush();
      // A slab filled within one turn: the traffic is a burst, use big ones.
      if (slab !== undefined && this.turnBytes >= slab.length / 2) this.slabSize = BIG_SLAB;
      if (this.cur !== undefined) this.retire(this.cur);
      const next = this.newSlab(Math.max(this.slabSize, len + 4));
      this.cur = next;
      slab = next.buf;
      this.slab = slab;
      this.start = 0;
      this.pos = 0;
    }
    const pos = this.pos;
    writeLength(slab, pos, len);
    if (len !== 0) slab.set(data, pos + 4);
    this.pos = pos + 4 + len;
    this.turnBytes += len + 4;
    if (this.pos - this.start >= FLUSH_BYTES) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.endOfTurn);
    }
  }

  /** After the burst of sends of one turn: write the slab; a quiet connection goes back to a small one. */
  private readonly endOfTurn = (): void => {
    this.flushScheduled = false;
    this.flush();
    if (this.turnBytes < SMALL_SLAB && this.slabSize !== SMALL_SLAB) {
      // Quiet again: no big slab kept (its writes in flight just go to the GC).
      this.slabSize = SMALL_SLAB;
      this.slab = undefined;
      this.cur = undefined;
      this.free.length = 0;
    }
    this.turnBytes = 0;
  };

  /** @internal A releasing transport gave `slab`'s write back. */
  released(slab: Slab): void {
    if (--slab.held === 0 && slab.retired) this.reuse(slab);
    if (--this.unreleased <= MAX_UNRELEASED / 2 && this.releaseBlocked && !this.closed) {
      this.releaseBlocked = false;
      this.updateWritable();
    }
  }

  /** `slab` is full: reusable once its writes are released. */
  private retire(slab: Slab): void {
    slab.retired = true;
    if (slab.held === 0) this.reuse(slab);
  }

  private reuse(slab: Slab): void {
    if (this.releasing === undefined || this.closed || slab.buf.length !== BIG_SLAB) return;
    if (this.free.length >= MAX_FREE_SLABS || this.slabSize !== BIG_SLAB || slab === this.cur) return;
    slab.retired = false;
    this.free.push(slab);
  }

  private newSlab(n: number): Slab {
    if (n === BIG_SLAB) {
      const s = this.free.pop();
      if (s !== undefined) return s;
    }
    return new Slab(this.alloc(n), this);
  }

  private setBlocked(): void {
    if (this.transportBlocked) return;
    this.transportBlocked = true;
    this.updateWritable();
  }

  private pump(): void {
    const queue = this.queue;
    while (this.queueHead < queue.length && this.transportWritable && !this.closed) {
      const q = queue[this.queueHead];
      queue[this.queueHead++] = undefined as unknown as Queued;
      this.queuedBytes -= q.data.length;
      this.write(q.data);
      q.resolve();
    }
    if (this.queueHead === queue.length && this.queueHead !== 0) {
      this.queue = [];
      this.queueHead = 0;
    }
    if (this.writable) this.wakeDrainWaiters();
  }

  private wakeDrainWaiters(): void {
    if (this.drainWaiters.length === 0) return;
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const resolve of w) resolve();
  }
}

/** Writes `len` as a u32 big-endian at `at`. */
export function writeLength(buf: Uint8Array, at: number, len: number): void {
  buf[at] = len >>> 24;
  buf[at + 1] = (len >>> 16) & 0xff;
  buf[at + 2] = (len >>> 8) & 0xff;
  buf[at + 3] = len & 0xff;
}
