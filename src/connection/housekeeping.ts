/**
 * Everything periodic on one connection, on one interval: keepalive pings
 * (a peer silent for two intervals after a ping is dead), releasing idle
 * buffers, closing a connection whose peer stopped taking what it is sent
 * (slowPeerTimeoutMs), and cancelling messages and streams that stalled
 * (progressTimeoutMs). Its period is half the shortest of those times.
 */
import { PointSubError } from "../errors/error.ts";
import type { Transport } from "../transport/transport.ts";
import type { ReadGate } from "./read-gate.ts";
import type { FrameWriter } from "./writer.ts";

/** What housekeeping acts on. */
export interface HousekeepingHost {
  readonly closed: boolean;
  readonly remoteUrl: string;
  /** Cancels the peer's messages and streams with no frame for `timeoutMs` (counted from no earlier than `floor`). */
  checkProgress(now: number, timeoutMs: number, floor: number): void;
  /** Sends a PING (no timeout of its own). */
  ping(): Promise<number>;
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
  private readonly times: HousekeepingTimes;
  private readonly writer: FrameWriter;
  private readonly transport: Transport;
  private readonly gate: ReadGate;
  private readonly host: HousekeepingHost;

  constructor(
    times: HousekeepingTimes,
    writer: FrameWriter,
    transport: Transport,
    gate: ReadGate,
    host: HousekeepingHost,
  ) {
    this.times = times;
    this.writer = writer;
    this.transport = transport;
    this.gate = gate;
    this.host = host;
  }

  /** Starts the interval (once the connection is open). */
  start(): void {
    const { keepAliveMs: ms, slowPeerTimeoutMs: slow, progressTimeoutMs: progress } = this.times;
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
    const { keepAliveMs: ms, slowPeerTimeoutMs: slow, progressTimeoutMs: pt } = this.times;
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
    if (pt > 0 && !this.gate.slowPaused) {
      host.checkProgress(now, pt, this.progressFloor);
      if (host.closed) return;
    }
    // While reading is paused nothing can arrive: the slow-peer timeout rules.
    if (ms <= 0 || this.gate.slowPaused) return;
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
      host.ping().then(() => {
        this.pingAt = 0;
      }, noop);
    }
  }
}
