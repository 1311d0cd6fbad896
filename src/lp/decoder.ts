/**
 * The incremental parser of the plain length-prefix format (docs/PROTOCOL.md
 * §8): a u32 big-endian length, then that many bytes of message, repeated.
 *
 * Bounded whatever the peer does: a declared length over `maxMessageSize`
 * fails before anything of its body is kept; a body is assembled in a buffer
 * that grows with what actually arrived (doubling, so the copying stays
 * linear), never with what the peer declared; every byte held is charged to
 * a {@link MemoryBudget} (a server shares one between its sessions).
 */
import { MemoryBudget } from "../connection/budget.ts";
import { PointSubError } from "../errors/error.ts";

/** The most a 4-byte length can declare. */
export const LP_MAX_LENGTH = 0xffff_ffff;
/** Bodies up to this size get their whole buffer at once (what a small read brings anyway). */
const FIRST_BUFFER = 64 * 1024;
/** Smallest room worth offering the transport to read into directly (see `readTarget`). */
const DIRECT_MIN = 32 * 1024;
const EMPTY = new Uint8Array(0);
/** A push's message count when no step is asked for: never reached (a Smi, as the count it starts). */
const UNLIMITED = 0x3fff_ffff;

/** Receives what the decoder parsed. */
export interface LpDecoderSink {
  /** A whole message: a view of the chunk it came in, or a buffer of its own. */
  onMessage(data: Uint8Array): void;
}

/** Parses a byte stream of length-prefixed messages, chunk by chunk. */
export class LpDecoder {
  private readonly sink: LpDecoderSink;
  private readonly maxMessageSize: number;
  private readonly budget: MemoryBudget;
  /** Header bytes of a length split across chunks. */
  private readonly head = new Uint8Array(4);
  private headFilled = 0;
  /** The body being assembled (undefined between messages). */
  private body: Uint8Array | undefined;
  /** Its declared length, and how much of it arrived. */
  private bodyLength = 0;
  private bodyFilled = 0;
  /** Bytes of `body` charged to the budget. */
  private charged = 0;
  /** Set by {@link stop}: the rest of the chunk in hand is dropped. */
  private stopped = false;
  /** A server's: frees budget (cuts sessions owing the most) when a body does not fit. */
  private readonly relieve: ((need: number) => void) | undefined;
  /** Most messages one {@link push} hands out (the connection's read gate looks at its budget between steps). */
  private readonly step: number;
  /**
   * Where in the last pushed chunk parsing stopped: before its end when the
   * push stopped after `step` messages (the caller pushes the rest later,
   * before anything else).
   */
  used = 0;

  constructor(
    sink: LpDecoderSink,
    maxMessageSize: number,
    budget: MemoryBudget = new MemoryBudget(Infinity),
    relieve?: (need: number) => void,
    step: number = UNLIMITED,
  ) {
    this.sink = sink;
    this.maxMessageSize = maxMessageSize;
    this.budget = budget;
    this.relieve = relieve;
    this.step = step;
  }

  /** True between messages (no partial length or body held). */
  get idle(): boolean {
    return this.headFilled === 0 && this.body === undefined;
  }

  /** Bytes of an unfinished message received so far (length bytes included). */
  get partialBytes(): number {
    return this.body === undefined ? this.headFilled : 4 + this.bodyFilled;
  }

  /**
   * Parses `chunk` from `from` on, handing out at most `step` messages:
   * {@link used} says where it stopped. Returns true when a message handed out is a
   * view of it (the transport must leave that memory alone), false when
   * everything needed was copied. Throws ERR_MESSAGE_TOO_LARGE for a
   * declared length over the limit and ERR_OVERLOADED when the budget
   * cannot hold a body.
   */
  push(chunk: Uint8Array, from = 0): boolean {
    const end = chunk.length;
    let pos = from;
    let kept = false;
    // Counted, not timed: a read of 16,384 empty messages held the event loop for all of them.
    let left = this.step;
    while (pos < end && !this.stopped) {
      const body = this.body;
      if (body !== undefined) {
        pos += this.fill(body, chunk, pos);
        if (this.body === undefined && --left === 0) break;
        continue;
      }
      if (this.headFilled === 0 && end - pos >= 4) {
        const len = ((chunk[pos] << 24) | (chunk[pos + 1] << 16) | (chunk[pos + 2] << 8) | chunk[pos + 3]) >>> 0;
        this.check(len);
        if (end - pos - 4 >= len) {
          // Whole in this chunk: a view, no copy.
          const data = len === 0 ? EMPTY : chunk.subarray(pos + 4, pos + 4 + len);
          pos += 4 + len;
          if (len !== 0) kept = true;
          this.sink.onMessage(data);
          if (--left === 0) break;
          continue;
        }
        pos += 4;
        this.start(len);
        continue;
      }
      const n = Math.min(4 - this.headFilled, end - pos);
      for (let i = 0; i < n; i++) this.head[this.headFilled + i] = chunk[pos + i];
      this.headFilled += n;
      pos += n;
      if (this.headFilled < 4) continue;
      this.headFilled = 0;
      const h = this.head;
      const len = ((h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3]) >>> 0;
      this.check(len);
      if (len !== 0) this.start(len);
      else {
        this.sink.onMessage(EMPTY);
        if (--left === 0) break;
      }
    }
    this.used = pos;
    return kept;
  }

  /**
   * Where the transport may read the next bytes: the free room of the body
   * being assembled, when large enough; undefined otherwise.
   */
  readTarget(): Uint8Array | undefined {
    const body = this.body;
    if (body === undefined) return undefined;
    const room = body.length - this.bodyFilled;
    return room >= DIRECT_MIN ? body.subarray(this.bodyFilled) : undefined;
  }

  /** Drops what is held and ignores the rest of the chunk being parsed (the connection closed). */
  stop(): void {
    this.stopped = true;
    this.release();
  }

  private check(len: number): void {
    if (len > this.maxMessageSize) {
      throw PointSubError.fromPeer(
        "ERR_MESSAGE_TOO_LARGE",
        `peer declared a message of ${len} bytes, over maxMessageSize ${this.maxMessageSize}`,
      );
    }
  }

  /** A body that spans chunks begins: its first buffer is small, whatever the peer declared. */
  private start(len: number): void {
    this.bodyLength = len;
    this.bodyFilled = 0;
    this.body = this.alloc(Math.min(len, FIRST_BUFFER));
  }

  private alloc(n: number): Uint8Array {
    if (!this.budget.tryCharge(n) && !this.relieved(n)) {
      const length = this.bodyLength;
      this.release();
      throw PointSubError.fromPeer(
        "ERR_OVERLOADED",
        `no memory budget for ${n} more bytes of a ${length}-byte message`,
      );
    }
    this.charged += n;
    return new Uint8Array(n);
  }

  /** A server's: `n` bytes did not fit; whether they do once it cut sessions owing their peers the most. */
  private relieved(n: number): boolean {
    if (this.relieve === undefined) return false;
    this.relieve(n);
    return this.budget.tryCharge(n);
  }

  /** Copies what `chunk` holds of the body from `pos`; returns the bytes taken. */
  private fill(body: Uint8Array, chunk: Uint8Array, pos: number): number {
    const want = this.bodyLength - this.bodyFilled;
    const n = Math.min(want, chunk.length - pos);
    // Read straight into place (readTarget)?
    const inPlace = chunk.buffer === body.buffer && chunk.byteOffset === body.byteOffset + this.bodyFilled;
    let target = body;
    if (!inPlace && this.bodyFilled + n > body.length) {
      // Grow by doubling, never past the declared length: linear copying in all.
      const size = Math.min(this.bodyLength, Math.max(body.length * 2, this.bodyFilled + n));
      target = this.alloc(size);
      target.set(body.subarray(0, this.bodyFilled));
      this.budget.release(body.length);
      this.charged -= body.length;
      this.body = target;
    }
    if (inPlace) {
      // Read straight into place: nothing to copy.
    } else if (n <= 16) {
      // A trickle: a loop beats making a view to copy from.
      const at = this.bodyFilled;
      for (let i = 0; i < n; i++) target[at + i] = chunk[pos + i];
    } else target.set(chunk.subarray(pos, pos + n), this.bodyFilled);
    this.bodyFilled += n;
    if (this.bodyFilled === this.bodyLength) {
      const data = target.length === this.bodyLength ? target : target.subarray(0, this.bodyLength);
      // The message is the application's now: no longer charged.
      this.release();
      this.sink.onMessage(data);
    }
    return n;
  }

  private release(): void {
    if (this.charged !== 0) this.budget.release(this.charged);
    this.charged = 0;
    this.body = undefined;
    this.bodyLength = 0;
    this.bodyFilled = 0;
  }
}
