import type { Settings } from "../codec/settings.ts";
import type { PointSubError } from "../errors/error.ts";
import type { Router } from "../router/router.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { PeerCertificate } from "../transport/transport.ts";
import type { Ticker } from "../util/ticker.ts";
import type { MemoryBudget } from "./budget.ts";
import type { Connection, ConnectionShared } from "./connection.ts";

/** Bytes or text; text is sent as UTF-8. */
export type Payload = Uint8Array | string;

/** A one-way message received from the peer. */
export interface Message {
  /** The message bytes (a view; keep it as long as you like). */
  readonly data: Uint8Array;
  /** The bytes decoded as UTF-8. */
  text(): string;
}

/** A request received by a route handler. */
export interface IncomingRequest extends Message {
  /** The route it was sent to, e.g. `/echo/1.0.0`. */
  readonly route: string;
}

/** Everything a handler knows about the call besides its bytes. */
export interface RequestContext {
  /**
   * Aborted when the caller cancels or times out, or the connection closes
   * (for a keyed request the idempotency middleware runs, its `waitMs`
   * later: a retry will want its answer); `reason` is a PointSubError.
   */
  readonly signal: AbortSignal;
  /** The connection the request came on (a server session, or a client connection). */
  readonly session: Connection;
  /** The route. */
  readonly route: string;
  /**
   * The request's idempotency key (bytes as sent; a string key arrives as
   * its UTF-8), when the caller sent one with
   * {@link RequestOptions.idempotencyKey} and this side announced the
   * feature (every pointsub peer does); undefined otherwise. Handlers may
   * use it themselves; the `idempotency()` middleware uses it to run a
   * handler at most once per key.
   */
  readonly idempotencyKey?: Uint8Array | undefined;
}

/** What a handler may return: the response bytes, text, or nothing (an empty response); anything else answers the caller with ERR_HANDLER. */
// biome-ignore lint/suspicious/noConfusingVoidType: handlers written as `async () => {}` return Promise<void>.
export type HandlerResult = Uint8Array | string | undefined | void;

/**
 * A route handler. Throw (or reject) to answer with an error: a
 * PointSubError keeps its code, anything else reaches the caller as
 * `ERR_HANDLER` with the thrown message.
 */
export type Handler = (req: IncomingRequest, ctx: RequestContext) => HandlerResult | Promise<HandlerResult>;

/** Options of {@link Connection.request}. */
export interface RequestOptions {
  /**
   * Fail with ERR_TIMEOUT after this many ms (default: the connection's
   * requestTimeoutMs; 0 = never), counted from the end of the synchronous
   * run of code that made the request (one clock read for every request
   * made in it): it may fire that long late, never early.
   */
  timeoutMs?: number;
  /** Abort the request (ERR_CANCELLED); the peer's handler sees its signal aborted. */
  signal?: AbortSignal;
  /**
   * The request's idempotency key (1..64 bytes; a string is UTF-8): every
   * attempt of one logical request carries the same key, and a server that
   * keeps an idempotency store runs its handler at most once per key,
   * answering duplicates with the stored response (docs/PROTOCOL.md §3.4.1).
   * Sent only to peers that announce the feature; ignored by others.
   */
  idempotencyKey?: string | Uint8Array;
}

/** What a server's `authenticate` hook knows about a client besides its credentials. */
export interface AuthInfo {
  /** The credentials as UTF-8 text (a token). */
  readonly token: string;
  readonly remoteUrl: string;
  readonly localUrl: string;
  /** The client's TLS certificate, when the listener asked for one (mutual TLS). */
  readonly peerCertificate: PeerCertificate | undefined;
  /** The client's peer id, on transports that authenticate peers themselves (libp2p). */
  readonly peerId: string | undefined;
}

/**
 * Decides whether a client may use the server: return (or resolve to) the
 * principal the session acts as — any value; it is `session.principal` — or
 * throw (reject) to refuse the client with ERR_UNAUTHORIZED. Runs before any
 * route, message listener or stream handler sees a byte from the client.
 */
export type Authenticator = (credentials: Uint8Array, info: AuthInfo) => unknown;

/** Options of a connection (client) or of every session (server). */
export interface ConnectionOptions {
  /**
   * Credentials (a token, or opaque bytes) sent when the server requires
   * authentication. Default: none (an empty credential).
   */
  credentials?: Uint8Array | string;
  /** Largest message (data bytes) accepted from the peer. Default 256 MiB. */
  maxMessageSize?: number;
  /** Largest frame payload accepted from the peer (16 KiB .. 16 MiB - 1). Default 1 MiB. */
  maxFrameSize?: number;
  /** CRC32C on every frame. On unless both sides turn it off. Default true. */
  checksum?: boolean;
  /** Connection-level receive window granted to the peer. Default 16 MiB. */
  connectionWindow?: number;
  /** Per-message receive window granted to the peer. Default 4 MiB. */
  streamWindow?: number;
  /** Requests the peer may have outstanding at this side. Default 1024. */
  maxConcurrentRequests?: number;
  /** Bytes (declared sizes) of unfinished chunked messages the peer may have open at once. Default maxMessageSize + 64 MiB. */
  maxAssemblyBytes?: number;
  /** Streams the peer may have open toward this side at once. Default 64. */
  maxConcurrentStreams?: number;
  /**
   * Largest expansion accepted from one compressed stream frame (decompressed
   * length / compressed length); senders send frames that would expand more
   * uncompressed. Default 1024.
   */
  maxCompressionRatio?: number;
  /**
   * Default timeout of `request`: this base plus the time the payload takes
   * at `requestBytesPerSecond`. Default 30000 ms; 0 = none.
   */
  requestTimeoutMs?: number;
  /**
   * The throughput a request's default timeout assumes for its payload: a
   * 1 GiB request gets `requestTimeoutMs` + 102 s at the default 10 MiB/s.
   */
  requestBytesPerSecond?: number;
  /**
   * Time allowed for the peer's HELLO (and authentication). Default 10000 ms
   * (for `connect`: its `connectTimeoutMs`); each connection gets up to 10 %
   * more at random, so connections accepted together do not all time out in
   * one tick. 0 on a client: no deadline (as `connectTimeoutMs: 0`); a
   * server refuses 0 (ERR_INVALID_ARGUMENT).
   */
  handshakeTimeoutMs?: number;
  /** How long `close()` waits for work in flight before closing hard. Default 5000 ms. */
  closeTimeoutMs?: number;
  /**
   * Pace chunked messages and streams by the link's measured delivery rate,
   * so the bulk bytes below this connection (socket, kernel and link buffers)
   * stay near one round trip plus 5 ms of the link and a small message waits
   * about that long whatever the link's speed (issue 17; uses PING frames as
   * acknowledgements). Default true. Answers the pacer holds count for
   * `slowPeerBytes` as answers a full transport holds, so a peer that never
   * reads is read no further than with `false`.
   */
  pacing?: boolean;
  /** Send a PING after this many ms without incoming bytes; close with ERR_KEEPALIVE if none answers within another period. Default 30000; 0 = off. */
  keepAliveMs?: number;
  /**
   * Answers (responses, error responses, control frames) this side may hold
   * for a peer that does not read them. Once the transport asked to wait and
   * more than this is owed, the peer is read no further until it drains.
   * Default 8 MiB.
   */
  slowPeerBytes?: number;
  /**
   * How long the connection may stay unable to send (the peer reads nothing,
   * or withholds connection or message credit) before it is closed with
   * ERR_SLOW_PEER. Default 30000 ms; 0 = never.
   */
  slowPeerTimeoutMs?: number;
  /**
   * Unfinished messages and streams the peer sends that make no progress
   * (no frame arrives while the peer could send) for this long are
   * cancelled with ERR_TIMEOUT. Default 60000 ms; 0 = never.
   */
  progressTimeoutMs?: number;
  /**
   * The slowest an unfinished chunked message of the peer may arrive: in
   * each progressTimeoutMs window it must receive at least this many bytes
   * a second times the window (or all it still lacked, when less), else it
   * is cancelled with ERR_TIMEOUT and its memory budget returned. Stops a
   * peer from holding a large message's budget (and keeping the connection
   * busy, so never idle) with one byte a frame now and then. Streams are
   * not held to it (an open stream may be quiet; what it holds of the budget
   * is data its reader has not read). Off with progressTimeoutMs 0; 0 = any
   * frame is progress. Default 1024 (1 KiB/s).
   */
  minProgressBytesPerSecond?: number;
  /**
   * The slowest the peer may take the answers it is owed (responses queued
   * for its credit or its reading, which hold the memory budget until they
   * go out): what it is owed must go out within slowPeerTimeoutMs plus its
   * size at this rate, counted from when it was first owed (frames a
   * trickle of credit lets out meanwhile do not restart it), else the
   * connection is closed with ERR_SLOW_PEER. Off with slowPeerTimeoutMs 0;
   * 0 = no floor. Default 65536 (64 KiB/s).
   */
  minAnswerBytesPerSecond?: number;
  /**
   * Close gracefully (GOAWAY with reason "idle") once no message, request,
   * response or stream data moved either way for this long and nothing is
   * in flight; keepalive pings do not count as activity. A server session
   * then emits `sessionClose` with reason `"idle"`. Checked on the
   * housekeeping tick, so it fires up to a quarter of it late. Default 0
   * (never).
   */
  idleTimeoutMs?: number;
  /**
   * Most bytes the peer may make this side hold at once: unfinished
   * messages (declared size + 1 KiB each), request bodies while their
   * handler runs, stream data not yet read. Work beyond it is refused with
   * ERR_OVERLOADED (retryable). A server shares one budget between all its
   * sessions. Default: the runtime's `memoryLimit()` (Node: 1 GiB, or a
   * quarter of the memory available when smaller; the browser runtime:
   * 256 MiB) — but at least maxAssemblyBytes + 64 MiB, so a message of the
   * largest size allowed always fits.
   */
  memoryBudget?: number;
}

/** Events of a {@link Connection}. */
export interface ConnectionEvents {
  /** The handshake completed (emitted synchronously, before `ready` resolves). */
  open: [];
  /** A one-way message from the peer. */
  message: [msg: Message];
  /** The peer announced a graceful close (GOAWAY, with its reason); new work is refused from now on. */
  goaway: [reason: string];
  /** The connection is closed; `error` says why when it was not a clean close. */
  close: [error: PointSubError | undefined];
}

/**
 * What a connection is and has done, as {@link Connection.info} and a
 * server's `sessionsInfo()` report it. Times are `Date.now()` milliseconds.
 */
export interface ConnectionInfo {
  /** The connection's id (a server's session id, unique within that server). */
  readonly id: string;
  /** The transport's scheme: `"tcp"`, `"tls"`, `"unix"`, `"memory"`, … */
  readonly transport: string;
  readonly localUrl: string;
  readonly remoteUrl: string;
  readonly state: ConnectionState;
  /**
   * What the server's `authenticate` hook returned; without one, the peer id
   * on transports that authenticate peers themselves (libp2p), else undefined.
   */
  readonly principal: unknown;
  /** The certificate the peer presented over TLS, if any. */
  readonly peerCertificate: PeerCertificate | undefined;
  /** When the transport was accepted or connected. */
  readonly connectedAt: number;
  /**
   * When application data (messages, requests, responses, stream data) last
   * moved, to the nearest input or output; pings do not count.
   */
  readonly lastActivity: number;
  /** Wire bytes, headers and checksums included. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** Messages, requests and responses, each counted once. */
  readonly messagesIn: number;
  readonly messagesOut: number;
  /** Requests in flight in either direction. */
  readonly requestsInFlight: number;
  /** Streams (transfers) open in either direction. */
  readonly streamsOpen: number;
  /** Bytes queued for the peer and not yet handed to the transport ({@link Connection.bufferedAmount}). */
  readonly bufferedAmount: number;
  /** Smoothed round-trip time in ms, once measured. */
  readonly rtt: number | undefined;
}

/** Options of {@link Connection.close}. */
export interface CloseOptions {
  /** Sent to the peer in the GOAWAY and reported as the close reason. Default `"closing"`. */
  reason?: string;
  /** How long work in flight may take before the connection closes hard. Default `closeTimeoutMs`. */
  timeoutMs?: number;
}

/** Connection lifecycle states. */
export type ConnectionState = "handshaking" | "open" | "closing" | "closed";

/** Internal construction options. */
export interface ConnectionInit {
  /** The side that opened the transport uses odd stream ids, the other even. */
  initiator: boolean;
  /** A server's router (its routes and middleware), the parent of the connection's own. */
  router?: Router;
  /** This side's settings, already resolved and validated (shared by a server's sessions; never modified). */
  localSettings?: Settings;
  /** Called when the handshake completed, before the 'open' event (a server's session bookkeeping). */
  onOpen?: (conn: Connection) => void;
  /** Called once when the connection closed, before the 'close' event. */
  onClose?: (conn: Connection, error: PointSubError | undefined) => void;
  /** Called for every one-way message before the connection's own 'message' event (a server's dispatch). */
  onMessage?: (msg: Message, conn: Connection) => void;
  /** The memory budget shared by a server's sessions (a client connection makes its own). */
  budget?: MemoryBudget;
  /** A server's check of each client's credentials (its local settings then carry the AUTH feature). */
  authenticate?: Authenticator;
  /** The ticker of a server's sessions (default: one per connection). */
  ticker?: Ticker;
  /** What a server's sessions share (`connectionShared` of the server's options and these fields, made once). */
  shared?: ConnectionShared;
  /** This connection's id (a server numbers its sessions; default: a process-wide counter). */
  id?: string;
  /** Test hook: first stream id to allocate. */
  firstStreamId?: number;
  /** Codecs, CRC32C, allocator and memory default (default: a portable runtime without codecs). */
  runtime?: Runtime;
  /**
   * A server's connection built only once the peer's HELLO arrived
   * (`server/pre-handshake.ts`): the server already attached the transport
   * (it forwards to the connection's handlers) and wrote the greeting; it
   * hands over the bytes received so far with `start`.
   */
  accepted?: AcceptedTransport;
}

/** What a server hands the connection it builds after the peer's HELLO arrived (see {@link ConnectionInit.accepted}). */
export interface AcceptedTransport {
  /** When the transport was accepted (`performance.now()`): the connection's `connectedAt`, as a date. */
  readonly acceptedAt: number;
}
