/**
 * The push decoder Node uses (and a browser page once its stream engine is
 * loaded): {@link BaseDecoder} with frames that span pushes filled in place
 * — into a buffer the sink offers (a chunked message's assembly, a stream
 * reader's recycled buffer), as views of the pushed chunks (stream data:
 * no copy, no allocation), or where the transport read them
 * ({@link FrameDecoder.readTarget}) — each piece checksummed as it arrives,
 * while it is still in cache.
 */

import { protocolError } from "../errors/error.ts";
import { BaseDecoder, NO_BYTES, UNLIMITED_STEPS } from "./base-decoder.ts";
import { crc32cCombine } from "./crc32c-combine.ts";
import { BODY, HEADER } from "./decoder-state.ts";
import { CRC_LENGTH, T_BATCH } from "./frame.ts";

export { allocateUninitialized, BaseDecoder, type FrameSink } from "./base-decoder.ts";

/**
 * Bodies of frames spanning pushes from this size on are charged to the sink's
 * budget (`FrameSink.chargeBody`); smaller ones are bounded by the connection's
 * read buffers already. (Here, not in base-decoder.ts: a page's first load does not carry it.)
 */
export const BODY_CHARGE_MIN = 32 * 1024;
/**
 * Least average size of a frame's pieces (see FrameSink.wantsPieces) from
 * its {@link PIECES_BEFORE_AVERAGE}th on: each piece is a view (~100 bytes
 * of heap) pinning its read, so a frame arriving in tiny pieces is gathered
 * into memory of its own instead. A WebSocket peer chooses its pieces (one
 * per message): 512 KiB of stream data in 1-byte messages held ~55 MB of
 * views and ~3.5 MB of pinned reads, and a connection's window of such
 * frames, ~1.8 GB, against 16 MiB charged.
 */
const PIECE_AVERAGE_MIN = 1024;
const PIECES_BEFORE_AVERAGE = 8;

export class FrameDecoder extends BaseDecoder {
  /**
   * CRC32C of the payload bytes of the frame being filled: from 0, or, for
   * a BATCH (whose payload's own CRC nobody needs), continuing the header's,
   * so the trailer is checked without combining the two. Signed, as
   * `headCrc` (unsigned where handed on).
   */
  private runningCrc = 0;
  /** The frame being filled as views of the pushed chunks (see FrameSink.wantsPieces). */
  private pieces: Uint8Array[] | undefined;
  /** The CRC trailer's bytes so far, accumulated into a number (big-endian, signed 32-bit). */
  private trailer = 0;
  /** The inner frames of a BATCH a push stopped in, not handed on yet (see {@link unbatch}). */
  private batch: Uint8Array = NO_BYTES;

  /**
   * Takes at most the sink's `step` (`FrameSink.step`) steps of work (frames,
   * pieces of frames, a BATCH's inner frames one by one) on `chunk`, first
   * the rest of a BATCH the previous push stopped in. When it stopped early,
   * {@link left} is 0 or less and {@link used} says how much of `chunk` it
   * used: the caller pushes the rest (maybe empty, when only a BATCH's
   * frames are left) later, before anything else.
   */
  protected override run(chunk: Uint8Array): void {
    this.left = this.sink.step ?? UNLIMITED_STEPS;
    const b = this.batch;
    if (b !== NO_BYTES) {
      this.batch = NO_BYTES;
      this.unbatch(b, 0, b.length);
      if (this.left <= 0) {
        this.used = 0;
        return;
      }
    }
    this.used = chunk.length;
    super.run(chunk);
  }

  /** As BaseDecoder's, a step per inner frame: where the steps run out, the rest is kept for the next push. */
  protected override unbatch(p: Uint8Array, from: number, end: number): void {
    if (end === from) throw protocolError("empty BATCH");
    for (let pos = from; pos < end; pos = this.inner(p, pos, end)) {
      if (this.left-- <= 0) {
        this.batch = p.subarray(pos, end);
        return;
      }
    }
  }

  override readTarget(): Uint8Array | undefined {
    if (this.state !== BODY || this.pieces !== undefined || this.filled >= this.length) return undefined;
    return this.body.subarray(this.filled, this.length);
  }

  protected override beginBody(): void {
    this.trailer = 0;
    this.runningCrc = this.type === T_BATCH ? this.headCrc : 0;
    if (this.length > 0 && this.sink.wantsPieces?.(this.type, this.flags, this.id, this.length) === true) {
      this.pieces = [];
      this.body = NO_BYTES;
      this.filled = 0;
      this.state = BODY;
      return;
    }
    this.pieces = undefined;
    const t = this.length > 0 ? this.sink.frameTarget?.(this.type, this.flags, this.id, this.length) : undefined;
    if (t !== undefined && t.length === this.length) this.body = t;
    else {
      // Memory of its own for a frame the peer may never finish: charged (or refused) first.
      if (this.length >= BODY_CHARGE_MIN) this.sink.chargeBody?.(this.length);
      this.body = this.alloc(this.length);
    }
    this.filled = 0;
    this.state = BODY;
  }

  /** The frame's pieces so far are too small to keep as views: copied into memory of its own (charged), where the rest lands too. */
  private gather(pieces: Uint8Array[]): void {
    this.pieces = undefined;
    if (this.length >= BODY_CHARGE_MIN) this.sink.chargeBody?.(this.length);
    const body = this.alloc(this.length);
    let at = 0;
    for (let i = 0; i < pieces.length; i++) {
      body.set(pieces[i], at);
      at += pieces[i].length;
    }
    this.body = body;
  }

  protected override fillBody(chunk: Uint8Array, pos: number, end: number): number {
    const len = this.length;
    if (this.filled < len) {
      const n = Math.min(len - this.filled, end - pos);
      const piece = chunk.subarray(pos, pos + n);
      let pieces = this.pieces;
      if (
        pieces !== undefined &&
        pieces.length >= PIECES_BEFORE_AVERAGE &&
        pieces.length * PIECE_AVERAGE_MIN > this.filled
      ) {
        this.gather(pieces);
        pieces = undefined;
      }
      if (pieces !== undefined) {
        pieces.push(piece);
        this.retained = true;
      } else if (piece.buffer !== this.body.buffer || piece.byteOffset !== this.body.byteOffset + this.filled) {
        this.body.set(piece, this.filled);
      } // else the transport read it into place (readTarget)
      // Checksum each piece as it arrives, while it is still in cache.
      if (this.checksum) this.runningCrc = this.crc.compute(piece, this.runningCrc >>> 0) | 0;
      this.filled += n;
      pos += n;
      if (len >= BODY_CHARGE_MIN) this.sink.bodyProgress?.(this.filled);
    }
    if (this.filled >= len && this.checksum) {
      const have = this.filled - len;
      const n = Math.min(CRC_LENGTH - have, end - pos);
      // The trailer's bytes accumulate into a number (big-endian), kept signed: a small
      // integer, where an unsigned one over 2^31 made the field a number box in every decoder.
      for (let i = 0; i < n; i++) this.trailer = (this.trailer << 8) | chunk[pos + i];
      this.filled += n;
      pos += n;
      if (this.filled < len + CRC_LENGTH) return pos;
      // A BATCH's running CRC covers its header already (see runningCrc): a
      // flood's batches span reads, and the combine cost 2-3 % of a receiver's CPU.
      const whole = this.type === T_BATCH ? this.runningCrc : crc32cCombine(this.headCrc, this.runningCrc, len);
      if ((whole | 0) !== this.trailer) throw this.checksumError();
    } else if (this.filled < len) {
      return pos;
    }
    this.state = HEADER;
    const body = this.body;
    this.body = NO_BYTES;
    // Whole: what its own body held of the budget goes back (the message's owner charges it its own way).
    if (len >= BODY_CHARGE_MIN) this.sink.releaseBody?.();
    const payloadCrc = this.checksum && this.type !== T_BATCH ? this.runningCrc >>> 0 : -1;
    if (this.pieces !== undefined) {
      const pieces = this.pieces;
      this.pieces = undefined;
      this.sink.onFramePieces?.(this.type, this.flags, this.id, pieces, len, payloadCrc);
      return pos;
    }
    this.emit(body, 0, body.length, payloadCrc);
    return pos;
  }
}
