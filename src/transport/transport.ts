/**
 * The one small interface every transport adapter implements. The connection
 * layer sees only this: ordered, reliable bytes in both directions, write
 * backpressure and an end. No sockets, no Node types.
 */

/** Callbacks a transport delivers to its connection. */
export interface TransportHandlers {
  /**
   * Bytes arrived. Returns true when the receiver kept views of `chunk` (the
   * transport must leave that memory alone); false when it copied out what it
   * needed, so the transport may read the next bytes into the same buffer.
   * Transports that allocate every chunk may ignore the answer.
   */
  onData(chunk: Uint8Array): boolean;
  /**
   * Optional: memory the receiver wants the next bytes read into (the rest
   * of a large frame's body), or undefined. A transport that can read into a
   * given buffer may do so, and then passes a view of those bytes to
   * {@link onData}; it must not put more than `length` bytes there.
   */
  readTarget?(): Uint8Array | undefined;
  /** Writes may resume after `write` returned false. */
  onDrain(): void;
  /** The transport is closed; `error` when it ended abnormally. Called once. */
  onClose(error?: Error): void;
}

/** The certificate a TLS peer presented (mutual TLS). */
export interface PeerCertificate {
  /** Subject fields, e.g. `{ CN: "client-1", O: "Example" }`. */
  readonly subject: Readonly<Record<string, string>>;
  /** SHA-256 fingerprint, colon-separated upper-case hex. */
  readonly fingerprint256: string;
  /** The certificate in DER. */
  readonly raw: Uint8Array;
  /** Whether it verified against the trusted CAs. */
  readonly authorized: boolean;
}

/** A connected, ordered, reliable byte stream. */
export interface Transport {
  /** Optional: the certificate the peer presented, on TLS transports that asked for one. */
  peerCertificate?(): PeerCertificate | undefined;
  /** Human-readable local and remote addresses as URLs, e.g. `tcp://127.0.0.1:4000`. */
  readonly localUrl: string;
  readonly remoteUrl: string;
  /** Starts delivering events to `handlers`. Called exactly once, right after creation. */
  attach(handlers: TransportHandlers): void;
  /**
   * Writes the chunks in order (the transport may keep references until they
   * are written). Returns false when the caller should wait for `onDrain`.
   */
  write(chunks: readonly Uint8Array[]): boolean;
  /** Stops / restarts delivering data (receive backpressure). */
  pause(): void;
  resume(): void;
  /**
   * Optional: the connection saw no input for a while; release read buffers
   * kept for bulk traffic (an idle connection should cost little memory).
   */
  trim?(): void;
  /** Ends the stream after queued writes are flushed. */
  end(): void;
  /** Closes immediately, dropping queued writes. */
  destroy(error?: Error): void;
}

/** A listening endpoint. */
export interface TransportListener {
  /** The bound URL (port 0 replaced by the real port). */
  readonly url: string;
  /** Stops accepting; existing transports are not touched. */
  close(): Promise<void>;
}

/** Options handed to adapters; each adapter reads the part it knows. */
export interface TransportOptions {
  /** TLS material and checks, for `tls://`. */
  tls?: TlsOptions;
  /** Abort the connect attempt. */
  signal?: AbortSignal;
  /** Give up connecting after this many milliseconds. */
  connectTimeoutMs?: number;
  /**
   * Listen, for transports with a handshake of their own (tls): a connection
   * that has not completed it within this many milliseconds is closed. Default
   * 10000 (the pointsub handshake's default).
   */
  handshakeTimeoutMs?: number;
  /**
   * Listen, tls: most connections in their TLS handshake at once on one
   * listener; further ones are closed at once. Default 1024.
   */
  maxPendingHandshakes?: number;
  /**
   * Listen, for transports with a handshake of their own (tls): connections
   * the OS accepted that are not yet handed to `onTransport`. Called with +1
   * when one arrives, before its handshake: return false to refuse it (it is
   * closed at once and not reported again). Every admitted connection is
   * reported with -1 exactly once when it leaves that state: just before
   * `onTransport` sees it, or when it closed (failed, timed out). The answer
   * to a -1 call is ignored. Lets a server count these against its limits.
   */
  onPending?(delta: 1 | -1): boolean;
}

/** TLS options (PEM strings or bytes), passed to node:tls. */
export interface TlsOptions {
  /** Certificate chain (server; or client for mutual TLS). */
  cert?: string | Uint8Array;
  /** Private key for `cert`. */
  key?: string | Uint8Array;
  /** Trusted CA certificates; defaults to the system store. */
  ca?: string | Uint8Array | (string | Uint8Array)[];
  /** Client: verify the server certificate (default true). Server: reject clients without a valid cert when requestCert is on (default true). */
  rejectUnauthorized?: boolean;
  /** Server: ask clients for a certificate (mutual TLS). */
  requestCert?: boolean;
  /** Client: server name for SNI and verification; defaults to the URL host. */
  servername?: string;
}

/** A transport implementation for one or more URL schemes. */
export interface TransportAdapter {
  /** Schemes without the colon, e.g. `["tcp"]`. */
  readonly schemes: readonly string[];
  connect(url: URL, options: TransportOptions): Promise<Transport>;
  listen(url: URL, options: TransportOptions, onTransport: (t: Transport) => void): Promise<TransportListener>;
}
