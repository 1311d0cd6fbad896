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
import type {
  Transport,
  TransportAdapter,
  TransportAddress,
  TransportConnectOptions,
  TransportHandlers,
} from "../transport/transport.ts";

/** The WebSocket subprotocol both sides name in the handshake (docs/PROTOCOL.md §1.2). */
export const WEB_SUBPROTOCOL = "pointsub.v1";
/** Largest message either side sends or accepts (docs/PROTOCOL.md §1.2). */
const MAX_MESSAGE = 1024 * 1024;
/** Small chunks of one write are sent as one message up to this size. */
const COALESCE_BYTES = 64 * 1024;
const DEFAULT_HIGH_WATER = 1024 * 1024;
const DEFAULT_MAX_PAUSED = 64 * 1024 * 1024;
const DEFAULT_DRAIN_POLL_MS = 4;

/** Options of {@link webSocketTransport}. */
export interface WebSocketTransportOptions {
  /** `bufferedAmount` above which `write` asks the connection to wait. Default 1 MiB. */
  highWaterMark?: number;
  /**
   * Bytes held while the connection paused reading (the browser keeps
   * receiving); beyond, the connection fails with ERR_FLOW_CONTROL. Default
   * 64 MiB, four times the default connection window a well-behaved peer
   * stays within.
   */
  maxPausedBytes?: number;
  /** How often `bufferedAmount` is checked while waiting for drain. Default 4 ms. */
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
class WebSocketTransport implements Transport {
  readonly localUrl: string;
  readonly remoteUrl: string;
  private readonly ws: WebSocket;
  private readonly limits: Limits;
  private handlers: TransportHandlers | undefined;
  private inbox: Uint8Array[] = [];
  private inboxBytes = 0;
  private paused = false;
  private flushScheduled = false;
  private closed = false;
  private closeQueued = false;
  private closeReported = false;
  private error: Error | undefined;
  private drainTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(ws: WebSocket, remoteUrl: string, limits: Limits) {
    this.ws = ws;
    this.localUrl = `${remoteUrl.startsWith("wss:") ? "wss" : "ws"}://local`;
    this.remoteUrl = remoteUrl;
    this.limits = limits;
    ws.binaryType = "arraybuffer";
    ws.onmessage = this.onMessage;
    ws.onclose = this.onWsClose;
    ws.onerror = null;
  }

  attach(h: TransportHandlers): void {
    if (this.handlers !== undefined) throw new PointSubError("ERR_INVALID_ARGUMENT", "transport attached twice");
    this.handlers = h;
    this.scheduleFlush();
  }

  write(chunks: readonly Uint8Array[]): boolean {
    const ws = this.ws;
    if (this.closed || ws.readyState !== 1) return false;
    let total = 0;
    for (let i = 0; i < chunks.length; i++) total += chunks[i].length;
    if (total === 0) return true;
    if (chunks.length > 1 && total <= COALESCE_BYTES) {
      const copy = new Uint8Array(total);
      let off = 0;
      for (let i = 0; i < chunks.length; i++) {
        copy.set(chunks[i], off);
        off += chunks[i].length;
      }
      ws.send(copy);
    } else {
      for (let i = 0; i < chunks.length; i++) {
        const c = chunks[i];
        for (let off = 0; off < c.length; off += MAX_MESSAGE) {
          ws.send(c.subarray(off, Math.min(off + MAX_MESSAGE, c.length)) as Uint8Array<ArrayBuffer>);
        }
      }
    }
    if (ws.bufferedAmount < this.limits.highWater) return true;
    if (this.drainTimer === undefined) this.drainTimer = setTimeout(this.pollDrain, this.limits.pollMs);
    return false;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.scheduleFlush();
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
    this.inbox = [];
    this.inboxBytes = 0;
    this.closed = true;
    this.reportClose();
  }

  private readonly pollDrain = (): void => {
    this.drainTimer = undefined;
    if (this.closed) return;
    if (this.ws.bufferedAmount >= this.limits.highWater) {
      this.drainTimer = setTimeout(this.pollDrain, this.limits.pollMs);
      return;
    }
    this.handlers?.onDrain();
  };

  private readonly onMessage = (ev: MessageEvent): void => {
    if (this.closed || this.error !== undefined) return;
    const data: unknown = ev.data;
    if (!(data instanceof ArrayBuffer)) {
      this.fail("ERR_PROTOCOL", "pointsub takes binary WebSocket messages only, got a text message");
      return;
    }
    if (data.byteLength > MAX_MESSAGE) {
      this.fail("ERR_PROTOCOL", `WebSocket message of ${data.byteLength} bytes, over ${MAX_MESSAGE}`);
      return;
    }
    if (data.byteLength === 0) return;
    const chunk = new Uint8Array(data);
    const h = this.handlers;
    if (h !== undefined && !this.paused && this.inbox.length === 0) {
      h.onData(chunk);
      return;
    }
    this.inbox.push(chunk);
    this.inboxBytes += chunk.length;
    if (this.inboxBytes > this.limits.maxPaused) {
      this.fail("ERR_FLOW_CONTROL", `the peer sent over ${this.limits.maxPaused} bytes while reading was paused`);
    }
  };

  private fail(code: "ERR_PROTOCOL" | "ERR_FLOW_CONTROL", reason: string): void {
    this.destroy(new PointSubError(code, reason));
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(this.flush);
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    const h = this.handlers;
    if (h === undefined || this.paused) return;
    while (this.inbox.length !== 0 && !this.paused && !this.closeReported) {
      const chunk = this.inbox.shift() as Uint8Array;
      this.inboxBytes -= chunk.length;
      h.onData(chunk);
    }
    if (this.inbox.length === 0 && this.closeQueued) this.reportClose();
  };

  private readonly onWsClose = (ev: CloseEvent): void => {
    this.closed = true;
    if (this.drainTimer !== undefined) clearTimeout(this.drainTimer);
    const code = ev.code;
    if (this.error === undefined && code !== 1000 && code !== 1001 && code !== 1005 && code !== 1006) {
      const refused = code === 1002 || code === 1003 || code === 1007 || code === 1009;
      this.error = new PointSubError(
        refused ? "ERR_PROTOCOL" : "ERR_CONNECTION_CLOSED",
        `the peer closed the WebSocket with ${code} ${ev.reason}`.trim(),
      );
    }
    if (this.inbox.length !== 0 || this.handlers === undefined) {
      this.closeQueued = true;
      this.scheduleFlush();
      return;
    }
    this.reportClose();
  };

  private reportClose(): void {
    if (this.closeReported) return;
    const h = this.handlers;
    if (h === undefined) {
      this.closeQueued = true;
      return;
    }
    this.closeReported = true;
    this.closeQueued = false;
    if (this.drainTimer !== undefined) clearTimeout(this.drainTimer);
    this.ws.onmessage = null;
    h.onClose(this.error);
  }
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a positive integer, got ${value}`);
  }
  return value;
}

function wsUrl(address: TransportAddress): URL {
  if (!(address instanceof URL) || (address.protocol !== "ws:" && address.protocol !== "wss:")) {
    throw new PointSubError(
      "ERR_UNSUPPORTED_URL",
      `the WebSocket transport takes ws:// or wss:// URLs, not ${address}`,
    );
  }
  return address;
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
        if (signal?.aborted) {
          reject(new PointSubError("ERR_CANCELLED", `connect to ${url.href} aborted`, { cause: signal.reason }));
          return;
        }
        let ws: WebSocket;
        try {
          ws = new Ctor(url.href, [WEB_SUBPROTOCOL]);
        } catch (cause) {
          reject(
            new PointSubError("ERR_CONNECT", `cannot connect to ${url.href}: ${(cause as Error).message}`, { cause }),
          );
          return;
        }
        ws.binaryType = "arraybuffer";
        let timer: ReturnType<typeof setTimeout> | undefined;
        const settle = (err: PointSubError | undefined) => {
          if (timer !== undefined) clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          ws.onopen = ws.onerror = ws.onclose = null;
          if (err === undefined) {
            resolve(new WebSocketTransport(ws, url.href, limits));
            return;
          }
          ws.close();
          reject(err);
        };
        const onAbort = () =>
          settle(new PointSubError("ERR_CANCELLED", `connect to ${url.href} aborted`, { cause: signal?.reason }));
        signal?.addEventListener("abort", onAbort, { once: true });
        if (o.connectTimeoutMs !== undefined && o.connectTimeoutMs > 0) {
          const ms = o.connectTimeoutMs;
          timer = setTimeout(
            () => settle(new PointSubError("ERR_TIMEOUT", `connect to ${url.href} timed out after ${ms} ms`)),
            ms,
          );
        }
        ws.onopen = () =>
          settle(
            ws.protocol === WEB_SUBPROTOCOL
              ? undefined
              : new PointSubError("ERR_CONNECT", `${url.href} did not accept the ${WEB_SUBPROTOCOL} subprotocol`),
          );
        // Browsers say nothing about why (the console does): refused, 404, TLS, no subprotocol…
        const failed = () => settle(new PointSubError("ERR_CONNECT", `cannot connect to ${url.href}`));
        ws.onerror = failed;
        ws.onclose = failed;
      });
    },
    listen(address: TransportAddress): Promise<never> {
      return Promise.reject(
        new PointSubError("ERR_UNSUPPORTED_URL", `cannot listen on ${String(address)} here: WebSocket clients only`),
      );
    },
  };
}
