/**
 * The sending half of a length-prefix connection: every message becomes a
 * u32 big-endian length and its bytes. Small messages are copied into a
 * slab that goes to the transport once per turn (or when it holds 32 KiB):
 * one write for a burst of thousands. Large ones go as they are (their
 * length in a 4-byte buffer of its own, no copy of the payload). While the
 * transport is backed up, messages queue in order; each send's promise
 * settles when its bytes are handed to the transport, or rejects when the
 * connection closes first.
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

interface Queued {
  data: Uint8Array;
  resolve: () => void;
  reject: (err: PointSubError) => void;
}

/** What the writer tells its connection. */
export interface LpWriterHooks {
  /** The transport stopped (true) or resumed (false) taking bytes. */
  blocked(on: boolean): void;
}

/** Writes length-prefixed messages to a transport, with backpressure. */
export class LpWriter {
  /** Bytes and messages handed to the transport (lengths included). */
  bytesOut = 0;
  messagesOut = 0;
  /** Payload bytes queued behind backpressure. */
  queuedBytes = 0;
  /** Whether the transport takes bytes now (false after `write` said so, until its drain). */
  transportWritable = true;
  /** When the last bytes went to the transport (`Date.now()`, coarse: per flush). */
  lastOutput = 0;
  private readonly transport: Transport;
  private readonly hooks: LpWriterHooks;
  private readonly alloc: (n: number) => Uint8Array;
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

  /**
   * @param alloc - makes slabs; they are always written before they are
   *   sent, so it need not zero them (the runtime's `allocBody`).
   */
  constructor(transport: Transport, hooks: LpWriterHooks, alloc: (n: number) => Uint8Array = (n) => new Uint8Array(n)) {
    this.transport = transport;
    this.hooks = hooks;
    this.alloc = alloc;
  }

  /** True while a message would go out at once (nothing queued, the transport not backed up). */
  get writable(): boolean {
    return this.transportWritable && this.queueHead === this.queue.length && !this.closed;
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
    if (!this.transportWritable) {
      this.transportWritable = true;
      this.hooks.blocked(false);
    }
    this.pump();
  }

  /** Writes whatever the slab holds. */
  flush(): void {
    const slab = this.slab;
    if (slab === undefined || this.pos === this.start || this.closed) return;
    const ok = this.transport.write([slab.subarray(this.start, this.pos)]);
    this.start = this.pos;
    this.lastOutput = Date.now();
    if (!ok) this.setBlocked();
  }

  /** Fails everything queued with `err` and writes nothing more. */
  close(err: PointSubError): void {
    if (this.closed) return;
    this.closed = true;
    this.slab = undefined;
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
      this.lastOutput = Date.now();
      if (!this.transport.write([head, data])) this.setBlocked();
      return;
    }
    let slab = this.slab;
    if (slab === undefined || slab.length - this.pos < len + 4) {
      this.flush();
      // A slab filled within one turn: the traffic is a burst, use big ones.
      if (slab !== undefined && this.turnBytes >= slab.length / 2) this.slabSize = BIG_SLAB;
      slab = this.alloc(Math.max(this.slabSize, len + 4));
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
      this.slabSize = SMALL_SLAB;
      this.slab = undefined;
    }
    this.turnBytes = 0;
  };

  private setBlocked(): void {
    if (!this.transportWritable) return;
    this.transportWritable = false;
    this.hooks.blocked(true);
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
