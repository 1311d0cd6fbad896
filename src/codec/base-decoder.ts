import { PointSubError, protocolError } from "../errors/error.ts";
import { readU32 } from "./bytes.ts";
import { type Crc32c, combineCrcs, JS_CRC32C_IMPL } from "./crc32c.ts";
import { BODY, type DecoderState, FAILED, HEADER, PREFACE } from "./decoder-state.ts";
import {
  ALLOWED_FLAGS,
  CRC_LENGTH,
  F_KEYED,
  F_START,
  FRAME_TYPE_NAMES,
  ID_VARINT_MAX,
  LENGTH_VARINT_MAX,
  MAGIC,
  MAX_HEADER,
  MAX_STREAM_ID,
  PREFACE_LENGTH,
  T_AUTH,
  T_BATCH,
  T_MSG,
  T_REQ,
  T_RES,
  T_STREAM,
} from "./frame.ts";
import { readVarint, type VarintResult } from "./varint.ts";

/** Receives what the decoder parses. */
export interface FrameSink {
  /** The 6-byte preface was read. */
  onPreface(minVersion: number, maxVersion: number): void;
  /**
   * A whole, checksum-verified frame whose payload is `buf[start..end)`.
   * `buf` may be the pushed chunk. For STREAM frames and whole MSG, REQ and
   * RES frames (START and END set) the sink may keep views of it
   * ({@link FrameDecoder.push} then reports the chunk as kept); any other
   * frame's payload (a chunked message's frames included: copy them) must be
   * used before onFrame returns, since the transport may read new bytes into
   * that memory.
   * `payloadCrc` is the CRC32C of the payload alone when the decoder computed
   * it separately from the header (frames filled piece by piece, and STREAM
   * frames of 4 KiB or more), else -1: a receiver extends an end-to-end
   * checksum with it without another pass over the bytes.
   */
  onFrame(
    type: number,
    flags: number,
    id: number,
    buf: Uint8Array,
    start: number,
    end: number,
    payloadCrc: number,
  ): void;
  /**
   * Optional: a frame whose payload spans several pushes is starting. Return a
   * view of exactly `length` bytes to receive the payload in place (saving a
   * copy), or undefined to let the decoder allocate one.
   */
  frameTarget?(type: number, flags: number, id: number, length: number): Uint8Array | undefined;
  /**
   * Optional: a frame whose payload spans several pushes is starting. Return
   * true to receive it as the list of views of the pushed chunks it lies in
   * ({@link onFramePieces}), with no copy and no allocation.
   */
  wantsPieces?(type: number, flags: number, id: number, length: number): boolean;
  /**
   * Optional (`FrameDecoder`): the decoder allocates `length` bytes (at least
   * `BODY_CHARGE_MIN`, decoder.ts) of its own for a frame spanning pushes (no
   * target, no pieces) — memory a peer makes the receiver hold by declaring a
   * frame and sending part of it. The sink charges them to its budget until
   * {@link releaseBody}; it throws (ERR_OVERLOADED) to refuse.
   */
  chargeBody?(length: number): void;
  /** Optional: the frame of the last {@link chargeBody} is whole (or its connection closed): its charge is returned. */
  releaseBody?(): void;
  /** Optional: `filled` bytes of the frame of the last {@link chargeBody} have arrived (its progress). */
  bodyProgress?(filled: number): void;
  /**
   * Optional (`FrameDecoder`): at most this many frames per push (a BATCH's
   * inner frames count one by one); a push stops at the frame boundary after
   * them and says how much of its chunk it used, so that the pusher can look
   * at its time before it pushes the rest.
   */
  readonly step?: number;
  /** A whole, checksum-verified frame delivered as pieces (see {@link wantsPieces}); `payloadCrc` as in onFrame. */
  onFramePieces?(
    type: number,
    flags: number,
    id: number,
    pieces: Uint8Array[],
    length: number,
    payloadCrc: number,
  ): void;
}

/** @internal A push's steps when unlimited (more frames than any chunk holds; a small integer, unlike Infinity). */
export const UNLIMITED_STEPS = 2 ** 30;

/**
 * Incremental push decoder for protocol v1: preface, then frames. Feed it any
 * split of the byte stream; it emits the same frames. It validates every
 * header field before allocating, checks CRC32C trailers and throws a
 * {@link PointSubError} (`ERR_PROTOCOL`, `ERR_FRAME_TOO_LARGE`,
 * `ERR_CHECKSUM`) on bad input, after which it refuses further input.
 *
 * A frame whose bytes span pushes is collected whole (payload and trailer)
 * in a buffer of its own, then verified and handed on: what a browser page
 * starts with. `FrameDecoder` (`decoder.ts`, with the stream engine, and
 * what Node uses) fills such frames in place instead: into a buffer the sink
 * offers, as views of the pushed chunks, or where the transport read them,
 * checksumming each piece as it arrives.
 */
export class BaseDecoder {
  /** Largest payload accepted (the local maxFrameSize setting). */
  declare maxFrameSize: number;
  /** Whether frames carry a CRC32C trailer (on until negotiated otherwise). */
  checksum = true;

  declare protected readonly sink: FrameSink;
  protected state: DecoderState = PREFACE;
  /** A header split across pushes is completed here (allocated the first time one is). */
  private carry: Uint8Array = NO_BYTES;
  private carryLen = 0;
  // frame in progress
  protected type = 0;
  protected flags = 0;
  protected id = 0;
  protected length = 0;
  private headLen = 0;
  /**
   * CRC32C of the header of the frame being filled, kept signed (`| 0`): a
   * small integer, where an unsigned one over 2^31 made the field a number
   * box in every decoder made after the first such frame.
   */
  protected headCrc = 0;
  protected body: Uint8Array = NO_BYTES;
  protected filled = 0;
  /** Whether the current push handed views of its chunk to the sink. */
  protected retained = false;
  /**
   * Steps of work this push may still take (a frame, or a piece of one): a
   * push stops once none is left, having used {@link used} bytes of its
   * chunk (`FrameDecoder` sets it from its sink's `step`; unlimited here:
   * {@link UNLIMITED_STEPS}, a small integer, not Infinity, which would be a
   * number box in every decoder).
   */
  left = UNLIMITED_STEPS;
  /** Bytes of the chunk the last push used, when it stopped early ({@link left}). */
  used = 0;

  declare protected readonly crc: Crc32c;
  declare protected readonly alloc: (n: number) => Uint8Array;

  /**
   * `crc` and `alloc` come from the runtime: its CRC32C implementation and
   * its allocator of frame bodies (which may skip zero-filling: every byte
   * is written before use).
   */
  constructor(
    sink: FrameSink,
    maxFrameSize: number,
    crc: Crc32c = JS_CRC32C_IMPL,
    alloc: (n: number) => Uint8Array = allocateUninitialized,
  ) {
    this.sink = sink;
    this.maxFrameSize = maxFrameSize;
    this.crc = crc;
    this.alloc = alloc;
  }

  /**
   * Feeds bytes. Returns true when views of `chunk` were handed to the sink
   * (a message, stream piece or batch), so its memory must stay as it is;
   * false when everything was copied out or parsed, so a transport may read
   * the next bytes into the same buffer. Throws PointSubError on invalid input.
   */
  push(chunk: Uint8Array): boolean {
    if (this.state === FAILED) throw protocolError("decoder already failed");
    this.retained = false;
    // Per push: a count over the decoder's life would run out after 2^30 frames (`FrameDecoder.run` sets its own).
    this.left = UNLIMITED_STEPS;
    try {
      this.run(chunk);
    } catch (err) {
      this.state = FAILED;
      throw err;
    }
    return this.retained;
  }

  /**
   * Where the next bytes should go, when they are the rest of a frame body
   * being filled into its own buffer: a view of exactly the missing bytes
   * (never the CRC trailer or the next header), else undefined. A transport
   * that reads into it and pushes a view of what it read saves the copy.
   * (Always undefined here: `FrameDecoder` offers one.)
   */
  readTarget(): Uint8Array | undefined {
    return undefined;
  }

  /** True when no partial frame is buffered (a clean place for the stream to end). */
  get idle(): boolean {
    return this.state === HEADER && this.carryLen === 0;
  }

  protected run(chunk: Uint8Array): void {
    let pos = 0;
    const end = chunk.length;
    while (pos < end && this.left-- > 0) {
      if (this.state === BODY) {
        pos = this.fillBody(chunk, pos, end);
        continue;
      }
      if (this.carryLen > 0) {
        // Complete a header (or preface) split across pushes: borrow just
        // enough bytes from this chunk; at most MAX_HEADER bytes are copied.
        const take = Math.min(MAX_HEADER - this.carryLen, end - pos);
        this.carry.set(chunk.subarray(pos, pos + take), this.carryLen);
        const avail = this.carryLen + take;
        const wasPreface = this.state === PREFACE;
        const used = this.parseHead(this.carry, 0, avail);
        if (used === 0) {
          this.carryLen = avail;
          return;
        }
        pos += used - this.carryLen;
        this.carryLen = 0;
        if (!wasPreface) this.afterHeaderFromCarry();
        continue;
      }
      const wasPreface = this.state === PREFACE;
      const used = this.parseHead(chunk, pos, end);
      if (used === 0) {
        if (this.carry.length === 0) this.carry = new Uint8Array(MAX_HEADER);
        this.carry.set(chunk.subarray(pos, end), 0);
        this.carryLen = end - pos;
        return;
      }
      if (wasPreface) {
        pos += used;
        continue;
      }
      const hstart = pos;
      pos += used;
      const total = this.length + (this.checksum ? CRC_LENGTH : 0);
      if (end - pos >= total) {
        // Whole frame in this chunk: verify and hand out a view, no copy.
        const pstart = pos;
        const pend = pos + this.length;
        let payloadCrc = -1;
        if (this.checksum) {
          let crc: number;
          const combine = combineCrcs;
          if (this.type === T_STREAM && this.length >= 4096 && combine !== undefined) {
            payloadCrc = this.crc.range(chunk, pstart, pend);
            crc = combine(this.crc.range(chunk, hstart, pstart), payloadCrc, this.length);
          } else {
            crc = this.crc.range(chunk, hstart, pend);
          }
          const t = pend;
          const want = readU32(chunk, t);
          if (crc !== want) throw this.checksumError();
        }
        pos += total;
        if (KEEPS_PAYLOAD[this.type] + (this.flags & 3) > 5) this.retained = true;
        this.emit(chunk, pstart, pend, payloadCrc);
      } else {
        if (this.checksum) this.headCrc = this.crc.range(chunk, hstart, pos) | 0;
        this.beginBody();
      }
    }
    this.used = pos;
  }

  /** After a header parsed out of the carry buffer: start the body. */
  private afterHeaderFromCarry(): void {
    if (this.checksum) this.headCrc = this.crc.range(this.carry, 0, this.headLen) | 0;
    if (this.length === 0 && !this.checksum) {
      this.sink.onFrame(this.type, this.flags, this.id, this.carry, 0, 0, -1);
      return;
    }
    this.beginBody();
  }

  /** A frame whose bytes span pushes starts (its header parsed, `headCrc` computed). */
  protected beginBody(): void {
    this.body = this.alloc(this.length + (this.checksum ? CRC_LENGTH : 0));
    this.filled = 0;
    this.state = BODY;
  }

  /** Bytes of the frame being collected: copied in; once whole, verified and handed on. Returns the new position. */
  protected fillBody(chunk: Uint8Array, pos: number, end: number): number {
    const body = this.body;
    const n = Math.min(body.length - this.filled, end - pos);
    body.set(chunk.subarray(pos, pos + n), this.filled);
    this.filled += n;
    pos += n;
    if (this.filled < body.length) return pos;
    this.state = HEADER;
    this.body = NO_BYTES;
    const len = this.length;
    let payloadCrc = -1;
    if (this.checksum) {
      // Without the combine (a browser before its stream engine loads): over the bytes, after the header's CRC.
      const combine = combineCrcs;
      if (combine !== undefined) payloadCrc = this.crc.range(body, 0, len);
      const crc =
        combine !== undefined ? combine(this.headCrc, payloadCrc, len) : this.crc.range(body, 0, len, this.headCrc);
      if (crc !== readU32(body, len)) throw this.checksumError();
    }
    this.emit(body, 0, len, payloadCrc);
    return pos;
  }

  /** Hands a verified frame's payload `buf[start..end)` on (a BATCH's frames one by one). */
  protected emit(buf: Uint8Array, start: number, end: number, payloadCrc: number): void {
    if (this.type === T_BATCH) this.unbatch(buf, start, end);
    else this.sink.onFrame(this.type, this.flags, this.id, buf, start, end, payloadCrc);
  }

  /**
   * Emits the frames inside a BATCH payload: complete frames without CRC
   * trailers (the BATCH's own trailer covered them), never HELLO or BATCH.
   */
  protected unbatch(p: Uint8Array, from: number, end: number): void {
    if (end === from) throw protocolError("empty BATCH");
    for (let pos = from; pos < end; ) pos = this.inner(p, pos, end);
  }

  /** Emits the frame at `p[pos..)` inside a BATCH ending at `end`; returns where the next one starts. */
  protected inner(p: Uint8Array, pos: number, end: number): number {
    // The type first (§3.9's order): HELLO (0) or BATCH (8) inside is ERR_PROTOCOL, whatever length it declares.
    const type = p[pos] >> 4;
    if ((type & 7) === 0) throw protocolError(`${FRAME_TYPE_NAMES[type]} inside BATCH`);
    // 0: its header is cut by the BATCH's end (then `length` is not this frame's).
    const used = this.parseHead(p, pos, end);
    const start = pos + used;
    pos = start + this.length;
    if (used === 0 || pos > end) throw protocolError("frame runs past its BATCH");
    this.sink.onFrame(type, this.flags, this.id, p, start, pos, -1);
    return pos;
  }

  /**
   * Parses a preface or frame header at `src[pos..end)`. Returns the bytes it
   * used, or 0 when more are needed. Throws on invalid fields.
   */
  private parseHead(src: Uint8Array, pos: number, end: number): number {
    if (this.state === PREFACE) {
      // The magic's bytes that arrived so far are checked at once (a peer that is not one fails early).
      for (let i = 0; i < Math.min(4, end - pos); i++) if (src[pos + i] !== MAGIC[i]) throw this.prefaceError();
      if (end - pos < PREFACE_LENGTH) return 0;
      const min = src[pos + 4];
      const max = src[pos + 5];
      this.state = HEADER;
      this.sink.onPreface(min, max);
      return PREFACE_LENGTH;
    }
    const b0 = src[pos];
    const type = b0 >> 4;
    const flags = b0 & 0x0f;
    if (type > T_AUTH) {
      throw protocolError(`unknown frame type 0x${type.toString(16)}`);
    }
    // KEYED (REQ only) must come with START: a key belongs to a request's first frame.
    if ((flags & ~ALLOWED_FLAGS[type]) !== 0 || ((flags & KEYED_OR_START) === F_KEYED && type === T_REQ)) {
      throw protocolError(`flags 0x${flags.toString(16)} not allowed on ${FRAME_TYPE_NAMES[type]}`);
    }
    let r = readVarint(src, pos + 1, end, ID_VARINT_MAX, VARINT);
    if (r === 0) return 0;
    if (r < 0 || VARINT.value > MAX_STREAM_ID) throw protocolError("invalid stream id encoding");
    const id = VARINT.value;
    if (((ZERO_ID >> type) & 1) === 1 ? id !== 0 : ((STREAM_ID >> type) & 1) === 1 && id === 0) {
      throw protocolError(`invalid stream id ${id} on ${FRAME_TYPE_NAMES[type]}`);
    }
    r = readVarint(src, VARINT.next, end, LENGTH_VARINT_MAX, VARINT);
    if (r === 0) return 0;
    if (r < 0) throw protocolError("invalid length encoding");
    if (VARINT.value > this.maxFrameSize) {
      throw PointSubError.fromPeer(
        "ERR_FRAME_TOO_LARGE",
        `frame of ${VARINT.value} bytes exceeds maxFrameSize ${this.maxFrameSize}`,
      );
    }
    this.type = type;
    this.flags = flags;
    this.id = id;
    this.length = VARINT.value;
    this.headLen = VARINT.next - pos;
    return this.headLen;
  }

  private prefaceError(): PointSubError {
    return protocolError("not a pointsub peer (no PSUB preface)");
  }

  protected checksumError(): PointSubError {
    return PointSubError.fromPeer(
      "ERR_CHECKSUM",
      `CRC32C mismatch: ${FRAME_TYPE_NAMES[this.type]} frame, stream ${this.id}, ${this.length} B`,
    );
  }
}

/** @internal */
export const NO_BYTES: Uint8Array = new Uint8Array(0);
/** Frame types (bits `1 << type`) whose stream id must be 0: HELLO, PING, GOAWAY, BATCH, AUTH. */
const ZERO_ID = 0x5c1;
/** Frame types whose stream id must not be 0: MSG, REQ, RES, CANCEL, STREAM (CREDIT takes either). */
const STREAM_ID = 0x21e;
const KEYED_OR_START = F_KEYED | F_START;
/**
 * The header varints' scratch, one for every decoder: each is read right
 * after it is filled, with no call out in between (a decoder per connection
 * kept its own: 48 B each).
 */
const VARINT: VarintResult = { value: 0, next: 0 };

/**
 * Frame types whose payload the sink may keep as a view: STREAM data and
 * batches (of anything), always (6); MSG, REQ and RES (3) only whole, START
 * and END set (the sum with `flags & 3` is over 5) — a chunked message's
 * frames are copied into its assembly, so a read of them leaves the read
 * buffer free for the next. The others (0) are parsed at once.
 */
const KEEPS_PAYLOAD = new Uint8Array(16);
for (const t of [T_MSG, T_REQ, T_RES, T_STREAM, T_BATCH]) KEEPS_PAYLOAD[t] = t > T_RES ? 6 : 3;

/**
 * The default allocator of bytes the caller overwrites completely before
 * anyone reads them (frame bodies, chunked messages being assembled); a
 * runtime may supply one that skips zero-filling.
 */
export function allocateUninitialized(n: number): Uint8Array {
  return new Uint8Array(n);
}
