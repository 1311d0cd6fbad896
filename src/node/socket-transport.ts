import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { PeerCertificate, Transport, TransportHandlers } from "../transport/transport.ts";
import type { SocketReader } from "./socket-reader.ts";

/**
 * Bytes queued in the socket before the writer is asked to wait for 'drain'.
 * Enough to keep the kernel fed between event-loop turns, small enough that
 * a message queued behind it waits ~1 ms on loopback.
 */
const WRITE_HIGH_WATER = 1024 * 1024;

/** Wraps a connected node:net or node:tls socket as a {@link Transport}. */
export class SocketTransport implements Transport {
  readonly localUrl: string;
  readonly remoteUrl: string;
  private readonly socket: Socket;
  /** @internal The reusable-buffer reader, when this socket has one (tests look at it). */
  readonly reader: SocketReader | undefined;
  private error: Error | undefined;

  /**
   * @param reader - set when the socket reads into reusable buffers (Node's
   *   `onread`); its chunks then arrive through it instead of 'data'.
   */
  constructor(socket: Socket, localUrl: string, remoteUrl: string, reader?: SocketReader) {
    this.socket = socket;
    this.localUrl = localUrl;
    this.remoteUrl = remoteUrl;
    this.reader = reader;
    socket.setNoDelay?.(true);
  }

  attach(h: TransportHandlers): void {
    const s = this.socket;
    this.reader?.attach(h.onData, h.readTarget);
    // Without a reader (or if the runtime ignored it) bytes come as 'data'
    // events; listening also keeps the socket flowing, so 'end' is emitted.
    // Hand the core plain Uint8Array views (same memory), not Buffers.
    s.on("data", (chunk: Buffer) => h.onData(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length)));
    s.on("drain", h.onDrain);
    s.on("error", (err) => {
      this.error = err;
    });
    s.once("close", () => {
      this.reader?.release();
      h.onClose(this.error);
    });
    if (s.destroyed) queueMicrotask(() => h.onClose(this.error));
  }

  write(chunks: readonly Uint8Array[]): boolean {
    const s = this.socket;
    if (s.destroyed || s.writableEnded) return false;
    if (chunks.length === 1) s.write(chunks[0]);
    else {
      s.cork();
      for (let i = 0; i < chunks.length; i++) s.write(chunks[i]);
      s.uncork();
    }
    return s.writableLength < WRITE_HIGH_WATER;
  }

  trim(): void {
    this.reader?.trim();
  }

  peerCertificate(): PeerCertificate | undefined {
    return peerCertificateOf(this.socket);
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  end(): void {
    this.socket.end();
  }

  destroy(error?: Error): void {
    if (error !== undefined) this.error = error;
    this.socket.destroy();
  }
}

/** The certificate the peer of a TLS socket presented, if it asked for one (undefined on plain sockets). */
export function peerCertificateOf(socket: Socket): PeerCertificate | undefined {
  const s = socket as Partial<TLSSocket>;
  if (typeof s.getPeerCertificate !== "function") return undefined;
  const c = s.getPeerCertificate();
  if (c === null || typeof c !== "object" || c.raw === undefined) return undefined;
  const subject: Record<string, string> = {};
  for (const [k, v] of Object.entries(c.subject ?? {})) subject[k] = Array.isArray(v) ? v.join(", ") : String(v);
  return {
    subject,
    fingerprint256: c.fingerprint256,
    raw: new Uint8Array(c.raw.buffer, c.raw.byteOffset, c.raw.length),
    authorized: s.authorized === true,
  };
}

/** `scheme://host:port` with IPv6 hosts in brackets. */
export function hostUrl(scheme: string, host: string | undefined, port: number | undefined): string {
  const h = host === undefined ? "unknown" : host.includes(":") ? `[${host}]` : host;
  return `${scheme}://${h}:${port ?? 0}`;
}

/** The host of a URL without IPv6 brackets. */
export function urlHost(url: URL): string {
  const h = url.hostname;
  return h.startsWith("[") && h.endsWith("]") ? h.slice(1, -1) : h;
}
