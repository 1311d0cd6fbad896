/**
 * The public face of the protocol engine: one pointsub connection over one
 * transport. It wires the engine's parts together and routes each frame to
 * the part that handles it:
 *
 * | frame                    | handled in                                   |
 * | ------------------------ | -------------------------------------------- |
 * | preface, HELLO, AUTH     | `handshake.ts`                               |
 * | MSG, REQ, RES            | `inbound.ts` → `dispatch.ts` / `caller.ts`   |
 * | STREAM                   | `stream-in.ts` (theirs), `stream-out.ts` (ours) |
 * | CANCEL, CREDIT, PING, GOAWAY | here (`onCancel`, `onCredit`, ...)       |
 * | BATCH                    | unpacked by the decoder (`codec/base-decoder.ts`) |
 *
 * Output goes through `outbox.ts` (ids, chunking, control frames) to the
 * frame writer (`writer.ts`).
 */
import { BaseDecoder } from "../codec/base-decoder.ts";
import { FEATURE_RESUME, T_MSG } from "../codec/frame.ts";
import type { ResumePoint } from "../codec/resume.ts";
import type { Settings } from "../codec/settings.ts";
import { codeForErrno } from "../errors/codes.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import { badOptions, checkOptions } from "../errors/options.ts";
import { checkFunction, checkRoute } from "../router/check.ts";
import type { Router } from "../router/router.ts";
import type { Middleware, ResumeLookup } from "../router/types.ts";
import { createRuntime, type Runtime } from "../runtime/runtime.ts";
import { Transfer } from "../stream/transfer.ts";
import type { SendStreamOptions, StreamHandler, StreamSource } from "../stream/types.ts";
import type { Progress } from "../transfer/progress.ts";
import { newTransferId } from "../transfer/transfer-id.ts";
import type { PeerCertificate, Transport, TransportHandlers } from "../transport/transport.ts";
import { Emitter } from "../util/emitter.ts";
import { handledRejection } from "../util/handled-rejection.ts";
import type { Ticker } from "../util/ticker.ts";
import { MemoryBudget } from "./budget.ts";
import { badTimeout, Caller, tooLarge } from "./caller.ts";
import type { Dispatcher } from "./dispatch.ts";
import { DispatchShell, dispatcherClass, emptyRouter, routerClass, toBytes } from "./dispatch-lazy.ts";
import { type FrameHooks, FrameRouter } from "./frames.ts";
import { greeting, Handshake, type HandshakePort } from "./handshake.ts";
import type { Housekeeper } from "./housekeeping.ts";
import { HousekeeperShell, housekeeperClass, loadHousekeeper } from "./housekeeping-lazy.ts";
import { Inbound, inputTime } from "./inbound.ts";
import { LateProgress } from "./late-progress.ts";
import { budgetLimit, Link, resolveSettings } from "./link.ts";
import { checkConnectionOptions } from "./options.ts";
import { Outbox } from "./outbox.ts";
import type { Pacer } from "./pacer.ts";
import { publisherFor } from "./publisher.ts";
import { ReadGate, type ReadGateHost } from "./read-gate.ts";
import { Stats, type StatsSnapshot } from "./stats.ts";
import { loadStreamEngine, type StreamEngine, streamEngine } from "./stream-engine.ts";
import type { IncomingStreams } from "./stream-in.ts";
import type { OutgoingStreams } from "./stream-out.ts";
import type {
  AuthInfo,
  CloseOptions,
  ConnectionEvents,
  ConnectionInfo,
  ConnectionInit,
  ConnectionOptions,
  ConnectionState,
  Handler,
  Payload,
  RequestOptions,
} from "./types.ts";
import { FrameWriter, type WriterSink } from "./writer.ts";

export { RESUME_ROUTE } from "../codec/frame.ts";
export type { ResumePoint } from "../codec/resume.ts";
export type { ResumeContext, ResumeLookup, StreamRoute } from "../router/types.ts";
// What `listeners()` and `on()` of a connection name: the entry points export them from here (util/ is not theirs to import).
export type { EventMap, Listener } from "../util/emitter.ts";
export { budgetLimit, resolveSettings } from "./link.ts";
export type { ConnectionEvents, ConnectionInit, ConnectionState } from "./types.ts";

const EMPTY = new Uint8Array(0);
const RESOLVED: Promise<void> = Promise.resolve();
const noop = () => {};
const NO_OPTIONS: RequestOptions = Object.freeze({});
/** Largest BATCH payload this side writes. */
const BATCH_MAX = 16 * 1024;
let portable: Runtime | undefined;
/** The runtime of a connection built without one (tests): no codecs, pure-JS CRC32C. */
function portableRuntime(): Runtime {
  portable ??= createRuntime({ name: "portable" });
  return portable;
}

/** The graceful close's wait, loaded on the first close (not in a page's first load). */
let drainModule: Promise<typeof import("./drain.ts")> | undefined;
function loadDrain(): Promise<typeof import("./drain.ts")> {
  drainModule ??= import("./drain.ts").catch((err: unknown) => {
    drainModule = undefined; // imported again by the next close (a browser remembers the failure: fails at once)
    throw err;
  });
  return drainModule;
}

/** A ping without its answer after `ms`. */
const pingTimeout = (ms: number) =>
  new PointSubError("ERR_TIMEOUT", `ping timed out after ${ms} ms`, { phase: "ping" });

/** Characters of a peer's GOAWAY reason kept (in errors and `closeReason`). */
const MAX_REASON = 256;
/** Ids of connections made without one (clients); a server numbers its sessions itself. */
let nextConnectionId = 1;
/** When this module loaded: connections keep their `connectedAt` relative to it (see `connectedRel`). */
const T0 = Date.now();

/**
 * What every connection built with the same options by the same server
 * shares: one object the connection points at (a server makes it once,
 * `ConnectionInit.shared`; never modified).
 */
export interface ConnectionShared {
  readonly runtime: Runtime;
  /** What the peer may make this side hold (shared by a server's sessions). */
  readonly budget: MemoryBudget;
  /** A server's shared ticker for housekeeping (undefined: the housekeeper makes its own). */
  readonly ticker: Ticker | undefined;
  /** A server's router: the parent of a connection's own. */
  readonly router: Router | undefined;
  readonly onOpen: ConnectionInit["onOpen"];
  readonly onClose: ConnectionInit["onClose"];
  readonly requestTimeoutMs: number;
  readonly closeTimeoutMs: number;
  /** requestBytesPerSecond, for the caller. */
  readonly bytesPerSecond: number;
  /** handshakeTimeoutMs. */
  readonly handshakeMs: number;
  /** progressTimeoutMs (housekeeping applies it; a stream's answer deadline after END is at least this, `stream-out.ts`). */
  readonly progressTimeoutMs: number;
}

/** @internal The {@link ConnectionShared} of `options` and `init` (a server's: once for all its sessions). */
export function connectionShared(
  options: ConnectionOptions,
  init: ConnectionInit,
  runtime: Runtime,
  budget: MemoryBudget,
): ConnectionShared {
  return {
    runtime,
    budget,
    ticker: init.ticker,
    router: init.router,
    onOpen: init.onOpen,
    onClose: init.onClose,
    requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
    closeTimeoutMs: options.closeTimeoutMs ?? 5_000,
    bytesPerSecond: options.requestBytesPerSecond ?? 10 * 1024 * 1024,
    handshakeMs: options.handshakeTimeoutMs ?? 10_000,
    progressTimeoutMs: options.progressTimeoutMs ?? 60_000,
  };
}

/** A connection's lifecycle state beyond `state` ({@link Connection.life}): made when first needed. */
interface Life {
  /** Settles `ready`: made when someone first asks for `ready` during the handshake (most server sessions never do). */
  readyD?: PromiseWithResolvers<void> | undefined;
  /** `ready` while the handshake runs (once asked for), and once it failed. */
  ready?: Promise<void> | undefined;
  /** Created when someone first waits for the close. */
  closedD?: PromiseWithResolvers<void> | undefined;
  closeError?: PointSubError | undefined;
  closePromise?: Promise<void> | undefined;
  handshakeTimer?: ReturnType<typeof setTimeout> | undefined;
  /** After a fatal error: destroys a transport whose peer has not closed within a second (cleared when it closes). */
  destroyTimer?: ReturnType<typeof setTimeout> | undefined;
  closeReason: string;
}

/**
 * One pointsub connection over one transport: multiplexed one-way messages
 * of any size, request/response calls in both directions, streams, flow
 * control, ping and graceful close. Obtain one from `connect()` or as a
 * server session.
 */
export class Connection extends Emitter<ConnectionEvents> {
  /** This connection's id: a server's session id (unique within that server), or a process-wide number on a client. */
  declare readonly id: string;
  /** @internal Set by drain.ts while a graceful close waits: brings its deadline forward to `ms` from now. */
  declare cut: ((ms: number | undefined) => void) | undefined;
  /**
   * `connectedAt` less the time this module loaded: a small integer (no
   * number box per connection) for the first 24 days of a process.
   */
  declare private readonly connectedRel: number;

  declare private readonly transport: Transport;
  /** What every connection built with the same options and server shares (one object, made once per server and never written: not ten fields each). */
  declare private readonly shared: ConnectionShared;
  declare private readonly link: Link;
  declare private readonly readGate: ReadGate;
  /** The connection has its own router (in front of the server's, `shared.router`), or will have once loaded. */
  private ownRouter = false;
  /** A `FrameDecoder` when the stream engine is loaded (always in Node), else the browser's first `BaseDecoder`. */
  declare private readonly decoderImpl: BaseDecoder;
  declare private readonly frames: FrameRouter;
  declare private readonly writer: FrameWriter;
  /** Counters, and the diagnostics publisher (`stats_.diag`). */
  declare private readonly stats_: Stats;
  /** The handshake until it completed (dropped then: an open connection keeps only its result). */
  declare private handshake: Handshake | undefined;
  private principal_: unknown;
  /** This side's calls, created with the first: a server's sessions mostly never call their peer. */
  private caller_: Caller | undefined;
  declare private readonly outbox: Outbox;
  /** Serves the peer's requests; a {@link DispatchShell} until that code is loaded (a browser's connection). */
  private dispatcher: Dispatcher;
  /** @internal The peer's messages, and this side's calls (`inbound.caller`: a graceful close refuses those not sent, `drain.ts`). */
  declare readonly inbound: Inbound;
  /** The stream halves, created on first use: most connections never stream. */
  private outStreams_: OutgoingStreams | undefined;
  private inStreams_: IncomingStreams | undefined;
  private state_: ConnectionState = "handshaking";
  /** The handshake completed (and authentication, when required). */
  private openedOnce = false;
  /** The peer's GOAWAY(0) arrived: it starts nothing new after it. */
  private peerGoAway = false;
  /**
   * The handshake's timer, `ready`'s promise, the close's: made when first
   * needed (an open server session that nobody waits on has none).
   */
  private life: Life | undefined;
  /** A {@link HousekeeperShell} until housekeeping is loaded (a browser's connection). */
  declare private housekeeper: Housekeeper | HousekeeperShell;
  /** @internal Bytes received (housekeeping's liveness). */
  bytesIn = 0;
  /** The stream engine is being loaded for this connection ({@link loadEngine}). */
  private engineLoading = false;

  /** When the transport was accepted or connected (`Date.now()`). */
  get connectedAt(): number {
    return T0 + this.connectedRel;
  }

  /** See {@link life}. */
  private get lifecycle(): Life {
    // (One shape: its fields are added as they are needed, on a cold path.)
    this.life ??= { closeReason: "" };
    return this.life;
  }

  /** The transport's local address. */
  get localUrl(): string {
    return this.transport.localUrl;
  }

  /** The transport's remote address. */
  get remoteUrl(): string {
    return this.transport.remoteUrl;
  }

  /** @internal Use `connect()` or a server session. */
  constructor(transport: Transport, options: ConnectionOptions, init: ConnectionInit) {
    super();
    this.transport = transport;
    this.id = init.id ?? String(nextConnectionId++);
    // `| 0`: a difference of doubles is a number box even when whole (whole ms since T0, to about 2^53).
    // A date (shown): an accepted connection's time of accept is monotonic, as every deadline's.
    const now = Date.now();
    const at = init.accepted === undefined ? now : now - performance.now() + init.accepted.acceptedAt;
    this.connectedRel = Math.trunc(at - T0);
    // A server checked its options once for all sessions.
    if (init.localSettings === undefined) checkConnectionOptions(options);
    const runtime = init.runtime ?? portableRuntime();
    const local = init.localSettings ?? resolveSettings(options, false, runtime.codecs.mask());
    this.link = new Link(local, init.initiator);
    const budget = init.budget ?? new MemoryBudget(budgetLimit(options, local, runtime.memoryLimit()));
    this.shared = init.shared ?? connectionShared(options, init, runtime, budget);
    this.stats_ = new Stats(publisherFor(runtime.diagnostics, this, init.initiator ? "client" : "server"));
    // One object is the writer's sink and the frame router's hooks: its
    // methods are on the prototype, not closures.
    const port = new Connection.Port(this);
    this.writer = new FrameWriter(port, runtime.checksums);
    if (options.pacing !== false) this.writer.pacing = newPacer;
    this.readGate = new ReadGate(transport, this.writer, options.slowPeerBytes ?? 8 * 1024 * 1024);
    this.outbox = new Outbox(this.writer, this.link, init.firstStreamId ?? (init.initiator ? 1 : 2));
    const D = dispatcherClass();
    this.dispatcher =
      D !== undefined
        ? new D(this.link, this.outbox, this.stats_, budget, this, init.router ?? emptyRouter(), init.onMessage)
        : (new DispatchShell(this.link, this.outbox, this.stats_, budget, this, init.router, init.onMessage, {
            replace: (d) => {
              this.dispatcher = d;
              this.inbound.dispatcher = d;
            },
          }) as unknown as Dispatcher);
    this.dispatcher.readGate = this.readGate;
    this.inbound = new Inbound(this.link, this.outbox, budget, this.stats_, this.dispatcher, runtime.allocBody);
    const credentials = options.credentials === undefined ? EMPTY : toBytes(options.credentials, "credentials");
    this.handshake = new Handshake(this.writer, init.authenticate, credentials, port);
    // With the stream engine (always in Node), frames spanning reads are filled in place.
    const engine = streamEngine();
    const Frames = engine?.TargetingFrameRouter ?? FrameRouter;
    this.frames = new Frames(this.handshake, this.inbound, this.writer, port);
    // The options as they are: housekeeping applies the defaults (not in a page's first load) and keeps
    // one shared object per set of times (no object per connection).
    const hk: ConstructorParameters<typeof Housekeeper> = [options, this.readGate, this.frames, this];
    // A browser's connection loads housekeeping once open (housekeeping-lazy.ts).
    const H = housekeeperClass();
    this.housekeeper = H !== undefined ? new H(...hk) : new HousekeeperShell(hk, (h) => (this.housekeeper = h));
    this.readGate.host = port;
    const Decoder = engine?.FrameDecoder ?? BaseDecoder;
    this.decoderImpl = new Decoder(this.frames, local.maxFrameSize, runtime.checksums, runtime.allocBody);
    const accepted = init.accepted;
    // Transports call their handlers as methods: the port is them (no closures per connection).
    if (accepted === undefined) transport.attach(port);
    // Preface and HELLO go out at once, in one write (encoded once per settings:
    // a server's sessions share theirs); nothing else until the peer's HELLO.
    // A server wrote them when it accepted the transport (`accepted`).
    const hello = greeting(local, init.localSettings !== undefined);
    if (accepted === undefined) this.transport.write([hello.bytes]);
    this.writer.framesOut++;
    // The preface too: the peer's bytesIn counts it (this side's wire.bytesOut was 6 bytes short of it).
    this.writer.bytesOut += hello.bytes.length;
    // From here on, small frames written in one turn share BATCH frames.
    this.writer.batching = true;
    // A server's connection gets its input, and keeps the rest of the server's deadline, in `start`.
    // 0: no handshake deadline, as connectTimeoutMs 0 (it failed every connect at once; a server refuses 0).
    if (accepted !== undefined || this.shared.handshakeMs === 0) return;
    // Up to 10 % later at random: thousands of connections accepted in one
    // burst do not all time out in the same tick. At most 2e9 ms (~23 days):
    // over 2^31 - 1 a timer fires at once.
    this.armHandshakeTimer(Math.min(this.shared.handshakeMs * (1 + Math.random() / 10), 2e9));
  }

  /**
   * Resolves when the handshake completed; rejects if it failed. (Made on
   * first use: a server's sessions mostly never wait for it, and a promise
   * with its resolvers per accepted connection is garbage that makes the
   * young generation grow.)
   */
  get ready(): Promise<void> {
    if (this.openedOnce) return RESOLVED;
    const life = this.lifecycle;
    if (life.ready === undefined) {
      life.readyD = Promise.withResolvers<void>();
      life.ready = life.readyD.promise;
      life.ready.catch(noop);
    }
    return life.ready;
  }

  /**
   * @internal A server's connection built on the peer's opening
   * (`init.accepted`): processes the bytes that arrived so far (the HELLO,
   * maybe more) and, if the handshake is not complete after them (AUTH
   * pending), keeps the rest of the server's deadline. Returns whether it
   * kept views of `input`.
   */
  start(input: Uint8Array, deadline: number): boolean {
    const kept = this.onTransportData(input);
    // (Closing already when the server closes meanwhile: the deadline still holds.)
    if (!this.openedOnce && this.state_ !== "closed") this.armHandshakeTimer(Math.max(1, deadline - performance.now()));
    return kept;
  }

  /** Fails the handshake after `ms`. */
  private armHandshakeTimer(ms: number, confirmed?: boolean): void {
    this.lifecycle.handshakeTimer = setTimeout(() => {
      // Due: looked at again after this turn's I/O (a new timer runs after the poll phase): after a stall
      // of this process, timers run before the handshake that came meanwhile is read.
      if (!confirmed) return this.armHandshakeTimer(0, true);
      const ht = this.shared.handshakeMs;
      // By `Handshake.authState`: no HELLO (0); a server's authenticate hook deciding (2; a server waits for
      // the client's AUTH before it builds the session: `pre-handshake.ts`); a client waiting for the answer to
      // its AUTH (3). Before, all said "no pointsub handshake".
      const state = this.handshake?.authState;
      const what =
        state === 3
          ? "answer to authentication"
          : state === 2
            ? "authenticate decision on the credentials"
            : "pointsub handshake";
      const err = PointSubError.fromPeer("ERR_TIMEOUT", `no ${what} from ${this.remoteUrl} within ${ht} ms`, {
        phase: "handshake",
      });
      // A peer that sent nothing is not speaking pointsub: close without a
      // GOAWAY (thousands of idle sockets timing out together cost no writes).
      if (this.bytesIn === 0) this.destroy(err);
      else this.fail(err);
    }, ms);
  }

  /**
   * The writer's sink, the frame router's and the handshake's hooks, in one
   * object per connection whose methods live on the prototype (no closures).
   */
  private static readonly Port = class
    implements WriterSink, FrameHooks, ReadGateHost, TransportHandlers, HandshakePort
  {
    private readonly c: Connection;
    constructor(c: Connection) {
      this.c = c;
    }
    write(chunks: readonly Uint8Array[]): boolean {
      const c = this.c;
      c.housekeeper.output();
      return c.transport.write(chunks);
    }
    idle(): boolean | undefined {
      return this.c.transport.idle?.();
    }
    inStreams(): IncomingStreams | undefined {
      return this.c.inStreams;
    }
    assemblies(): boolean {
      return this.c.assemblies();
    }
    awaitEngine(): void {
      this.c.loadEngine();
    }
    onGoAway(errno: number, reason: string): void {
      this.c.onGoAway(errno, reason);
    }
    processInput(chunk: Uint8Array): void {
      this.c.processInput(chunk);
    }
    /** Nothing could arrive while held messages paused reading: progress counts from the resume. */
    readingResumed(): void {
      this.c.housekeeper.readingResumed();
    }
    isClosed(): boolean {
      return this.c.state_ === "closed";
    }
    applyPeer(peer: Settings): void {
      this.c.applyPeer(peer);
    }
    opened(): void {
      this.c.opened();
    }
    refuse(err: PointSubError): void {
      this.c.fail(err);
    }
    authInfo(token: string): AuthInfo {
      const c = this.c;
      return {
        token,
        remoteUrl: c.remoteUrl,
        localUrl: c.localUrl,
        peerCertificate: c.transport.peerCertificate?.(),
        peerId: c.transport.peerId?.(),
      };
    }
    onData(chunk: Uint8Array): boolean {
      return this.c.onTransportData(chunk);
    }
    readTarget(): Uint8Array | undefined {
      return this.c.transportReadTarget();
    }
    onDrain(): void {
      this.c.onTransportDrain();
    }
    /** No drain will come (the socket is gone, what it holds still to be read): no slow peer, reading goes on. */
    onGone(): void {
      const g = this.c.readGate;
      g.slowPeerBytes = Infinity;
      g.slowResume();
    }
    onClose(error?: Error): void {
      this.c.onTransportClose(error);
    }
  };

  /** @internal The transport's handlers (a server's pre-handshake binding hands its transport over to them). */
  get transportHandlers(): TransportHandlers {
    return this.readGate.host as TransportHandlers & ReadGateHost;
  }

  /** This side's calls (created by the first; see {@link caller_}). */
  private get caller(): Caller {
    let c = this.caller_;
    if (c === undefined) {
      c = this.caller_ = new Caller(
        this.outbox,
        this.link,
        this.stats_,
        this.shared.requestTimeoutMs,
        this.shared.bytesPerSecond,
      );
      this.inbound.caller = c;
    }
    return c;
  }

  /** The outgoing half, created on first use from the (loaded) stream engine. */
  private outStreams(engine: StreamEngine): OutgoingStreams {
    if (this.outStreams_ !== undefined) return this.outStreams_;
    this.outStreams_ = new engine.OutgoingStreams(this.link, this.outbox, this.caller, this.stats_, {
      session: this,
      shared: this.shared,
    });
    this.caller.streams = this.outStreams_;
    this.frames.outStreamsIfAny = this.outStreams_;
    return this.outStreams_;
  }

  /**
   * The incoming half (a STREAM frame arrived), created on first use; while
   * the stream engine is still loading, undefined: the frame router holds
   * this frame and every later one until it is ({@link loadEngine}).
   */
  private get inStreams(): IncomingStreams | undefined {
    if (this.inStreams_ !== undefined) return this.inStreams_;
    const engine = streamEngine();
    if (engine === undefined) {
      this.loadEngine();
      return undefined;
    }
    // The stream engine brought the dispatcher: the incoming streams serve through the real one.
    const d = this.dispatcher;
    if (d instanceof DispatchShell) d.becomeNow();
    this.inStreams_ = new engine.IncomingStreams(
      this.link,
      this.outbox,
      this.inbound,
      this.shared.budget,
      this.stats_,
      this.dispatcher,
      { session: this, shared: this.shared },
    );
    this.inbound.streams = this.inStreams_;
    this.frames.inStreamsIfAny = this.inStreams_;
    return this.inStreams_;
  }

  /**
   * Loads the stream engine (one load at a time) for what waits for it: the
   * frames the frame router holds (from the first STREAM frame or chunked
   * message on) go through once it is loaded, in order, and the writer
   * sends the chunked messages it queued; a failed load fails the connection.
   */
  private loadEngine(): void {
    if (this.engineLoading) return;
    this.engineLoading = true;
    loadStreamEngine().then(
      () => {
        this.engineLoading = false;
        if (this.state_ === "closed") return;
        // The chunked messages that waited go out paced, as later ones do (their pacer is made at the next pump).
        this.writer.wake();
        try {
          this.frames.release();
        } catch (err) {
          this.fail(toPointSubError(err, "ERR_PROTOCOL"));
        }
      },
      (err: unknown) => {
        this.engineLoading = false;
        // (loadStreamEngine's errors are typed.)
        this.fail(err as PointSubError);
      },
    );
  }

  /** The frame router's first chunked frame: the assembly of chunked messages, if the stream engine is loaded. */
  private assemblies(): boolean {
    const engine = streamEngine();
    if (engine === undefined) {
      this.loadEngine();
      return false;
    }
    this.inbound.chunked = new engine.Assemblies(this.inbound);
    return true;
  }

  /**
   * Adds a route or middleware (`apply`, its arguments checked) to this
   * connection's own router, created on first use in front of the server's.
   * A browser's connection has no router before the dispatcher is loaded
   * (it comes with the stream engine): its shell keeps `apply` and starts
   * loading — routes and middleware mean requests will come.
   */
  private route(apply: (r: Router) => void, middleware = false): this {
    // The dispatcher holds the router in effect (the incoming streams read it there).
    const d = this.dispatcher;
    if (d instanceof DispatchShell) {
      this.ownRouter = true;
      d.configure(apply, middleware);
      return this;
    }
    if (!this.ownRouter) {
      d.router = new (routerClass())(this.shared.router);
      this.ownRouter = true;
    }
    apply(d.router);
    return this;
  }

  /** Current lifecycle state. */
  get state(): ConnectionState {
    return this.state_;
  }

  /**
   * What the server's `authenticate` hook returned for this session's
   * credentials. Without a hook's answer: the peer's id on transports that
   * authenticate peers themselves (libp2p, both sides), else undefined.
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
    return this.link.announced;
  }

  /**
   * Registers a handler for requests the peer sends to `route` on this
   * connection only (it takes precedence over a server's routes).
   */
  handle(route: string, handler: Handler): this {
    checkRoute(route);
    checkFunction(handler, "handler");
    return this.route((r) => r.handle(route, handler));
  }

  /**
   * Adds a middleware around the requests, streams and one-way messages the
   * peer sends on this connection. It runs after the server's middleware
   * (if this is a server session) and after those added before it; see
   * {@link Middleware}.
   */
  use(mw: Middleware): this {
    checkFunction(mw, "middleware");
    return this.route((r) => r.use(mw), true);
  }

  /**
   * Sends a one-way message of any size (up to the peer's maxMessageSize).
   * Resolves when the last byte is handed to the transport; rejects with a
   * PointSubError (`ERR_MESSAGE_TOO_LARGE` before any byte is written,
   * `ERR_CONNECTION_CLOSED`, ...). Do not modify `payload` afterwards.
   */
  send(payload: Payload): Promise<void> {
    try {
      if (this.state_ !== "open") throw this.unusableError();
      const data = toBytes(payload, "payload");
      const big = tooLarge(this.link, this.stats_, data.length, 0);
      if (big) throw big;
      return this.sendBytes(data, -1);
    } catch (err) {
      return handledRejection(err);
    }
  }

  /**
   * @internal A server's broadcast: sends `data`, whose CRC32C (`crc`, or
   * -1) was computed once for every session. Returns undefined when it was
   * written at once, the error when refused, a promise when queued.
   */
  sendShared(data: Uint8Array, crc: number): Promise<void> | PointSubError | undefined {
    if (this.state_ !== "open") return this.unusableError();
    const big = tooLarge(this.link, this.stats_, data.length, 0);
    if (big) return big;
    const p = this.sendBytes(data, crc);
    return p === RESOLVED ? undefined : p;
  }

  /** Sends a message whose size was checked. */
  private sendBytes(data: Uint8Array, crc: number): Promise<void> {
    this.stats_.sent(data.length);
    const outbox = this.outbox;
    const id = outbox.allocId();
    if (data.length <= this.link.msgSingleMax) {
      if (this.writer.trySendNow(T_MSG, id, EMPTY, data, 0, crc)) return RESOLVED;
      const q = outbox.enqueue(T_MSG, id, EMPTY, data, true, crc);
      q.catch(noop);
      return q;
    }
    outbox.outChunked.add(id);
    const p = outbox.enqueue(T_MSG, id, EMPTY, data, false);
    const release = () => {
      outbox.outChunked.delete(id);
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

  /**
   * Bytes of messages, requests and responses queued for the peer and not
   * yet handed to the transport (like `WebSocket.bufferedAmount`; streams
   * are bounded by their own windows and not counted, nor are requests
   * waiting for one of the peer's `maxConcurrentRequests` slots: they are
   * not queued for the wire yet, and `inFlight` counts them).
   */
  get bufferedAmount(): number {
    return this.writer.queuedBytes;
  }

  /** What this connection is and has done (a server's `sessionsInfo()` lists these). */
  info(): ConnectionInfo {
    const url = this.remoteUrl;
    const colon = url.indexOf(":");
    return {
      id: this.id,
      transport: colon > 0 ? url.slice(0, colon) : "unknown",
      localUrl: this.localUrl,
      remoteUrl: url,
      state: this.state_,
      principal: this.principal_,
      peerCertificate: this.peerCertificate,
      connectedAt: this.connectedAt,
      // Housekeeping keeps monotonic times (a wall-clock step fired its timeouts early): shown as a date.
      lastActivity: Date.now() - performance.now() + this.housekeeper.observe(),
      bytesIn: this.bytesIn,
      bytesOut: this.writer.bytesOut,
      messagesIn: this.stats_.messagesReceived,
      messagesOut: this.stats_.messagesSent,
      requestsInFlight: this.inFlight + this.dispatcher.serving.size,
      streamsOpen: (this.inStreams_?.size ?? 0) + (this.outStreams_?.size ?? 0),
      bufferedAmount: this.writer.queuedBytes,
      rtt: this.rtt,
    };
  }

  /**
   * Why the connection closed (or is closing): the reason given to
   * `close()` (`"idle"` after idleTimeoutMs, `"server closing"`, …), the
   * peer's GOAWAY reason, or the error code; `""` while open.
   */
  get closeReason(): string {
    return this.life?.closeReason ?? "";
  }

  /**
   * Resolves once everything queued was handed to the transport (or the
   * connection closed): what {@link bufferedAmount} counts.
   */
  drain(): Promise<void> {
    if (this.writable || this.state_ === "closed") return RESOLVED;
    return this.writer.whenDrained();
  }

  /**
   * Calls `route` on the peer and resolves to its response bytes. Rejects
   * with ERR_TIMEOUT, ERR_CANCELLED, ERR_NO_ROUTE, ERR_HANDLER,
   * ERR_MESSAGE_TOO_LARGE, ERR_CONNECTION_CLOSED... Do not modify `payload`
   * until it settles: it is sent from the caller's buffer, not a copy (a
   * request waiting for a slot, or chunked, is read as it goes out).
   */
  request(route: string, payload: Payload = EMPTY, options: RequestOptions = NO_OPTIONS): Promise<Uint8Array> {
    // null threw a raw TypeError where the options were read: refused as the client's request refuses it.
    const bad = badOptions(options);
    if (bad !== undefined) return Promise.reject(bad);
    if (this.state_ !== "open") return Promise.reject(this.unusableError());
    return this.caller.request(route, payload, options);
  }

  /**
   * Registers a handler for streams the peer sends to `route` on this
   * connection (before a server's stream routes). `resume` makes the route
   * resumable: it says how far a transfer already got.
   */
  handleStream(route: string, handler: StreamHandler, options: { resume?: ResumeLookup } = {}): this {
    checkOptions(options, "handleStream");
    checkRoute(route);
    checkFunction(handler, "handler");
    return this.route((r) => r.handleStream(route, handler, options));
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
    const bad = badOptions(options, "sendStream");
    // Refused through the transfer, as its other options are.
    if (bad !== undefined) return this.sendStreamLater(route, source, NO_OPTIONS, bad);
    const engine = streamEngine();
    if (engine !== undefined) return this.outStreams(engine).send(route, source, options);
    return this.sendStreamLater(route, source, options);
  }

  /**
   * `sendStream` while the stream engine is not loaded (a browser's first
   * stream): the transfer starts once it is. With `refused`, it fails with it.
   */
  private sendStreamLater(
    route: string,
    source: StreamSource,
    options: SendStreamOptions,
    refused?: PointSubError,
  ): Transfer {
    // `Progress` comes with the engine: a stand-in until then, which then follows the transfer's own.
    const progress = new LateProgress(options.transferId ?? newTransferId(), options.total);
    if (options.onProgress !== undefined) progress.on("progress", options.onProgress);
    const d = Promise.withResolvers<Uint8Array>();
    let started: Transfer | undefined;
    let cancelled: string | undefined;
    // Refused too once the engine is loaded: it closes the source (its stream never read).
    loadStreamEngine().then(
      (engine) => {
        const real = new engine.Progress(progress.transferId, options.total, options.progressIntervalMs);
        progress.follow(real);
        // `t`: the transfer handed out, whose contentCrc the engine sets too.
        started = this.outStreams(engine).send(route, source, { ...options, onProgress: undefined }, real, t, refused);
        started.done.then(d.resolve, d.reject);
        if (cancelled !== undefined) started.cancel(cancelled);
      },
      (err: unknown) => {
        const e = err as PointSubError;
        // Rejected first: a throwing progress listener (an unhandled rejection of this handler) left `done` pending.
        d.reject(e);
        progress.fail(e);
      },
    );
    const t = new Transfer(progress as unknown as Progress, d.promise, (reason) => {
      if (started !== undefined) started.cancel(reason);
      else cancelled ??= reason;
    });
    return t;
  }

  /**
   * Asks the peer how much of transfer `transferId` to stream route `route`
   * it already holds. `{ offset: 0 }` when the route cannot resume.
   */
  async queryResume(route: string, transferId: string, options: RequestOptions = {}): Promise<ResumePoint> {
    checkOptions(options, "queryResume");
    if ((this.link.peer.features & FEATURE_RESUME) === 0) return { offset: 0, crc: 0 };
    // The codec of resume queries comes with the stream engine (resuming is for streams).
    const engine = await loadStreamEngine();
    return engine.askResume((r, payload) => this.request(r, payload, options), route, transferId);
  }

  /**
   * Measures the round-trip time to the peer, in milliseconds (a PING the
   * peer skipped, answering only a later one as §3.7 allows, resolves with
   * that answer). Rejects with
   * ERR_TIMEOUT (phase `"ping"`) when no answer came within `timeoutMs`
   * (default requestTimeoutMs; 0: never), with ERR_INVALID_ARGUMENT for a
   * `timeoutMs` that is not a number >= 0.
   */
  ping(options: { timeoutMs?: number } = {}): Promise<number> {
    const bad = badOptions(options, "ping");
    if (bad !== undefined) return Promise.reject(bad);
    if (this.state_ !== "open") return Promise.reject(this.unusableError());
    const ms = options.timeoutMs ?? this.shared.requestTimeoutMs;
    // NaN or negative meant no timeout: a ping to a peer that never answered never settled.
    if (!(ms >= 0)) return badTimeout(ms);
    // Sending pings comes with housekeeping (loaded up front in Node; in a page, once a connection opens).
    const H = housekeeperClass();
    if (H !== undefined) return H.ping(this.frames.pinger, ms, pingTimeout);
    // Loaded: pinged as above, or refused if it closed meanwhile (this ping's timeoutMs kept).
    return loadHousekeeper().then(() => this.ping(options));
  }

  /** Calls this side made that have no answer yet (including those queued for the peer's maxConcurrentRequests). */
  get inFlight(): number {
    return this.caller_?.size ?? 0;
  }

  /**
   * Smoothed round-trip time to the peer in ms (EWMA over `ping()` and
   * keepalive pings, weight 1/8 per sample); undefined before the first.
   */
  get rtt(): number | undefined {
    return this.frames.pingerIfAny?.rtt;
  }

  /** Counters per size class, requests, errors by code and wire totals. */
  stats(): StatsSnapshot {
    return this.stats_.snapshot(this.inFlight + this.dispatcher.serving.size, {
      framesOut: this.writer.framesOut,
      bytesOut: this.writer.bytesOut,
      framesIn: this.frames.framesIn,
      bytesIn: this.bytesIn,
    });
  }

  /**
   * Closes gracefully: announces GOAWAY, refuses new work, lets requests and
   * sends in flight finish (up to closeTimeoutMs), then ends the transport.
   */
  close(options: CloseOptions = {}): Promise<void> {
    // Refused, the connection left as it is (as a server's close and a lengthPrefixed connection's).
    const bad = badOptions(options, "close");
    if (bad !== undefined) return handledRejection(bad);
    const life = this.lifecycle;
    if (life.closePromise !== undefined) {
      // A second close with a shorter timeout brings the wait's deadline forward (drain.ts).
      this.cut?.(options.timeoutMs);
      return life.closePromise;
    }
    if (this.state_ === "closed") return RESOLVED;
    const handshaking = this.handshake?.helloReceived === false;
    // String: one that is not (a JavaScript caller's Error) threw a raw TypeError encoding the GOAWAY, the connection left closing.
    const reason = String(options.reason ?? "closing");
    const timeoutMs = options.timeoutMs ?? this.shared.closeTimeoutMs;
    // As a request's: NaN waited for ever (its deadline is never reached).
    if (!(timeoutMs >= 0)) return badTimeout(timeoutMs);
    this.state_ = "closing";
    // Calls waiting for a slot start no more (an answer freeing one may come before drain.ts refuses them).
    if (this.caller_ !== undefined) this.caller_.closed = true;
    life.closeReason ||= reason;
    // GOAWAY goes out now, or, with sends queued, once every one of them has started (drain.ts). Nothing
    // but HELLO goes out before the peer's HELLO: while the handshake runs, it waits (bounded by its timeout).
    let goAway: (() => void) | undefined = () => this.outbox.sendGoAway(0, reason);
    if (!handshaking && this.writer.pending === 0) goAway = void goAway();
    const p = (handshaking ? this.ready.then(noop, noop) : RESOLVED).then(loadDrain).then(
      (m) => m.drainAndEnd(this, timeoutMs, this.writer, goAway),
      // Not loaded (a page gone offline): closed at once, what is in flight fails.
      () => this.destroy(),
    );
    life.closePromise = p;
    return p;
  }

  /**
   * Closes at once and tells the peer why: a GOAWAY with `error`'s errno
   * and message goes out first (best effort), then everything in flight
   * fails with `error`.
   */
  terminate(error: PointSubError): void {
    this.fail(error);
  }

  /** Closes at once: everything in flight fails with ERR_CONNECTION_CLOSED (or `error`). */
  destroy(error?: PointSubError): void {
    if (this.state_ === "closed") return;
    // Closed first: a transport that reports its close at once (the browser's) would close it without `error`.
    this.teardown(error);
    this.transport.destroy();
  }

  /** Resolves once the connection is closed. */
  get closed(): Promise<void> {
    const life = this.lifecycle;
    if (life.closedD === undefined) {
      life.closedD = Promise.withResolvers<void>();
      if (this.state_ === "closed") life.closedD.resolve();
    }
    return life.closedD.promise;
  }

  // ---------------------------------------------------------------- sending

  /** @internal The error of a call made now (the connection is not open). */
  unusableError(): PointSubError {
    if (this.state_ === "handshaking") return new PointSubError("ERR_CONNECTION_CLOSED", "connection is not open yet");
    if (this.state_ === "closing") return new PointSubError("ERR_GOING_AWAY", "connection is closing");
    return new PointSubError("ERR_CONNECTION_CLOSED", "connection is closed", { cause: this.life?.closeError });
  }

  // -------------------------------------------------------------- receiving

  /** @internal The transport's handlers (a server's pre-handshake binding forwards to these once it built the connection). */
  onTransportData(chunk: Uint8Array): boolean {
    if (this.state_ === "closed") return false;
    this.bytesIn += chunk.length;
    if (!this.readGate.admits()) {
      // This turn's decoding budget is spent (or older input waits): later, and kept until then.
      // It arrived now, though: the peer is alive (keepalive counts input, not decoding).
      this.housekeeper.input(performance.now());
      this.readGate.hold(chunk);
      return true;
    }
    return this.processInput(chunk);
  }

  /**
   * Decodes input from the transport, a step of frames at a time (the
   * frame router's `step`, with the stream engine): after each, the read
   * gate's budget decides whether the rest goes on now or waits, kept, for
   * a later turn — a read full of tiny or costly frames (or a large BATCH
   * of them) cannot hold the event loop past the budget by more than a
   * step. Returns whether views of `chunk` were kept.
   */
  private processInput(chunk: Uint8Array): boolean {
    // A loop, not a call per step: a BATCH of 350,000 frames is over a thousand steps.
    let kept = false;
    for (;;) {
      if (this.state_ === "closed") return kept;
      const now = performance.now();
      this.housekeeper.input(now);
      inputTime.now = now;
      const d = this.decoderImpl;
      const t0 = performance.now();
      this.stats_.diag.inputAt = t0; // diagnostics: when the requests this chunk completes arrived
      try {
        if (d.push(chunk)) kept = true;
      } catch (err) {
        this.fail(toPointSubError(err, "ERR_PROTOCOL"));
        return true;
      }
      // Fairness: a flood of cheap or costly frames from one peer must not
      // hold the event loop for a whole burst of socket reads.
      this.readGate.afterInput(t0);
      if (d.left > 0) return kept;
      // A step was done: the rest (of the chunk, or of a BATCH in it) now, or later and in order.
      chunk = chunk.subarray(d.used);
      if (!this.readGate.admits()) {
        this.readGate.hold(chunk);
        return true;
      }
    }
  }

  /** @internal Where the next read should land (the rest of a large frame body), if anywhere. */
  transportReadTarget(): Uint8Array | undefined {
    // Not while input waits unprocessed: the decoder's target would be where that input already is.
    return this.readGate.holding ? undefined : this.decoderImpl.readTarget();
  }

  /** @internal */
  onTransportDrain(): void {
    this.writer.onDrain();
    if (this.state_ === "closed") return;
    this.frames.pingerIfAny?.onDrain();
    // Reading resumed after the peer took what it was owed: nothing arrived meanwhile, so no
    // keepalive is due; progress is measured on (that pause was the peer's doing).
    if (this.readGate.onDrain()) this.housekeeper.input(performance.now());
  }

  /** The peer's HELLO arrived: everything that depends on its settings. */
  private applyPeer(peer: Settings): void {
    this.link.setPeer(peer, this.transport.maxFrameSize);
    const checksum = peer.checksum === 1 || this.link.local.checksum === 1;
    this.decoderImpl.checksum = checksum;
    const w = this.writer;
    w.checksum = checksum;
    w.batching = checksum;
    w.batchMax = Math.min(peer.maxFrameSize, BATCH_MAX);
    // Paced bulk goes to a transport with its own frame limit one such frame per write (writer.ts).
    const own = this.transport.maxFrameSize;
    if (own !== undefined && own < w.bulkFlushBytes) w.bulkFlushBytes = own;
    w.connCredit = peer.connectionWindow;
    w.assemblyBudget = peer.maxAssemblyBytes;
  }

  /** The handshake (and authentication) completed: the connection is usable. */
  private opened(): void {
    if (this.state_ === "closed") return;
    this.openedOnce = true;
    if (this.state_ === "handshaking") this.state_ = "open";
    const life = this.life;
    clearTimeout(life?.handshakeTimer);
    // Without a hook's answer, the identity the transport authenticated (a libp2p peer id), if any.
    this.principal_ = this.handshake?.principal ?? this.transport.peerId?.();
    this.handshake = undefined;
    this.frames.handshake = undefined;
    this.housekeeper.start(this.shared.ticker);
    if (this.link.myParity) this.dispatcher.holdEarly?.();
    this.stats_.diag.opened();
    // Before the listeners: one that destroys it (a server's `session` listener refusing it) made teardown drop
    // `ready` unsettled, and what waited for it (a closing server's close of a session built during it) for ever.
    if (life !== undefined) {
      life.readyD?.resolve();
      // A shared settled promise from now on: an open connection keeps none of its own.
      life.readyD = life.ready = life.handshakeTimer = undefined;
    }
    this.shared.onOpen?.(this);
    // (Not after its close: a server's `session` listener may have destroyed it.)
    if ((this.state_ as ConnectionState) !== "closed") this.tell("open");
  }

  /** GOAWAY: errno 0 is a graceful close (finish what is in flight), anything else a fatal error of the peer. */
  private onGoAway(errno: number, peerReason: string): void {
    // The peer chooses the reason's length (up to a frame): keep what a person reads.
    const reason = peerReason.length > MAX_REASON ? `${peerReason.slice(0, MAX_REASON)}…` : peerReason;
    // Before the handshake completed (a server that says GOAWAY(0) where its AUTH acknowledgement belongs:
    // it is closing), a GOAWAY(0) ends the connection too: nothing was started, and `connect` fails now,
    // retryable, not at the handshake's deadline with ERR_TIMEOUT.
    if (errno !== 0 || !this.openedOnce) {
      const code = codeForErrno(errno || 4007) ?? "ERR_PROTOCOL"; // 4007: ERR_GOING_AWAY
      const err = PointSubError.fromPeer(code, `peer closed the connection: ${reason}`);
      this.stats_.error(code);
      this.destroy(err);
      return;
    }
    // A repeated GOAWAY(0) is ignored (§3.8): each checked every closing connection's queues again.
    if (this.peerGoAway) return;
    this.peerGoAway = true;
    if (this.state_ === "open") {
      this.lifecycle.closeReason = reason === "" ? "peer closing" : `peer: ${reason}`;
      this.tell("goaway", reason);
      void this.close();
    } else if (this.state_ === "closing") {
      // Our close may have waited only for this: it ends now, not at the drain's next poll.
      drainModule?.then((m) => m.drainNow(), noop);
    }
  }

  // -------------------------------------------------------------- lifecycle

  /** @internal Housekeeping: changes whenever application data moves. */
  activity(): number {
    return this.stats_.activity();
  }

  /** @internal Housekeeping: a keepalive or slow-peer timeout — close at once, telling the peer. */
  timedOut(code: "ERR_SLOW_PEER" | "ERR_KEEPALIVE" | "ERR_TIMEOUT", message: string): void {
    this.fail(new PointSubError(code, message));
  }

  /** @internal Housekeeping: idle for idleTimeoutMs — close gracefully. */
  idle(): void {
    // Not while middleware holds the peer's messages (waiting for rate-limit tokens): they would be dropped.
    if (this.dispatcher.heldMessages === 0) this.close({ reason: "idle" }).catch(noop);
  }

  /** @internal Housekeeping: calls, messages or streams in flight in either direction (never idle then). */
  inUse(): boolean {
    return (
      this.inFlight !== 0 ||
      this.dispatcher.serving.size !== 0 ||
      this.writer.pending !== 0 ||
      this.inbound.size !== 0 ||
      (this.inStreams_?.size ?? 0) !== 0 ||
      (this.outStreams_?.size ?? 0) !== 0
    );
  }

  /** @internal A graceful close (`drain.ts`): 2 work in flight, 1 only the peer's GOAWAY awaited, 0 nothing. */
  drainWork(): 0 | 1 | 2 {
    // The peer's messages middleware still holds (e.g. waiting for rate-limit tokens) count too;
    // until the peer's own GOAWAY arrived, a START it sent before it saw ours may still be on its way.
    return this.inUse() || this.dispatcher.heldMessages !== 0 ? 2 : this.peerGoAway ? 0 : 1;
  }

  /** @internal A graceful close's end (`drain.ts`): what is queued goes out, then the transport ends. */
  endTransport(): void {
    this.writer.flush();
    this.transport.end();
  }

  /** A fatal error on this side: tell the peer, close, fail everything with `err`. */
  private fail(err: PointSubError): void {
    if (this.state_ === "closed") return;
    this.stats_.error(err.code);
    this.outbox.sendGoAway(err.errno, err.message);
    this.endTransport();
    // Cleared when the transport closes: a refused peer that hangs up at once
    // does not keep the whole closed connection reachable for a second (a
    // flood of them kept ~400 closed sessions alive, surviving and promoted
    // by every young-generation GC).
    const t = setTimeout(() => this.transport.destroy(), 1000);
    (t as { unref?: () => void }).unref?.();
    this.lifecycle.destroyTimer = t;
    this.teardown(err);
    // Input is dropped from now on: read it (reading may be paused for held messages or a
    // slow turn) so the peer's close is seen, not only the timer's (unref'd) destroy.
    this.transport.resume();
  }

  /** @internal */
  onTransportClose(error?: Error): void {
    clearTimeout(this.life?.destroyTimer);
    if (this.state_ === "closed") return;
    // Closing, nothing half-read, and nothing of ours cut (a peer that ended while we still had work: that work failed).
    const graceful = this.state_ === "closing" && this.decoderImpl.idle && !this.inUse();
    // A transport that knows why (a WebSocket peer's text message: ERR_PROTOCOL) says so with a PointSubError.
    this.teardown(
      graceful
        ? undefined
        : error instanceof PointSubError
          ? error
          : // Built without a stack (it would only show the socket's close): a flood of
            // connections that come and go costs no stack capture each.
            PointSubError.fromPeer("ERR_CONNECTION_CLOSED", `connection to ${this.remoteUrl} closed`, { cause: error }),
    );
  }

  private teardown(error: PointSubError | undefined): void {
    if (this.state_ === "closed") return;
    this.state_ = "closed";
    this.frames.closed = true;
    const life = this.lifecycle;
    life.closeError = error;
    life.closeReason ||= error === undefined ? "closed" : error.code;
    clearTimeout(life.handshakeTimer);
    this.housekeeper.stop();
    const failure = error ?? new PointSubError("ERR_CONNECTION_CLOSED", "connection closed");
    this.writer.close(failure);
    this.caller_?.teardown(failure);
    this.dispatcher.teardown(failure);
    this.inbound.teardown();
    this.frames.pingerIfAny?.teardown(failure);
    this.inStreams_?.teardown(failure);
    this.outStreams_?.teardown(failure);
    if (!this.openedOnce) {
      // Made now if nobody asked for it yet: whoever asks later learns of the failure.
      void this.ready;
      life.readyD?.reject(failure);
    }
    life.readyD = undefined;
    this.stats_.diag.closed(this.openedOnce, error, failure);
    this.shared.onClose?.(this, error);
    // Settled first: a throwing `close` listener (the application's bug) left `closed` pending, and a
    // graceful close (its server's too) waiting on it for ever. Its awaiters still run after the listeners.
    life.closedD?.resolve();
    this.tell("close", error);
  }

  /** Emits `event`: a throwing listener (the application's bug, not the peer's) is surfaced in a microtask. */
  private tell<K extends keyof ConnectionEvents>(event: K, ...args: ConnectionEvents[K]): void {
    try {
      this.emit(event, ...args);
    } catch (err) {
      queueMicrotask(() => {
        throw err;
      });
    }
  }
}

/**
 * Makes a connection's pacer of bulk data (FrameWriter.pacing; one shared
 * function, no closure per connection). It comes with the stream engine: in
 * a browser the first chunked message starts loading it (and waits for it:
 * the writer's bulk pump comes with it too).
 */
function newPacer(writer: FrameWriter): Pacer | undefined {
  const engine = streamEngine();
  if (engine !== undefined) return new engine.Pacer(writer);
  loadStreamEngine().catch(noop);
  return undefined;
}
