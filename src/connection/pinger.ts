/**
 * PING (docs/PROTOCOL.md §3.7): this side's round-trip measurements, and
 * answers to the peer's PINGs, coalesced to the latest one while the
 * transport cannot take more (a peer that floods PINGs and reads nothing
 * costs one answer, not one per PING). Sending this side's PINGs
 * (`ping.ts`) comes with housekeeping: not in a browser page's first load.
 */
import { decodePing, encodePing } from "../codec/control.ts";
import { F_ACK, T_PING } from "../codec/frame.ts";
import type { PointSubError } from "../errors/error.ts";
import type { FrameWriter } from "./writer.ts";

/** @internal A ping in flight (`ping.ts`). */
export interface PendingPing {
  start: number;
  d: PromiseWithResolvers<number>;
  /** The pacer's probes sent before it (`Pacer.probesSent`): the answer to a later one answers it too. */
  probe: number;
}
/** Shared empty stand-in until the first ping (an idle connection should cost little memory). */
const NO_PINGS: Map<number, PendingPing> = new Map();

export class Pinger {
  /** Smoothed round-trip time in ms (EWMA, weight 1/8 per sample, as TCP's SRTT); undefined before the first pong. */
  rtt: number | undefined;
  /** @internal The last ping's sequence number (`ping.ts`). */
  seq = 0;
  /** @internal Pings in flight (`ping.ts`). */
  pings: Map<number, PendingPing> = NO_PINGS;
  /** The latest PING payload received while the transport could not take its answer (answered on drain). */
  private pendingPong: Uint8Array | undefined;
  /** @internal */
  declare readonly writer: FrameWriter;

  constructor(writer: FrameWriter) {
    this.writer = writer;
  }

  /** @internal Writes this side's PING `seq` (`ping.ts`). */
  send(seq: number): void {
    this.writer.control(T_PING, 0, 0, encodePing(seq));
  }

  /** A PING or PING ACK from the peer. */
  onPing(flags: number, payload: Uint8Array): void {
    const seq = decodePing(payload);
    if ((flags & F_ACK) === 0) {
      if (this.writer.writable) this.writer.control(T_PING, F_ACK, 0, payload.slice());
      else this.pendingPong = payload.slice();
      return;
    }
    // Negative: the answer to a pacing probe (pacer.ts), if one is outstanding.
    if (seq < 0 ? this.writer.pacer?.onAck(seq) !== true : !this.pings.has(seq)) return;
    const now = performance.now();
    // The PINGs sent before it were read too (in order): a peer may answer only the latest (§3.7, as this
    // side does while it cannot write), so they are answered too (they failed with ERR_TIMEOUT), though
    // not RTT samples. The latest may be a probe: it answers the pings sent before it.
    for (const [s, p] of this.pings) {
      if (seq < 0 ? p.probe >= -seq : s > seq) break;
      this.done(s);
      const sample = now - p.start;
      if (s === seq) this.rtt = this.rtt === undefined ? sample : this.rtt + (sample - this.rtt) / 8;
      p.d.resolve(sample);
    }
  }

  /** Ping `seq` is answered or given up: whether it was in flight. No ping in flight: back to the shared empty map (keepalive pings leave no map behind on an idle connection). */
  done(seq: number): boolean {
    const had = this.pings.delete(seq);
    if (this.pings.size === 0) this.pings = NO_PINGS;
    return had;
  }

  /** The transport drained: answer the PING held back, if any. */
  onDrain(): void {
    const pong = this.pendingPong;
    if (pong !== undefined && this.writer.writable) {
      this.pendingPong = undefined;
      this.writer.control(T_PING, F_ACK, 0, pong);
    }
  }

  /** The connection closed: every ping in flight fails with `failure`. */
  teardown(failure: PointSubError): void {
    for (const p of this.pings.values()) p.d.reject(failure);
    this.pings.clear();
  }
}
