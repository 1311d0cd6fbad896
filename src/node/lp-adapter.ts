/**
 * Node sockets for the plain length-prefix mode: `lp+tcp://host:port` and
 * `lp+unix:///path`. Plain node:net sockets (read into reusable buffers like
 * the pointsub sockets), with TCP keepalive on `lp+tcp` (the format has no
 * ping). They serve only the lp mode (`connect("lp+…")`, `LpServer`): a
 * pointsub `connect` or `Server.listen` given an `lp+` URL is refused with
 * ERR_UNSUPPORTED_URL, since it would write pointsub frames to a peer that
 * expects lengths.
 */
import * as net from "node:net";
import { PointSubError } from "../errors/error.ts";
import { checkSignal } from "../errors/signal.ts";
import { LP_FRAMING, type LpTransportOptions } from "../lp/options.ts";
import type { ReleasingWrite } from "../lp/writer.ts";
import type {
  Transport,
  TransportAdapter,
  TransportAddress,
  TransportConnectOptions,
  TransportListener,
  TransportListenOptions,
} from "../transport/transport.ts";
import { refuseCredentials } from "../transport/url-credentials.ts";
import { listenBacklog } from "./listen-backlog.ts";
import { bind, pathUrl, socketPath, whenConnected } from "./net-adapter.ts";
import { readerForAccepted, SocketReader } from "./socket-reader.ts";
import { hostUrl, SocketTransport, urlHost } from "./socket-transport.ts";

function lpUrl(scheme: "lp+tcp" | "lp+unix", address: TransportAddress, options: LpTransportOptions): URL {
  // First: the refusals below show the address (a pointsub listen on lp+tcp://user:password@… showed them).
  if (address instanceof URL) refuseCredentials(address);
  if (options[LP_FRAMING] !== true) {
    throw new PointSubError(
      "ERR_UNSUPPORTED_URL",
      `${String(address)} speaks plain length-prefixed messages, not pointsub: connect with connect("lp+…") / connectLp, listen with createLpServer()`,
    );
  }
  if (!(address instanceof URL) || address.protocol !== `${scheme}:`) {
    throw new PointSubError("ERR_UNSUPPORTED_URL", `the ${scheme} transport takes ${scheme}:// URLs, not ${address}`);
  }
  return address;
}

function tcpPort(url: URL): number {
  if (url.port === "") throw new PointSubError("ERR_UNSUPPORTED_URL", `${url.href} needs a port`);
  return Number(url.port);
}

function keepAlive(socket: net.Socket, ms: number | undefined): void {
  if (ms !== undefined && ms > 0) socket.setKeepAlive(true, ms);
}

/** SocketTransport's high water (src/node/socket-transport.ts): the same answer as its `write`. */
const WRITE_HIGH_WATER = 1024 * 1024;

/**
 * An lp+tcp socket: a SocketTransport that also says when a write's memory
 * is free again (Node calls a write's callback once it is written, or with
 * an error when the socket is destroyed), so the lp writer reuses its slabs.
 */
class LpSocketTransport extends SocketTransport implements ReleasingWrite {
  private readonly sock: net.Socket;
  constructor(socket: net.Socket, localUrl: string, remoteUrl: string, reader: SocketReader | undefined) {
    super(socket, localUrl, remoteUrl, reader);
    this.sock = socket;
  }
  writeReleasing(chunk: Uint8Array, released: () => void): boolean {
    const s = this.sock;
    if (s.destroyed || s.writableEnded) return false;
    s.write(chunk, released);
    return s.writableLength < WRITE_HIGH_WATER;
  }
}

type Scheme = "lp+tcp" | "lp+unix";

function wrap(scheme: Scheme, socket: net.Socket, path: string, reader: SocketReader | undefined): Transport {
  if (scheme === "lp+unix") {
    const url = pathUrl("lp+unix", path);
    return new LpSocketTransport(socket, url, url, reader);
  }
  return new LpSocketTransport(
    socket,
    hostUrl("lp+tcp", socket.localAddress, socket.localPort),
    hostUrl("lp+tcp", socket.remoteAddress, socket.remotePort),
    reader,
  );
}

function connectSocket(
  scheme: Scheme,
  url: URL,
  options: TransportConnectOptions & LpTransportOptions,
): Promise<Transport> {
  checkSignal(options);
  return new Promise((resolve, reject) => {
    const reader = new SocketReader();
    const onread = reader.onread;
    const socket =
      scheme === "lp+unix"
        ? net.connect({ path: socketPath(url), onread })
        : net.connect({ host: urlHost(url), port: tcpPort(url), noDelay: true, onread });
    whenConnected(socket, "connect", url, options).then(() => {
      if (scheme === "lp+tcp") keepAlive(socket, options.keepAliveMs);
      resolve(wrap(scheme, socket, scheme === "lp+unix" ? socketPath(url) : "", reader));
    }, reject);
  });
}

async function listenSocket(
  scheme: Scheme,
  url: URL,
  options: TransportListenOptions & LpTransportOptions & { backlog?: number },
  onTransport: (t: Transport) => void,
): Promise<TransportListener> {
  const path = scheme === "lp+unix" ? socketPath(url) : "";
  const backlog = listenBacklog(options.backlog);
  const server = net.createServer({ noDelay: true }, (socket) => {
    if (scheme === "lp+tcp") keepAlive(socket, options.keepAliveMs);
    onTransport(wrap(scheme, socket, path, readerForAccepted(socket)));
  });
  await bind(server, url, scheme === "lp+unix" ? undefined : tcpPort(url), false, backlog);
  const addr = server.address();
  return {
    url:
      typeof addr === "object" && addr !== null ? hostUrl("lp+tcp", addr.address, addr.port) : pathUrl("lp+unix", path),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Length-prefixed messages over node:net TCP (`lp+tcp://host:port`), with TCP keepalive. */
export const lpTcpTransport: TransportAdapter<LpTransportOptions> = {
  schemes: ["lp+tcp"],
  connect: async (address, options) => connectSocket("lp+tcp", lpUrl("lp+tcp", address, options), options),
  listen: async (address, options, onTransport) =>
    listenSocket("lp+tcp", lpUrl("lp+tcp", address, options), options, onTransport),
};

/** Length-prefixed messages over unix domain sockets (`lp+unix:///path/to.sock`). */
export const lpUnixTransport: TransportAdapter<LpTransportOptions> = {
  schemes: ["lp+unix"],
  connect: async (address, options) => connectSocket("lp+unix", lpUrl("lp+unix", address, options), options),
  listen: async (address, options, onTransport) =>
    listenSocket("lp+unix", lpUrl("lp+unix", address, options), options, onTransport),
};
