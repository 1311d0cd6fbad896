/**
 * The WebSocket transport of browsers (and of any runtime with a WHATWG
 * `WebSocket` global: Deno, Bun, workers, Node ≥ 22): `ws://` and `wss://`,
 * connect only. The byte stream travels in binary messages as
 * docs/PROTOCOL.md §1.2 maps it. Portable: no `node:` imports, only the
 * global `WebSocket`.
 *
 * A browser cannot stop reading a WebSocket, so `pause` holds what arrives
 * (bounded: `maxPausedBytes`) and `resume` hands it on; it cannot be told
 * when its send buffer drained either, so drain is found by polling
 * `bufferedAmount`.
 */
import { PointSubError } from "../errors/error.ts";
import { checkSignal } from "../errors/signal.ts";
import type { Transport, TransportAdapter, TransportAddress, TransportConnectOptions } from "../transport/transport.ts";
import {
  sendAsMessages,
  WS_MAX_MESSAGE,
  WS_SUBPROTOCOL,
  WsReceiver,
  wsCloseError,
  wsUrl,
} from "../transport/ws-mapping.ts";
import { nextTurn } from "../util/next-turn.ts";

/** The WebSocket subprotocol both sides name in the handshake (docs/PROTOCOL.md §1.2). */
export const WEB_SUBPROTOCOL = WS_SUBPROTOCOL;
const DEFAULT_HIGH_WATER = 1024 * 1024;
const DEFAULT_MAX_PAUSED = 64 * 1024 * 1024;
const DEFAULT_DRAIN_POLL_MS = 4;
/** Looks in a row at a buffer that did not go down after which a hidden page's looks are no longer 0 ms timers (~0.1 s of them). */
const STILL_LOOKS = 500;

/** Options of {@link webSocketTransport}. */
export interface WebSocketTransportOptions {
  /** `bufferedAmount` above which `write` asks the connection to wait. Default 1 MiB. */
  highWaterMark?: number;
  /**
   * Bytes held while the connection paused reading (the browser keeps
   * receiving), each message counted 256 bytes more than its payload (what
   * holding it costs); beyond, the connection fails with ERR_FLOW_CONTROL. Default
   * 64 MiB, four times the default connection window a well-behaved peer
   * stays within.
   */
  maxPausedBytes?: number;
  /**
   * How often `bufferedAmount` is checked while waiting for drain. Default 4 ms. In a hidden page
   * (whose timers of 1 ms and more a browser wakes once a second) it is checked at once (0 ms timers)
   * while it goes down, and at this interval once 500 checks in a row found it no lower.
   */
  drainPollMs?: number;
  /** The WebSocket constructor. Default: the global `WebSocket`. */
  WebSocket?: typeof WebSocket;
}

interface Limits {
  readonly highWater: number;
  readonly maxPaused: number;
  readonly pollMs: number;
}

/** One open WebSocket as a pointsub transport. */
class WebSocketTransport extends WsReceiver implements Transport {
  declare readonly localUrl: string;
  declare readonly remoteUrl: string;
  declare private readonly ws: WebSocket;
  declare private readonly limits: Limits;
  /** While `bufferedAmount` is watched for drain (pollDrain): the looks since one found it lower; else -1. */
  private still = -1;
  /** `bufferedAmount` at the last look. */
  private buffered = 0;

  constructor(ws: WebSocket, remoteUrl: string, limits: Limits) {
    super(limits.maxPaused);
    this.ws = ws;
    this.localUrl = `${remoteUrl.startsWith("wss:") ? "wss" : "ws"}://local`;
    this.remoteUrl = remoteUrl;
    this.limits = limits;
    ws.binaryType = "arraybuffer";
    ws.onmessage = this.onMessage;
    // (connect cleared onopen and onerror; no message is handed to a page before its open event.)
    ws.onclose = this.onWsClose;
  }

  write(chunks: readonly Uint8Array[]): boolean {
    const ws = this.ws;
    // (Closed implies readyState 2 or 3: destroy closes the WebSocket first.)
    if (ws.readyState !== 1) return false;
    if (sendAsMessages(chunks, this.send) === 0 || ws.bufferedAmount < this.limits.highWater) return true;
    if (this.still < 0) {
      this.still = 0;
      // From a posted message too: a write may run in a timer (a drain found by pollDrain), and a look set
      // from there would be the next of a chain.
      nextTurn(this.repoll);
    }
    return false;
  }

  end(): void {
    if (this.closed || this.ws.readyState >= 2) return;
    // What send() queued goes out before the close frame.
    this.ws.close(1000);
  }

  destroy(error?: Error): void {
    if (error !== undefined) this.error ??= error;
    // Browsers may send only 1000 or 3000–4999: the reason says what went wrong.
    if (this.ws.readyState < 2) this.ws.close(1000, this.error?.message.slice(0, 100) ?? "");
    // A browser cannot drop its queue or the TCP connection: report the close now.
    this.dropHeld();
    this.closed = true;
    this.reportClose();
  }

  /** A browser cannot stop reading a WebSocket: what arrives is held, up to maxPausedBytes. */
  protected stopReading(): void {}
  protected startReading(): void {}

  protected reported(): void {
    this.ws.onmessage = null;
  }

  protected fail(err: PointSubError): void {
    this.destroy(err);
  }

  private readonly send = (message: Uint8Array<ArrayBuffer>): void => {
    try {
      this.ws.send(message);
    } catch {
      // A view of a resizable or shared buffer (a TypeError): a copy goes. It threw from the writer before,
      // uncaught, and the connection sent nothing more.
      this.ws.send(message.slice());
    }
  };

  private readonly repoll = (): void => {
    // In a hidden page the next look is a 0 ms timer while the buffer drains: chromium wakes a hidden
    // page's timers of 1 ms and more once a second however they were set (a 4 ms one from a posted message
    // too: ~1 MB a second), but not a 0 ms one set outside a timer (here from a posted message). A buffer
    // that did not go down in STILL_LOOKS looks (a peer that stopped reading) is looked at every pollMs, not
    // busily (a second apart in a hidden page). (No document: a worker, or not a browser.)
    setTimeout(
      this.pollDrain,
      this.still < STILL_LOOKS && (globalThis as { document?: Document }).document?.hidden ? 0 : this.limits.pollMs,
    );
  };

  private readonly pollDrain = (): void => {
    if (this.closed) return;
    const b = this.ws.bufferedAmount;
    if (b >= this.limits.highWater) {
      this.still = b < this.buffered ? 0 : this.still + 1;
      this.buffered = b;
      // The next look's timer is set from a posted message, not from this timer: a background tab wakes
      // timers chained five deep and more once a second, which held a large upload to ~1 MiB a second
      // (and clamps a 0 ms one nested five deep to 4 ms).
      nextTurn(this.repoll);
      return;
    }
    this.still = -1;
    this.handlers?.onDrain();
  };

  private readonly onMessage = (ev: MessageEvent): void => {
    if (this.closed || this.error !== undefined) return;
    const data: unknown = ev.data;
    if (!(data instanceof ArrayBuffer)) {
      this.fail(new PointSubError("ERR_PROTOCOL", "pointsub takes binary WebSocket messages, not a text message"));
      return;
    }
    if (data.byteLength > WS_MAX_MESSAGE) {
      this.fail(
        new PointSubError("ERR_PROTOCOL", `WebSocket message of ${data.byteLength} bytes, over ${WS_MAX_MESSAGE}`),
      );
      return;
    }
    if (data.byteLength !== 0) this.received(new Uint8Array(data));
  };

  private readonly onWsClose = (ev: CloseEvent): void => {
    this.error ??= wsCloseError(ev.code, ev.reason);
    this.socketClosed();
  };
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a positive integer, got ${value}`);
  }
  return value;
}

/**
 * The `ws://`/`wss://` adapter on the global `WebSocket` (connect only: a
 * browser cannot listen). TLS is the browser's: `wss://` URLs are verified
 * against its trust store.
 */
export function webSocketTransport(options: WebSocketTransportOptions = {}): TransportAdapter {
  const limits: Limits = {
    highWater: positive("highWaterMark", options.highWaterMark, DEFAULT_HIGH_WATER),
    maxPaused: positive("maxPausedBytes", options.maxPausedBytes, DEFAULT_MAX_PAUSED),
    pollMs: positive("drainPollMs", options.drainPollMs, DEFAULT_DRAIN_POLL_MS),
  };
  return {
    schemes: ["ws", "wss"],
    connect(address: TransportAddress, o: TransportConnectOptions): Promise<Transport> {
      const url = wsUrl(address);
      const Ctor = options.WebSocket ?? globalThis.WebSocket;
      if (typeof Ctor !== "function") {
        return Promise.reject(new PointSubError("ERR_UNSUPPORTED_URL", "this runtime has no global WebSocket"));
      }
      return new Promise((resolve, reject) => {
        const signal = o.signal;
        const aborted = () =>
          new PointSubError("ERR_CANCELLED", `connect to ${url.href} aborted`, { cause: signal?.reason });
        // Before the socket opens: an AbortController given for its signal threw an untyped TypeError, the socket left open.
        // (What the executor throws rejects the promise.)
        checkSignal(o);
        if (signal?.aborted) throw aborted();
        let ws: WebSocket;
        try {
          ws = new Ctor(url.href, [WEB_SUBPROTOCOL]);
        } catch (cause) {
          throw new PointSubError("ERR_CONNECT", `cannot connect to ${url.href}: ${(cause as Error).message}`, {
            cause,
          });
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const settle = (err: PointSubError | undefined) => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          ws.onopen = ws.onerror = ws.onclose = null;
          if (err) {
            ws.close();
            reject(err);
          } else resolve(new WebSocketTransport(ws, url.href, limits));
        };
        const onAbort = () => settle(aborted());
        signal?.addEventListener("abort", onAbort, { once: true });
        // (Undefined or 0: none.) A timer given more than 2^31 - 1 ms fires at once: 2e9 ms at most.
        const ms = o.connectTimeoutMs as number;
        if (ms > 0) {
          timer = setTimeout(
            () => settle(new PointSubError("ERR_TIMEOUT", `connect to ${url.href} timed out after ${ms} ms`)),
            Math.min(ms, 2e9),
          );
        }
        ws.onopen = () =>
          settle(
            ws.protocol === WEB_SUBPROTOCOL
              ? undefined
              : new PointSubError("ERR_CONNECT", `${url.href} did not accept the ${WEB_SUBPROTOCOL} subprotocol`),
          );
        // Browsers say nothing about why (the console does): refused, 404, TLS, no subprotocol…
        ws.onerror = ws.onclose = () => settle(new PointSubError("ERR_CONNECT", `cannot connect to ${url.href}`));
      });
    },
    listen(address: TransportAddress): Promise<never> {
      return Promise.reject(
        new PointSubError("ERR_UNSUPPORTED_URL", `cannot listen on ${String(address)} here: WebSocket clients only`),
      );
    },
  };
}
