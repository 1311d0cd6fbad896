import { existsSync, lstatSync, type Stats, unlinkSync } from "node:fs";
import * as net from "node:net";
import { dirname } from "node:path";
import type * as Tls from "node:tls";
import { refusalBytes } from "../connection/handshake.ts";
import { codeInfo } from "../errors/codes.ts";
import { PointSubError } from "../errors/error.ts";
import { checkSignal } from "../errors/signal.ts";
import type {
  Transport,
  TransportAdapter,
  TransportAddress,
  TransportConnectOptions,
  TransportListener,
  TransportListenOptions,
} from "../transport/transport.ts";
import { refuseCredentials } from "../transport/url-credentials.ts";
import { DEFAULT_BACKLOG, listenBacklog } from "./listen-backlog.ts";
import { readerForAccepted, SocketReader } from "./socket-reader.ts";
import { connectDeadline, hostUrl, SocketTransport, urlHost } from "./socket-transport.ts";
import {
  askedForClientCert,
  clientCertRefusal,
  closeFailedHandshake,
  keyMismatch,
  onTlsClientError,
  refusedHandshake,
  tlsError,
} from "./tls-errors.ts";
import type { WsTransportOptions } from "./ws-adapter.ts";

type Scheme = "tcp" | "tls" | "unix";

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
  /**
   * Server: ask clients for a certificate (mutual TLS). Give `ca` with it:
   * without, client certificates of every CA in the system store are trusted.
   * Default false.
   */
  requestCert?: boolean;
  /** Client: server name for SNI and verification; defaults to the URL host. */
  servername?: string;
}

/** Options of the `tls://` adapter, on top of the portable transport options. */
export interface TlsTransportOptions {
  /** TLS material and checks (connect: CA to trust, client certificate; listen: certificate and key). */
  tls?: TlsOptions;
  /**
   * Listen: most connections in their TLS handshake at once on one listener;
   * further ones are closed at once. Default 1024.
   */
  maxPendingHandshakes?: number;
}

/**
 * Options the Node transports read (`tls://`, `ws://`, `wss://`), by scheme: what
 * `connect` and `createServer` of the Node entry point add to their options.
 */
/** Listen options of tcp:// (and tls://). */
export interface TcpListenOptions {
  /**
   * Bind with `SO_REUSEPORT` (Linux and some BSDs; Node's `reusePort`):
   * several processes — the workers of `serveWorkers` — each bind their
   * own socket on the same port and the kernel spreads connections over
   * them by a hash of the address pair; in a `node:cluster` worker the
   * socket is then the worker's own (`exclusive`), not the primary's
   * round-robin. Needs a fixed port (with port 0 each worker gets its own).
   * Default false.
   */
  reusePort?: boolean;
  /**
   * Listen: the kernel's queue of connections not yet accepted (`listen(2)`'s
   * backlog), an integer from 1 to 65535; the kernel caps it at
   * `net.core.somaxconn` (4096 on current Linux). Connects beyond a full
   * queue are not refused: their SYN goes unanswered and is retried after
   * ~1 s, then 3 s… — a burst of more clients connecting at once than this
   * waits seconds. Also for `unix://`, `ws://` and `wss://` listeners (not one
   * on a shared `ws.httpServer`: its owner listens). Default 511 (Node's).
   */
  backlog?: number;
}

/** Each Node transport's own options, by scheme (what its adapter reads of `connect`'s and `listen`'s options). */
export interface NodeTransportOptionsMap {
  tcp: TcpListenOptions;
  tls: TlsTransportOptions;
  unix: Pick<TcpListenOptions, "backlog">;
  ws: WsTransportOptions;
  wss: WsTransportOptions;
  memory: object;
}

/** The options of every Node transport together. */
export type NodeTransportOptions = TlsTransportOptions & WsTransportOptions & TcpListenOptions;

type ConnectOptions = TransportConnectOptions & NodeTransportOptions;
type ListenOptions = TransportListenOptions & NodeTransportOptions;

/** The URL of an address, or ERR_UNSUPPORTED_URL (sockets take no multiaddrs or peer ids). */
function socketUrl(scheme: Scheme, address: TransportAddress): URL {
  if (!(address instanceof URL) || address.protocol !== `${scheme}:`) {
    throw new PointSubError("ERR_UNSUPPORTED_URL", `the ${scheme} transport takes ${scheme}:// URLs, not ${address}`);
  }
  return refuseCredentials(address);
}

/**
 * The socket path of a `unix://` (or `lp+unix://`) URL: an absolute path
 * after `//` (`unix:///path/to.sock`, or `unix:/path/to.sock`), with no host
 * but `localhost`. `unix://run/x.sock` would otherwise bind `/x.sock`,
 * `unix://x.sock` an empty path, and `unix:x.sock` (or `unix:./x.sock`)
 * `x.sock` in the working directory, under a listen URL (`unix://x.sock`)
 * that leads nowhere: ERR_UNSUPPORTED_URL. The URL's
 * percent-escapes are decoded (`unix:///tmp/my sock` is the file
 * `/tmp/my sock`, whose URL path reads `/tmp/my%20sock`).
 */
export function socketPath(url: URL): string {
  let path = url.pathname;
  if ((url.hostname !== "" && url.hostname !== "localhost") || !path.startsWith("/") || path === "/") {
    throw new PointSubError(
      "ERR_UNSUPPORTED_URL",
      `${url.href} names no socket path: write an absolute path after three slashes, e.g. ${url.protocol}///run/app.sock`,
    );
  }
  try {
    path = decodeURIComponent(path);
  } catch (cause) {
    throw new PointSubError("ERR_UNSUPPORTED_URL", `${url.href}: a malformed %-escape in the socket path`, { cause });
  }
  if (path.includes("\0")) throw new PointSubError("ERR_UNSUPPORTED_URL", `${url.href}: a NUL byte in the socket path`);
  return path;
}

/** The URL of a socket `path` (`scheme://` + the path, escaped so that {@link socketPath} reads `path` back). */
export function pathUrl(scheme: string, path: string): string {
  return `${scheme}://${encodeURI(path).replaceAll("?", "%3F").replaceAll("#", "%23")}`;
}

/** node:tls is loaded on first use: loading it costs a process ~7 MB of RSS. */
let tlsModule: typeof Tls | undefined;
async function loadTls(): Promise<typeof Tls> {
  tlsModule ??= await import("node:tls");
  return tlsModule;
}

/**
 * `localUrl`: the listener's own URL when it is bound to one address (an
 * accepted socket's local end is then that address: no getsockname call per
 * accepted connection); otherwise asked of the socket.
 */
function wrap(
  socket: net.Socket,
  scheme: Scheme,
  path?: string,
  reader?: SocketReader,
  localUrl?: string,
): SocketTransport {
  if (scheme === "unix") {
    const url = pathUrl("unix", path ?? "");
    return new SocketTransport(socket, url, url, reader);
  }
  const t = new SocketTransport(
    socket,
    localUrl ?? hostUrl(scheme, socket.localAddress, socket.localPort),
    hostUrl(scheme, socket.remoteAddress, socket.remotePort),
    reader,
  );
  // Node caches the peer's address in an object of its own (with the address
  // string: ~90 B per connection) once asked; the transport keeps it as its
  // URL. Dropped here: a later remoteAddress asks the kernel again.
  (socket as unknown as { _peername?: unknown })._peername = undefined;
  return t;
}

function port(url: URL): number {
  if (url.port === "") throw new PointSubError("ERR_UNSUPPORTED_URL", `${url.href} needs a port`);
  return Number(url.port);
}

function tlsClientOptions(tls: typeof Tls, url: URL, o: TlsOptions = {}): Tls.ConnectionOptions {
  const host = urlHost(url);
  return {
    host,
    port: port(url),
    servername: o.servername ?? (net.isIP(host) ? undefined : host),
    ca: o.ca as Tls.ConnectionOptions["ca"],
    cert: o.cert as Tls.ConnectionOptions["cert"],
    key: o.key as Tls.ConnectionOptions["key"],
    rejectUnauthorized: o.rejectUnauthorized ?? true,
    ALPNProtocols: ["pointsub/1"],
    // Verify IP-address URLs against the certificate's IP SANs.
    checkServerIdentity: (hostname, cert) => tls.checkServerIdentity(o.servername ?? hostname ?? host, cert),
  };
}

function connectSocket(
  scheme: Scheme,
  url: URL,
  options: ConnectOptions,
  /** node:tls, for the tls scheme (loaded on first use). */
  tls: typeof Tls | undefined,
): Promise<Transport> {
  checkSignal(options);
  return new Promise((resolve, reject) => {
    let socket: net.Socket;
    const event = scheme === "tls" ? "secureConnect" : "connect";
    // Sockets read into reusable buffers (see SocketReader).
    const reader = new SocketReader();
    const onread = reader.onread;
    try {
      if (tls !== undefined) {
        // tls.connect documents `onread` (as net.Socket's); @types/node lacks it.
        const o: Tls.ConnectionOptions & Pick<net.SocketConstructorOpts, "onread"> = {
          ...tlsClientOptions(tls, url, options.tls),
          onread,
        };
        socket = tls.connect(o);
      } else if (scheme === "unix") socket = net.connect({ path: socketPath(url), onread });
      else socket = net.connect({ host: urlHost(url), port: port(url), noDelay: true, onread });
    } catch (err) {
      // Thrown before any socket: the options are wrong (unreadable TLS material), not the way to the peer
      // (before, ERR_CONNECT: retryable, a resilient client tried again for ever).
      reject(
        err instanceof PointSubError
          ? err
          : (tlsError(err, url.href) ??
              new PointSubError(
                "ERR_INVALID_ARGUMENT",
                `invalid options to connect to ${url.href}: ${(err as Error).message}`,
                {
                  cause: err,
                },
              )),
      );
      return;
    }
    whenConnected(socket, event, url, options).then(() => {
      const t = wrap(socket, scheme, scheme === "unix" ? socketPath(url) : undefined, reader);
      // A pointsub server writes its preface and HELLO as soon as it accepts: closed before a byte of them
      // (its listener closed with this connect still in its backlog: the server is closing; a tunnel with
      // nothing behind it), the connection was never served — ERR_CONNECT, as a refused connect is, and as tls:// and ws:// say it. Before, on
      // tcp:// and unix://, ERR_CONNECTION_CLOSED, which says calls under way may have been lost. Before the
      // transport's own 'close' listener (attached by its connection): that reports `error`.
      // Not over a verdict of its own (a TLS alert after the handshake, as a front requiring client
      // certificates sends: ERR_UNAUTHORIZED, not retried); tls:// counts the bytes after decryption.
      // A TLS front (node:tls) that refused this side's certificate closes so too, without an alert: said when
      // the server asked for one; still retryable, as a pointsub server closing with mutual TLS closes so.
      const askedCert = tls !== undefined && askedForClientCert(socket);
      socket.once("close", () => {
        if (socket.bytesRead !== 0 || t.error instanceof PointSubError) return;
        t.error = new PointSubError(
          "ERR_CONNECT",
          `cannot connect to ${url.href}: closed before any byte of the server's handshake (a server closing, or a tunnel or proxy with nothing behind it${askedCert ? "; it asked for a client certificate: a TLS front refusing this side's closes so, without an alert" : ""})`,
          { cause: t.error },
        );
      });
      resolve(t);
    }, reject);
  });
}

/** {@link unixPathProblem} of a unix:// (or lp+unix://) URL; undefined for other schemes. */
function unixProblem(url: URL, err: unknown): string | undefined {
  return url.protocol === "unix:" || url.protocol === "lp+unix:" ? unixPathProblem(socketPath(url), err) : undefined;
}

/**
 * Waits for a connecting `socket`'s `event` (`"connect"`, or
 * `"secureConnect"` for TLS). Rejects — and destroys the socket — with
 * ERR_CONNECT on a socket error, ERR_CANCELLED when `options.signal`
 * aborts, ERR_TIMEOUT (phase `"connect"`) after `options.connectTimeoutMs`.
 * Shared by every node:net-based adapter.
 */
export function whenConnected(
  socket: net.Socket,
  event: "connect" | "secureConnect",
  url: URL,
  options: TransportConnectOptions,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let settled = false;
    const cleanup = () => {
      settled = true;
      socket.off("error", onError);
      socket.off(event, onConnect);
      options.signal?.removeEventListener("abort", onAbort);
      if (timer !== undefined) clearTimeout(timer);
    };
    const fail = (err: PointSubError) => {
      // The deadline's, after the connect (it looks again after the turn's I/O: connectDeadline).
      if (settled) return;
      cleanup();
      socket.destroy();
      reject(err);
    };
    // A unix socket path too long for the kernel is the address's fault, not the way's: ERR_UNSUPPORTED_URL
    // (before, ERR_CONNECT: retryable, a resilient client tried again for ever).
    const unix = url.protocol === "unix:" || url.protocol === "lp+unix:";
    const tooLong = (err: Error) => unix && unixPathTooLong(socketPath(url), err);
    const onError = (err: Error) =>
      fail(
        tlsError(err, url.href, socket) ??
          new PointSubError(
            tooLong(err) ? "ERR_UNSUPPORTED_URL" : "ERR_CONNECT",
            `cannot connect to ${url.href}: ${unixProblem(url, err) ?? err.message}`,
            { cause: err },
          ),
      );
    const onAbort = () =>
      fail(new PointSubError("ERR_CANCELLED", `connect to ${url.href} aborted`, { cause: options.signal?.reason }));
    const onConnect = () => {
      cleanup();
      resolve();
    };
    socket.once("error", onError);
    socket.once(event, onConnect);
    if (options.signal !== undefined) {
      if (options.signal.aborted) onAbort();
      else options.signal.addEventListener("abort", onAbort, { once: true });
    }
    timer = connectDeadline(url, options.connectTimeoutMs, fail);
  });
}

/**
 * Binds `server` to `url`: a TCP host and `tcpPort`, or (`tcpPort`
 * undefined) the unix socket path, replacing a stale socket file. Fails with
 * ERR_CONNECT; later server errors are ignored (sockets report their own).
 * Shared by every node:net-based adapter.
 */
export async function bind(
  server: net.Server,
  url: URL,
  tcpPort: number | undefined,
  reusePort = false,
  backlog = DEFAULT_BACKLOG,
): Promise<void> {
  const path = tcpPort === undefined ? socketPath(url) : "";
  if (tcpPort === undefined) await removeStaleSocket(path);
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) =>
      reject(
        new PointSubError(
          "ERR_CONNECT",
          `cannot listen on ${url.href}: ${(path !== "" && unixPathProblem(path, err)) || err.message}`,
          { cause: err },
        ),
      ),
    );
    if (tcpPort === undefined) server.listen({ path, backlog }, resolve);
    else
      server.listen(
        { host: urlHost(url), port: tcpPort, backlog, ...(reusePort ? { reusePort: true, exclusive: true } : {}) },
        resolve,
      );
  });
  server.on("error", () => {});
}

/**
 * What is wrong with a unix socket `path` that a bind or connect failed on
 * with `err`, said plainly; undefined when it is not about the path. libuv
 * reports a missing directory on bind as EACCES ("permission denied") and a
 * path over the kernel's `sun_path` (108 bytes on Linux, 104 on macOS) as
 * EINVAL ("invalid argument").
 */
export function unixPathProblem(path: string, err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (unixPathTooLong(path, err)) {
    return `the socket path is ${Buffer.byteLength(path)} bytes, longer than a unix socket path may be (108 bytes on Linux, 104 on macOS): use a shorter one`;
  }
  if (code === "EACCES" || code === "ENOENT") {
    const dir = dirname(path);
    if (!existsSync(dir)) return `the directory ${dir} does not exist`;
  }
  return undefined;
}

/** Whether a bind or connect on unix socket `path` failed with `err` because the path is too long (it never will work). */
function unixPathTooLong(path: string, err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return (code === "EINVAL" || code === "ENAMETOOLONG") && Buffer.byteLength(path) > 103;
}

/**
 * A unix socket file left by a dead process: remove it so listen can bind (a
 * live one is ERR_CONNECT). Anything else at the path (a file, a directory)
 * is not ours to remove: ERR_CONNECT too.
 */
export async function removeStaleSocket(path: string): Promise<void> {
  let stat: Stats | undefined;
  try {
    stat = lstatSync(path, { throwIfNoEntry: false });
  } catch (cause) {
    throw new PointSubError("ERR_CONNECT", `cannot listen on ${path}: ${(cause as Error).message}`, { cause });
  }
  if (stat === undefined) return;
  if (!stat.isSocket()) {
    throw new PointSubError("ERR_CONNECT", `cannot listen on ${path}: it exists and is not a socket`);
  }
  // Only a refused connect says nobody listens (EAGAIN is a live server's full backlog, EACCES another user's socket).
  const probe = await new Promise<"alive" | "stale" | Error>((resolve) => {
    const s = net.connect({ path });
    s.once("connect", () => {
      s.destroy();
      resolve("alive");
    });
    s.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED" ? "stale" : err));
  });
  if (probe === "alive") throw new PointSubError("ERR_CONNECT", `${path} is in use by a running server`);
  if (probe !== "stale") {
    throw new PointSubError("ERR_CONNECT", `cannot listen on ${path}: ${probe.message}`, { cause: probe });
  }
  try {
    unlinkSync(path);
  } catch (cause) {
    throw new PointSubError("ERR_CONNECT", `cannot listen on ${path}: ${(cause as Error).message}`, { cause });
  }
}

/** tls.createServer, with bad certificate material reported as a typed error. */
function createTlsServer(tls: typeof Tls, options: Tls.TlsOptions, onSocket: (s: Tls.TLSSocket) => void): Tls.Server {
  try {
    return tls.createServer(options, onSocket);
  } catch (cause) {
    throw (
      keyMismatch(cause) ??
      new PointSubError("ERR_INVALID_ARGUMENT", `invalid TLS options: ${(cause as Error).message}`, { cause })
    );
  }
}

/**
 * What a plaintext client of a tls:// listener is told, as ERR_PROTOCOL: its URL's scheme is wrong,
 * and no retry of it can succeed (ERR_CONNECT, retryable, had a reconnecting client retry for ever).
 */
const PLAINTEXT_REASON = "this port speaks TLS: connect with tls://";

/** Most time (ms) a refused mutual-TLS client has to take its GOAWAY before its socket is destroyed. */
const REFUSAL_LINGER_MS = 1000;
/** Most refused mutual-TLS clients lingering at once (this thread's listeners together). */
const MAX_LINGERING = 1024;
let lingering = 0;

/**
 * A TLS client whose certificate did not verify (none, another CA's,
 * expired): it gets the preface and a GOAWAY ERR_UNAUTHORIZED saying why,
 * in place of HELLO (docs/PROTOCOL.md §1.1), and is never a transport.
 */
function refuseClient(socket: Tls.TLSSocket): string {
  const reason = clientCertRefusal(socket);
  socket.on("error", () => {});
  // What the client sends meanwhile is read and dropped: unread bytes would make the close a reset,
  // which can discard the GOAWAY before the client reads it.
  socket.resume();
  for (const b of refusalBytes(codeInfo("ERR_UNAUTHORIZED").errno, reason)) socket.write(b);
  socket.end();
  // At most MAX_LINGERING wait for their peer to hang up (a flood of them holds no descriptor per refusal
  // of the last second); the others are destroyed on the next turn, once the GOAWAY is written.
  if (lingering >= MAX_LINGERING) {
    setImmediate(() => socket.destroy());
    return reason;
  }
  lingering++;
  const timer = setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS);
  timer.unref();
  socket.once("close", () => {
    clearTimeout(timer);
    lingering--;
  });
  return reason;
}

/** Default of {@link TransportListenOptions.handshakeTimeoutMs}: the pointsub handshake's. */
const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Default of {@link TlsTransportOptions.maxPendingHandshakes}. */
const MAX_PENDING_HANDSHAKES = 1024;

function checkLimit(name: string, value: number | undefined, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !(value >= 1 && value <= max)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a number from 1 to ${max}, got ${value}`);
  }
  return value;
}

/** The remote end of a raw socket of a tls:// listener, as the transport's remoteUrl will say. */
function rawUrl(socket: net.Socket): string {
  return hostUrl("tls", socket.remoteAddress, socket.remotePort);
}

/**
 * A tls:// listener. A plain TCP server accepts; a socket is handed to the
 * (never listening) tls.Server only once admitted: fewer than
 * `maxPendingHandshakes` others still in their handshake, and `onPending`
 * agrees. A refused socket is closed before any TLS work is spent on it.
 * node:tls's `handshakeTimeout` is a deadline from the start of the handshake
 * (bytes trickled in do not extend it); on expiry it only reports a
 * `tlsClientError`, so that handler must destroy the socket (after the
 * turn's I/O: onTlsClientError).
 */
async function tlsServer(
  options: ListenOptions,
  onTransport: (t: Transport) => void,
): Promise<{ server: net.Server; dropPending(): void }> {
  const o = options.tls ?? {};
  if (o.cert === undefined || o.key === undefined) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "tls:// listen needs tls.cert and tls.key");
  }
  const timeout = checkLimit("handshakeTimeoutMs", options.handshakeTimeoutMs, TLS_HANDSHAKE_TIMEOUT_MS, 2 ** 31 - 1);
  const maxPending = checkLimit("maxPendingHandshakes", options.maxPendingHandshakes, MAX_PENDING_HANDSHAKES, Infinity);
  const onPending = options.onPending;
  const onRefused = options.onRefused;
  /** Raw sockets admitted and not yet secure (nor closed), with their remote URL (a closed socket forgets it). */
  const pending = new Map<net.Socket, string>();
  function leave(socket: net.Socket): void {
    const url = pending.get(socket);
    if (url === undefined) return;
    pending.delete(socket);
    onPending?.(-1, url);
  }
  function onRawClose(this: net.Socket): void {
    leave(this);
  }
  /** A TLS socket's remote URL, for a refusal: as admitted, from the raw socket under it (which keeps its address once closed). */
  function remoteOf(socket: Tls.TLSSocket): string {
    const raw = (socket as { _parent?: unknown })._parent;
    const under = raw instanceof net.Socket ? raw : socket;
    return pending.get(under) ?? rawUrl(under);
  }
  // Mutual TLS: clients whose certificate does not verify are refused here, not by node:tls. Node closes
  // them without a word (no TLS alert: the client saw ERR_CONNECTION_CLOSED "connection … closed");
  // here they get the preface and a GOAWAY ERR_UNAUTHORIZED saying why.
  const verifyClients = (o.requestCert ?? false) && (o.rejectUnauthorized ?? true);
  const secure = createTlsServer(
    await loadTls(),
    {
      cert: o.cert as Tls.TlsOptions["cert"],
      key: o.key as Tls.TlsOptions["key"],
      ca: o.ca as Tls.TlsOptions["ca"],
      requestCert: o.requestCert ?? false,
      rejectUnauthorized: verifyClients ? false : (o.rejectUnauthorized ?? true),
      ALPNProtocols: ["pointsub/1"],
      handshakeTimeout: timeout,
    },
    (socket) => {
      // Node keeps the raw socket a server TLSSocket wraps as `_parent`
      // (test/transport/tls-slowloris.test.ts notices if that changes: the
      // raw socket would then count as pending until it closes).
      const raw = (socket as { _parent?: unknown })._parent;
      // A refused client stays pending (counted by maxPendingHandshakes and onPending) until it closes.
      if (verifyClients && !socket.authorized) {
        const reason = refuseClient(socket);
        if (onRefused !== undefined) {
          const url = remoteOf(socket);
          onRefused(PointSubError.fromPeer("ERR_UNAUTHORIZED", `refused ${url}: ${reason}`), url);
        }
        return;
      }
      if (raw instanceof net.Socket && pending.has(raw)) {
        raw.off("close", onRawClose);
        leave(raw);
      }
      onTransport(wrap(socket, "tls", undefined, readerForAccepted(socket)));
    },
  );
  // Handshake failures (and timeouts) are per connection: close that one, keep the server up.
  // A plaintext pointsub client (tcp:// at this tls:// port) is told so: the preface and a GOAWAY ERR_CONNECT.
  onTlsClientError(secure, (err, socket) => {
    if (onRefused !== undefined) {
      const url = remoteOf(socket);
      onRefused(refusedHandshake(err, url), url);
    }
    closeFailedHandshake(socket, err, () => refusalBytes(codeInfo("ERR_PROTOCOL").errno, PLAINTEXT_REASON));
  });
  secure.on("error", () => {});
  const server = net.createServer((socket) => {
    const url = rawUrl(socket);
    if (pending.size >= maxPending) {
      onRefused?.(
        PointSubError.fromPeer(
          "ERR_OVERLOADED",
          `refused ${url}: ${maxPending} connections in their TLS handshake (maxPendingHandshakes)`,
        ),
        url,
      );
      socket.destroy();
      return;
    }
    if (onPending?.(1, url) === false) {
      socket.destroy();
      return;
    }
    pending.set(socket, url);
    socket.once("close", onRawClose);
    secure.emit("connection", socket);
  });
  return {
    server,
    dropPending: () => {
      for (const socket of pending.keys()) socket.destroy();
    },
  };
}

async function listenSocket(
  scheme: Scheme,
  url: URL,
  options: ListenOptions,
  onTransport: (t: Transport) => void,
): Promise<TransportListener> {
  const path = scheme === "unix" ? socketPath(url) : undefined;
  const backlog = listenBacklog(options.backlog);
  let server: net.Server;
  let dropPending: (() => void) | undefined;
  /** The listener's URL when bound to one address (not 0.0.0.0 / ::): every accepted socket's local end. */
  let fixedLocal: string | undefined;
  if (scheme === "tls") ({ server, dropPending } = await tlsServer(options, onTransport));
  else {
    // allowHalfOpen: a socket whose peer ended is closed by its transport, a bounded number per turn (socket-transport.ts).
    server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) =>
      onTransport(wrap(socket, scheme, path, readerForAccepted(socket), fixedLocal)),
    );
  }
  await bind(server, url, scheme === "unix" ? undefined : port(url), options.reusePort === true, backlog);
  const addr = server.address();
  const bound =
    typeof addr === "object" && addr !== null ? hostUrl(scheme, addr.address, addr.port) : pathUrl("unix", path ?? "");
  if (typeof addr === "object" && addr !== null && !isWildcard(addr.address)) fixedLocal = bound;
  return {
    url: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Connections still in their handshake are not transports yet: nobody else would close them.
        dropPending?.();
      }),
  };
}

/** An address a listener binds to accept on every interface (its sockets' local ends differ). */
function isWildcard(address: string): boolean {
  return address === "0.0.0.0" || address === "::" || address === "::0" || address.startsWith("::ffff:0.0.0.0");
}

function adapter<S extends Scheme>(scheme: S): TransportAdapter<NodeTransportOptionsMap[S]> {
  return {
    schemes: [scheme],
    connect: async (address, options: ConnectOptions) =>
      connectSocket(scheme, socketUrl(scheme, address), options, scheme === "tls" ? await loadTls() : undefined),
    listen: async (address, options: ListenOptions, onTransport) =>
      listenSocket(scheme, socketUrl(scheme, address), options, onTransport),
  };
}

/** node:net TCP (`tcp://host:port`). */
export const tcpTransport: TransportAdapter = adapter("tcp");
/** node:tls over TCP (`tls://host:port`); reads {@link TlsTransportOptions}. */
export const tlsTransport: TransportAdapter<TlsTransportOptions> = adapter("tls");
/** Unix domain sockets (`unix:///path/to.sock`). */
export const unixTransport: TransportAdapter = adapter("unix");
