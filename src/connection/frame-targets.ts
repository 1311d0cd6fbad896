/**
 * The frame router of a connection that has `FrameDecoder` (Node, or a
 * browser connection made after its stream engine loaded): it also tells
 * the decoder where the payload of a frame spanning reads may land — a
 * chunked message's assembly buffer, a buffer a stream's reader handed back
 * — and takes stream data as views of the chunks it arrived in. Comes with
 * the stream engine (a `BaseDecoder` never asks).
 */
import { F_START, T_MSG, T_RES, T_STREAM } from "../codec/frame.ts";
import { PointSubError, protocolError } from "../errors/error.ts";
import { FrameRouter } from "./frames.ts";

/**
 * Frames the decoder hands on between two looks at the clock (a BATCH's
 * inner frames count one by one): what one read (or one BATCH) may run past
 * the budgets above. Honest traffic's frames cost microseconds at most, so
 * a step is well under a millisecond; a hostile peer's costliest ones keep
 * it to a few.
 */
export const STEP_FRAMES = 256;

/** A frame read into memory of its own: its charge, its progress and the progress window's start. */
interface ChargedBody {
  length: number;
  filled: number;
  windowAt: number;
  windowFilled: number;
}

/**
 * The frame each router is reading into memory of its own, charged to the
 * budget (see FrameSink.chargeBody): beside the routers, not a field of each
 * (a connection reads such a frame rarely; every idle session would carry the field).
 */
const chargedBodies = new WeakMap<TargetingFrameRouter, ChargedBody>();

export class TargetingFrameRouter extends FrameRouter {
  /** Frames per push: the connection's read gate looks at its budgets between steps (a getter: no field per connection). */
  get step(): number {
    return STEP_FRAMES;
  }
  /** Lets chunked-message bytes land directly in their buffer, and a stream's in buffers its reader handed back. */
  frameTarget(type: number, flags: number, id: number, length: number): Uint8Array | undefined {
    if (this.held !== undefined) return undefined;
    if (type === T_STREAM) return flags === 0 ? this.inStreamsIfAny?.frameBuffer(id, length) : undefined;
    if ((flags & F_START) !== 0 || type < T_MSG || type > T_RES) return undefined;
    return this.inbound.chunked?.frameTarget(type, id, length);
  }

  chargeBody(length: number): void {
    // Closed meanwhile (a GOAWAY or the application's destroy earlier in the same read): what is
    // left of the read is dropped, and nothing would return a charge made now.
    if (this.closed) return;
    const b = this.inbound.budget;
    if (!b.tryCharge(length)) {
      throw PointSubError.fromPeer(
        "ERR_OVERLOADED",
        `no memory budget for a frame of ${length} bytes (${b.used} of ${b.limit} in use)`,
      );
    }
    chargedBodies.set(this, { length, filled: 0, windowAt: performance.now(), windowFilled: 0 });
  }

  bodyProgress(filled: number): void {
    const b = chargedBodies.get(this);
    if (b !== undefined) b.filled = filled;
  }

  /** Also when the connection closes (housekeeping's stop): a frame left unfinished gives its charge back. */
  releaseBody(): void {
    const b = chargedBodies.get(this);
    if (b === undefined) return;
    chargedBodies.delete(this);
    this.inbound.budget.release(b.length);
  }

  /**
   * Housekeeping: why the charged frame being read is too slow — fewer than
   * `minBytesPerSecond` over the last `windowMs` (a peer that declares a large
   * frame and trickles it would hold its charge for ever) — or undefined.
   * `floor`: when reading last resumed after this side paused it (0: never).
   */
  bodyStalled(now: number, windowMs: number, floor: number, minBytesPerSecond: number): string | undefined {
    const b = chargedBodies.get(this);
    if (b === undefined) return undefined;
    if (floor > b.windowAt) {
      // Reading was paused by this side meanwhile: the window starts again at the resume.
      b.windowAt = floor;
      b.windowFilled = b.filled;
    }
    if (now - b.windowAt < windowMs) return undefined;
    const got = b.filled - b.windowFilled;
    if (got < (minBytesPerSecond * (now - b.windowAt)) / 1000) {
      return `${got} bytes of a frame of ${b.length} arrived in ${Math.round(now - b.windowAt)} ms (${b.filled} in all): slower than minProgressBytesPerSecond (${minBytesPerSecond})`;
    }
    b.windowAt = now;
    b.windowFilled = b.filled;
    return undefined;
  }

  /** Stream data frames are taken as views of the chunks they arrive in (no copy), unless the reader recycles buffers. */
  wantsPieces(type: number, flags: number, id: number, length: number): boolean {
    return type === T_STREAM && flags === 0 && this.inStreamsIfAny?.wantsPieces(id, length) === true;
  }

  onFramePieces(type: number, flags: number, id: number, pieces: Uint8Array[], length: number, crc: number): void {
    if (this.closed) return;
    this.framesIn++;
    const ins = this.inStreamsIfAny;
    if (type !== T_STREAM || flags !== 0 || ins === undefined) {
      throw protocolError(`STREAM frame for unknown stream ${id}`);
    }
    ins.onPieces(id, pieces, length, crc);
  }
}
