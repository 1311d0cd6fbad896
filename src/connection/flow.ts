/**
 * Receive-side flow control (docs/PROTOCOL.md §3.6): the connection window
 * every data frame counts against, returned as CREDIT in quarter-window
 * steps (kept by the inbound side, `inbound.ts`: no object of its own per
 * connection). Per-message and per-stream windows use the same rule
 * (`creditDue` in `link.ts`).
 */
export interface ReceiveWindow {
  /** Counts `len` received data bytes; throws ERR_FLOW_CONTROL when the peer overran the window. */
  take(len: number): void;
}
