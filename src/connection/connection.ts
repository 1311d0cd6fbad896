import { EventEmitter } from "eventemitter3";
import { localCodecMask } from "../codec/compression.ts";
import { allocateUninitialized, FrameDecoder, type FrameSink } from "../codec/decoder.ts";
import {
  CANCEL_LENGTH,
  Flag,
  FRAME_TYPE_NAMES,
  FrameType,
  MAGIC,
  MAX_AUTH_SIZE,
  MAX_STREAM_ID,
  PING_LENGTH,
  PROTOCOL_VERSION,
  Status,
} from "../codec/frame.ts";
import {
  DEFAULT_SETTINGS,
  decodeSettings,
  encodeSettings,
  Feature,
  type Settings,
  validateSettings,
} from "../codec/settings.ts";
import { readVarint, type VarintResult, varintLength, writeVarint } from "../codec/varint.ts";
import { codeForErrno, codeInfo, type ErrorCode } from "../errors/codes.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import type { Transfer } from "../stream/transfer.ts";
import type { SendStreamOptions, StreamHandler, StreamSource } from "../stream/types.ts";
import type { PeerCertificate, Transport } from "../transport/transport.ts";
import { type Deferred, deferred } from "../util/deferred.ts";
import { nextTurn } from "../util/next-turn.ts";
import { Queue } from "../util/queue.ts";
import { ASSEMBLY_OVERHEAD, CALL_OVERHEAD, defaultBudgetLimit, MemoryBudget } from "./budget.ts";
import { CallTable } from "./call-table.ts";
import { type PendingCall, ServerCall } from "./calls.ts";
import { chunkSizeFor, SINGLE_FRAME_MAX } from "./size-class.ts";
import { Stats, type StatsSnapshot } from "./stats.ts";
import {
  RESUME_ROUTE,
  type ResumeLookup,
  type ResumePoint,
  type StreamHost,
  type StreamRoute,
  Streams,
} from "./streams.ts";
import type {
  Authenticator,
  ConnectionOptions,
  Handler,
  HandlerResult,
  Message,
  Payload,
  RequestOptions,
} from "./types.ts";
import { FrameWriter, type OutMessage } from "./writer.ts";

export {
  RESUME_ROUTE,
  type ResumeContext,
  type ResumeLookup,
  type ResumePoint,
  type StreamRoute,
} from "./streams.ts";

/** Events of a {@link Connection}. */
export interface ConnectionEvents {
  /** The handshake completed (emitted synchronously, before `ready` resolves). */
  open: [];
  /** A one-way message from the peer. */
  message: [msg: Message];
  /** The peer announced a graceful close (GOAWAY); new work is refused from now on. */
  goaway: [];
  /** The connection is closed; `error` says why when it was not a clean close. */
  close: [error: PointSubError | undefined];
}

/** Connection lifecycle states. */
export type ConnectionState = "handshaking" | "open" | "closing" | "closed";

const EMPTY = new Uint8Array(0);
const RESOLVED: Promise<void> = Promise.resolve();
const noop = () => {};
const NO_OPTIONS: RequestOptions = Object.freeze({});

/**
 * A rejected promise that does not count as unhandled: `send` may be used
 * without awaiting (fire and forget); its errors also close or are reported
 * on the connection.
 */
function handledRejection(err: unknown): Promise<never> {
  const p = Promise.reject(err);
  p.catch(noop);
  return p;
}
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const MAX_ROUTE = 1024;
/** Largest BATCH payload this side writes. */
const BATCH_MAX = 16 * 1024;
const MAX_ERROR_TEXT = 1024;

class IncomingMessage implements Message {
  readonly data: Uint8Array;
  constructor(data: Uint8Array) {
    this.data = data;
  }
  text(): string {
    return decoder.decode(this.data);
  }
}

/** A chunked message being received. */
interface Assembly {
  type: number;
  total: number;
  /** Null when the bytes are being discarded (a cancelled call's response). */
  buf: Uint8Array | null;
  filled: number;
  route: string;
  status: number;
  streamUsed: number;
  streamUnacked: number;
  /** Bytes of the memory budget this assembly holds (0 when discarding). */
  charged: number;
  /** When its last frame arrived (the connection's last input time). */
  lastFrameAt: number;
}

const AUTH_WAIT_CREDENTIALS = 1;
const AUTH_CHECKING = 2;
const AUTH_WAIT_ACK = 3;

/** Decoding time (ms) one peer's input may take before its reading yields to the event loop for a turn. */
const YIELD_MS = 4;
/**
 * Unfinished chunked messages one peer may have open here; more are refused
 * with ERR_OVERLOADED (senders keep at most MAX_OPEN_CHUNKED open, far fewer).
 * Each costs a buffer allocation, so this bounds the work a flood of cheap
 * START frames causes, whatever the budget.
 */
const MAX_OPEN_ASSEMBLIES = 1024;
/** Ids of refused messages whose remaining frames are dropped, at most this many. */
const MAX_TOMBSTONES = 4096;

interface PendingPing {
  start: number;
  d: Deferred<number>;
}

/** Shared empty stand-ins for maps a connection creates on first write (never written to). */
const NO_ROUTES: Map<string, Handler> = new Map();
const NO_ASSEMBLIES: Map<number, Assembly> = new Map();
const NO_ROUTE_HEADS: Map<string, Uint8Array> = new Map();
const NO_PINGS: Map<number, PendingPing> = new Map();

function toBytes(payload: Payload, what: string): Uint8Array {
  if (payload instanceof Uint8Array) return payload;
  if (typeof payload === "string") return encoder.encode(payload);
  throw new PointSubError("ERR_INVALID_ARGUMENT", `${what} must be a Uint8Array or a string`);
}

/**
 * Largest data frame payload for the peer `p` (at most `want`): within its
 * maxFrameSize and half of each of its windows. A receiver holds back less
 * than a quarter of a window before returning credit, so a frame of half a
 * window always fits again (docs/PROTOCOL.md §3.2, §3.6).
 */
function frameLimit(p: Settings, want: number): number {
  return Math.min(want, p.maxFrameSize, p.streamWindow >>> 1, p.connectionWindow >>> 1);
}

/**
 * @internal This side's settings from its options (a server resolves them
 * once for all sessions); `requireAuth` announces that the peer must
 * authenticate (an AUTH frame) first.
 */
export function resolveSettings(o: ConnectionOptions, requireAuth = false): Settings {
  const maxMessageSize = o.maxMessageSize ?? DEFAULT_SETTINGS.maxMessageSize;
  const s: Settings = {
    maxFrameSize: o.maxFrameSize ?? DEFAULT_SETTINGS.maxFrameSize,
    maxMessageSize,
    checksum: o.checksum === false ? 0 : 1,
    features: Feature.STREAMS | Feature.RESUME | (requireAuth ? Feature.AUTH : 0),
    compression: localCodecMask(),
    connectionWindow: o.connectionWindow ?? DEFAULT_SETTINGS.connectionWindow,
    streamWindow: o.streamWindow ?? DEFAULT_SETTINGS.streamWindow,
    maxConcurrentRequests: o.maxConcurrentRequests ?? DEFAULT_SETTINGS.maxConcurrentRequests,
    maxAssemblyBytes: o.maxAssemblyBytes ?? maxMessageSize + 64 * 1024 * 1024,
    maxConcurrentStreams: o.maxConcurrentStreams ?? DEFAULT_SETTINGS.maxConcurrentStreams,
    maxCompressionRatio: o.maxCompressionRatio ?? DEFAULT_SETTINGS.maxCompressionRatio,
  };
  validateSettings(s, false);
  return s;
}

/**
 * @internal The memory budget's size from the options: `memoryBudget`, or
 * the default (1 GiB or a quarter of the available memory) but never less
 * than the assembly budget plus 64 MiB, so a message of the largest size
 * configured always fits.
 */
export function budgetLimit(o: ConnectionOptions, local: Settings): number {
  if (o.memoryBudget !== undefined) {
    if (!Number.isSafeInteger(o.memoryBudget) || o.memoryBudget < 0) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `invalid memoryBudget ${o.memoryBudget}`);
    }
    return o.memoryBudget;
  }
  return Math.max(defaultBudgetLimit(), local.maxAssemblyBytes + 64 * 1024 * 1024);
}

/** Internal construction options. */
export interface ConnectionInit {
  /** The side that opened the transport uses odd stream ids, the other even. */
  initiator: boolean;
  /** Routes shared by all sessions of a server, looked up after the connection's own. */
  sharedRoutes?: ReadonlyMap<string, Handler>;
  /** Stream routes shared by all sessions of a server. */
  sharedStreamRoutes?: ReadonlyMap<string, StreamRoute>;
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
  /** Test hook: first stream id to allocate. */
  firstStreamId?: number;
}

/**
 * One pointsub connection over one transport: multiplexed one-way messages
 * of any size, request/response calls in both directions, flow control,
 * ping and graceful close. Obtain one from `connect()` or as a server
 * session.
 */
export class Connection extends EventEmitter<ConnectionEvents> implements FrameSink {
  /** The transport's addresses. */
  readonly localUrl: string;
  readonly remoteUrl: string;
  /** Resolves when the handshake completed; rejects if it failed. */
  readonly ready: Promise<void>;

  private readonly transport: Transport;
  private readonly local: Settings;
  private peer: Settings = DEFAULT_SETTINGS;
  private readonly requestTimeoutMs: number;
  private readonly closeTimeoutMs: number;
  private readonly keepAliveMs: number;
  private readonly slowPeerBytes: number;
  private readonly slowPeerTimeoutMs: number;
  private readonly progressTimeoutMs: number;
  /** Progress is measured from no earlier than this (reading was paused before it). */
  private progressFloor = 0;
  /** What the peer may make this side hold (shared by a server's sessions). */
  private readonly budget: MemoryBudget;
  /** Ids of the peer's messages this side refused or timed out: their late frames are dropped until END. */
  private tombstones: Set<number> | undefined;
  /** Reading from the transport is paused: the peer does not read what it is owed. */
  private readPaused = false;
  /** Reading is paused until the next event-loop turn (see YIELD_MS). */
  private yielding = false;
  /** Milliseconds spent decoding this peer's input since reading last yielded. */
  private busyMs = 0;
  /** The latest PING payload received while the transport could not take its answer (answered on drain). */
  private pendingPong: Uint8Array | undefined;
  private readonly initiator: boolean;
  /** Low bit of the stream ids this side allocates. */
  private readonly myParity: number;
  /** Unacknowledged bytes at which connection credit is returned. */
  private readonly creditThreshold: number;
  /** Largest one-way message sent as one frame (from the peer's settings). */
  private msgSingleMax = 0;
  private readonly onMessageHook: ((msg: Message, conn: Connection) => void) | undefined;
  private readonly onOpenHook: ConnectionInit["onOpen"];
  private readonly onCloseHook: ConnectionInit["onClose"];
  private routes: Map<string, Handler> = NO_ROUTES;
  private readonly sharedRoutes: ReadonlyMap<string, Handler> | undefined;
  private readonly sharedStreamRoutes: ReadonlyMap<string, StreamRoute> | undefined;
  /**
   * The stream half, created on first use: most connections never stream,
   * and an idle connection should cost as little memory as possible.
   */
  private streams_: Streams | undefined;
  private readonly decoderImpl: FrameDecoder;
  private readonly writer: FrameWriter;
  private readonly stats_ = new Stats();
  private state_: ConnectionState = "handshaking";
  private principal_: unknown;
  private helloReceived = false;
  /** The handshake completed (and authentication, when required). */
  private openedOnce = false;
  /** The peer's GOAWAY(0) arrived: it starts nothing new after it. */
  private peerGoAway = false;
  /** Authentication after HELLO: none pending, waiting for the peer's credentials, checking them, or waiting for the server's ACK. */
  private authState: 0 | typeof AUTH_WAIT_CREDENTIALS | typeof AUTH_CHECKING | typeof AUTH_WAIT_ACK = 0;
  private readonly authenticator: Authenticator | undefined;
  private readonly credentials: Uint8Array;
  private readonly readyD: Deferred<void> = deferred<void>();
  /** Created when someone first waits for the close. */
  private closedD: Deferred<void> | undefined;
  private closeError: PointSubError | undefined;
  private closePromise: Promise<void> | undefined;
  private handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  private keepAliveTimer: ReturnType<typeof setInterval> | undefined;
  private deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  private deadlineAt = Number.POSITIVE_INFINITY;
  private lastInput = Date.now();
  private lastOutput = Date.now();
  private keepAlivePingAt = 0;
  // stream ids
  private nextId: number;
  private readonly pending = new CallTable<PendingCall>();
  private readonly waiting = new Queue<PendingCall>();
  private readonly outChunked = new Set<number>();
  // inbound (maps start as shared empty stand-ins: an idle connection should
  // cost little memory; each is replaced by its own on first write)
  private assemblies: Map<number, Assembly> = NO_ASSEMBLIES;
  private assemblyBytes = 0;
  private readonly serving = new CallTable<ServerCall>();
  private openRequests = 0;
  private recvUsed = 0;
  private recvUnacked = 0;
  private bytesIn = 0;
  private framesIn = 0;
  private readonly v: VarintResult = { value: 0, next: 0 };
  private lastRouteBytes: Uint8Array = EMPTY;
  private lastRoute = "";
  private routeHeads: Map<string, Uint8Array> = NO_ROUTE_HEADS;
  // ping
  private pingSeq = 0;
  private pings: Map<number, PendingPing> = NO_PINGS;

  /** @internal Use `connect()` or a server session. */
  constructor(transport: Transport, options: ConnectionOptions, init: ConnectionInit) {
    super();
    this.transport = transport;
    this.localUrl = transport.localUrl;
    this.remoteUrl = transport.remoteUrl;
    this.local = init.localSettings ?? resolveSettings(options);
    this.creditThreshold = this.local.connectionWindow >>> 2;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.closeTimeoutMs = options.closeTimeoutMs ?? 5_000;
    this.keepAliveMs = options.keepAliveMs ?? 30_000;
    this.slowPeerBytes = options.slowPeerBytes ?? 8 * 1024 * 1024;
    this.slowPeerTimeoutMs = options.slowPeerTimeoutMs ?? 30_000;
    this.progressTimeoutMs = options.progressTimeoutMs ?? 60_000;
    this.authenticator = init.authenticate;
    this.credentials = options.credentials === undefined ? EMPTY : toBytes(options.credentials, "credentials");
    if (this.credentials.length > MAX_AUTH_SIZE) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `credentials longer than ${MAX_AUTH_SIZE} bytes`);
    }
    this.budget = init.budget ?? new MemoryBudget(budgetLimit(options, this.local));
    this.initiator = init.initiator;
    this.myParity = init.initiator ? 1 : 0;
    this.onMessageHook = init.onMessage;
    this.onOpenHook = init.onOpen;
    this.onCloseHook = init.onClose;
    this.sharedRoutes = init.sharedRoutes;
    this.sharedStreamRoutes = init.sharedStreamRoutes;
    this.nextId = init.firstStreamId ?? (init.initiator ? 1 : 2);
    this.ready = this.readyD.promise;
    this.ready.catch(() => {});
    this.decoderImpl = new FrameDecoder(this, this.local.maxFrameSize);
    this.writer = new FrameWriter({
      write: (chunks) => {
        this.lastOutput = Date.now();
        return this.transport.write(chunks);
      },
    });
    transport.attach({
      onData: (chunk) => this.onTransportData(chunk),
      readTarget: () => this.decoderImpl.readTarget(),
      onDrain: () => this.onTransportDrain(),
      onClose: (err) => this.onTransportClose(err),
    });
    // Preface and HELLO go out at once; nothing else until the peer's HELLO.
    const preface = new Uint8Array(6);
    preface.set(MAGIC, 0);
    preface[4] = PROTOCOL_VERSION;
    preface[5] = PROTOCOL_VERSION;
    this.transport.write([preface]);
    this.writer.control(FrameType.HELLO, 0, 0, encodeSettings(this.local));
    this.writer.flush();
    // Hold no write buffer until there is something to write (idle connections are common).
    this.writer.trim();
    // From here on, small frames written in one turn share BATCH frames.
    this.writer.batching = true;
    const ht = options.handshakeTimeoutMs ?? 10_000;
    // Up to 10 % later at random: thousands of connections accepted in one
    // burst (a slowloris attack) do not all time out in the same tick.
    this.handshakeTimer = setTimeout(
      () => {
        const err = new PointSubError("ERR_TIMEOUT", `no pointsub handshake from ${this.remoteUrl} within ${ht} ms`);
        // A peer that sent nothing is not speaking pointsub: close without a
        // GOAWAY (thousands of idle sockets timing out together cost no writes).
        if (this.bytesIn === 0) this.destroy(err);
        else this.fail(err);
      },
      ht + Math.floor(Math.random() * ht * 0.1),
    );
  }

  /** The stream half, created with the narrow view of this connection it needs. */
  private get streams(): Streams {
    if (this.streams_ !== undefined) return this.streams_;
    const conn = this;
    const host: StreamHost = {
      conn,
      get state() {
        return conn.state_;
      },
      get peer() {
        return conn.peer;
      },
      get local() {
        return conn.local;
      },
      writer: this.writer,
      stats: this.stats_,
      budget: this.budget,
      pending: this.pending,
      serving: this.serving,
      outChunked: this.outChunked,
      get payloadCrc() {
        return conn.decoderImpl.payloadCrc;
      },
      unusableError: () => this.unusableError(),
      allocId: () => this.allocId(),
      settle: (call, data, err) => this.settle(call, data, err),
      abandon: (call, err) => this.abandon(call, err),
      sendCancel: (id, code) => this.sendCancel(id, code),
      sendCredit: (id, n) => this.sendCredit(id, n),
      connectionFlow: (len) => this.connectionFlow(len),
      isMine: (id) => this.isMine(id),
      hasAssembly: (id) => this.assemblies.has(id),
      openRequest: () => ++this.openRequests,
      closeRequest: () => {
        this.openRequests--;
      },
      finishHandler: (call, value, err, failed) => this.finishHandler(call, value, err, failed),
    };
    this.streams_ = new Streams(host, this.sharedStreamRoutes);
    return this.streams_;
  }

  /** Current lifecycle state. */
  get state(): ConnectionState {
    return this.state_;
  }

  /**
   * What the server's `authenticate` hook returned for this session's
   * credentials (undefined when the server authenticates nobody, and on
   * the client side).
   */
  get principal(): unknown {
    return this.principal_;
  }

  /** The certificate the peer presented over TLS (mutual TLS), if any. */
  get peerCertificate(): PeerCertificate | undefined {
    return this.transport.peerCertificate?.();
  }

  /** The settings the peer announced (its limits). */
  get peerSettings(): Readonly<Settings> {
    return this.peer;
  }

  /**
   * Registers a handler for requests the peer sends to `route` on this
   * connection only (it takes precedence over a server's routes).
   */
  handle(route: string, handler: Handler): this {
    if (this.routes === NO_ROUTES) this.routes = new Map();
    this.routes.set(route, handler);
    return this;
  }

  /**
   * Sends a one-way message of any size (up to the peer's maxMessageSize).
   * Resolves when the last byte is handed to the transport; rejects with a
   * PointSubError (`ERR_MESSAGE_TOO_LARGE` before any byte is written,
   * `ERR_CONNECTION_CLOSED`, ...). Do not modify `payload` afterwards.
   */
  send(payload: Payload): Promise<void> {
    if (this.state_ !== "open") return handledRejection(this.unusableError());
    let data: Uint8Array;
    try {
      data = toBytes(payload, "payload");
    } catch (err) {
      return handledRejection(err);
    }
    const tooLarge = this.checkSize(data.length);
    if (tooLarge !== undefined) return handledRejection(tooLarge);
    this.stats_.sent(data.length);
    const id = this.allocId();
    if (data.length <= this.msgSingleMax) {
      if (this.writer.trySendNow(FrameType.MSG, id, EMPTY, data)) return RESOLVED;
      const q = this.enqueueOut(FrameType.MSG, id, EMPTY, data, true);
      q.catch(noop);
      return q;
    }
    this.outChunked.add(id);
    const p = this.enqueueOut(FrameType.MSG, id, EMPTY, data, false);
    const release = () => {
      this.outChunked.delete(id);
    };
    p.then(release, release);
    return p;
  }

  /**
   * True while a `send` would go straight to the transport; false while
   * sends queue behind transport backpressure or flow-control credit. For
   * high message rates, send without awaiting and `await conn.drain()`
   * whenever this is false.
   */
  get writable(): boolean {
    return this.state_ === "open" && this.writer.writable && this.writer.pending === 0;
  }

  /** Resolves once everything queued was handed to the transport (or the connection closed). */
  drain(): Promise<void> {
    if (this.writable || this.state_ === "closed") return RESOLVED;
    return this.writer.whenDrained();
  }

  /**
   * Calls `route` on the peer and resolves to its response bytes. Rejects
   * with ERR_TIMEOUT, ERR_CANCELLED, ERR_NO_ROUTE, ERR_HANDLER,
   * ERR_MESSAGE_TOO_LARGE, ERR_CONNECTION_CLOSED...
   */
  request(route: string, payload: Payload = EMPTY, options: RequestOptions = NO_OPTIONS): Promise<Uint8Array> {
    if (this.state_ !== "open") return Promise.reject(this.unusableError());
    let data: Uint8Array;
    let head: Uint8Array;
    try {
      data = toBytes(payload, "payload");
      head = this.routeHead(route);
    } catch (err) {
      return Promise.reject(err);
    }
    const tooLarge = this.checkSize(data.length);
    if (tooLarge !== undefined) return Promise.reject(tooLarge);
    const signal = options.signal;
    if (signal?.aborted) {
      return Promise.reject(
        new PointSubError("ERR_CANCELLED", `request to ${route} aborted`, { cause: signal.reason }),
      );
    }
    this.stats_.requestsSent++;
    this.stats_.sent(data.length);
    return new Promise<Uint8Array>((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
      const call: PendingCall = {
        id: 0,
        type: FrameType.REQ,
        route,
        head,
        data,
        resolve,
        reject,
        deadline: timeoutMs > 0 ? Date.now() + timeoutMs : 0,
        timeoutMs,
        signal,
        onAbort: undefined,
        settled: false,
        started: false,
      };
      if (call.deadline !== 0) this.armDeadline(call.deadline);
      if (signal !== undefined) {
        call.onAbort = () => {
          this.abandon(
            call,
            new PointSubError("ERR_CANCELLED", `request to ${route} aborted`, { cause: signal.reason }),
          );
        };
        signal.addEventListener("abort", call.onAbort, { once: true });
      }
      if (this.pending.size >= this.peer.maxConcurrentRequests) this.waiting.push(call);
      else this.startCall(call);
    });
  }

  /**
   * Registers a handler for streams the peer sends to `route` on this
   * connection (before a server's stream routes). `resume` makes the route
   * resumable: it says how far a transfer already got.
   */
  handleStream(route: string, handler: StreamHandler, options: { resume?: ResumeLookup } = {}): this {
    this.streams.handle(route, handler, options);
    return this;
  }

  /**
   * Sends a stream of any size to `route` on the peer: a Node Readable, a
   * web ReadableStream or any (async) iterable of Uint8Array. Memory stays
   * bounded by the flow-control window whatever the size. The returned
   * {@link Transfer} resolves to the route handler's answer once the
   * receiver verified the whole content (CRC32C end to end), and reports
   * progress as the receiver acknowledges bytes.
   */
  sendStream(route: string, source: StreamSource, options: SendStreamOptions = {}): Transfer {
    return this.streams.sendStream(route, source, options);
  }

  /**
   * Asks the peer how much of transfer `transferId` to stream route `route`
   * it already holds. `{ offset: 0 }` when the route cannot resume.
   */
  queryResume(route: string, transferId: string, options: RequestOptions = {}): Promise<ResumePoint> {
    return this.streams.queryResume(route, transferId, options);
  }

  /** Measures the round-trip time to the peer, in milliseconds. */
  ping(options: { timeoutMs?: number } = {}): Promise<number> {
    if (this.state_ !== "open") return Promise.reject(this.unusableError());
    const seq = ++this.pingSeq;
    const d = deferred<number>();
    if (this.pings === NO_PINGS) this.pings = new Map();
    this.pings.set(seq, { start: performance.now(), d });
    const payload = new Uint8Array(PING_LENGTH);
    new DataView(payload.buffer).setFloat64(0, seq);
    this.writer.control(FrameType.PING, 0, 0, payload);
    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
    if (timeoutMs > 0) {
      const t = setTimeout(() => {
        if (this.pings.delete(seq)) d.reject(new PointSubError("ERR_TIMEOUT", `no pong within ${timeoutMs} ms`));
      }, timeoutMs);
      d.promise.then(
        () => clearTimeout(t),
        () => clearTimeout(t),
      );
    }
    return d.promise;
  }

  /** Counters per size class, requests, errors by code and wire totals. */
  stats(): StatsSnapshot {
    return this.stats_.snapshot(this.pending.size + this.waiting.length + this.serving.size, {
      framesOut: this.writer.framesOut,
      bytesOut: this.writer.bytesOut,
      framesIn: this.framesIn,
      bytesIn: this.bytesIn,
    });
  }

  /**
   * Closes gracefully: announces GOAWAY, refuses new work, lets requests and
   * sends in flight finish (up to closeTimeoutMs), then ends the transport.
   */
  close(): Promise<void> {
    if (this.closePromise !== undefined) return this.closePromise;
    if (this.state_ === "closed") return RESOLVED;
    const handshaking = !this.helloReceived;
    this.state_ = "closing";
    // Nothing but HELLO goes out before the peer's HELLO: while the handshake
    // runs, GOAWAY waits for it (bounded by the handshake timeout).
    if (!handshaking) this.sendGoAway(0, "closing");
    this.closePromise = (handshaking ? this.ready.then(() => this.sendGoAway(0, "closing"), noop) : RESOLVED).then(() =>
      this.drainAndEnd(),
    );
    return this.closePromise;
  }

  /** Closes at once: everything in flight fails with ERR_CONNECTION_CLOSED (or `error`). */
  destroy(error?: PointSubError): void {
    if (this.state_ === "closed") return;
    this.transport.destroy();
    this.teardown(error);
  }

  /** Resolves once the connection is closed. */
  get closed(): Promise<void> {
    if (this.closedD === undefined) {
      this.closedD = deferred<void>();
      if (this.state_ === "closed") this.closedD.resolve();
    }
    return this.closedD.promise;
  }

  // ---------------------------------------------------------------- sending

  private unusableError(): PointSubError {
    if (this.state_ === "handshaking") return new PointSubError("ERR_CONNECTION_CLOSED", "connection is not open yet");
    if (this.state_ === "closing") return new PointSubError("ERR_GOING_AWAY", "connection is closing");
    return new PointSubError("ERR_CONNECTION_CLOSED", "connection is closed", { cause: this.closeError });
  }

  private checkSize(size: number): PointSubError | undefined {
    if (size <= this.peer.maxMessageSize && (size <= this.msgSingleMax || size <= this.peer.maxAssemblyBytes)) {
      return undefined;
    }
    this.stats_.error("ERR_MESSAGE_TOO_LARGE");
    const limit = Math.min(this.peer.maxMessageSize, Math.max(this.peer.maxAssemblyBytes, this.msgSingleMax));
    return new PointSubError("ERR_MESSAGE_TOO_LARGE", `message of ${size} bytes exceeds the peer's limit of ${limit}`);
  }

  /** Largest data size that goes out as one frame with a prefix of `headLen` bytes. */
  private singleLimit(headLen: number): number {
    const p = this.peer;
    return frameLimit(p, SINGLE_FRAME_MAX) - headLen;
  }

  private allocId(): number {
    let id = this.nextId;
    for (;;) {
      const next = id + 2;
      this.nextId = next > MAX_STREAM_ID ? (this.initiator ? 1 : 2) : next;
      if (!this.pending.slotBusy(id) && !this.outChunked.has(id)) return id;
      id = this.nextId;
    }
  }

  private enqueueOut(
    type: number,
    id: number,
    head: Uint8Array,
    data: Uint8Array,
    single: boolean,
    onDone?: () => void,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.writer.enqueue(this.outMessage(type, id, head, data, single, onDone ?? resolve, reject));
    });
  }

  private outMessage(
    type: number,
    id: number,
    head: Uint8Array,
    data: Uint8Array,
    single: boolean,
    resolve: (() => void) | undefined,
    reject: ((e: PointSubError) => void) | undefined,
  ): OutMessage {
    const p = this.peer;
    return {
      type,
      id,
      head,
      data,
      offset: 0,
      started: false,
      credit: p.streamWindow,
      chunk: frameLimit(p, chunkSizeFor(data.length)),
      single,
      resolve,
      reject,
    };
  }

  /** Writes a message body (REQ or RES) that the connection tracks itself. */
  private writeBody(type: number, id: number, head: Uint8Array, data: Uint8Array, onDone?: () => void): void {
    if (head.length + data.length <= this.msgSingleMax) {
      if (this.writer.trySendNow(type, id, head, data)) {
        onDone?.();
        return;
      }
      this.writer.enqueue(this.outMessage(type, id, head, data, true, onDone, undefined));
      return;
    }
    this.writer.enqueue(this.outMessage(type, id, head, data, false, onDone, undefined));
  }

  private routeHead(route: string): Uint8Array {
    let head = this.routeHeads.get(route);
    if (head !== undefined) return head;
    if (typeof route !== "string" || route.length === 0) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "route must be a non-empty string");
    }
    const bytes = encoder.encode(route);
    if (bytes.length > MAX_ROUTE)
      throw new PointSubError("ERR_INVALID_ARGUMENT", `route longer than ${MAX_ROUTE} bytes`);
    head = new Uint8Array(varintLength(bytes.length) + bytes.length);
    head.set(bytes, writeVarint(head, 0, bytes.length));
    if (this.routeHeads === NO_ROUTE_HEADS) this.routeHeads = new Map();
    if (this.routeHeads.size < 1024) this.routeHeads.set(route, head);
    return head;
  }

  private startCall(call: PendingCall): void {
    call.id = this.allocId();
    call.started = true;
    this.pending.add(call);
    this.writeBody(FrameType.REQ, call.id, call.head, call.data);
  }

  /** Settles a call with an error from this side (timeout, abort) and tells the peer. */
  private abandon(call: PendingCall, err: PointSubError): void {
    if (call.settled) return;
    this.settle(call, undefined, err);
    if (call.type === FrameType.STREAM) {
      // Stops the producer, which sends CANCEL; the id waits for the receiver's final frame.
      if (call.started) this.streams_?.stopOut(call.id, err);
      return;
    }
    if (!call.started) {
      this.waiting.remove((c) => c === call);
      return;
    }
    const where = this.writer.remove(FrameType.REQ, call.id, err);
    if (where === "queued") {
      this.pending.delete(call.id);
      this.startWaiting();
      return;
    }
    // Sent (wholly or partly): the id stays reserved until the peer's final frame.
    this.sendCancel(call.id, err.code);
  }

  /**
   * Request timeouts share one timer per connection, armed for the earliest
   * deadline: no timer is created or cleared per request.
   */
  private armDeadline(deadline: number): void {
    if (deadline >= this.deadlineAt) return;
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer);
    this.deadlineAt = deadline;
    this.deadlineTimer = setTimeout(() => this.sweepDeadlines(), Math.max(0, deadline - Date.now()));
  }

  private sweepDeadlines(): void {
    this.deadlineTimer = undefined;
    this.deadlineAt = Number.POSITIVE_INFINITY;
    const now = Date.now();
    const expired: PendingCall[] = [];
    let next = Number.POSITIVE_INFINITY;
    const visit = (call: PendingCall) => {
      if (call.settled || call.deadline === 0) return;
      if (call.deadline <= now) expired.push(call);
      else if (call.deadline < next) next = call.deadline;
    };
    for (const call of this.pending.values()) visit(call);
    this.waiting.forEach(visit);
    for (const call of expired) {
      this.abandon(
        call,
        new PointSubError("ERR_TIMEOUT", `request to ${call.route} timed out after ${call.timeoutMs} ms`),
      );
    }
    if (next !== Number.POSITIVE_INFINITY) this.armDeadline(next);
  }

  private settle(call: PendingCall, data: Uint8Array | undefined, err: PointSubError | undefined): void {
    if (call.settled) return;
    call.settled = true;
    if (call.onAbort !== undefined) call.signal?.removeEventListener("abort", call.onAbort);
    if (err !== undefined) {
      this.stats_.requestsFailed++;
      this.stats_.error(err.code);
      call.reject(err);
    } else {
      this.stats_.requestsSucceeded++;
      call.resolve(data as Uint8Array);
    }
  }

  /** The peer sent the final frame for `call`: its id is free again. */
  private finishCall(call: PendingCall): void {
    this.pending.delete(call.id);
    if (call.type === FrameType.STREAM) this.streams_?.streamAnswered(call.id);
    this.startWaiting();
  }

  private startWaiting(): void {
    while (this.waiting.length !== 0 && this.pending.size < this.peer.maxConcurrentRequests) {
      const call = this.waiting.shift() as PendingCall;
      if (!call.settled && this.state_ !== "closed") this.startCall(call);
    }
  }

  private sendCancel(id: number, code: ErrorCode): void {
    const payload = new Uint8Array(CANCEL_LENGTH);
    const errno = codeInfo(code).errno;
    payload[0] = errno >> 8;
    payload[1] = errno & 0xff;
    this.writer.control(FrameType.CANCEL, 0, id, payload);
  }

  private sendGoAway(errno: number, reason: string): void {
    const text = encoder.encode(reason.slice(0, MAX_ERROR_TEXT));
    const payload = new Uint8Array(2 + text.length);
    payload[0] = errno >> 8;
    payload[1] = errno & 0xff;
    payload.set(text, 2);
    this.writer.control(FrameType.GOAWAY, 0, 0, payload);
  }

  // -------------------------------------------------------------- receiving

  private onTransportData(chunk: Uint8Array): boolean {
    if (this.state_ === "closed") return false;
    this.bytesIn += chunk.length;
    this.lastInput = Date.now();
    let kept: boolean;
    const t0 = performance.now();
    try {
      kept = this.decoderImpl.push(chunk);
    } catch (err) {
      this.fail(toPointSubError(err, "ERR_PROTOCOL"));
      return true;
    }
    // Fairness: once this peer's input took YIELD_MS of work, let timers and
    // other sockets run before reading it again (a flood of cheap or costly
    // frames from one peer must not hold the event loop for a whole burst of
    // socket reads). A busy honest connection pauses a few times a second.
    this.busyMs += performance.now() - t0;
    if (this.busyMs >= YIELD_MS && !this.yielding && (this.state_ as ConnectionState) !== "closed") {
      this.busyMs = 0;
      this.yielding = true;
      this.transport.pause();
      nextTurn(this.endYield);
    }
    // A peer that does not read what it is owed is read no further until it drains.
    const w = this.writer;
    if (!w.writable && !this.readPaused && w.answerQueued + w.controlBacklog > this.slowPeerBytes) {
      this.readPaused = true;
      this.transport.pause();
    }
    return kept;
  }

  /** Cancels the peer's unfinished messages that got no frame for `timeoutMs` (and stalled streams). */
  private checkProgress(now: number, timeoutMs: number): void {
    const floor = this.progressFloor;
    if (this.assemblies.size !== 0) {
      for (const [id, a] of this.assemblies) {
        if (a.type === FrameType.RES) continue; // this side's call: its request timeout rules
        const last = a.lastFrameAt > floor ? a.lastFrameAt : floor;
        if (now - last < timeoutMs) continue;
        this.dropAssembly(id, a);
        this.refuseIncoming(
          a.type,
          id,
          new PointSubError("ERR_TIMEOUT", `message ${id} received nothing for ${now - last} ms; cancelled`),
        );
      }
    }
    this.streams_?.checkProgress(now, timeoutMs, floor);
  }

  private readonly endYield = (): void => {
    this.yielding = false;
    if (!this.readPaused && this.state_ !== "closed") this.transport.resume();
  };

  private onTransportDrain(): void {
    this.writer.onDrain();
    if (this.state_ === "closed") return;
    const pong = this.pendingPong;
    if (pong !== undefined && this.writer.writable) {
      this.pendingPong = undefined;
      this.writer.control(FrameType.PING, Flag.ACK, 0, pong);
    }
    if (this.readPaused && this.writer.writable) {
      this.readPaused = false;
      this.lastInput = Date.now();
      this.progressFloor = this.lastInput;
      if (!this.yielding) this.transport.resume();
    }
  }

  /** @internal FrameSink */
  onPreface(minVersion: number, maxVersion: number): void {
    if (minVersion > PROTOCOL_VERSION || maxVersion < PROTOCOL_VERSION || minVersion > maxVersion) {
      throw new PointSubError(
        "ERR_VERSION",
        `peer speaks protocol versions ${minVersion}..${maxVersion}, this side speaks ${PROTOCOL_VERSION}`,
      );
    }
  }

  /**
   * @internal FrameSink: lets chunked-message bytes land directly in their
   * buffer, and a stream's data frames in buffers its reader handed back.
   */
  frameTarget(type: number, flags: number, id: number, length: number): Uint8Array | undefined {
    if (type === FrameType.STREAM) return flags === 0 ? this.streams_?.frameBuffer(id, length) : undefined;
    if ((flags & Flag.START) !== 0 || type < FrameType.MSG || type > FrameType.RES) return undefined;
    const a = this.assemblies.get(id);
    if (a === undefined || a.buf === null || a.type !== type || a.filled + length > a.total) return undefined;
    return a.buf.subarray(a.filled, a.filled + length);
  }

  /**
   * @internal FrameSink: stream data frames are taken as views of the chunks
   * they arrive in (no copy), unless the reader recycles buffers.
   */
  wantsPieces(type: number, flags: number, id: number, length: number): boolean {
    return type === FrameType.STREAM && flags === 0 && this.streams_?.wantsPieces(id, length) === true;
  }

  /** @internal FrameSink */
  onFramePieces(type: number, flags: number, id: number, pieces: Uint8Array[], length: number): void {
    if (this.state_ === "closed") return;
    this.framesIn++;
    if (type !== FrameType.STREAM || flags !== 0 || this.streams_ === undefined) {
      throw new PointSubError("ERR_PROTOCOL", `STREAM frame for unknown stream ${id}`);
    }
    this.streams_.onPieces(id, pieces, length);
  }

  /** @internal FrameSink */
  onFrame(type: number, flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    if (this.state_ === "closed") return;
    this.framesIn++;
    if (!this.helloReceived) {
      if (type !== FrameType.HELLO) throw new PointSubError("ERR_PROTOCOL", "first frame is not HELLO");
      this.onHello(buf.subarray(start, end));
      return;
    }
    if (this.authState !== 0 && type !== FrameType.PING && type !== FrameType.GOAWAY) {
      this.onAuthFrame(type, flags, buf.subarray(start, end));
      return;
    }
    switch (type) {
      case FrameType.MSG:
      case FrameType.REQ:
      case FrameType.RES:
        this.onDataFrame(type, flags, id, buf, start, end);
        return;
      case FrameType.CANCEL:
        this.onCancel(id, buf.subarray(start, end));
        return;
      case FrameType.CREDIT:
        this.onCredit(id, buf.subarray(start, end));
        return;
      case FrameType.PING:
        this.onPing(flags, buf.subarray(start, end));
        return;
      case FrameType.STREAM:
        this.streams.onFrame(flags, id, buf, start, end);
        return;
      case FrameType.GOAWAY:
        this.onGoAway(buf.subarray(start, end));
        return;
      default:
        throw new PointSubError("ERR_PROTOCOL", `${FRAME_TYPE_NAMES[type]} frame after the handshake`);
    }
  }

  private onHello(payload: Uint8Array): void {
    this.peer = decodeSettings(payload); // checks the size and every value
    const checksum = this.peer.checksum === 1 || this.local.checksum === 1;
    this.decoderImpl.checksum = checksum;
    this.writer.checksum = checksum;
    this.writer.batching = checksum;
    this.writer.batchMax = Math.min(this.peer.maxFrameSize, BATCH_MAX);
    this.msgSingleMax = this.singleLimit(0);
    this.writer.connCredit = this.peer.connectionWindow;
    this.writer.assemblyBudget = this.peer.maxAssemblyBytes;
    this.helloReceived = true;
    if (this.authenticator !== undefined) {
      // Nothing of the peer's is served before its credentials were checked.
      this.authState = AUTH_WAIT_CREDENTIALS;
      return;
    }
    if ((this.peer.features & Feature.AUTH) !== 0) {
      this.authState = AUTH_WAIT_ACK;
      this.writer.control(FrameType.AUTH, 0, 0, this.credentials);
      this.writer.flush();
      return;
    }
    this.opened();
  }

  /** Frames while authentication is pending: only AUTH (and PING, GOAWAY) are allowed. */
  private onAuthFrame(type: number, flags: number, payload: Uint8Array): void {
    const waiting = this.authState;
    if (type !== FrameType.AUTH) {
      throw new PointSubError(
        waiting === AUTH_WAIT_ACK ? "ERR_PROTOCOL" : "ERR_UNAUTHORIZED",
        `${FRAME_TYPE_NAMES[type]} frame before authentication completed`,
      );
    }
    if (waiting === AUTH_WAIT_ACK && (flags & Flag.ACK) !== 0) {
      this.authState = 0;
      this.opened();
      return;
    }
    if (waiting !== AUTH_WAIT_CREDENTIALS || (flags & Flag.ACK) !== 0) {
      throw new PointSubError("ERR_PROTOCOL", "unexpected AUTH frame");
    }
    if (payload.length > MAX_AUTH_SIZE) throw new PointSubError("ERR_PROTOCOL", "AUTH credentials too long");
    this.authState = AUTH_CHECKING;
    const credentials = payload.slice();
    const transport = this.transport;
    const info = {
      token: decoder.decode(credentials),
      remoteUrl: this.remoteUrl,
      localUrl: this.localUrl,
      peerCertificate: transport.peerCertificate?.(),
    };
    let result: unknown;
    try {
      result = (this.authenticator as Authenticator)(credentials, info);
    } catch (err) {
      this.refuseAuth(err);
      return;
    }
    Promise.resolve(result).then(
      (principal) => {
        if (this.state_ === "closed") return;
        this.principal_ = principal;
        this.authState = 0;
        this.writer.control(FrameType.AUTH, Flag.ACK, 0, EMPTY);
        this.opened();
      },
      (err: unknown) => this.refuseAuth(err),
    );
  }

  private refuseAuth(err: unknown): void {
    // The hook's own words only when it threw ERR_UNAUTHORIZED on purpose.
    const message =
      err instanceof PointSubError && err.code === "ERR_UNAUTHORIZED" ? err.message : "credentials refused";
    this.fail(new PointSubError("ERR_UNAUTHORIZED", message));
  }

  /** The handshake (and authentication) completed: the connection is usable. */
  private opened(): void {
    if (this.state_ === "closed") return;
    this.openedOnce = true;
    if (this.state_ === "handshaking") this.state_ = "open";
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    this.startKeepAlive();
    this.onOpenHook?.(this);
    this.emit("open");
    this.readyD.resolve();
  }

  private isMine(id: number): boolean {
    return (id & 1) === this.myParity;
  }

  private onDataFrame(type: number, flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    const len = end - start;
    this.connectionFlow(len);
    if (type === FrameType.MSG && flags === (Flag.START | Flag.END)) {
      // Fast path: a whole one-way message in one frame.
      if ((id & 1) === this.myParity)
        throw new PointSubError("ERR_PROTOCOL", `MSG on stream ${id} has this side's parity`);
      if (this.assemblies.size !== 0 && this.assemblies.has(id)) {
        throw new PointSubError("ERR_PROTOCOL", `stream ${id} started twice`);
      }
      if (len > this.local.maxMessageSize) this.checkIncomingSize(len);
      this.stats_.received(len);
      this.deliverMessage(buf.subarray(start, end));
      return;
    }
    this.onDataFrameSlow(type, flags, id, buf, start, end);
  }

  /** Counts a data frame against the connection window; returns credit in quarter-window steps. */
  private connectionFlow(len: number): void {
    this.recvUsed += len;
    if (this.recvUsed > this.local.connectionWindow) {
      throw new PointSubError("ERR_FLOW_CONTROL", "peer exceeded the connection window");
    }
    this.recvUnacked += len;
    if (this.recvUnacked >= this.creditThreshold) {
      this.sendCredit(0, this.recvUnacked);
      this.recvUsed -= this.recvUnacked;
      this.recvUnacked = 0;
    }
  }

  private onDataFrameSlow(type: number, flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    if ((type === FrameType.RES) !== this.isMine(id)) {
      throw new PointSubError(
        "ERR_PROTOCOL",
        `stream id ${id} has the wrong parity for ${type === FrameType.RES ? "RES" : "MSG/REQ"}`,
      );
    }
    if ((flags & Flag.START) !== 0) this.onStart(type, flags, id, buf, start, end);
    else this.onContinuation(type, flags, id, buf, start, end);
  }

  private onStart(type: number, flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    if (
      (this.assemblies.size !== 0 && this.assemblies.has(id)) ||
      this.streams_?.hasIn(id) === true ||
      (type === FrameType.REQ && this.serving.size !== 0 && this.serving.get(id) !== undefined)
    )
      throw new PointSubError("ERR_PROTOCOL", `stream ${id} started twice`);
    // A new message on an id this side refused: the peer has moved on.
    if (this.tombstones !== undefined) this.tombstones.delete(id);
    const single = (flags & Flag.END) !== 0;
    const v = this.v;
    let p = start;
    let total = -1;
    if (!single) {
      if (readVarint(buf, p, end, 8, v) !== 1) throw new PointSubError("ERR_PROTOCOL", "bad message length");
      total = v.value;
      p = v.next;
      this.checkIncomingSize(total);
    }
    let route = "";
    let status = Status.OK as number;
    let call: PendingCall | undefined;
    if (type === FrameType.REQ) {
      if (readVarint(buf, p, end, 2, v) !== 1 || v.value === 0 || v.value > MAX_ROUTE) {
        throw new PointSubError("ERR_PROTOCOL", "bad route length");
      }
      const routeEnd = v.next + v.value;
      if (routeEnd > end) throw new PointSubError("ERR_PROTOCOL", "route runs past the frame");
      route = this.decodeRoute(buf, v.next, routeEnd);
      p = routeEnd;
      if (++this.openRequests > this.local.maxConcurrentRequests) {
        throw new PointSubError("ERR_TOO_MANY_REQUESTS", "peer exceeded maxConcurrentRequests");
      }
    } else if (type === FrameType.RES) {
      call = this.pending.get(id);
      if (call === undefined) throw new PointSubError("ERR_PROTOCOL", `response for unknown request ${id}`);
      if (p >= end) throw new PointSubError("ERR_PROTOCOL", "response without status");
      status = buf[p++];
      if (status !== Status.OK && status !== Status.ERROR)
        throw new PointSubError("ERR_PROTOCOL", `bad status ${status}`);
      if (status === Status.ERROR) {
        if (!single) throw new PointSubError("ERR_PROTOCOL", "error response must be one frame");
        const err = this.decodeErrorBody(buf.subarray(p, end), 0);
        this.finishCall(call);
        this.settle(call, undefined, err);
        return;
      }
    }
    const data = buf.subarray(p, end);
    if (single) {
      this.checkIncomingSize(data.length);
      this.deliver(type, id, route, data, call);
      return;
    }
    if (data.length > total) throw new PointSubError("ERR_PROTOCOL", "first chunk larger than the message");
    let discard = call?.settled === true;
    if (!discard) {
      if (this.assemblyBytes + total > this.local.maxAssemblyBytes) {
        throw new PointSubError("ERR_FLOW_CONTROL", "peer exceeded maxAssemblyBytes with unfinished messages");
      }
      const tooMany = this.assemblies.size >= MAX_OPEN_ASSEMBLIES;
      if (tooMany || !this.budget.tryCharge(total + ASSEMBLY_OVERHEAD)) {
        const err = tooMany
          ? new PointSubError("ERR_OVERLOADED", `more than ${MAX_OPEN_ASSEMBLIES} unfinished messages; retry later`)
          : this.overloaded(total);
        if (call === undefined) {
          this.refuseIncoming(type, id, err);
          return;
        }
        // The response to this side's own call: give up on it, tell the
        // responder, and absorb the rest of it without storing.
        this.settle(call, undefined, err);
        this.sendCancel(id, err.code);
        discard = true;
      } else {
        this.assemblyBytes += total;
      }
    }
    let target: Uint8Array | null = null;
    if (!discard) {
      try {
        // Delivered only once all `total` bytes were written into it.
        target = allocateUninitialized(total);
      } catch (cause) {
        throw new PointSubError("ERR_MESSAGE_TOO_LARGE", `cannot allocate ${total} bytes`, { cause });
      }
      target.set(data, 0);
    }
    const a: Assembly = {
      type,
      total,
      buf: target,
      filled: data.length,
      route,
      status,
      streamUsed: end - start,
      streamUnacked: end - start,
      charged: discard ? 0 : total + ASSEMBLY_OVERHEAD,
      lastFrameAt: this.lastInput,
    };
    if (this.assemblies === NO_ASSEMBLIES) this.assemblies = new Map();
    this.assemblies.set(id, a);
    this.streamCredit(id, a);
  }

  private onContinuation(type: number, flags: number, id: number, buf: Uint8Array, start: number, end: number): void {
    const a = this.assemblies.get(id);
    if (a === undefined || a.type !== type) {
      if (a === undefined && this.tombstones?.has(id) === true) {
        // A refused message's frames still in flight: dropped (connection credit was counted).
        if ((flags & Flag.END) !== 0) this.tombstones.delete(id);
        return;
      }
      throw new PointSubError("ERR_PROTOCOL", `continuation of unknown stream ${id}`);
    }
    a.lastFrameAt = this.lastInput;
    const len = end - start;
    if (a.filled + len > a.total) throw new PointSubError("ERR_PROTOCOL", `stream ${id} overruns its declared length`);
    a.streamUsed += len;
    if (a.streamUsed > this.local.streamWindow)
      throw new PointSubError("ERR_FLOW_CONTROL", `peer exceeded the window of stream ${id}`);
    a.streamUnacked += len;
    if (a.buf !== null) {
      const inPlace = buf.buffer === a.buf.buffer && buf.byteOffset + start === a.buf.byteOffset + a.filled;
      if (!inPlace) a.buf.set(buf.subarray(start, end), a.filled);
    }
    a.filled += len;
    if ((flags & Flag.END) === 0) {
      this.streamCredit(id, a);
      return;
    }
    if (a.filled !== a.total)
      throw new PointSubError("ERR_PROTOCOL", `stream ${id} ended short of its declared length`);
    this.assemblies.delete(id);
    if (a.buf === null) {
      // Discarded response of a call already settled: its id is free now.
      const call = this.pending.get(id);
      if (call !== undefined) this.finishCall(call);
      return;
    }
    this.assemblyBytes -= a.total;
    this.deliver(type, id, a.route, a.buf, type === FrameType.RES ? this.pending.get(id) : undefined, a.charged);
  }

  private overloaded(size: number): PointSubError {
    const b = this.budget;
    return new PointSubError(
      "ERR_OVERLOADED",
      `no memory budget for ${size} more bytes (${b.used} of ${b.limit} in use); retry later`,
    );
  }

  /**
   * Refuses the peer's message or request `id` (CANCEL with `err`'s errno);
   * its frames still in flight are dropped.
   */
  private refuseIncoming(type: number, id: number, err: PointSubError): void {
    if (type === FrameType.REQ) this.openRequests--;
    this.stats_.error(err.code);
    this.sendCancel(id, err.code);
    this.tombstones ??= new Set();
    if (this.tombstones.size >= MAX_TOMBSTONES) {
      const oldest = this.tombstones.values().next().value as number;
      this.tombstones.delete(oldest);
    }
    this.tombstones.add(id);
  }

  /** Removes the peer's unfinished message `id` and returns what it held of the budget. */
  private dropAssembly(id: number, a: Assembly): void {
    this.assemblies.delete(id);
    if (a.buf === null) return;
    this.assemblyBytes -= a.total;
    this.budget.release(a.charged);
    a.charged = 0;
  }

  /** Returns what a request held of the budget while its handler ran. */
  private releaseCall(call: ServerCall): void {
    if (call.charged !== 0) {
      this.budget.release(call.charged);
      call.charged = 0;
    }
  }

  private streamCredit(id: number, a: Assembly): void {
    if (a.streamUnacked >= this.local.streamWindow >>> 2) {
      this.sendCredit(id, a.streamUnacked);
      a.streamUsed -= a.streamUnacked;
      a.streamUnacked = 0;
    }
  }

  private sendCredit(id: number, n: number): void {
    const payload = new Uint8Array(varintLength(n));
    writeVarint(payload, 0, n);
    this.writer.control(FrameType.CREDIT, 0, id, payload);
    // Credit unblocks the peer: send it now rather than at the end of the turn.
    this.writer.flush();
  }

  private checkIncomingSize(total: number): void {
    if (total > this.local.maxMessageSize) {
      throw new PointSubError(
        "ERR_MESSAGE_TOO_LARGE",
        `peer declared a message of ${total} bytes, over maxMessageSize ${this.local.maxMessageSize}`,
      );
    }
  }

  private decodeRoute(payload: Uint8Array, start: number, end: number): string {
    const last = this.lastRouteBytes;
    const n = end - start;
    if (last.length === n) {
      let same = true;
      for (let i = 0; i < n; i++) {
        if (last[i] !== payload[start + i]) {
          same = false;
          break;
        }
      }
      if (same) return this.lastRoute;
    }
    this.lastRouteBytes = payload.slice(start, end);
    this.lastRoute = decoder.decode(this.lastRouteBytes);
    return this.lastRoute;
  }

  private decodeErrorBody(payload: Uint8Array, p: number): PointSubError {
    const v = this.v;
    if (p + 2 > payload.length) throw new PointSubError("ERR_PROTOCOL", "error response too short");
    const errno = (payload[p] << 8) | payload[p + 1];
    p += 2;
    const readText = (): string => {
      if (readVarint(payload, p, payload.length, 2, v) !== 1 || v.next + v.value > payload.length) {
        throw new PointSubError("ERR_PROTOCOL", "bad error response text");
      }
      const s = decoder.decode(payload.subarray(v.next, v.next + v.value));
      p = v.next + v.value;
      return s;
    };
    readText(); // the code string; errno is authoritative for known codes
    const message = readText();
    const code = codeForErrno(errno) ?? "ERR_HANDLER";
    return new PointSubError(code, message);
  }

  private deliverMessage(data: Uint8Array): void {
    const msg = new IncomingMessage(data);
    try {
      this.onMessageHook?.(msg, this);
      this.emit("message", msg);
    } catch (err) {
      // A throwing listener is the application's bug: surface it, keep the connection.
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  /**
   * Hands a complete message on. `charged` is what its assembly held of the
   * budget (-1 for a single frame): a request keeps it while its handler
   * runs; anything else returns it now.
   */
  private deliver(
    type: number,
    id: number,
    route: string,
    data: Uint8Array,
    call: PendingCall | undefined,
    charged = -1,
  ): void {
    this.stats_.received(data.length);
    if (type === FrameType.REQ) {
      this.handleRequest(id, route, data, charged);
      return;
    }
    if (charged > 0) this.budget.release(charged);
    if (type === FrameType.MSG) {
      this.deliverMessage(data);
      return;
    }
    const c = call as PendingCall;
    this.finishCall(c);
    this.settle(c, data, undefined);
  }

  private handleRequest(id: number, route: string, data: Uint8Array, charged: number): void {
    this.stats_.requestsHandled++;
    const handler =
      this.routes.get(route) ??
      this.sharedRoutes?.get(route) ??
      (route === RESUME_ROUTE ? this.streams.resumeHandler : undefined);
    if (handler === undefined) {
      if (charged > 0) this.budget.release(charged);
      // No PointSubError (and its stack trace) per refused request: just the answer.
      this.respondError(id, "ERR_NO_ROUTE", `no handler for route ${route}`);
      return;
    }
    // The body stays charged to the budget while the handler may hold it.
    if (charged < 0) {
      charged = data.length + CALL_OVERHEAD;
      if (!this.budget.tryCharge(charged)) {
        const e = this.overloaded(charged);
        this.respondError(id, e.code, e.message);
        return;
      }
    }
    // One object is both the request and its context: one allocation per call.
    const call = new ServerCall(this, route, id, data);
    call.charged = charged;
    let result: HandlerResult | Promise<HandlerResult>;
    try {
      result = handler(call, call);
    } catch (err) {
      this.finishHandler(call, undefined, err, true);
      return;
    }
    if (
      result !== null &&
      typeof result === "object" &&
      typeof (result as Promise<HandlerResult>).then === "function"
    ) {
      // Only a call still running can be cancelled: track it from here.
      this.serving.add(call);
      (result as Promise<HandlerResult>).then(
        (value) => this.finishHandler(call, value, undefined, false),
        (err) => this.finishHandler(call, undefined, err, true),
      );
    } else {
      this.finishHandler(call, result as HandlerResult, undefined, false);
    }
  }

  private finishHandler(call: ServerCall, value: HandlerResult, err: unknown, failed: boolean): void {
    if (call.done) {
      this.releaseCall(call);
      return; // cancelled, or the connection closed
    }
    call.done = true;
    if (failed) {
      this.releaseCall(call);
      const e =
        err instanceof PointSubError
          ? err
          : new PointSubError(
              "ERR_HANDLER",
              `handler for ${call.route} failed: ${err instanceof Error ? err.message : String(err)}`,
            );
      this.serving.delete(call.id);
      this.respondError(call.id, e.code, e.message);
      return;
    }
    let data: Uint8Array;
    try {
      data = value === undefined ? EMPTY : toBytes(value, "handler result");
    } catch (e) {
      this.releaseCall(call);
      this.serving.delete(call.id);
      const pe = e as PointSubError;
      this.respondError(call.id, pe.code, pe.message);
      return;
    }
    if (data.length > this.peer.maxMessageSize) {
      this.releaseCall(call);
      this.serving.delete(call.id);
      this.respondError(
        call.id,
        "ERR_MESSAGE_TOO_LARGE",
        `response of ${data.length} bytes exceeds the caller's maxMessageSize`,
      );
      return;
    }
    this.stats_.sent(data.length);
    if (data.length <= this.msgSingleMax - 1 && this.writer.trySendNow(FrameType.RES, call.id, OK_HEAD, data)) {
      this.releaseCall(call);
      this.serving.delete(call.id);
      this.openRequests--;
      return;
    }
    // Queued: the request's charge stays (plus the answer, when it is other
    // memory) until the answer is handed to the transport, so answers a peer
    // does not take (no credit, no reading) count against the budget.
    if (data.length !== 0 && data.buffer !== call.data.buffer) {
      this.budget.force(data.length);
      call.charged += data.length;
    }
    this.serving.add(call);
    this.writeBody(FrameType.RES, call.id, OK_HEAD, data, () => {
      this.releaseCall(call);
      this.serving.delete(call.id);
      this.openRequests--;
    });
  }

  private respondError(id: number, errCode: ErrorCode, message: string): void {
    this.stats_.error(errCode);
    const code = encoder.encode(errCode);
    const text = encoder.encode(message.slice(0, MAX_ERROR_TEXT));
    const errno = codeInfo(errCode).errno;
    const head = new Uint8Array(
      1 + 2 + varintLength(code.length) + code.length + varintLength(text.length) + text.length,
    );
    head[0] = Status.ERROR;
    head[1] = errno >> 8;
    head[2] = errno & 0xff;
    let p = writeVarint(head, 3, code.length);
    head.set(code, p);
    p = writeVarint(head, p + code.length, text.length);
    head.set(text, p);
    // The request stays open (counted against maxConcurrentRequests) until
    // its answer is handed to the transport: a peer that does not read can
    // make this side hold at most that many answers.
    this.writeBody(FrameType.RES, id, head, EMPTY, this.closeRequest);
  }

  private readonly closeRequest = (): void => {
    this.openRequests--;
  };

  private onCancel(id: number, payload: Uint8Array): void {
    if (payload.length !== CANCEL_LENGTH) throw new PointSubError("ERR_PROTOCOL", "CANCEL payload must be 2 bytes");
    const errno = (payload[0] << 8) | payload[1];
    const code = codeForErrno(errno) ?? "ERR_CANCELLED";
    if (this.isMine(id)) {
      // About one of my requests: the peer's final word on it.
      const call = this.pending.get(id);
      const kept = code === "ERR_TIMEOUT" || code === "ERR_OVERLOADED" || code === "ERR_GOING_AWAY";
      if (call === undefined) {
        // A chunked one-way message the receiver refused: stop sending it, reject its send.
        this.writer.remove(
          FrameType.MSG,
          id,
          new PointSubError(kept ? code : "ERR_CANCELLED", "message refused by the peer"),
        );
        return;
      }
      const a = this.assemblies.get(id);
      if (a !== undefined) this.dropAssembly(id, a);
      const err = new PointSubError(kept ? code : "ERR_CANCELLED", `request to ${call.route} cancelled by the peer`);
      if (call.type === FrameType.REQ) this.writer.remove(FrameType.REQ, id, err);
      this.finishCall(call);
      this.settle(call, undefined, err);
      return;
    }
    if (this.streams_?.onCancel(id, errno) === true) return;
    // About the peer's MSG or REQ.
    const reason = new PointSubError(
      code === "ERR_TIMEOUT" ? "ERR_TIMEOUT" : "ERR_CANCELLED",
      "cancelled by the caller",
    );
    const a = this.assemblies.get(id);
    if (a !== undefined) {
      this.dropAssembly(id, a);
      if (a.type === FrameType.REQ) {
        this.openRequests--;
        this.sendCancel(id, reason.code);
      }
      return;
    }
    const call = this.serving.get(id);
    if (call === undefined) return; // already answered: our RES ends it
    this.serving.delete(id);
    this.releaseCall(call);
    call.done = true;
    call.abort(reason);
    this.writer.remove(FrameType.RES, id, reason);
    this.openRequests--;
    this.sendCancel(id, reason.code);
  }

  private onCredit(id: number, payload: Uint8Array): void {
    const v = this.v;
    if (readVarint(payload, 0, payload.length, 5, v) !== 1 || v.next !== payload.length || v.value === 0) {
      throw new PointSubError("ERR_PROTOCOL", "bad CREDIT");
    }
    if (id === 0) {
      if (this.writer.connCredit + v.value > 2 ** 31 - 1)
        throw new PointSubError("ERR_FLOW_CONTROL", "connection credit overflow");
      this.writer.addConnCredit(v.value);
    } else {
      this.writer.addStreamCredit(id, v.value);
      this.streams_?.onAck(id, v.value);
    }
  }

  private onPing(flags: number, payload: Uint8Array): void {
    if (payload.length !== PING_LENGTH) throw new PointSubError("ERR_PROTOCOL", "PING payload must be 8 bytes");
    if ((flags & Flag.ACK) === 0) {
      // While the transport cannot take more, only the latest PING is
      // answered (on drain): a flood of PINGs from a peer that does not read
      // costs one frame, not one per PING.
      if (this.writer.writable) this.writer.control(FrameType.PING, Flag.ACK, 0, payload.slice());
      else this.pendingPong = payload.slice();
      return;
    }
    const seq = new DataView(payload.buffer, payload.byteOffset, 8).getFloat64(0);
    const p = this.pings.get(seq);
    if (p === undefined) return;
    this.pings.delete(seq);
    p.d.resolve(performance.now() - p.start);
  }

  private onGoAway(payload: Uint8Array): void {
    if (payload.length < 2) throw new PointSubError("ERR_PROTOCOL", "GOAWAY too short");
    const errno = (payload[0] << 8) | payload[1];
    const reason = decoder.decode(payload.subarray(2));
    if (errno !== 0) {
      const code = codeForErrno(errno) ?? "ERR_PROTOCOL";
      const err = new PointSubError(code, `peer closed the connection: ${reason}`);
      this.stats_.error(code);
      this.transport.destroy();
      this.teardown(err);
      return;
    }
    this.peerGoAway = true;
    if (this.state_ === "open") {
      this.emit("goaway");
      void this.close();
    }
  }

  // -------------------------------------------------------------- lifecycle

  /**
   * One interval per connection for everything periodic: keepalive pings,
   * releasing idle buffers, and closing a connection whose peer stopped
   * taking what it is sent. Its period is half the shortest of those times.
   */
  private startKeepAlive(): void {
    const ms = this.keepAliveMs;
    const slow = this.slowPeerTimeoutMs;
    let period = Number.POSITIVE_INFINITY;
    if (ms > 0) period = ms >>> 1;
    if (slow > 0) period = Math.min(period, slow >>> 2);
    if (this.progressTimeoutMs > 0) period = Math.min(period, this.progressTimeoutMs >>> 2);
    if (period === Number.POSITIVE_INFINITY) return;
    this.keepAliveTimer = setInterval(() => this.housekeeping(), Math.max(10, period));
    (this.keepAliveTimer as { unref?: () => void }).unref?.();
  }

  private housekeeping(): void {
    const now = Date.now();
    const slow = this.slowPeerTimeoutMs;
    const blocked = this.writer.blockedSince;
    if (slow > 0 && blocked !== 0 && now - blocked >= slow) {
      this.fail(
        new PointSubError(
          "ERR_SLOW_PEER",
          `${this.remoteUrl} took nothing this side sent for ${now - blocked} ms (slowPeerTimeoutMs ${slow})`,
        ),
      );
      return;
    }
    const pt = this.progressTimeoutMs;
    if (pt > 0 && !this.readPaused) {
      this.checkProgress(now, pt);
      if (this.state_ === "closed") return;
    }
    const ms = this.keepAliveMs;
    // While reading is paused nothing can arrive: the slow-peer timeout rules.
    if (ms <= 0 || this.readPaused) return;
    const idle = now - this.lastInput;
    if (now - this.lastOutput >= ms) this.writer.trim();
    // No input for a tick: let the transport drop its bulk read buffer.
    if (idle >= ms >>> 1) this.transport.trim?.();
    if (this.keepAlivePingAt !== 0 && idle >= ms * 2) {
      this.fail(new PointSubError("ERR_KEEPALIVE", `no bytes from ${this.remoteUrl} for ${idle} ms`));
      return;
    }
    if (idle >= ms) {
      this.keepAlivePingAt = now;
      this.ping({ timeoutMs: 0 }).then(
        () => {
          this.keepAlivePingAt = 0;
        },
        () => {},
      );
    }
  }

  private async drainAndEnd(): Promise<void> {
    const deadline = Date.now() + this.closeTimeoutMs;
    while (
      this.state_ !== "closed" &&
      Date.now() < deadline &&
      (this.pending.size !== 0 ||
        this.waiting.length !== 0 ||
        this.serving.size !== 0 ||
        this.writer.pending !== 0 ||
        // The peer's messages and requests whose bodies are still arriving
        // are in flight too (a request counts from its START).
        this.assemblies.size !== 0 ||
        this.streams_?.busy === true ||
        // Until the peer's own GOAWAY arrived, a START it sent before it
        // saw ours may still be on its way (the byte stream is ordered).
        !this.peerGoAway)
    ) {
      await new Promise((r) => setTimeout(r, 5));
    }
    if (this.state_ === "closed") return;
    this.writer.flush();
    this.transport.end();
    const t = setTimeout(() => this.destroy(), Math.max(100, deadline - Date.now()));
    await this.closed;
    clearTimeout(t);
  }

  /** A fatal error on this side: tell the peer, close, fail everything with `err`. */
  private fail(err: PointSubError): void {
    if (this.state_ === "closed") return;
    this.stats_.error(err.code);
    this.sendGoAway(err.errno, err.message);
    this.writer.flush();
    this.transport.end();
    const t = setTimeout(() => this.transport.destroy(), 1000);
    (t as { unref?: () => void }).unref?.();
    this.teardown(err);
  }

  private onTransportClose(error?: Error): void {
    if (this.state_ === "closed") return;
    const graceful = this.state_ === "closing" && this.decoderImpl.idle;
    this.teardown(
      graceful
        ? undefined
        : new PointSubError("ERR_CONNECTION_CLOSED", `connection to ${this.remoteUrl} closed`, { cause: error }),
    );
  }

  private teardown(error: PointSubError | undefined): void {
    if (this.state_ === "closed") return;
    this.state_ = "closed";
    this.closeError = error;
    clearTimeout(this.handshakeTimer);
    if (this.keepAliveTimer !== undefined) clearInterval(this.keepAliveTimer);
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer);
    const failure = error ?? new PointSubError("ERR_CONNECTION_CLOSED", "connection closed");
    this.writer.close(failure);
    for (const call of this.pending.values()) this.settle(call, undefined, failure);
    this.pending.clear();
    for (const call of this.waiting.drain()) this.settle(call, undefined, failure);
    for (const call of this.serving.values()) {
      this.releaseCall(call);
      call.done = true;
      call.abort(failure);
    }
    this.serving.clear();
    for (const [id, a] of this.assemblies) this.dropAssembly(id, a);
    this.assemblyBytes = 0;
    for (const p of this.pings.values()) p.d.reject(failure);
    this.pings.clear();
    this.streams_?.teardown(failure);
    if (!this.openedOnce) this.readyD.reject(failure);
    this.onCloseHook?.(this, error);
    this.emit("close", error);
    this.closedD?.resolve();
  }
}

const OK_HEAD = new Uint8Array([Status.OK]);
