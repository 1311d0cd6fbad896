/**
 * pointsub's byte stream over WebSocket (docs/PROTOCOL.md §1.2), the part
 * both WebSocket transports share — Node's on the `ws` package
 * (`node/ws-adapter.ts`) and the browser's on the global `WebSocket`
 * (`web/websocket.ts`): the subprotocol and message bound, how a write
 * becomes messages, what a peer's close code means, and the receive side
 * (messages held while paused or before the connection attached, the close
 * reported once they were delivered). Portable.
 */
import { PointSubError } from "../errors/error.ts";
import type { TransportAddress, TransportHandlers } from "./transport.ts";

/** The WebSocket subprotocol both sides name in the handshake. */
export const WS_SUBPROTOCOL = "pointsub.v1";
/**
 * Largest WebSocket message either side sends or accepts (1 MiB). Frames
 * are split across messages freely, so this bounds what a connection
 * buffers, not the size of pointsub frames or messages.
 */
export const WS_MAX_MESSAGE = 1024 * 1024;
/**
 * Chunks of one write are sent as one message up to this size (copied
 * together), and larger chunks are cut at it: a receiver that sees only
 * whole messages (a browser, `ws`) hears from its peer at least every
 * 16 KiB, the bytes that always count as hearing from a peer
 * (docs/PROTOCOL.md §3.7), so a large message arriving on a slow link is
 * not taken for silence by its keepalive (a 1 MiB message was, at 20 KB/s
 * with `keepAliveMs` 1000). A Node client cuts its own at 16 KiB too
 * (`ws-client-frames.ts`).
 */
const COALESCE_BYTES = 16 * 1024;
/**
 * What a message held while paused is charged on top of its payload (what
 * holding it costs: its ArrayBuffer and view, ~250 bytes in V8): before,
 * only payloads counted, and a peer sending 1-byte messages to a paused
 * browser connection had ~600 MB held under a 1 MiB `maxPausedBytes`.
 */
const HELD_COST = 256;

/** `address` as a ws:// or wss:// URL, or ERR_UNSUPPORTED_URL. */
export function wsUrl(address: TransportAddress): URL {
  if (!(address instanceof URL) || (address.protocol !== "ws:" && address.protocol !== "wss:")) {
    throw new PointSubError(
      "ERR_UNSUPPORTED_URL",
      `the WebSocket transport takes ws:// or wss:// URLs, not ${address}`,
    );
  }
  return address;
}

/**
 * A `Uint8Array` over a plain `ArrayBuffer`, what a WebSocket's `send` takes: TypeScript 5.7's
 * `Uint8Array<ArrayBuffer>`, named through `slice` (which returns one) so the published declarations
 * compile under TypeScript 5 before 5.7 too, which has no generic typed arrays (a `Uint8Array` there).
 */
export type OwnBytes = ReturnType<Uint8Array["slice"]>;

const newBytes = (n: number): OwnBytes => new Uint8Array(n);

/**
 * Hands one write to `send` as WebSocket messages: chunks of a write of at
 * most 16 KiB ({@link COALESCE_BYTES}) in one message (copied together),
 * larger writes chunk by chunk, each cut at 16 KiB. `last` marks the final message
 * of the write; `alloc` makes the buffer of a coalesced message (it is
 * overwritten whole: Node's may skip zero-filling). Returns the bytes written.
 */
export function sendAsMessages(
  chunks: readonly Uint8Array[],
  send: (message: OwnBytes, last: boolean) => void,
  alloc: (n: number) => OwnBytes = newBytes,
): number {
  let total = 0;
  for (let i = 0; i < chunks.length; i++) total += chunks[i].length;
  if (total === 0) return 0;
  if (chunks.length > 1 && total <= COALESCE_BYTES) {
    const copy = alloc(total);
    let off = 0;
    for (let i = 0; i < chunks.length; i++) {
      copy.set(chunks[i], off);
      off += chunks[i].length;
    }
    send(copy, true);
    return total;
  }
  let last = chunks.length - 1;
  while (last > 0 && chunks[last].length === 0) last--;
  for (let i = 0; i <= last; i++) {
    const c = chunks[i] as OwnBytes;
    for (let off = 0; off < c.length; off += COALESCE_BYTES) {
      const end = Math.min(off + COALESCE_BYTES, c.length);
      send(off === 0 && end === c.length ? c : c.subarray(off, end), i === last && end === c.length);
    }
  }
  return total;
}

/**
 * What a close the peer started with `code` means: undefined for a normal
 * one (1000, 1001 going away, 1005 none, 1006 dropped); ERR_PROTOCOL when
 * the peer refused what it got (1002, 1003 unsupported data, 1007, 1009 too
 * big); ERR_CONNECTION_CLOSED otherwise.
 */
export function wsCloseError(code: number, reason: string): PointSubError | undefined {
  if (code === 1000 || code === 1001 || code === 1005 || code === 1006) return undefined;
  const refused = code === 1002 || code === 1003 || code === 1007 || code === 1009;
  return new PointSubError(
    refused ? "ERR_PROTOCOL" : "ERR_CONNECTION_CLOSED",
    `the peer closed the WebSocket with ${code} ${reason}`.trim(),
  );
}

/**
 * The receive side of a WebSocket transport: messages go to the connection
 * in order, are held while it paused reading (or before it attached), and
 * the close is reported once what was held was delivered. A subclass feeds
 * it ({@link received}, {@link socketClosed}) and says how its socket stops
 * and restarts reading.
 */
export abstract class WsReceiver {
  protected handlers: TransportHandlers | undefined;
  /** Messages held while paused or before attach, delivered in order. */
  protected inbox: Uint8Array[] = [];
  protected inboxBytes = 0;
  protected paused = false;
  /** The socket closed (or is closing for good). */
  protected closed = false;
  /** Why it closed, when not normally. */
  protected error: Error | undefined;
  private flushScheduled = false;
  /** The close arrived while the inbox still held data: reported once delivered. */
  private closeQueued = false;
  private closeReported = false;
  /** Most bytes held (each message's {@link HELD_COST} included); more is ERR_FLOW_CONTROL (Infinity: the socket stops reading instead). */
  declare protected readonly maxHeld: number;

  constructor(maxHeld: number) {
    this.maxHeld = maxHeld;
  }

  /** Stop reading from the socket (when it can). */
  protected abstract stopReading(): void;
  /** Read from the socket again: the connection took everything held. */
  protected abstract startReading(): void;
  /** The close was reported (release what the socket holds on to). */
  protected abstract reported(): void;
  /** The peer broke the mapping or a bound: close the socket with `err`. */
  protected abstract fail(err: PointSubError): void;

  attach(h: TransportHandlers): void {
    if (this.handlers !== undefined) throw new PointSubError("ERR_INVALID_ARGUMENT", "transport attached twice");
    this.handlers = h;
    this.scheduleFlush();
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.stopReading();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.scheduleFlush();
  }

  /** A binary message arrived. */
  protected received(chunk: Uint8Array): void {
    const h = this.handlers;
    if (h !== undefined && !this.paused && this.inbox.length === 0) {
      h.onData(chunk);
      return;
    }
    this.inbox.push(chunk);
    this.inboxBytes += chunk.length + HELD_COST;
    if (this.inboxBytes > this.maxHeld) {
      this.fail(
        new PointSubError("ERR_FLOW_CONTROL", `the peer sent over ${this.maxHeld} bytes while reading was paused`),
      );
    }
  }

  /** The socket closed: reported now, or once the connection took what is held. */
  protected socketClosed(): void {
    this.closed = true;
    if (this.inbox.length !== 0 || this.handlers === undefined) {
      this.closeQueued = true;
      this.scheduleFlush();
      // Nothing written will drain: a connection paused until its writes drain (a slow peer) reads
      // on, takes what is held, and hears of the close (it waited for ever). Its writes stay refused:
      // a drain here had its waiting sends resolve as if written, though the socket was gone.
      this.handlers?.onGone?.();
      return;
    }
    this.reportClose();
  }

  /** Drops what is held (the transport is being destroyed). */
  protected dropHeld(): void {
    this.inbox = [];
    this.inboxBytes = 0;
  }

  protected reportClose(): void {
    if (this.closeReported) return;
    const h = this.handlers;
    if (h === undefined) {
      this.closeQueued = true;
      return;
    }
    this.closeReported = true;
    this.dropHeld();
    this.reported();
    h.onClose(this.error);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => this.flush());
  }

  /** Delivers what is held, then reports a queued close or lets the socket read again. */
  private flush(): void {
    this.flushScheduled = false;
    const h = this.handlers;
    if (h === undefined || this.paused) return;
    while (this.inbox.length !== 0 && !this.paused && !this.closeReported) {
      const chunk = this.inbox.shift() as Uint8Array;
      this.inboxBytes -= chunk.length + HELD_COST;
      h.onData(chunk);
    }
    if (this.paused || this.inbox.length !== 0) return;
    if (this.closeQueued) this.reportClose();
    else if (!this.closed) this.startReading();
  }
}
