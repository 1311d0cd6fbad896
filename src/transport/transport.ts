/**
 * The one small interface every transport adapter implements. The connection
 * layer sees only this: ordered, reliable bytes in both directions, write
 * backpressure, receive backpressure (`pause`/`resume`) and an end. No
 * sockets, no Node types, no TLS: what an adapter needs beyond the portable
 * options below it declares itself (see {@link TransportAdapter}).
 */

import type { PointSubError } from "../errors/error.ts";

/**
 * Where to connect or listen:
 * - a URL, as a string or `URL` (`tcp://127.0.0.1:4000`, `memory://name`);
 * - a multiaddr, as a string starting with `/` (`/ip4/127.0.0.1/tcp/4000`)
 *   or an object whose `toString()` does (a `@multiformats/multiaddr`);
 * - a peer id, as a string without `:` or `/` (`12D3KooW…`).
 *
 * Only adapters that declare {@link TransportAdapter.multiaddrs} or
 * {@link TransportAdapter.peerIds} accept the latter two.
 */
export type Address = string | URL | MultiaddrLike;

/** Anything whose string form is a multiaddr (`/ip4/…`), such as a `@multiformats/multiaddr` object. */
export interface MultiaddrLike {
  toString(): string;
}

/** A multiaddr, as the registry hands it to an adapter. */
export interface MultiaddrAddress {
  readonly kind: "multiaddr";
  /** Its string form, e.g. `/ip4/127.0.0.1/tcp/4000/p2p/12D3KooW…`. */
  readonly text: string;
  /** What the caller passed (a string, or the multiaddr object itself). */
  readonly value: string | MultiaddrLike;
}

/** A peer id, as the registry hands it to an adapter (the adapter finds the peer's addresses). */
export interface PeerIdAddress {
  readonly kind: "peer-id";
  readonly peerId: string;
}

/** An address resolved to its kind: what an adapter's `connect`/`listen` receive. */
export type TransportAddress = URL | MultiaddrAddress | PeerIdAddress;

/**
 * Callbacks a transport delivers to its connection. A transport calls them
 * as methods of the object it was given (`h.onData(chunk)`, never
 * unbound), so they may be prototype methods.
 */
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
  /**
   * Optional: the socket is gone, its close to be reported once the data
   * held for the receiver was delivered. `write` takes nothing more (it
   * returns false, and no drain follows); a receiver that paused reading
   * until its writes drain (a slow peer) reads on, so that the close comes.
   */
  onGone?(): void;
  /**
   * Optional: the peer ended its side of the stream (every byte it sent was
   * delivered). A transport without half-close ends ours too (after what it
   * holds): `write` takes nothing more. Not every transport reports it.
   */
  onEnd?(): void;
  /**
   * The transport is closed; `error` when it ended abnormally. Called once.
   * A `PointSubError` is the connection's error as it is (a WebSocket
   * peer's text message is `ERR_PROTOCOL`); any other error becomes the
   * cause of `ERR_CONNECTION_CLOSED`.
   */
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
  /**
   * Optional: the peer's identity as the transport itself authenticated it
   * (libp2p: the remote peer id, proven by libp2p's Noise or TLS handshake).
   * It is the connection's `principal` when no `authenticate` hook gave one,
   * and `AuthInfo.peerId` for a hook.
   */
  peerId?(): string | undefined;
  /**
   * Optional: the largest frame payload this side should send over the
   * transport (at least 16 KiB), when smaller than what the peer accepts. A
   * transport whose own buffers a small frame cannot pass (a libp2p stream)
   * sets it, so a small frame waits behind at most one such frame; paced
   * bulk is then handed over one such frame per `write`.
   */
  readonly maxFrameSize?: number;
  /** Human-readable local and remote addresses as URLs, e.g. `tcp://127.0.0.1:4000`. */
  readonly localUrl: string;
  readonly remoteUrl: string;
  /** Starts delivering events to `handlers`. Called exactly once, right after creation. */
  attach(handlers: TransportHandlers): void;
  /**
   * Optional: delivers every later event to `handlers` instead of those
   * given to {@link attach} (a server hands an accepted transport from its
   * pre-handshake binding to the session built on it, which then keeps no
   * forwarding object per connection). Without it, the first handlers
   * forward.
   */
  reattach?(handlers: TransportHandlers): void;
  /**
   * Writes the chunks in order (the transport may keep references until they
   * are written). Returns false when the caller should wait for `onDrain`.
   */
  write(chunks: readonly Uint8Array[]): boolean;
  /**
   * Optional: true when the transport holds no reference to any chunk
   * handed to {@link write} any more (all of it went to the OS), so the
   * caller may reuse that memory, and return the memory-budget charge of
   * answers it sent as views of their handler's buffer. A transport that
   * implements it must also call `onDrain` once a `write` it held part of
   * has gone out (not only after `write` returned false). Without it,
   * written memory is never reused and answers' charges return at hand-over.
   */
  idle?(): boolean;
  /**
   * Optional, with {@link bytesTaken}: bytes handed to {@link write} that the OS
   * has not taken yet. Housekeeping closes a connection whose transport holds
   * bytes that none of went out for `slowPeerTimeoutMs` (a peer that stopped
   * reading after `write` accepted them: no backpressure ever shows).
   */
  bytesHeld?(): number;
  /** Optional: bytes the OS has taken so far (grows as the peer reads). See {@link bytesHeld}. */
  bytesTaken?(): number;
  /**
   * Stops delivering data (receive backpressure): no `onData` after it
   * returns until {@link resume}. The connection calls it when the peer is
   * owed more than it reads, and to yield the event loop.
   */
  pause(): void;
  /** Restarts delivering data after {@link pause}. */
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

/** Portable options of {@link TransportAdapter.connect}. */
export interface TransportConnectOptions {
  /** Abort the connect attempt. */
  signal?: AbortSignal;
  /** Give up connecting after this many milliseconds. Default: none of the adapter's own (`connect` passes its `connectTimeoutMs`, 10000). */
  connectTimeoutMs?: number;
}

/** Portable options of {@link TransportAdapter.listen}. */
export interface TransportListenOptions {
  /**
   * For transports with a handshake of their own (tls, noise): a connection
   * that has not completed it within this many milliseconds is closed.
   * Default 10000 (the pointsub handshake's default).
   */
  handshakeTimeoutMs?: number;
  /**
   * For transports with a handshake of their own: connections accepted that
   * are not yet handed to `onTransport`. Called with +1 when one arrives,
   * before its handshake: return false to refuse it (it is closed at once and
   * not reported again). Every admitted connection is reported with -1
   * exactly once when it leaves that state: just before `onTransport` sees
   * it, or when it closed (failed, timed out). The answer to a -1 call is
   * ignored. Lets a server count these against its limits. `remoteUrl`
   * (`scheme://host:port`, when the adapter knows it) lets it count them per
   * address too; the -1 call gives the same one.
   */
  onPending?(delta: 1 | -1, remoteUrl?: string): boolean;
  /**
   * For transports with a handshake of their own: a connection the transport
   * refused or lost before `onTransport` would have seen it — its TLS
   * handshake failed or timed out, its client certificate was refused, its
   * WebSocket upgrade was refused or never came, or more were in their
   * handshake than the transport admits. Called once per such connection
   * with why (a refusal `onPending` made is not reported again). Lets a
   * server report it as a rejected connection.
   */
  onRefused?(error: PointSubError, remoteUrl?: string): void;
}

/**
 * The portable options, both directions. `connect` and `createServer` hand
 * an adapter the caller's whole options object, so an adapter also finds
 * its own options there (see {@link TransportAdapter}).
 */
export interface TransportOptions extends TransportConnectOptions, TransportListenOptions {}

/**
 * A transport implementation for one or more URL schemes (and, if it says
 * so, multiaddrs or peer ids).
 *
 * `Options` are the adapter's own options (TLS material for `tls://`, for
 * example): `connect` and `listen` get the caller's options object, typed as
 * the portable options plus these. The entry point that bundles adapters
 * adds their options to its `connect`/`createServer` option types.
 */
export interface TransportAdapter<Options extends object = object> {
  /** URL schemes without the colon, e.g. `["tcp"]`; may be empty for a multiaddr- or peer-id-only adapter. */
  readonly schemes: readonly string[];
  /** Whether it accepts multiaddrs (`/ip4/…/tcp/…`). Default false. */
  readonly multiaddrs?: boolean;
  /** Whether it accepts peer ids (it can find a peer's addresses). Default false. */
  readonly peerIds?: boolean;
  /**
   * Opens a transport to `address`: a `URL` with one of {@link schemes}, or
   * a multiaddr / peer id if the adapter declared it accepts them.
   */
  connect(address: TransportAddress, options: TransportConnectOptions & Options): Promise<Transport>;
  /** Listens on `address` and hands every accepted transport to `onTransport`. */
  listen(
    address: TransportAddress,
    options: TransportListenOptions & Options,
    onTransport: (t: Transport) => void,
  ): Promise<TransportListener>;
}
