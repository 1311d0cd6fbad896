/**
 * pointsub/libp2p: pointsub connections over js-libp2p streams, addressed by
 * multiaddr or peer id, over TCP (Noise + Yamux) or QUIC.
 *
 * ```ts
 * import { connect, createServer } from "pointsub/libp2p";
 * const server = createServer({ libp2p: node });
 * server.handle("/echo", (req) => req.data);      // ctx.principal is the caller's peer id
 * await server.listen(node.peerId.toString());
 * const conn = await connect(peerIdOrMultiaddr, { libp2p: otherNode });
 * ```
 *
 * libp2p and its transports are optional peer dependencies of pointsub:
 * only this entry loads them (`import "pointsub"` never does).
 *
 * @packageDocumentation
 */
import {
  type Address,
  Client as BaseClient,
  type ClientOptions as BaseClientOptions,
  type ConnectOptions as BaseConnectOptions,
  type ResilientConnectOptions as BaseResilientConnectOptions,
  type ServerOptions as BaseServerOptions,
  type Connection,
  connectResilient as connectResilientWith,
  connect as connectWith,
  createNodeRuntime,
  createServer as createServerWith,
  type ResilientConnection,
  type Runtime,
  type Server,
} from "../index.ts";
import { type Libp2pTransportOptions, libp2pTransport } from "./adapter.ts";

export { type Libp2pTransportOptions, libp2pTransport, PROTOCOL_ID, REUSED_STREAM_WAIT_MS } from "./adapter.ts";
export { createLibp2pNode, type Libp2pNodeOptions } from "./node.ts";
export {
  LIBP2P_MAX_FRAME,
  Libp2pStreamTransport,
  MUXED_WRITE_HIGH_WATER,
  START_GRANT_WAIT_MS,
  START_IN_FLIGHT,
  type StreamTransportInit,
  WRITE_HIGH_WATER,
} from "./stream-transport.ts";

let runtime: Runtime | undefined;

/**
 * The runtime this entry's functions use when given none: the Node runtime
 * (tcp, tls, unix, ws, memory) plus {@link libp2pTransport}, built on first
 * use. To use libp2p from the main entry instead, build a runtime with
 * `createNodeRuntime({ transports: [libp2pTransport()] })`.
 */
export function libp2pRuntime(): Runtime {
  runtime ??= createNodeRuntime({ transports: [libp2pTransport()] });
  return runtime;
}

function withRuntime<T extends { runtime?: Runtime }>(options: T): T {
  return options.runtime === undefined ? { ...options, runtime: libp2pRuntime() } : options;
}

/** Options of {@link connect}: those of pointsub's `connect` plus `libp2p` (the node to dial from). */
export interface ConnectOptions extends BaseConnectOptions, Libp2pTransportOptions {}
/** Options of {@link connectResilient}. */
export interface ResilientConnectOptions extends BaseResilientConnectOptions, Libp2pTransportOptions {}
/** Options of {@link createServer}: those of pointsub's `createServer` plus `libp2p` (the node to serve on). */
export interface ServerOptions extends BaseServerOptions, Libp2pTransportOptions {}
/** Options of {@link Client}: every node is dialed from `libp2p` (or the adapter's own node). */
export interface ClientOptions extends BaseClientOptions, Libp2pTransportOptions {}

/**
 * Connects to the pointsub server of a libp2p peer — a multiaddr
 * (`/ip4/…/tcp/…/p2p/12D3KooW…`, `/ip4/…/udp/…/quic-v1/p2p/…`) or a peer id
 * the node's peer store has addresses for — over a new stream of
 * `/pointsub/1`. Also takes every URL pointsub's `connect` does.
 */
export function connect(address: Address, options: ConnectOptions = {}): Promise<Connection> {
  return connectWith(address, withRuntime(options));
}

/** {@link connect} with reconnection, offline and retry policies (pointsub's `connectResilient`). */
export function connectResilient(
  address: Address,
  options: ResilientConnectOptions = {},
): Promise<ResilientConnection> {
  return connectResilientWith(address, withRuntime(options));
}

/**
 * Creates a server. `listen(peerId)` or `listen(multiaddr)` with
 * `options.libp2p` serves `/pointsub/1` on that node; `listen(multiaddr)`
 * without it creates a node listening there. Every session's `principal`
 * is the remote peer id (unless an `authenticate` hook returns another).
 */
export function createServer(options: ServerOptions = {}): Server {
  return createServerWith(withRuntime(options));
}

/** pointsub's `Client` (pool, node lists, `requestClosest`), with nodes given by peer id or multiaddr. */
export class Client extends BaseClient {
  constructor(options: ClientOptions = {}) {
    super(withRuntime(options));
  }
}
