/**
 * WebSocket transport for Node (`ws://host:port/path`, `wss://…`), on the
 * `ws` package: pointsub's byte stream in binary WebSocket messages
 * (docs/PROTOCOL.md, "WebSocket mapping"). A listener opens its own
 * http(s) server, or attaches to an existing one (`ws.httpServer`) so
 * pointsub shares a port with a web application.
 */
import type * as Http from "node:http";
import type * as Https from "node:https";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import type * as Tls from "node:tls";
import type * as Ws from "ws";
import type { ErrorCode } from "../errors/codes.ts";
import { PointSubError } from "../errors/error.ts";
import { checkSignal } from "../errors/signal.ts";
import type {
  PeerCertificate,
  Transport,
  TransportAdapter,
  TransportConnectOptions,
  TransportHandlers,
  TransportListener,
  TransportListenOptions,
} from "../transport/transport.ts";
import { refuseCredentials } from "../transport/url-credentials.ts";
import {
  sendAsMessages,
  WS_MAX_MESSAGE,
  WS_SUBPROTOCOL,
  WsReceiver,
  wsCloseError,
  wsUrl,
} from "../transport/ws-mapping.ts";
import { holdChunks } from "./held-bytes.ts";
import { limitRequests } from "./http-requests.ts";
import { listenBacklog } from "./listen-backlog.ts";
import type { TlsOptions } from "./net-adapter.ts";
import { connectDeadline, hostUrl, peerCertificateOf, urlHost } from "./socket-transport.ts";
import {
  clientCertRefusal,
  closeFailedHandshake,
  keyMismatch,
  onTlsClientError,
  refusedHandshake,
  tlsError,
} from "./tls-errors.ts";
import { MaskedFrameWriter } from "./ws-client-frames.ts";
import { RawServerWs, type WsFrameOwner } from "./ws-server-socket.ts";

export { WS_MAX_MESSAGE, WS_SUBPROTOCOL } from "../transport/ws-mapping.ts";

/** Close codes (RFC 6455 §7.4.1) pointsub uses. */
const CLOSE_NORMAL = 1000;
const CLOSE_UNSUPPORTED_DATA = 1003;
/** The empty write whose callback tells that the socket wrote what it held ({@link WsTransport.flushHeld}). */
const NOTHING = new Uint8Array(0);
/**
 * Most bytes `ws` may hold unsent (its queue and the socket's buffer) before
 * the transport reports not-writable: small, so bulk data waits in
 * pointsub's scheduler, where a small frame can overtake it.
 */
const WRITE_HIGH_WATER = 64 * 1024;
/**
 * Most bytes sent and not yet read by the peer's WebSocket (acknowledged by
 * the pong to a ping sent after them) before the transport reports
 * not-writable. The kernel buffers on both ends of a fast link hold tens of
 * MiB; without this bound a small frame queues behind all of them.
 */
const IN_FLIGHT_WINDOW = 512 * 1024;
/** A ping marks the byte stream every this many bytes sent. */
const MARK_EVERY = 64 * 1024;
/** Writes smaller than this wait (corked) for the end of the turn, to leave with the others in one writev. */
const CORK_MAX = 16 * 1024;
/**
 * A write held back by the in-flight bound alone for this long with no pong
 * lifts the bound until the next pong: a peer that answers pings late (or
 * not at all) slows to the old behaviour, it never stalls.
 */
const PONG_WAIT_MS = 100;
/** Frames (any: control, data, empty fragments) a client's reads may bring before it yields a turn (as the server's parser, ws-server-socket.ts). */
const FRAMES_PER_TURN = 1024;
/** Most marks awaiting their pong (more: the oldest is forgotten, a later pong covers it). */
const MAX_MARKS = 256;
/** A coalesced message's buffer: overwritten whole, so not zero-filled. */
const allocUnzeroed = (n: number): Uint8Array<ArrayBuffer> => Buffer.allocUnsafe(n) as Uint8Array<ArrayBuffer>;
/** Binary, and never compressed (pointsub compresses streams itself). */
const SEND_OPTIONS = { binary: true, compress: false } as const;
/** Defaults of the listen limits. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
const MAX_PENDING_UPGRADES = 1024;
/**
 * Most socket reads a client's `ws` holds while a frame's payload is still
 * arriving (its `maxBufferedChunks`; each read is a Buffer of its own, ~280
 * bytes of memory besides its bytes). `ws`'s default, 262,144, let a server
 * that declared a 1 MiB message and sent it a byte per write have one
 * connection hold ~73 MB. A 1 MiB message in segments of 536 bytes (the
 * smallest TCP's) takes 1,957 reads; a pointsub server's messages are at most 16 KiB.
 */
export const WS_MAX_BUFFERED_READS = 4096;
/**
 * Most frames of one message a client's `ws` takes (its `maxFragments`; each
 * fragment with a payload is a Buffer of its own until the message ends).
 * `ws`'s default, 16,384, let a server that sent a message's 1-byte
 * fragments and never its end have each connection hold ~1.9 MB of heap for
 * 48 KB sent. A pointsub server never fragments its messages.
 */
export const WS_MAX_FRAGMENTS = 4096;

/** Options of the WebSocket adapter (under `ws`). */
export interface WsOptions {
  /**
   * Listen: attach to this node `http`/`https` server (its `upgrade`
   * event, for requests to the listen URL's path) instead of opening a
   * port; the URL's host and port are then ignored. Other paths are left
   * to the server's other `upgrade` listeners (404 when there are none).
   * Closing the listener detaches; the server is not closed.
   */
  httpServer?: Http.Server | Https.Server;
  /**
   * Listen: take upgrade requests from this hook (see {@link wsUpgradeHandler})
   * instead of a server's `upgrade` event: the application routes them (a
   * `ws` WebSocketServer in `noServer` mode next to pointsub, a framework's
   * own upgrade handling). Every request handed to it is taken, whatever its
   * path; no port is opened and the URL's host and port only name the
   * listener. Excludes `httpServer`.
   */
  upgrade?: WsUpgradeHandler;
  /**
   * Listen: most connections between TCP accept (or the upgrade request,
   * with `httpServer`) and a completed WebSocket handshake at once; further
   * ones are closed at once. Default 1024.
   */
  maxPendingUpgrades?: number;
  /** Connect: extra HTTP headers of the upgrade request (a cookie, an authorization header). */
  headers?: Record<string, string>;
  /**
   * Listen: the web pages (`Origin` header of a browser's upgrade request,
   * e.g. `"https://app.example"`) allowed to connect: a list (`"*"`: any),
   * or a predicate. Requests without an `Origin` (clients other than
   * browsers) are always taken. Default: any origin when the server
   * authenticates its clients (an `authenticate` hook: a page elsewhere
   * cannot present the credentials); otherwise only pages served from the
   * listener's own host name (any port) — else any web site a user of this
   * machine visits could use a server that authenticates nobody, such as a
   * loopback `pointsub serve` — and, against DNS rebinding, only when that
   * name is an address, `localhost` or the listen URL's host. Others are
   * refused with 403.
   */
  origins?: readonly string[] | ((origin: string) => boolean);
  /**
   * Most bytes sent and not yet read by the peer's WebSocket (acknowledged
   * by the pong to a ping sent after them) before the transport asks the
   * connection to wait: bulk data then waits in pointsub's scheduler, where
   * a small frame can overtake it, not in kernel buffers. Smaller: less
   * head-of-line delay, less throughput over links with a long round trip.
   * Default 512 KiB (1..1 GiB).
   */
  maxInFlightBytes?: number;
}

/** Options of the `ws://`/`wss://` adapter, on top of the portable transport options. */
export interface WsTransportOptions {
  /** TLS material and checks for `wss://`, as for `tls://`. */
  tls?: TlsOptions;
  /** WebSocket specifics. */
  ws?: WsOptions;
}

/** Where a listener takes the upgrade requests an application hands to a {@link WsUpgradeHandler}. */
type UpgradeTarget = (req: Http.IncomingMessage, socket: Duplex, head: Buffer) => void;

/**
 * The hook an application hands upgrade requests to (`ws.upgrade`): make
 * one with {@link wsUpgradeHandler}, give it to `createServer({ ws: { upgrade } })`,
 * listen on a `ws://` URL, then call `handleUpgrade` from the http server's
 * `upgrade` event for the requests that are pointsub's.
 */
export interface WsUpgradeHandler {
  /**
   * Hands an HTTP upgrade request (the arguments of Node's `upgrade`
   * event) to pointsub: it completes the WebSocket handshake (subprotocol
   * `pointsub.v1`, else 400) and the connection becomes a session of the
   * listening server. Before the listener started, or after it closed, the
   * request is answered 503 and its socket closed.
   */
  handleUpgrade(req: Http.IncomingMessage, socket: Duplex, head: Buffer): void;
}

class UpgradeHook implements WsUpgradeHandler {
  /** The listener taking requests (undefined: none now). */
  target: UpgradeTarget | undefined;
  handleUpgrade(req: Http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const target = this.target;
    if (target === undefined) refuse(socket as net.Socket, 503, "Service Unavailable");
    else target(req, socket, head);
  }
}

/**
 * A hook for `ws.upgrade`: lets an application that owns its http server's
 * `upgrade` event (express or fastify with other WebSocket routes, a `ws`
 * WebSocketServer in `noServer` mode) hand pointsub the requests that are
 * its own:
 *
 * ```ts
 * const upgrade = wsUpgradeHandler();
 * await createServer({ ws: { upgrade } }).listen("ws://localhost/pointsub");
 * web.on("upgrade", (req, socket, head) => {
 *   if (req.url === "/pointsub") upgrade.handleUpgrade(req, socket, head);
 *   else chat.handleUpgrade(req, socket, head, (ws) => chat.emit("connection", ws, req));
 * });
 * ```
 *
 * One listener at a time takes its requests.
 */
export function wsUpgradeHandler(): WsUpgradeHandler {
  return new UpgradeHook();
}

type WsModule = typeof Ws;
/** `ws` (and with it node:http/https) is loaded on first use. */
let wsModule: Promise<WsModule> | undefined;
function loadWs(): Promise<WsModule> {
  wsModule ??= import("ws");
  return wsModule;
}

/**
 * The part of a WebSocket the transport uses: a client's `ws` WebSocket,
 * or on a server pointsub's own frames on the upgraded socket ({@link RawServerWs}).
 */
interface WsLike {
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: Uint8Array, options: typeof SEND_OPTIONS, cb?: () => void): void;
  ping(data: Uint8Array): void;
  pong(data: Uint8Array): void;
  close(code: number, reason?: string): void;
  terminate(): void;
  pause(): void;
  resume(): void;
}

/**
 * A pointsub transport over one open WebSocket. Pausing pauses the
 * socket and the parser: a frame not parsed yet waits as bytes until resume.
 */
class WsTransport extends WsReceiver implements Transport, WsFrameOwner {
  readonly localUrl: string;
  readonly remoteUrl: string;
  private readonly ws: WsLike;
  private needDrain = false;
  /** Bytes handed to `ws` so far. */
  private sentBytes = 0;
  /** Bytes the peer's WebSocket has read (the newest pong's mark). */
  private ackedBytes = 0;
  /** `sentBytes` at the last ping. */
  private markedBytes = 0;
  /** Pings awaiting their pong: ping number and `sentBytes` when it was sent, oldest first (made on the first). */
  private marks: { seq: number; bytes: number }[] | undefined;
  private nextSeq = 0;
  /** No pong came in time: the in-flight bound is lifted until the next pong. */
  private windowLifted = false;
  private pongTimer: ReturnType<typeof setTimeout> | undefined;
  /** The socket under the WebSocket (a TLSSocket for wss://). */
  private readonly socket: net.Socket | undefined;
  /** The in-flight bound (`ws.maxInFlightBytes`). */
  private readonly window: number;
  /** A client's data messages, framed and masked into reused memory (ws-client-frames.ts); undefined: `ws` sends them. */
  private readonly frames: MaskedFrameWriter | undefined;
  /**
   * After a write said "full" while the socket still held bytes: what is
   * written meanwhile, copied, sent as one write once the socket wrote what
   * it held (undefined: not holding). The writer writes on after "full" —
   * control frames, whether or not the transport can take them: a client
   * that never read had the server answer one CANCEL per read, each a
   * message of its own (two socket writes and a copy: ~520 B of memory for
   * 11 bytes), ~470,000 of them before the slow-peer bound stopped reading it.
   */
  /** @internal */
  held: Uint8Array | undefined = undefined;
  /** @internal */
  heldLength = 0;
  /** {@link flushHeld} as a function (made on the first hold). */
  private heldFn: ((err?: Error | null) => void) | undefined = undefined;

  constructor(
    ws: Ws.WebSocket | RawServerWs,
    socket: net.Socket | undefined,
    localUrl: string,
    remoteUrl: string,
    window = IN_FLIGHT_WINDOW,
    randomFill?: (b: Uint8Array) => unknown,
  ) {
    super(Infinity);
    this.ws = ws;
    this.window = window;
    this.socket = socket;
    this.frames =
      randomFill !== undefined && socket !== undefined
        ? new MaskedFrameWriter(socket, randomFill, this.sentCallback())
        : undefined;
    this.localUrl = localUrl;
    this.remoteUrl = remoteUrl;
    // Hold the socket until the connection attaches (a server may accept on a later turn).
    ws.pause();
    if (ws instanceof RawServerWs) {
      ws.start(this);
      return;
    }
    // A client's `ws` WebSocket: its events (a server's RawServerWs calls the WsFrameOwner methods).
    ws.binaryType = "nodebuffer";
    ws.on("message", (data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary));
    // Every frame `ws` parses counts (its receiver reads each frame's first two bytes in getInfo): a
    // message's empty fragments raise no event, so counting pings, pongs and empty messages alone let a
    // server flood 2-byte fragments (up to 16,384 a message) with every read of a turn parsed in one go.
    const receiver = (ws as unknown as { _receiver?: WsReceiverInternals })._receiver;
    const getInfo = receiver?.getInfo;
    this.countsEvents = typeof getInfo !== "function" || typeof receiver?.startLoop !== "function";
    if (receiver !== undefined && typeof getInfo === "function" && !this.countsEvents && !knownStates(receiver)) {
      // A `ws` whose receiver states are not the ones park() sets: every frame counted, nothing parked.
      receiver.getInfo = (cb: unknown) => {
        this.counted();
        getInfo.call(receiver, cb);
      };
    } else if (receiver !== undefined && typeof getInfo === "function" && !this.countsEvents) {
      this.receiver = receiver;
      receiver.getInfo = (cb: unknown) => {
        // Paused (or not attached yet): the next frame is not parsed (see park).
        if ((this.paused || this.handlers === undefined) && !this.socketGone && receiver._state === WS_GET_INFO) {
          this.park(cb);
          return;
        }
        this.counted();
        getInfo.call(receiver, cb);
      };
      // The socket closed: `ws` (its 'close' listener ran first) gave its receiver what the socket still held and
      // ends it; the receiver parses what it has, so `ws` reports the close (it waits for the receiver to finish).
      socket?.once("close", () => {
        this.socketGone = true;
        this.unpark();
      });
    }
    ws.on("pong", (data: Buffer) => {
      if (this.countsEvents) this.counted();
      this.onPong(data);
    });
    ws.on("ping", (data: Buffer) => {
      if (this.countsEvents) this.counted();
      this.onPing(data);
    });
    ws.on("error", (err: Error & { code?: string }) => {
      this.error ??= wsError(err);
    });
    ws.once("close", (code: number, reason: Buffer) => this.onWsClose(code, reason.toString()));
    // `ws` ends its side of the socket once nothing more will be read (close frames exchanged, the
    // peer's FIN, a protocol error): the socket goes now. Before, a server that sent its close frame
    // (or broke the mapping) and kept its TCP side open held the connection, and every call on it,
    // for `ws`'s close timeout (30 s).
    socket?.once("finish", destroySocket);
  }

  /** Later events go to `h` (a server's session takes them from its pre-handshake binding). */
  reattach(h: TransportHandlers): void {
    this.handlers = h;
  }

  /** The connection went quiet: a server reads into a small buffer again, a client drops its free slabs. */
  trim(): void {
    if (this.ws instanceof RawServerWs) this.ws.trim();
    this.frames?.trim();
  }

  /** Payload bytes from {@link RawServerWs} (a view of its read): delivered now, or held (views kept). */
  onBinary(chunk: Uint8Array): boolean {
    if (this.closed || this.error !== undefined) return false;
    const h = this.handlers;
    if (h !== undefined && !this.paused && this.inbox.length === 0) return h.onData(chunk);
    this.received(chunk);
    return true;
  }

  /** The socket under {@link RawServerWs} failed. */
  onSocketError(err: Error): void {
    this.error ??= wsError(err);
  }

  /** {@link RawServerWs} refused what the peer sent (it closes the socket with the matching code). */
  onProtocolError(err: PointSubError): void {
    this.error ??= err;
    this.dropHeld();
  }

  peerCertificate(): PeerCertificate | undefined {
    return this.socket === undefined ? undefined : peerCertificateOf(this.socket);
  }

  write(chunks: readonly Uint8Array[]): boolean {
    const ws = this.ws;
    if (this.closed || ws.readyState !== 1) return false;
    if (this.held !== undefined) {
      holdChunks(this, chunks);
      this.needDrain = true;
      return false;
    }
    // Small writes of one turn (messages, pings, pongs) leave together in one
    // writev at its end; a large one goes at once, with what waits and its ping.
    if (!this.corked && this.socket !== undefined) {
      this.corked = true;
      this.socket.cork();
      uncorkLater(this);
    }
    this.sendFn ??= (m, last) => this.send(m, last);
    const n = sendAsMessages(chunks, this.sendFn, allocUnzeroed);
    if (n === 0) return true;
    this.sentBytes += n;
    if (this.sentBytes - this.markedBytes >= MARK_EVERY) this.mark();
    if (n >= CORK_MAX) this.uncork();
    if (this.writable()) return true;
    this.needDrain = true;
    // Pings await their pongs: if none comes in time, the in-flight bound is lifted (pongLate).
    if (this.pongTimer === undefined && this.marks !== undefined && this.marks.length !== 0 && !this.windowLifted) {
      this.pongTimer = setTimeout(pongLate, PONG_WAIT_MS, this);
    }
    // Bytes wait in the socket: what the writer writes on is held till they are written (an empty write's callback).
    const s = this.socket;
    if (s !== undefined && s.writableLength !== 0 && !s.destroyed && !s.writableEnded) {
      this.held = NOTHING;
      this.heldFn ??= (err) => this.flushHeld(err);
      s.write(NOTHING, this.heldFn);
    }
    return false;
  }

  /**
   * The socket wrote what it held before the hold began: the bytes held go
   * now, and a drain is reported if there is room. It failed (`err`): the
   * socket is gone, nothing drained (the close comes after).
   */
  private flushHeld(err?: Error | null): void {
    const h = this.held;
    const n = this.heldLength;
    this.held = undefined;
    this.heldLength = 0;
    if (err != null) return;
    if (h !== undefined && n !== 0 && !this.closed && this.ws.readyState === 1 && !this.write([h.subarray(0, n)]))
      return;
    this.drainIfWritable();
  }

  /** Bytes the socket under the WebSocket holds, not yet taken by the OS (housekeeping's slow-peer rule). */
  bytesHeld(): number {
    return (this.socket?.writableLength ?? 0) + this.heldLength;
  }

  /** Bytes the OS took from the socket so far (framing included). */
  bytesTaken(): number {
    const s = this.socket;
    return s === undefined ? 0 : s.bytesWritten - s.writableLength;
  }

  /** The socket is corked until the end of this turn. */
  private corked = false;
  /** {@link send} as a function (made on the first write). */
  private sendFn: ((message: Uint8Array<ArrayBuffer>, last: boolean) => void) | undefined;
  /** {@link sent} as a function (made when first needed). */
  private sentFn: ((err?: Error | null) => void) | undefined;
  uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket?.uncork();
  }

  /** The newest ping not answered yet. */
  private pingData: Buffer | undefined;
  /**
   * A ping: answered once per turn (after everything read with it was
   * processed), for the newest ping only — RFC 6455 §5.5.3 allows it, and a
   * pong acknowledges everything sent before its ping. A peer that floods
   * pings gets one pong per read, not one per ping. One pong at a time
   * waits to be written: the newest ping that came meanwhile is answered once
   * the socket wrote it. Before, a server flooding pings and reading nothing
   * had a pong per turn pile up in the client's socket (~0.5 MB a second)
   * until the slow-peer rule.
   */
  private onPing(data: Buffer): void {
    if (this.pingData === undefined && !this.ponging) queueMicrotask(() => this.pong());
    this.pingData = data;
  }
  /** A pong was handed to the socket and is not written yet. */
  private ponging = false;
  /** {@link ponged} as a function (made on the first pong). */
  private pongedFn: (() => void) | undefined;
  private pong(): void {
    const data = this.pingData;
    if (data === undefined || this.ponging) return;
    this.pingData = undefined;
    if (this.ws.readyState !== 1) return;
    this.ponging = true;
    this.pongedFn ??= () => this.ponged();
    (this.ws as Ws.WebSocket).pong(data, undefined, this.pongedFn);
  }
  /** The socket wrote the pong (or failed): the newest ping since, if any, is answered now. */
  private ponged(): void {
    this.ponging = false;
    this.pong();
  }

  /** No pong within {@link PONG_WAIT_MS} while held back by the in-flight bound. */
  pongLate(): void {
    this.pongTimer = undefined;
    this.windowLifted = true;
    this.drainIfWritable();
  }

  /**
   * Room below both bounds: `ws`'s unsent bytes and the bytes in flight to
   * the peer. While this side does not read, it cannot see the peer's pongs:
   * the in-flight bound then does not apply (else a peer waiting for this
   * side to read before it reads again would wait forever).
   */
  private writable(): boolean {
    return (
      this.ws.bufferedAmount < WRITE_HIGH_WATER &&
      (this.paused || this.windowLifted || this.sentBytes - this.ackedBytes < this.window)
    );
  }

  /** Sends a ping after the bytes sent so far: its pong says the peer read them. */
  private mark(): void {
    if (this.ws.readyState !== 1) return;
    const seq = this.nextSeq++ >>> 0;
    this.markedBytes = this.sentBytes;
    this.marks ??= [];
    const marks = this.marks;
    if (marks.length >= MAX_MARKS) marks.shift();
    marks.push({ seq, bytes: this.sentBytes });
    const payload = Buffer.allocUnsafe(4);
    payload.writeUInt32BE(seq);
    this.ws.ping(payload);
  }

  /** A pong: the peer read everything sent before its ping (unknown pongs are ignored). */
  onPong(data: Uint8Array): void {
    const marks = this.marks;
    if (data.length !== 4 || marks === undefined || marks.length === 0) return;
    const seq = ((data[0] << 24) | (data[1] << 16) | (data[2] << 8) | data[3]) >>> 0;
    let i = 0;
    while (i < marks.length && marks[i].seq !== seq) i++;
    if (i === marks.length) return;
    this.ackedBytes = marks[i].bytes;
    marks.splice(0, i + 1);
    this.windowLifted = false;
    if (this.pongTimer !== undefined) {
      clearTimeout(this.pongTimer);
      this.pongTimer = undefined;
    }
    // Every ping is answered: mark what was sent since the last one, so it is acknowledged too.
    if (marks.length === 0 && this.sentBytes > this.markedBytes) this.mark();
    this.drainIfWritable();
  }

  private drainIfWritable(): void {
    // Bytes held: their write reports the drain (flushHeld).
    if (!this.needDrain || this.closed || this.held !== undefined || !this.writable()) return;
    this.needDrain = false;
    this.handlers?.onDrain();
  }

  end(): void {
    if (this.closed || this.ws.readyState >= 2) return;
    // Queued messages go first (and the bytes held), then the close frame.
    if (this.held !== undefined) this.flushHeld(null);
    this.ws.close(CLOSE_NORMAL);
  }

  destroy(error?: Error): void {
    if (error !== undefined) this.error ??= error;
    this.destroyed = true;
    this.dropHeld();
    if (this.closed) this.reportClose();
    else this.ws.terminate();
  }

  protected stopReading(): void {
    this.ws.pause();
    // Writes waiting for pongs may go on (see writable()).
    if (this.needDrain) queueMicrotask(this.sentCallback());
  }

  protected startReading(): void {
    this.unpark();
    // Parsing what was parked may have paused the connection again.
    if (!this.yielding && !this.paused) this.ws.resume();
  }

  /** A client's `ws` receiver, hooked (undefined: its internals differ, it parses every read whole). */
  private receiver: WsReceiverInternals | undefined = undefined;
  /** The callback of the receiver's write whose parsing stopped at a frame while paused ({@link park}). */
  private parked: unknown = undefined;
  /** The socket closed: the receiver parses what it holds (nothing is parked any more). */
  private socketGone = false;
  /**
   * {@link destroy} was called: what `ws` still parses (what was parked, what the socket held) is dropped, not
   * held for a connection that is gone — held, it kept the close from being reported while paused.
   */
  private destroyed = false;

  /**
   * Stops `ws`'s parser before a frame while the connection does not read
   * (as `ws` does itself to defer an event): the rest of the read stays the
   * bytes it is. Pausing `ws` pauses the socket, but `ws` parses each read
   * whole: one 64 KiB read of a server's 1-byte messages was ~21,800
   * messages (a Buffer and a view each) held until resume, ~5 MB charged to
   * no budget (`attack/ws-paused-parse.test.ts`).
   */
  private park(cb: unknown): void {
    this.parked = cb;
    (this.receiver as WsReceiverInternals)._state = WS_DEFER_EVENT;
  }

  /** The parser goes on from the frame it stopped at (and with the socket's next reads). */
  private unpark(): void {
    const cb = this.parked;
    const r = this.receiver;
    if (cb === undefined || r === undefined) return;
    this.parked = undefined;
    r._state = WS_GET_INFO;
    r.startLoop(cb);
  }

  protected reported(): void {}

  /** The peer broke the mapping (a text message): close with 1003 and report a protocol error. */
  protected fail(err: PointSubError): void {
    this.error ??= err;
    this.dropHeld();
    this.ws.close(CLOSE_UNSUPPORTED_DATA, err.message.slice(0, 120));
    // Our close frame, then our FIN (and the socket goes: the 'finish' above): the peer's answer is not awaited.
    this.socket?.end();
  }

  /**
   * Sends one message. The last message of every write tells when it reached
   * the kernel: after a write that returned false, the last of these
   * callbacks sees the buffer drained (whether a write fills the buffer is
   * known only after it, headers and TLS included). A client frames its
   * messages itself ({@link MaskedFrameWriter}: every socket write it makes
   * calls back).
   */
  private send(message: Uint8Array, last: boolean): void {
    const frames = this.frames;
    if (frames !== undefined) frames.send(message);
    else this.ws.send(message, SEND_OPTIONS, last ? this.sentCallback() : undefined);
  }

  /**
   * A send callback: the message went to the kernel — or failed, the socket gone: then nothing drained
   * (a drain had the connection's waiting sends resolve as if written; the close comes after).
   */
  private sentCallback(): (err?: Error | null) => void {
    this.sentFn ??= (err) => {
      if (err == null) this.drainIfWritable();
    };
    return this.sentFn;
  }

  /** Frames `ws` parsed since this client last yielded ({@link FRAMES_PER_TURN}). */
  private controlFrames = 0;
  private yielding = false;
  /** `ws`'s receiver could not be hooked: only the frames its events tell of count (pings, pongs, empty messages). */
  private countsEvents = true;

  /**
   * A frame parsed (control frames, empty fragments and empty messages never
   * reach the connection, whose read gate counts only what does): after
   * {@link FRAMES_PER_TURN} of them the socket reads no more this turn.
   * Before, a server flooding pings (or empty fragments) had every read
   * libuv made in a turn (up to 32 of 64 KiB) parsed in one go.
   */
  private counted(): void {
    if (++this.controlFrames < FRAMES_PER_TURN || this.yielding) return;
    this.yielding = true;
    this.ws.pause();
    setImmediate(endYield, this);
  }

  /** The turn in which this client yielded is over: it reads again (unless the connection paused it). */
  endYield(): void {
    this.yielding = false;
    this.controlFrames = 0;
    if (!this.paused && !this.closed) this.ws.resume();
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (this.closed || this.error !== undefined || this.destroyed) return;
    if (data.length === 0 && this.countsEvents) this.counted();
    if (!isBinary) {
      this.fail(new PointSubError("ERR_PROTOCOL", "pointsub takes binary WebSocket messages, not a text message"));
      return;
    }
    if (data.length !== 0) this.received(new Uint8Array(data.buffer, data.byteOffset, data.length));
  }

  /**
   * A client's WebSocket closed (`code`, `reason`) before any message of the server's handshake: the
   * connection was never served (a server refusing it whose GOAWAY was lost to a reset; a proxy with nothing
   * behind it): ERR_CONNECT, as tcp:// and tls:// say it. Before, ERR_CONNECTION_CLOSED "connection to
   * ws://unknown:0 closed", which says calls under way may have been lost. Not over the peer's own close code
   * that says why, nor over an error other than a failed socket.
   */
  closedUnserved(url: string, code: number, reason: string): void {
    const e = this.error;
    if (wsCloseError(code, reason) !== undefined) return;
    if (e !== undefined && (e as { code?: unknown }).code !== "ERR_CONNECTION_CLOSED") return;
    this.error = new PointSubError(
      "ERR_CONNECT",
      `cannot connect to ${url}: closed before any byte of the server's handshake (a server closing, or a tunnel or proxy with nothing behind it)`,
      { cause: e },
    );
  }

  onWsClose(code: number, reason: string): void {
    if (this.pongTimer !== undefined) clearTimeout(this.pongTimer);
    this.pongTimer = undefined;
    this.error ??= wsCloseError(code, reason);
    this.socketClosed();
  }
}

/** The parts of `ws`'s Receiver (ws/lib/receiver.js) a client's transport uses to stop its parser while paused. */
interface WsReceiverInternals {
  getInfo(cb: unknown): void;
  startLoop(cb: unknown): void;
  _state: number;
}
/** The Receiver's states (ws/lib/receiver.js): a frame's first bytes next; an event deferred (the loop stops, the write's callback waits). */
const WS_GET_INFO = 0;
const WS_DEFER_EVENT = 6;
/** The Receiver's parsing steps, one a state (stubbed by {@link knownStates}). */
const WS_STEPS = ["getInfo", "getPayloadLength16", "getPayloadLength64", "getMask", "getData", "decompress"];
/** {@link knownStates}' answer (one `ws` per process). */
let statesKnown: boolean | undefined;

/**
 * Whether `ws`'s Receiver reads a frame's first bytes in state {@link WS_GET_INFO} and stops its loop in
 * {@link WS_DEFER_EVENT}, as park() needs: these numbers are `ws`'s internals, and a `ws` that renumbered them
 * had a parked receiver run another state's step (a misread stream) or spin in its loop for ever (the process
 * hung). Asked once, of an object of the Receiver's prototype whose steps are stubs and whose loop flag
 * reads false (one turn of the loop at most). False: nothing is parked, reads are parsed whole.
 */
function knownStates(receiver: WsReceiverInternals): boolean {
  if (statesKnown !== undefined) return statesKnown;
  let steps = "";
  let stopped = false;
  try {
    const probe = Object.create(Object.getPrototypeOf(receiver)) as WsReceiverInternals & Record<string, unknown>;
    for (const step of WS_STEPS) {
      probe[step] = () => {
        steps += `${step} `;
      };
    }
    Object.defineProperty(probe, "_loop", {
      get: () => false,
      set: (v: unknown) => {
        if (v === false) stopped = true;
      },
    });
    // Its end: no write callback to call.
    probe._errored = true;
    probe._state = WS_GET_INFO;
    probe.startLoop(undefined);
    const info = steps === "getInfo " && !stopped;
    steps = "";
    probe._state = WS_DEFER_EVENT;
    probe.startLoop(undefined);
    statesKnown = info && stopped && steps === "";
  } catch {
    statesKnown = false;
  }
  return statesKnown;
}

/** Transports corked this turn: uncorked together at its end (one microtask, no closure per connection). */
let corkedNow: WsTransport[] = [];
function uncorkLater(t: WsTransport): void {
  if (corkedNow.length === 0) queueMicrotask(uncorkAll);
  corkedNow.push(t);
}
function uncorkAll(): void {
  const list = corkedNow;
  corkedNow = [];
  for (let i = 0; i < list.length; i++) list[i].uncork();
}

function destroySocket(this: net.Socket): void {
  this.destroy();
}

function endYield(t: WsTransport): void {
  t.endYield();
}

function pongLate(t: WsTransport): void {
  t.pongLate();
}

/** Drops the addresses Node cached on `socket` (a later `remoteAddress` asks the kernel again). */
function forgetAddresses(socket: net.Socket): void {
  const s = socket as unknown as { _peername?: unknown; _sockname?: unknown };
  s._peername = undefined;
  s._sockname = undefined;
}

/** A `ws` error as a typed one. */
function wsError(err: Error & { code?: string }): PointSubError {
  if (err instanceof PointSubError) return err;
  if (err.code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH") {
    return new PointSubError("ERR_PROTOCOL", `WebSocket message over ${WS_MAX_MESSAGE} bytes`, { cause: err });
  }
  if (err.code?.startsWith("WS_ERR_")) {
    return new PointSubError("ERR_PROTOCOL", `WebSocket protocol error: ${err.message}`, { cause: err });
  }
  // OpenSSL's failures (a record that does not decrypt) name its source file and line: their reason alone.
  const reason = (err as { reason?: unknown }).reason;
  if (err.code?.startsWith("ERR_SSL_") === true && typeof reason === "string") {
    return new PointSubError("ERR_CONNECTION_CLOSED", `TLS failed: ${reason}`, { cause: err });
  }
  return new PointSubError("ERR_CONNECTION_CLOSED", `WebSocket failed: ${err.message}`, { cause: err });
}

/**
 * The upgrade answered `status` instead of 101. 503: the server is over its connection limits (or
 * closing): retryable, as tcp://'s GOAWAY says. 401: a wss:// server refused this side's certificate
 * (mutual TLS); 403: its origin (ws.origins). Any other 4xx but 408 and 429 says the request is wrong
 * (most often a path the server does not serve, 404): ERR_PROTOCOL, not retryable (before, ERR_CONNECT:
 * a resilient client tried a wrong path again for ever). 408, 429 and 5xx stay ERR_CONNECT (retryable).
 * A status under 300 (a 2xx page, a 101 that is no upgrade): the server does not speak WebSocket
 * there, as {@link notPointsub} says.
 */
function upgradeRefused(url: URL, status: number, text: string, location: string | undefined): PointSubError {
  const message = `cannot connect to ${url.href}: HTTP ${status} ${text}`;
  if (status < 300) return notPointsub(message);
  if (status === 503) return new PointSubError("ERR_OVERLOADED", message);
  // A redirect: asking the same URL again gets the same answer (before, a retryable ERR_CONNECT: a
  // resilient client asked for ever). Not followed: where it leads is the server's word, not the caller's URL.
  if (status >= 300 && status < 400) {
    const to = location === undefined ? "" : ` to ${JSON.stringify(location.slice(0, 200))}`;
    return new PointSubError("ERR_PROTOCOL", `${message}: redirected${to}`, {
      suggestion: "The server redirects the WebSocket upgrade: connect to the URL it names, if you trust it.",
    });
  }
  if (status === 401 || status === 403) return new PointSubError("ERR_UNAUTHORIZED", message);
  if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
    return new PointSubError("ERR_PROTOCOL", message, {
      suggestion:
        "The server refused the WebSocket upgrade: check the URL's path against the server's listen URL, and that a pointsub server (not another web service) answers there.",
    });
  }
  return new PointSubError("ERR_CONNECT", message);
}

/**
 * The server answered the upgrade, but not as a pointsub WebSocket server does: not in HTTP (a
 * tcp:// port), not with 101, or with a 101 that `ws` refused (no or another subprotocol, a wrong Sec-WebSocket-Accept, an
 * extension not asked for). Asking again gets the same answer: ERR_PROTOCOL, not retryable (it was
 * ERR_CONNECT, and a resilient client pointed at another WebSocket service asked for ever).
 */
function notPointsub(message: string): PointSubError {
  return new PointSubError("ERR_PROTOCOL", message, {
    suggestion: `No pointsub WebSocket answers at this URL (it takes the subprotocol ${WS_SUBPROTOCOL}): check the URL's host, port and path against the server's listen URL.`,
  });
}

/** `ws://host:port/path` (the path left out when it is `/`). */
function wsHref(scheme: string, host: string | undefined, port: number | undefined, path: string): string {
  return hostUrl(scheme, host, port) + (path === "/" ? "" : path);
}

function scheme(url: URL): "ws" | "wss" {
  return url.protocol === "wss:" ? "wss" : "ws";
}

async function connectWs(url: URL, options: TransportConnectOptions & WsTransportOptions): Promise<Transport> {
  checkSignal(options);
  const window = inFlightBound(options.ws);
  const { WebSocket } = await loadWs();
  // ws loads it too: the masking keys of the messages this client frames itself.
  const { randomFillSync } = await import("node:crypto");
  const o = options.tls ?? {};
  const host = urlHost(url);
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(new PointSubError("ERR_CANCELLED", `connect to ${url.href} aborted`, { cause: options.signal.reason }));
      return;
    }
    // A WebSocket URL takes no fragment: `ws` refuses it, which was ERR_CONNECT (retryable: a resilient
    // client tried it again for ever). The address is wrong, not the way to it.
    if (url.hash !== "") {
      reject(new PointSubError("ERR_UNSUPPORTED_URL", `${url.href}: a WebSocket URL takes no #fragment`));
      return;
    }
    let ws: Ws.WebSocket;
    try {
      // ws hands the TLS options (servername included) to tls.connect.
      const clientOptions: Ws.ClientOptions & Pick<Tls.ConnectionOptions, "servername"> = {
        perMessageDeflate: false,
        // Pings are answered by this side (onPing): once per turn.
        autoPong: false,
        maxPayload: WS_MAX_MESSAGE,
        maxBufferedChunks: WS_MAX_BUFFERED_READS,
        maxFragments: WS_MAX_FRAGMENTS,
        // No handshakeTimeout of ws's (the socket's idle timeout): connectDeadline is the deadline, and it looks
        // again after the turn's I/O. After a stall of this process ws's ran first and aborted an upgrade whose
        // answer had come in time (ERR_TIMEOUT "Opening handshake has timed out", the 101 in the socket).
        headers: options.ws?.headers,
        ca: o.ca as Tls.ConnectionOptions["ca"],
        cert: o.cert as Tls.ConnectionOptions["cert"],
        key: o.key as Tls.ConnectionOptions["key"],
        rejectUnauthorized: o.rejectUnauthorized ?? true,
        servername: o.servername ?? (net.isIP(host) ? undefined : host),
      };
      ws = new WebSocket(url.href, [WS_SUBPROTOCOL], clientOptions);
    } catch (cause) {
      // Thrown before any socket: the options are wrong (ws.headers that are no HTTP header), not the way to
      // the peer (before, ERR_CONNECT: retryable, a resilient client tried again for ever).
      reject(
        tlsError(cause, url.href) ??
          new PointSubError(
            "ERR_INVALID_ARGUMENT",
            `invalid options to connect to ${url.href}: ${(cause as Error).message}`,
            { cause },
          ),
      );
      return;
    }
    let settled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const cleanup = () => {
      settled = true;
      options.signal?.removeEventListener("abort", onAbort);
      if (timer !== undefined) clearTimeout(timer);
    };
    const fail = (err: PointSubError) => {
      if (settled) return;
      cleanup();
      ws.terminate();
      reject(err);
    };
    const onAbort = () =>
      fail(new PointSubError("ERR_CANCELLED", `connect to ${url.href} aborted`, { cause: options.signal?.reason }));
    options.signal?.addEventListener("abort", onAbort, { once: true });
    // The connect's only deadline (ws's handshakeTimeout, the socket's idle timeout, is not given: a server
    // that trickled its TLS flight or its 101 answer a byte at a time held the connect for hours). It counts
    // from now, whatever arrives.
    timer = connectDeadline(url, options.connectTimeoutMs, fail);
    ws.once("unexpected-response", (_req: unknown, res: Http.IncomingMessage) => {
      fail(upgradeRefused(url, res.statusCode ?? 0, res.statusMessage ?? "", res.headers.location));
    });
    // A 101 came: an error before 'open' is `ws` refusing that answer (it checks it in the same turn).
    let switched = false;
    ws.once("upgrade", () => {
      switched = true;
    });
    ws.once("error", (err: Error & { code?: string }) => {
      if (switched) {
        fail(notPointsub(`cannot connect to ${url.href}: the server's upgrade answer: ${err.message}`));
        return;
      }
      // The answer does not start as HTTP: no HTTP server there (a pointsub tcp:// port sends its preface, a
      // TLS port an alert). Any other parse error is an HTTP answer Node's strict parser refused (a proxy's
      // 502/503 with bare LF line ends, headers over its limit): the server's passing state, retryable.
      if (err.code === "HPE_INVALID_CONSTANT") {
        fail(notPointsub(`cannot connect to ${url.href}: the server does not answer in HTTP (${err.message})`));
        return;
      }
      const timedOut = /timed out/i.test(err.message);
      fail(
        tlsError(err, url.href) ??
          new PointSubError(timedOut ? "ERR_TIMEOUT" : "ERR_CONNECT", `cannot connect to ${url.href}: ${err.message}`, {
            cause: err,
          }),
      );
    });
    ws.once("open", () => {
      if (settled) return;
      cleanup();
      const s = (ws as unknown as { _socket: net.Socket })._socket;
      const path = url.pathname;
      // A socket reset as the upgrade completed has no address any more: the URL asked (it was ws://unknown:0).
      const remote =
        s?.remoteAddress === undefined
          ? wsHref(scheme(url), urlHost(url), Number(url.port) || (scheme(url) === "wss" ? 443 : 80), path)
          : wsHref(scheme(url), s.remoteAddress, s.remotePort, path);
      const t = new WsTransport(
        ws,
        s,
        wsHref(scheme(url), s?.localAddress, s?.localPort, "/"),
        remote,
        window,
        randomFillSync,
      );
      // Before the transport's own close listener, which reports the close.
      let heard = false;
      ws.once("message", () => {
        heard = true;
      });
      ws.prependOnceListener("close", (code: number, reason: Buffer) => {
        if (!heard) t.closedUnserved(remote, code, reason.toString());
      });
      resolve(t);
    });
  });
}

/** `ws.maxInFlightBytes`, checked (ERR_INVALID_ARGUMENT), or the default. */
function inFlightBound(o: WsOptions | undefined): number {
  return checkLimit("ws.maxInFlightBytes", o?.maxInFlightBytes, IN_FLIGHT_WINDOW, 1024 ** 3);
}

function checkLimit(name: string, value: number | undefined, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !(value >= 1 && value <= max)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a number from 1 to ${max}, got ${value}`);
  }
  return value;
}

/** The host name of an origin or a Host header (brackets of an IPv6 address kept), lower case; undefined when unparsable. */
function hostnameOf(originOrHost: string, isHost: boolean): string | undefined {
  try {
    return new URL(isHost ? `http://${originOrHost}` : originOrHost).hostname;
  } catch {
    return undefined;
  }
}

/** Which browser origins a listener takes (see {@link WsOptions.origins}). */
function originPolicy(
  options: TransportListenOptions & WsTransportOptions,
  listenName: string,
): (origin: string, host: string | undefined) => boolean {
  const origins = options.ws?.origins;
  if (typeof origins === "function") return (origin) => origins(origin) === true;
  if (origins !== undefined) {
    if (!Array.isArray(origins) || origins.some((o) => typeof o !== "string")) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "ws.origins must be a list of origins or a function");
    }
    const allowed = new Set(origins);
    return (origin) => allowed.has("*") || allowed.has(origin);
  }
  // The server's own options come with the adapter's (TransportAdapter): an authenticate hook decides who connects.
  if (typeof (options as { authenticate?: unknown }).authenticate === "function") return () => true;
  return (origin, host) => {
    const page = hostnameOf(origin, false);
    const named = host === undefined ? undefined : hostnameOf(host, true);
    if (page === undefined || named === undefined || page !== named) return false;
    // DNS rebinding: a foreign name made to resolve to this machine comes as that name in Origin and Host
    // alike. Taken: addresses, localhost and the listen URL's own name.
    return named === "localhost" || named === listenName || net.isIP(named.replace(/^\[(.*)\]$/, "$1")) !== 0;
  };
}

/** node:http's answers to requests it could not read, by error code (anything else: 400). */
const HTTP_REFUSALS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, "Request Header Fields Too Large"],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, "Payload Too Large"],
  ERR_HTTP_REQUEST_TIMEOUT: [408, "Request Timeout"],
};

/**
 * One request per connection on a listener's own http server: the first
 * (the upgrade, or a request answered with `Connection: close`: 426, 400
 * to one without a Host header, 417) is served, those
 * pipelined behind it are not made requests (`limitRequests`): a client
 * writing 64 KiB of pipelined 29-byte GETs had ~2,260 of them made in one
 * turn (~15 MB of heap and ~300 ms of a turn per connection; 50 such
 * connections 91 MB, a 480 ms turn; without a Host header node:http
 * answered each 400 itself).
 */
function firstRequestOnly(socket: net.Socket): void {
  limitRequests(socket, 1);
}

/** The 503 a listener answers a connection over its limits with (the client's ERR_OVERLOADED). */
const REFUSED_TEXT = "Service Unavailable: connection limit reached; retry later";

/** Answers an upgrade request that is refused (`headers`: more header lines, each ending in CRLF), and closes its socket. */
function refuse(socket: net.Socket, status: number, text: string, headers = ""): void {
  if (socket.writable) {
    socket.end(
      `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\n${headers}Content-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
    );
  }
  socket.destroy();
}

/**
 * The paths pointsub listeners serve on each http server they listen with
 * (several may share one `ws.httpServer`): a path is one listener's, and an
 * upgrade request to a path none serves is answered 404 when only pointsub
 * listens for upgrades there.
 */
const servedPaths = new WeakMap<Http.Server | Https.Server, Set<string>>();

/** The path of a request target (`/pointsub?x=1` → `/pointsub`). */
function requestPath(target: string | undefined): string {
  const t = target ?? "/";
  const q = t.indexOf("?");
  return q < 0 ? t : t.slice(0, q);
}

/**
 * A ws:// listener: an http(s) server of its own (or the caller's), whose
 * upgrade requests to the URL's path become transports. Connections count as
 * pending from TCP accept (own server) or from the upgrade request (shared
 * server) until the WebSocket handshake completed, with a deadline.
 */
async function listenWs(
  url: URL,
  options: TransportListenOptions & WsTransportOptions & { backlog?: number },
  onTransport: (t: Transport) => void,
): Promise<TransportListener> {
  const { WebSocketServer, WebSocket } = await loadWs();
  /**
   * `ws` validates the upgrade request and answers it; its WebSocket then
   * only takes the socket (and the bytes read past the request): pointsub
   * reads and writes the frames itself (ws-server-socket.ts).
   */
  class Upgraded extends WebSocket {
    socket: net.Socket | undefined;
    head: Buffer | undefined;
    setSocket(socket: net.Socket, head: Buffer): void {
      this.socket = socket;
      this.head = head;
    }
  }
  const secure = url.protocol === "wss:";
  const path = url.pathname === "" ? "/" : url.pathname;
  const timeout = checkLimit("handshakeTimeoutMs", options.handshakeTimeoutMs, HANDSHAKE_TIMEOUT_MS, 2 ** 31 - 1);
  const maxPending = checkLimit(
    "ws.maxPendingUpgrades",
    options.ws?.maxPendingUpgrades,
    MAX_PENDING_UPGRADES,
    Infinity,
  );
  const window = inFlightBound(options.ws);
  const backlog = listenBacklog(options.backlog);
  const onPending = options.onPending;
  const onRefused = options.onRefused;
  const originAllowed = originPolicy(options, url.hostname.toLowerCase());
  const wss = new WebSocketServer({
    noServer: true,
    // No extension is accepted: a client offering permessage-deflate gets none.
    perMessageDeflate: false,
    clientTracking: false,
    WebSocket: Upgraded,
    handleProtocols: (offered) => (offered.has(WS_SUBPROTOCOL) ? WS_SUBPROTOCOL : false),
  });
  /**
   * Sockets admitted and not yet upgraded (nor closed), with their deadline
   * and their remote end (counted per address by the server, as tls:// counts
   * its handshakes; undefined when the socket does not say).
   */
  const pending = new Map<net.Socket, { timer: ReturnType<typeof setTimeout>; peer: string | undefined }>();
  function leave(socket: net.Socket): boolean {
    const entry = pending.get(socket);
    if (entry === undefined) return false;
    clearTimeout(entry.timer);
    pending.delete(socket);
    socket.off("close", onPendingClose);
    onPending?.(-1, entry.peer);
    return true;
  }
  function onPendingClose(this: net.Socket): void {
    leave(this);
  }
  /** The URL of a socket's remote end (undefined when the socket does not say). */
  function peerOf(socket: net.Socket): string | undefined {
    return typeof socket.remoteAddress === "string"
      ? hostUrl(scheme(url), socket.remoteAddress, socket.remotePort)
      : undefined;
  }
  /** Sockets the upgrade deadline gave up (and told): a wss:// one's TLS handshake timeout is not told again. */
  const givenUp = new WeakSet<net.Socket>();
  /** A pending socket's deadline, after the turn's I/O: not upgraded (nor closed) by then, it is given up. */
  function giveUp(socket: net.Socket, peer: string | undefined, read: number): void {
    // Bytes read in that turn (a wss:// handshake's end: its request is read a turn later): one turn more.
    if (read >= 0 && socket.bytesRead > read && pending.has(socket)) {
      setImmediate(giveUp, socket, peer, -1);
      return;
    }
    if (!leave(socket)) return;
    givenUp.add(socket);
    onRefused?.(
      PointSubError.fromPeer(
        "ERR_TIMEOUT",
        `${peer ?? "a connection"} did not upgrade to a WebSocket within ${timeout} ms`,
      ),
      peer,
    );
    socket.destroy();
  }
  /** Admits a connection into the pending set, or closes it. */
  function admit(socket: net.Socket, upgrade?: net.Socket): boolean {
    const peer = peerOf(socket);
    const full = pending.size >= maxPending;
    if (full && onRefused !== undefined) {
      onRefused(
        PointSubError.fromPeer(
          "ERR_OVERLOADED",
          `refused ${peer ?? "a connection"}: ${maxPending} connections waiting for their upgrade (ws.maxPendingUpgrades)`,
        ),
        peer,
      );
    }
    if (full || onPending?.(1, peer) === false) {
      // Told why where HTTP can be spoken (the upgrade request's socket; a plain ws:// connection
      // before its request): the client's connect rejects with ERR_OVERLOADED, as tcp://'s GOAWAY
      // does, not with a hang-up. A wss:// connection refused before its TLS handshake is just closed.
      const via = upgrade ?? (secure ? undefined : socket);
      if (via !== undefined) refuse(via, 503, REFUSED_TEXT);
      else socket.destroy();
      return false;
    }
    // Due: looked at again after the turn's I/O (setImmediate runs after the poll phase). After a stall of this
    // process the timers run before the socket is read: an upgrade request (or the TLS handshake before it) that
    // came in time and sat in the socket was cut.
    const timer = setTimeout(() => setImmediate(giveUp, socket, peer, socket.bytesRead), timeout);
    timer.unref?.();
    pending.set(socket, { timer, peer });
    socket.once("close", onPendingClose);
    return true;
  }

  const shared = options.ws?.httpServer;
  const hook = options.ws?.upgrade;
  if (hook !== undefined) {
    if (!(hook instanceof UpgradeHook)) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "ws.upgrade must come from wsUpgradeHandler()");
    }
    if (shared !== undefined) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "ws.upgrade and ws.httpServer exclude each other");
    }
    if (hook.target !== undefined) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "this ws.upgrade handler already serves a listener");
    }
  }
  /** Requests come from outside (a shared server or the application's hook): pending counts from the request. */
  const external = shared !== undefined || hook !== undefined;
  let server: Http.Server | Https.Server | undefined;
  /** wss:// with requestCert and rejectUnauthorized: clients whose certificate did not verify are refused here. */
  let verifyClients = false;
  if (shared !== undefined) server = shared;
  else if (hook !== undefined) server = undefined;
  else if (secure) {
    const o = options.tls ?? {};
    if (o.cert === undefined || o.key === undefined) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "wss:// listen needs tls.cert and tls.key");
    }
    // Mutual TLS: a client whose certificate does not verify is answered 401 saying why at its upgrade
    // request (node:https closed it without a word: the client saw "socket hang up").
    verifyClients = (o.requestCert ?? false) && (o.rejectUnauthorized ?? true);
    const https = await import("node:https");
    try {
      server = https.createServer({
        cert: o.cert as Tls.TlsOptions["cert"],
        key: o.key as Tls.TlsOptions["key"],
        ca: o.ca as Tls.TlsOptions["ca"],
        requestCert: o.requestCert ?? false,
        rejectUnauthorized: verifyClients ? false : (o.rejectUnauthorized ?? true),
        handshakeTimeout: timeout,
        requireHostHeader: false,
      });
    } catch (cause) {
      throw (
        keyMismatch(cause) ??
        new PointSubError("ERR_INVALID_ARGUMENT", `invalid TLS options: ${(cause as Error).message}`, { cause })
      );
    }
    // A plain HTTP request (a ws:// client at this wss:// port) is answered 400 saying so.
    onTlsClientError(server, (err, socket) => {
      // Told once: one its upgrade deadline (due with node:tls's timeout) gave up was told so.
      const under = rawOf(socket);
      if (!givenUp.has(under)) {
        const peer = pending.get(under)?.peer ?? hostUrl("wss", under.remoteAddress, under.remotePort);
        leave(under);
        onRefused?.(refusedHandshake(err, peer), peer);
      }
      closeFailedHandshake(socket, err, () => {
        const text = "pointsub: this port speaks TLS: connect with wss://";
        return [
          Buffer.from(
            `HTTP/1.1 400 ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
          ),
        ];
      });
    });
  } else {
    const http = await import("node:http");
    // A request without a Host header reaches onRequest (node:http answered it 400 itself, unseen).
    server = http.createServer({ requireHostHeader: false });
  }
  /** The raw TCP socket under an upgrade request's socket (a TLSSocket keeps it as `_parent`). */
  const rawOf = (socket: net.Socket): net.Socket => {
    const parent = (socket as { _parent?: unknown })._parent;
    return parent instanceof net.Socket ? parent : socket;
  };
  /** An upgrade refused: the socket leaves the pending set, and the server hears why. */
  const refused = (raw: net.Socket, code: ErrorCode, why: string): void => {
    // Not pending: an upgrade to a path not served, on a shared server (counted from its request to ours).
    const peer = pending.get(raw)?.peer ?? peerOf(raw);
    leave(raw);
    onRefused?.(PointSubError.fromPeer(code, `refused ${peer ?? "a connection"}: ${why}`), peer);
  };
  // A request `ws` finds no valid upgrade (its method, Upgrade header, Sec-WebSocket-Key or -Version, a
  // header's syntax) is answered as `ws` does, and the server hears why (before, only the client did).
  wss.on("wsClientError", (err: Error, socket: Duplex) => {
    const s = socket as net.Socket;
    refused(rawOf(s), "ERR_PROTOCOL", `an invalid WebSocket upgrade request: ${err.message}`);
    const version = /version/i.test(err.message);
    refuse(s, /method/i.test(err.message) ? 405 : 400, err.message, version ? "Sec-WebSocket-Version: 13, 8\r\n" : "");
  });
  /**
   * Bytes node:http could not read as a request (a tcp:// client's preface, headers over its limit), or its
   * request timeout: answered as node:http does, and the server hears why. The connection's own failure under
   * HTTP (a reset, a wss:// record that does not decrypt) refuses no request: the socket is only destroyed.
   */
  const onClientError = (err: Error & { code?: string }, socket: Duplex) => {
    const s = socket as net.Socket;
    // node:https tells its handshake timeout at once: the tlsClientError handler acts on it after the turn's I/O.
    if (err.code === "ERR_TLS_HANDSHAKE_TIMEOUT") return;
    const http = err.code?.startsWith("HPE_") === true || err.code === "ERR_HTTP_REQUEST_TIMEOUT";
    if (http && s.writable && s.bytesWritten === 0) {
      const [status, text] = HTTP_REFUSALS[err.code ?? ""] ?? [400, "Bad Request"];
      refused(
        rawOf(s),
        status === 408 ? "ERR_TIMEOUT" : "ERR_PROTOCOL",
        status === 400 ? `a request that is not HTTP (${err.message})` : `an HTTP request refused: ${text}`,
      );
      refuse(s, status, text);
    }
    s.destroy();
  };
  /** The URL of every accepted connection's local end, when the listener is bound to one address (set once listening). */
  let ownUrl: string | undefined;
  const onConnection = (socket: net.Socket) => {
    admit(socket);
  };
  const onRequest = (req: Http.IncomingMessage, res: Http.ServerResponse) => {
    const raw = rawOf(req.socket);
    req.resume();
    // HTTP/1.1 needs a Host header (RFC 9112 §3.2): 400, as node:http answered it (its own check is off, so the
    // server hears of it).
    if (req.headers.host === undefined && req.httpVersion === "1.1") {
      if (pending.has(raw)) refused(raw, "ERR_PROTOCOL", "an HTTP/1.1 request without a Host header");
      res.writeHead(400, { Connection: "close", "Content-Type": "text/plain" });
      res.end("pointsub: a request needs a Host header\n");
      return;
    }
    if (pending.has(raw)) refused(raw, "ERR_PROTOCOL", "a plain HTTP request, not a WebSocket upgrade");
    res.writeHead(426, { Upgrade: "websocket", Connection: "close", "Content-Type": "text/plain" });
    res.end(`pointsub: a WebSocket endpoint (subprotocol ${WS_SUBPROTOCOL})\n`);
  };
  /**
   * A request with an `Expect` other than 100-continue: 417, and the socket closed. node:http answered it 417
   * itself and kept the connection alive: the socket stayed, unused (one request per connection), until its
   * keep-alive timeout or the upgrade deadline, and the server never heard of it.
   */
  const onExpectation = (req: Http.IncomingMessage, res: Http.ServerResponse) => {
    const raw = rawOf(req.socket);
    const expect = String(req.headers.expect).slice(0, 100);
    if (pending.has(raw))
      refused(raw, "ERR_PROTOCOL", `an HTTP request with Expect: ${expect}, not a WebSocket upgrade`);
    req.resume();
    res.writeHead(417, { Connection: "close", "Content-Type": "text/plain" });
    res.end(`pointsub: a WebSocket endpoint (subprotocol ${WS_SUBPROTOCOL}) meets no expectation\n`);
  };
  /** A CONNECT request (a proxy's): refused, and the server hears of it (node:http closed it without a word). */
  const onConnect = (_req: Http.IncomingMessage, socket: Duplex) => {
    const s = socket as net.Socket;
    refused(rawOf(s), "ERR_PROTOCOL", "a CONNECT request (this is no proxy)");
    refuse(s, 405, "Method Not Allowed");
  };
  const onUpgrade = (req: Http.IncomingMessage, given: Duplex, head: Buffer) => {
    // Node 26 hands a request with a body (chunked, or its length not all read) a stream of its own (an
    // UpgradeStream: the body parsed apart, the bytes after it), not the socket. The frames are read from the
    // socket itself (RawServerWs), which threw a TypeError on that stream, uncaught in the http server's
    // 'upgrade' event: one request ended the process of a server on ws.httpServer or ws.upgrade. The
    // request's socket answers instead, and such a request is refused below.
    const socket = given instanceof net.Socket ? given : req.socket;
    if (!(socket instanceof net.Socket)) {
      given.destroy();
      return;
    }
    if (server !== undefined && requestPath(req.url) !== path) {
      // Another listener of the shared server may serve that path: else, when no upgrade listener
      // but pointsub's is there, nobody will answer it.
      const served = servedPaths.get(server);
      if (served?.has(requestPath(req.url)) !== true && server.listenerCount("upgrade") === (served?.size ?? 1)) {
        if (socket.destroyed) return;
        refused(
          rawOf(socket),
          "ERR_PROTOCOL",
          `an upgrade to ${requestPath(req.url).slice(0, 200)}, a path not served here`,
        );
        refuse(socket, 404, "Not Found");
      }
      return;
    }
    const raw = rawOf(socket);
    if (external && !admit(raw, socket)) return;
    if (!pending.has(raw)) {
      socket.destroy();
      return;
    }
    const length = req.headers["content-length"];
    if (
      given !== socket ||
      req.headers["transfer-encoding"] !== undefined ||
      // 1*DIGIT, node:http checked: "00" says no body too.
      (length !== undefined && Number(length) !== 0)
    ) {
      // A WebSocket handshake is a GET without a body (RFC 6455 §4.1); on Node before 26 one became frames.
      refused(raw, "ERR_PROTOCOL", "an upgrade request with a body (a WebSocket handshake has none)");
      refuse(socket, 400, "pointsub: a WebSocket upgrade request has no body");
      given.destroy();
      return;
    }
    if (verifyClients && (socket as Tls.TLSSocket).authorized !== true) {
      const why = clientCertRefusal(socket as Tls.TLSSocket);
      refused(raw, "ERR_UNAUTHORIZED", why);
      refuse(socket, 401, `pointsub: ${why}`);
      return;
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !originAllowed(origin, req.headers.host)) {
      const why = `pages from ${origin.slice(0, 200)} may not connect here (ws.origins)`;
      refused(raw, "ERR_UNAUTHORIZED", why);
      refuse(socket, 403, `pointsub: ${why}`);
      return;
    }
    const offered = String(req.headers["sec-websocket-protocol"] ?? "")
      .split(",")
      .map((p) => p.trim());
    if (!offered.includes(WS_SUBPROTOCOL)) {
      refused(raw, "ERR_PROTOCOL", `an upgrade without the ${WS_SUBPROTOCOL} subprotocol`);
      refuse(socket, 400, `pointsub needs the ${WS_SUBPROTOCOL} subprotocol`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const upgraded = (ws as Upgraded).socket;
      if (!leave(raw) || upgraded === undefined) {
        // Timed out or closed meanwhile.
        socket.destroy();
        return;
      }
      const frames = new RawServerWs(upgraded, (ws as Upgraded).head ?? Buffer.alloc(0));
      const local = ownUrl ?? wsHref(scheme(url), socket.localAddress, socket.localPort, path);
      onTransport(
        new WsTransport(
          frames,
          socket,
          local,
          wsHref(scheme(url), socket.remoteAddress, socket.remotePort, "/"),
          window,
        ),
      );
      // Node caches both ends' addresses in objects of their own once asked (~180 B per
      // connection with their strings); the transport keeps them as its URLs. Only on a
      // server of the listener's own: an application's (httpServer, upgrade) may read them
      // again, in its own close handler too, when the kernel no longer says.
      if (!external) {
        forgetAddresses(socket);
        if (raw !== socket) forgetAddresses(raw);
      }
    });
  };
  if (hook !== undefined) {
    hook.target = onUpgrade;
    return {
      url: url.href,
      close: async () => {
        if (hook.target === onUpgrade) hook.target = undefined;
        for (const socket of [...pending.keys()]) {
          leave(socket);
          socket.destroy();
        }
      },
    };
  }
  if (server === undefined) throw new PointSubError("ERR_INVALID_ARGUMENT", "no http server to listen with");
  const web = server;
  let served = servedPaths.get(web);
  if (served?.has(path) === true) {
    throw new PointSubError(
      "ERR_CONNECT",
      `cannot listen on ${url.href}: another listener of that http server serves ${path}`,
    );
  }
  if (served === undefined) {
    served = new Set();
    servedPaths.set(web, served);
  }
  const paths = served;
  paths.add(path);
  web.on("upgrade", onUpgrade);
  if (shared === undefined) {
    web.prependListener("connection", onConnection);
    // After node:http's own listener (it sets the parser up): on the TCP socket, or the TLS socket once secure.
    web.on(secure ? "secureConnection" : "connection", firstRequestOnly);
    web.on("request", onRequest);
    web.on("checkExpectation", onExpectation);
    web.on("clientError", onClientError);
    web.on("connect", onConnect);
    await new Promise<void>((resolve, reject) => {
      web.once("error", (err) => {
        paths.delete(path);
        reject(new PointSubError("ERR_CONNECT", `cannot listen on ${url.href}: ${err.message}`, { cause: err }));
      });
      web.listen(
        { host: urlHost(url), port: url.port === "" ? (secure ? 443 : 80) : Number(url.port), backlog },
        resolve,
      );
    });
    web.on("error", () => {});
  }
  const addr = web.address();
  const bound =
    typeof addr === "object" && addr !== null ? wsHref(scheme(url), addr.address, addr.port, path) : url.href;
  // Bound to one address by this listener: every accepted socket's local end is that address.
  if (shared === undefined && typeof addr === "object" && addr !== null && net.isIP(addr.address) !== 0) {
    if (addr.address !== "0.0.0.0" && addr.address !== "::") ownUrl = bound;
  }
  return {
    url: bound,
    close: () =>
      new Promise<void>((resolve) => {
        web.off("upgrade", onUpgrade);
        paths.delete(path);
        for (const socket of [...pending.keys()]) {
          leave(socket);
          socket.destroy();
        }
        if (shared !== undefined) {
          resolve();
          return;
        }
        web.off("connection", onConnection);
        web.off(secure ? "secureConnection" : "connection", firstRequestOnly);
        web.close(() => resolve());
      }),
  };
}

/**
 * WebSocket (`ws://host:port/path`, `wss://…`) on the `ws` package; reads
 * {@link WsTransportOptions} (`tls` for wss, `ws.httpServer` to share a
 * port, `ws.upgrade` to take upgrade requests from the application,
 * `ws.maxPendingUpgrades`, `ws.headers`).
 */
export const wsTransport: TransportAdapter<WsTransportOptions> = {
  schemes: ["ws", "wss"],
  // No URL credentials: ws would send them as HTTP Basic auth.
  connect: async (address, options) => connectWs(refuseCredentials(wsUrl(address)), options),
  listen: async (address, options, onTransport) => listenWs(refuseCredentials(wsUrl(address)), options, onTransport),
};
