/**
 * Everything periodic on one connection, on one interval: keepalive pings
 * (a peer silent for two intervals after a ping is dead), releasing idle
 * buffers, closing a connection whose peer stopped taking what it is sent
 * (slowPeerTimeoutMs), and cancelling messages and streams that stalled
 * (progressTimeoutMs). Its period is half the shortest of those times.
 */
import { PointSubError } from "../errors/error.ts";
import type { Transport } from "../transport/transport.ts";
import type { FrameRouter } from "./frames.ts";
import type { Pinger } from "./pinger.ts";
import type { ReadGate } from "./read-gate.ts";
import type { FrameWriter } from "./writer.ts";

/** What housekeeping needs from its connection besides the parts it is given. */
export interface HousekeepingHost {
  isClosed(): boolean;
  readonly remoteUrl: string;
  /** Closes with a fatal error. */
  fail(err: PointSubError): void;
}

export interface HousekeepingTimes {
  keepAliveMs: number;
  slowPeerTimeoutMs: number;
  progressTimeoutMs: number;
}

const noop = () => {};

export class Housekeeper {
  /** When input last arrived. */
  lastInput = Date.now();
  /** When output was last handed to the transport. */
  lastOutput = Date.now();
  /** Progress is measured from no earlier than this (reading was paused before it). */
  progressFloor = 0;
  private pingAt = 0;
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly keepAliveMs: number;
  private readonly slowPeerTimeoutMs: number;
  private readonly progressTimeoutMs: number;
  private readonly writer: FrameWriter;
  private readonly transport: Transport;
  private readonly gate: ReadGate;
  private readonly frames: FrameRouter;
  private readonly pinger: Pinger;
  private readonly host: HousekeepingHost;

  constructor(
    times: HousekeepingTimes,
    writer: FrameWriter,
    transport: Transport,
    gate: ReadGate,
    frames: FrameRouter,
    pinger: Pinger,
    host: HousekeepingHost,
  ) {
    this.frames = frames;
    this.pinger = pinger;
    this.keepAliveMs = times.keepAliveMs;
    this.slowPeerTimeoutMs = times.slowPeerTimeoutMs;
    this.progressTimeoutMs = times.progressTimeoutMs;
    this.writer = writer;
    this.transport = transport;
    this.gate = gate;
    this.host = host;
  }

  /** Starts the interval (once the connection is open). */
  start(): void {
    const ms = this.keepAliveMs;
    const slow = this.slowPeerTimeoutMs;
    const progress = this.progressTimeoutMs;
    let period = Number.POSITIVE_INFINITY;
    if (ms > 0) period = ms >>> 1;
    if (slow > 0) period = Math.min(period, slow >>> 2);
    if (progress > 0) period = Math.min(period, progress >>> 2);
    if (period === Number.POSITIVE_INFINITY) return;
    this.timer = setInterval(() => this.tick(), Math.max(10, period));
    (this.timer as { unref?: () => void }).unref?.();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Reading resumed after the peer drained: nothing could arrive meanwhile, so progress counts from now. */
  readingResumed(): void {
    this.lastInput = Date.now();
    this.progressFloor = this.lastInput;
  }

  private tick(): void {
    const now = Date.now();
    const ms = this.keepAliveMs;
    const slow = this.slowPeerTimeoutMs;
    const pt = this.progressTimeoutMs;
    const host = this.host;
    const blocked = this.writer.blockedSince;
    if (slow > 0 && blocked !== 0 && now - blocked >= slow) {
      host.fail(
        new PointSubError(
          "ERR_SLOW_PEER",
          `${host.remoteUrl} took nothing this side sent for ${now - blocked} ms (slowPeerTimeoutMs ${slow})`,
        ),
      );
      return;
    }
    if (pt > 0 && !this.gate.paused) {
      // The peer's unfinished messages and streams, and this side's streams waiting for credit.
      const f = this.frames;
      const floor = this.progressFloor;
      f.inbound.checkProgress(now, pt, floor);
      f.inStreamsIfAny?.checkProgress(now, pt, floor);
      f.outStreamsIfAny?.checkProgress(now, pt, floor);
      if (host.isClosed()) return;
    }
    // While reading is paused nothing can arrive: the slow-peer timeout rules.
    if (ms <= 0 || this.gate.paused) return;
    const idle = now - this.lastInput;
    if (now - this.lastOutput >= ms) this.writer.trim();
    // No input for a tick: let the transport drop its bulk read buffer.
    if (idle >= ms >>> 1) this.transport.trim?.();
    if (this.pingAt !== 0 && idle >= ms * 2) {
      host.fail(new PointSubError("ERR_KEEPALIVE", `no bytes from ${host.remoteUrl} for ${idle} ms`));
      return;
    }
    if (idle >= ms) {
      this.pingAt = now;
      this.pinger.ping(0).then(() => {
        this.pingAt = 0;
      }, noop);
    }
  }
}
