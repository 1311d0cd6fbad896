/**
 * Where each incoming frame goes (the decoder's sink): preface and HELLO
 * to the handshake (and everything to it while authentication is
 * pending), MSG/REQ/RES to the inbound side, STREAM to the incoming
 * streams, CANCEL to the inbound side (which knows every kind of id),
 * CREDIT to the writer and the outgoing streams, PING to the pinger,
 * GOAWAY to the connection's lifecycle.
 */
import { decodeCancel, decodeCredit, decodeGoAway } from "../codec/control.ts";
import type { FrameSink } from "../codec/decoder.ts";
import {
  F_END,
  F_START,
  FRAME_TYPE_NAMES,
  MAX_WINDOW,
  PROTOCOL_VERSION,
  T_CANCEL,
  T_CREDIT,
  T_GOAWAY,
  T_MSG,
  T_PING,
  T_REQ,
  T_RES,
  T_STREAM,
} from "../codec/frame.ts";
import type { VarintResult } from "../codec/varint.ts";
import { PointSubError, protocolError } from "../errors/error.ts";
import type { Handshake } from "./handshake.ts";
import type { Inbound } from "./inbound.ts";
import { Pinger } from "./pinger.ts";
import type { IncomingStreams } from "./stream-in.ts";
import type { OutgoingStreams } from "./stream-out.ts";
import type { FrameWriter } from "./writer.ts";

/** What the connection does for frames no part owns. */
export interface FrameHooks {
  /**
   * The incoming streams, created if needed (a STREAM frame arrived);
   * undefined while the stream engine loads: the router holds frames until
   * the connection calls {@link FrameRouter.release}.
   */
  inStreams(): IncomingStreams | undefined;
  /**
   * Whether the code of chunked messages is there (the inbound side's
   * `chunked`, made on the first chunked frame); false while the stream
   * engine loads: the router holds frames as for {@link inStreams}.
   */
  assemblies(): boolean;
  /** GOAWAY: errno 0 is a graceful close, anything else a fatal error of the peer. */
  onGoAway(errno: number, reason: string): void;
}

/** A frame held while the stream engine loads: a copy of its payload. */
interface HeldFrame {
  type: number;
  flags: number;
  id: number;
  payload: Uint8Array;
  crc: number;
}

/** The flags of a message in one frame. */
const WHOLE = F_START | F_END;

/** Varints read here (one for every connection: read and used with no call between). */
const SCRATCH: VarintResult = { value: 0, next: 0 };

/** Bytes counted per held frame besides its payload (its header, roughly). */
const HELD_FRAME_COST = 16;
/** What the frame router may hold beyond the receive window while the stream engine loads (heads, control frames). */
const HOLD_SLACK = 1024 * 1024;

export class FrameRouter implements FrameSink {
  /** Frames received. */
  framesIn = 0;
  /** Set by the connection when it closes: later frames are ignored. */
  closed = false;
  /** The stream halves, set by the connection when it creates them. */
  inStreamsIfAny: IncomingStreams | undefined;
  outStreamsIfAny: OutgoingStreams | undefined;
  /** The handshake until it completed (then undefined: the connection drops it). */
  declare handshake: Handshake | undefined;
  /** The peer's MSG/REQ/RES side (also checked for stalled messages by housekeeping). */
  declare readonly inbound: Inbound;
  /** The pinger, once there is one ({@link pinger}). */
  pingerIfAny: Pinger | undefined;
  /** @internal (housekeeping reaches it here) */
  declare readonly writer: FrameWriter;
  declare private readonly hooks: FrameHooks;
  /**
   * Frames held in arrival order from the first STREAM frame that came
   * while the stream engine was loading (a browser's first stream) until
   * {@link release}; undefined otherwise.
   */
  protected held: HeldFrame[] | undefined;
  private heldBytes = 0;

  constructor(handshake: Handshake, inbound: Inbound, writer: FrameWriter, hooks: FrameHooks) {
    this.handshake = handshake;
    this.inbound = inbound;
    this.writer = writer;
    this.hooks = hooks;
  }

  /** The connection's pings (and answers to the peer's), created on first use: an idle connection has none yet. */
  get pinger(): Pinger {
    this.pingerIfAny ??= new Pinger(this.writer);
    return this.pingerIfAny;
  }

  onPreface(minVersion: number, maxVersion: number): void {
    if (minVersion > PROTOCOL_VERSION || maxVersion < PROTOCOL_VERSION || minVersion > maxVersion) {
      throw PointSubError.fromPeer(
        "ERR_VERSION",
        `peer speaks protocol versions ${minVersion}..${maxVersion}, this side speaks ${PROTOCOL_VERSION}`,
      );
    }
  }

  onFrame(type: number, flags: number, id: number, buf: Uint8Array, start: number, end: number, crc: number): void {
    if (this.closed) return;
    if (this.held !== undefined) {
      this.hold(type, flags, id, buf.slice(start, end), crc);
      return;
    }
    this.framesIn++;
    const hs = this.handshake;
    if (hs !== undefined) {
      if (!hs.helloReceived) {
        hs.onFirstFrame(type, buf.subarray(start, end));
        return;
      }
      if (hs.authenticating && type !== T_PING && type !== T_GOAWAY) {
        hs.onAuthFrame(type, flags, buf.subarray(start, end));
        return;
      }
    }
    switch (type) {
      case T_MSG:
      case T_REQ:
      case T_RES:
        // A chunked message's frames need `assembly.ts` (with the stream engine): held while it loads.
        if ((flags & WHOLE) === WHOLE || this.inbound.chunked !== undefined || this.hooks.assemblies())
          this.inbound.onFrame(type, flags, id, buf, start, end);
        else this.holdFrom(type, flags, id, buf, start, end, crc);
        return;
      case T_STREAM: {
        const ins = this.inStreamsIfAny ?? this.hooks.inStreams();
        if (ins !== undefined) ins.onFrame(flags, id, buf, start, end, crc);
        else this.holdFrom(type, flags, id, buf, start, end, crc);
        return;
      }
      case T_CANCEL:
        this.inbound.onCancel(id, decodeCancel(buf.subarray(start, end)));
        return;
      case T_CREDIT:
        this.onCredit(id, decodeCredit(buf.subarray(start, end), SCRATCH));
        return;
      case T_PING:
        this.pinger.onPing(flags, buf.subarray(start, end));
        return;
      case T_GOAWAY: {
        const g = decodeGoAway(buf.subarray(start, end));
        this.hooks.onGoAway(g.errno, g.reason);
        return;
      }
      default:
        throw protocolError(`${FRAME_TYPE_NAMES[type]} frame after the handshake`);
    }
  }

  /** The stream engine is loading: this frame and every later one wait for it, in order. */
  private holdFrom(
    type: number,
    flags: number,
    id: number,
    buf: Uint8Array,
    start: number,
    end: number,
    crc: number,
  ): void {
    this.framesIn--;
    this.held = [];
    this.hold(type, flags, id, buf.slice(start, end), crc);
  }

  private hold(type: number, flags: number, id: number, payload: Uint8Array, crc: number): void {
    this.heldBytes += payload.length + HELD_FRAME_COST;
    // At most the receive window (which a conforming peer's data cannot exceed) and room for heads and control
    // frames; more is ERR_FLOW_CONTROL.
    const limit = this.inbound.link.local.connectionWindow + HOLD_SLACK;
    if (this.heldBytes > limit) {
      throw PointSubError.fromPeer("ERR_FLOW_CONTROL", `peer sent over ${limit} bytes beyond its window`);
    }
    (this.held as HeldFrame[]).push({ type, flags, id, payload, crc });
  }

  /** The stream engine is loaded: the held frames go to their parts, in arrival order. */
  release(): void {
    const held = this.held;
    if (held === undefined) return;
    this.held = undefined;
    this.heldBytes = 0;
    for (const f of held) this.onFrame(f.type, f.flags, f.id, f.payload, 0, f.payload.length, f.crc);
  }

  private onCredit(id: number, n: number): void {
    const w = this.writer;
    if (id === 0) {
      if (w.connCredit + n > MAX_WINDOW) throw PointSubError.fromPeer("ERR_FLOW_CONTROL", "connection credit overflow");
      w.addConnCredit(n);
    } else {
      // Only for an id this side sends on (its calls, messages and streams; its answers to the peer's
      // calls): a CREDIT for any other (a flood of made-up ids) scanned every queued message.
      const ib = this.inbound;
      if (ib.link.isMine(id) ? ib.outbox.uses(id) : ib.dispatcher.serving.get(id) !== undefined) {
        w.addStreamCredit(id, n);
      }
      this.outStreamsIfAny?.onAck(id, n);
    }
  }
}
