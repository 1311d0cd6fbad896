/**
 * Node sockets for the plain length-prefix mode: `lp+tcp://host:port` and
 * `lp+unix:///path`. Plain node:net sockets (read into reusable buffers like
 * the pointsub sockets), with TCP keepalive on `lp+tcp` (the format has no
 * ping). They serve only the lp mode (`connect("lp+…")`, `LpServer`): a
 * pointsub `connect` or `Server.listen` given an `lp+` URL is refused with
 * ERR_UNSUPPORTED_URL, since it would write pointsub frames to a peer that
 * expects lengths.
 */
import net from "node:net";
import { PointSubError } from "../errors/error.ts";
import { LP_FRAMING, type LpTransportOptions } from "../lp/options.ts";
import type { ReleasingWrite } from "../lp/writer.ts";
import type {
  Transport,
  TransportAdapter,
  TransportAddress,
  TransportConnectOptions,
  TransportHandlers,
  TransportListener,
  TransportListenOptions,
} from "../transport/transport.ts";
import { unixTransport } from "./net-adapter.ts";
import { readerForAccepted, SocketReader } from "./socket-reader.ts";
import { hostUrl, SocketTransport, urlHost } from "./socket-transport.ts";

function lpUrl(scheme: "lp+tcp" | "lp+unix", address: TransportAddress, options: LpTransportOptions): URL {
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

function wrapTcp(socket: net.Socket, reader: SocketReader | undefined): Transport {
  return new LpSocketTransport(
    socket,
    hostUrl("lp+tcp", socket.localAddress, socket.localPort),
    hostUrl("lp+tcp", socket.remoteAddress, socket.remotePort),
    reader,
  );
}

function connectTcp(url: URL, options: TransportConnectOptions & LpTransportOptions): Promise<Transport> {
  return new Promise((resolve, reject) => {
    const reader = new SocketReader();
    const socket = net.connect({ host: urlHost(url), port: tcpPort(url), noDelay: true, onread: reader.onread });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = () => {
      socket.off("error", onError);
      socket.off("connect", onConnect);
      options.signal?.removeEventListener("abort", onAbort);
      clearTimeout(timer);
    };
    const onError = (err: Error) => {
      done();
      socket.destroy();
      reject(new PointSubError("ERR_CONNECT", `cannot connect to ${url.href}: ${err.message}`, { cause: err }));
    };
    const onAbort = () => {
      done();
      socket.destroy();
      reject(new PointSubError("ERR_CANCELLED", `connect to ${url.href} aborted`, { cause: options.signal?.reason }));
    };
    const onConnect = () => {
      done();
      keepAlive(socket, options.keepAliveMs);
      resolve(wrapTcp(socket, reader));
    };
    socket.once("error", onError);
    socket.once("connect", onConnect);
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener("abort", onAbort, { once: true });
    const ms = options.connectTimeoutMs;
    if (ms !== undefined && ms > 0) {
      timer = setTimeout(() => {
        done();
        socket.destroy();
        reject(new PointSubError("ERR_TIMEOUT", `connect to ${url.href} timed out after ${ms} ms`));
      }, ms);
    }
  });
}

async function listenTcp(
  url: URL,
  options: TransportListenOptions & LpTransportOptions,
  onTransport: (t: Transport) => void,
): Promise<TransportListener> {
  const server = net.createServer({ noDelay: true }, (socket) => {
    keepAlive(socket, options.keepAliveMs);
    onTransport(wrapTcp(socket, readerForAccepted(socket)));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) =>
      reject(new PointSubError("ERR_CONNECT", `cannot listen on ${url.href}: ${err.message}`, { cause: err })),
    );
    server.listen({ host: urlHost(url), port: tcpPort(url) }, resolve);
  });
  server.on("error", () => {});
  const addr = server.address() as net.AddressInfo;
  return {
    url: hostUrl("lp+tcp", addr.address, addr.port),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A unix transport shown with `lp+unix://` addresses. */
class LpUnixTransport implements Transport {
  readonly localUrl: string;
  readonly remoteUrl: string;
  private readonly t: Transport;
  constructor(t: Transport) {
    this.t = t;
    this.localUrl = `lp+${t.localUrl}`;
    this.remoteUrl = `lp+${t.remoteUrl}`;
  }
  attach(h: TransportHandlers): void {
    this.t.attach(h);
  }
  write(chunks: readonly Uint8Array[]): boolean {
    return this.t.write(chunks);
  }
  pause(): void {
    this.t.pause();
  }
  resume(): void {
    this.t.resume();
  }
  trim(): void {
    this.t.trim?.();
  }
  end(): void {
    this.t.end();
  }
  destroy(error?: Error): void {
    this.t.destroy(error);
  }
}

/** The `unix://` URL of an `lp+unix://` one. */
function unixUrl(url: URL): URL {
  return new URL(`unix://${url.pathname}`);
}

/** Length-prefixed messages over node:net TCP (`lp+tcp://host:port`), with TCP keepalive. */
export const lpTcpTransport: TransportAdapter<LpTransportOptions> = {
  schemes: ["lp+tcp"],
  connect: async (address, options) => connectTcp(lpUrl("lp+tcp", address, options), options),
  listen: async (address, options, onTransport) => listenTcp(lpUrl("lp+tcp", address, options), options, onTransport),
};

/** Length-prefixed messages over unix domain sockets (`lp+unix:///path/to.sock`). */
export const lpUnixTransport: TransportAdapter<LpTransportOptions> = {
  schemes: ["lp+unix"],
  connect: async (address, options) =>
    new LpUnixTransport(await unixTransport.connect(unixUrl(lpUrl("lp+unix", address, options)), options)),
  listen: async (address, options, onTransport) => {
    const l = await unixTransport.listen(unixUrl(lpUrl("lp+unix", address, options)), options, (t) =>
      onTransport(new LpUnixTransport(t)),
    );
    return { url: `lp+${l.url}`, close: () => l.close() };
  },
};
