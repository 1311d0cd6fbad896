/**
 * Receive-side flow control (docs/PROTOCOL.md §3.6): the connection window
 * every data frame counts against, returned as CREDIT in quarter-window
 * steps. Per-message and per-stream windows use the same rule ({@link creditDue}).
 */
import { PointSubError } from "../errors/error.ts";
import { creditDue } from "./link.ts";
import type { Outbox } from "./outbox.ts";

export class ReceiveWindow {
  private used = 0;
  private unacked = 0;
  declare private readonly window: number;
  declare private readonly outbox: Outbox;

  constructor(window: number, outbox: Outbox) {
    this.window = window;
    this.outbox = outbox;
  }

  /** Counts `len` received data bytes; throws ERR_FLOW_CONTROL when the peer overran the window. */
  take(len: number): void {
    this.used += len;
    if (this.used > this.window)
      throw PointSubError.fromPeer("ERR_FLOW_CONTROL", "peer exceeded the connection window");
    this.unacked += len;
    if (creditDue(this.unacked, this.window)) {
      this.outbox.sendCredit(0, this.unacked);
      this.used -= this.unacked;
      this.unacked = 0;
    }
  }
}
