/**
 * The libp2p transport adapter: pointsub connections over streams of the
 * protocol `/pointsub/1` of a js-libp2p node, addressed by multiaddr or by
 * peer id.
 */
import type { Libp2p, Connection as Libp2pConnection, PrivateKey, Stream } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import {
  PointSubError,
  type Transport,
  type TransportAdapter,
  type TransportAddress,
  type TransportConnectOptions,
  type TransportListener,
} from "../index.ts";
import { createLibp2pNode, loadPeerDependency } from "./node.ts";
import { Libp2pStreamTransport } from "./stream-transport.ts";

type MultiaddrModule = typeof import("@multiformats/multiaddr");

let multiaddrModule: Promise<MultiaddrModule> | undefined;

/**
 * `@multiformats/multiaddr`, loaded on the first connect or listen: an
 * optional peer dependency, as libp2p. Imported at the top, it made
 * `import "pointsub/libp2p"` without it fail with Node's bare
 * ERR_MODULE_NOT_FOUND instead of ERR_INVALID_ARGUMENT naming the packages.
 */
function loadMultiaddr(): Promise<MultiaddrModule> {
  multiaddrModule ??= loadPeerDependency("@multiformats/multiaddr", () => import("@multiformats/multiaddr"));
  // A failed load is tried again on the next call (the package may have been installed since).
  multiaddrModule.catch(() => {
    multiaddrModule = undefined;
  });
  return multiaddrModule;
}

/** The libp2p protocol id pointsub connections run on (docs/PROTOCOL.md §1.3). */
export const PROTOCOL_ID = "/pointsub/1";

const MiB = 1024 * 1024;
/** The longest delay a timer takes (2^31 - 1 ms): a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Options of the libp2p transport, read from `connect`'s and `createServer`'s options. */
export interface Libp2pTransportOptions {
  /**
   * The js-libp2p node to dial from (connect) or to serve on (listen). Without
   * one, `connect` dials from a node the adapter creates (TCP + Noise + Yamux,
   * QUIC; stopped when its last connection closed) and `listen` on a multiaddr
   * creates a node listening there (stopped when the listener and its
   * sessions closed). A node of your own also ends each address's dial at
   * its `connectionManager.addressDialTimeout` (libp2p's default 6 s),
   * whatever `connectTimeoutMs` says; the adapter's own node has no
   * deadline but `connectTimeoutMs`.
   */
  libp2p?: Libp2p;
  /**
   * Listen: pointsub connections (streams of `/pointsub/1`) one libp2p
   * connection may have open to this server at once; more are refused by
   * libp2p. Default 32 (libp2p's default).
   */
  libp2pMaxInboundStreams?: number;
}

type ConnectOptions = TransportConnectOptions & Libp2pTransportOptions;

/** A node the adapter created: stopped once nothing uses it any more. */
class OwnedNode {
  private refs = 0;
  private node: Promise<Libp2p> | undefined;
  private stopping: Promise<void> = Promise.resolve();
  private readonly create: () => Promise<Libp2p>;
  /** Callers of {@link stopped} waiting for the next stop. */
  private waiting: (() => void)[] = [];

  constructor(create: () => Promise<Libp2p>) {
    this.create = create;
  }

  /** The node (created, or created again after a stop), counted as used until {@link release}. */
  async acquire(): Promise<Libp2p> {
    this.refs++;
    try {
      await this.stopping;
      this.node ??= this.create();
      return await this.node;
    } catch (err) {
      this.node = undefined;
      this.release();
      throw err;
    }
  }

  /** One more user of the node already acquired. */
  retain(): void {
    this.refs++;
  }

  /** One user less; the last one stops the node (the promise settles once it stopped). */
  release(): Promise<void> {
    if (--this.refs !== 0 || this.node === undefined) return this.stopping;
    const node = this.node;
    this.node = undefined;
    this.stopping = node.then((n) => n.stop()).catch(() => {});
    const waiting = this.waiting;
    this.waiting = [];
    void this.stopping.then(() => {
      for (const w of waiting) w();
    });
    return this.stopping;
  }

  /** Settles once the last user released the node and it stopped (its sockets closed). */
  stopped(): Promise<void> {
    if (this.refs === 0 && this.node === undefined) return this.stopping;
    return new Promise((resolve) => this.waiting.push(resolve));
  }
}

/**
 * A key for an adapter's dial-only node (Ed25519, as js-libp2p makes its
 * own), from `@libp2p/crypto` (libp2p's dependency); undefined without it:
 * then each node makes one of its own.
 */
async function dialerKey(): Promise<PrivateKey | undefined> {
  try {
    const { generateKeyPair } = await import("@libp2p/crypto/keys");
    return await generateKeyPair("Ed25519");
  } catch {
    return undefined;
  }
}

/** `options.libp2p`, checked to be a js-libp2p node (not, say, the promise `createLibp2pNode()` returns). */
function givenNode(options: Libp2pTransportOptions): Libp2p | undefined {
  const node = options.libp2p as Partial<Libp2p> | undefined;
  if (node === undefined) return undefined;
  if (
    node === null ||
    typeof node !== "object" ||
    node.peerId === undefined ||
    typeof node.dial !== "function" ||
    typeof node.handle !== "function" ||
    typeof node.unhandle !== "function" ||
    typeof node.getMultiaddrs !== "function"
  ) {
    const what =
      typeof (node as { then?: unknown } | null)?.then === "function" ? "a promise (await it)" : String(node);
    throw new PointSubError("ERR_INVALID_ARGUMENT", `options.libp2p must be a js-libp2p node, got ${what}`);
  }
  return node as Libp2p;
}

/** A varint at `at` of `b`: its value and where the next field starts. */
function varintAt(b: Uint8Array, at: number): [number, number] | undefined {
  let value = 0;
  for (let i = at, shift = 0; i < b.length && shift < 35; i++, shift += 7) {
    value += (b[i] & 0x7f) * 2 ** shift;
    if ((b[i] & 0x80) === 0) return [value, i + 1];
  }
  return undefined;
}

/** Multihash codes a peer id is made of: identity (Ed25519, secp256k1 keys) and sha2-256 (RSA keys). */
const PEER_ID_HASHES = new Set([0x00, 0x12]);

/**
 * True when `value` (of a `/p2p/` component) is a peer id: a multihash,
 * identity or sha2-256, whose digest is as long as it says. The multiaddr
 * parser takes any base58 text there ("QmNotAPeer"), which libp2p refused
 * only when dialing, as a failed dial (ERR_CONNECT, retried for ever by
 * `connectResilient`).
 */
function isPeerId(value: string, multiaddr: MultiaddrModule["multiaddr"]): boolean {
  let b: Uint8Array;
  try {
    b = multiaddr(`/p2p/${value}`).bytes;
  } catch {
    return false;
  }
  const proto = varintAt(b, 0);
  const size = proto && varintAt(b, proto[1]);
  if (size === undefined || size[1] + size[0] !== b.length) return false;
  const hash = varintAt(b, size[1]);
  const digest = hash && varintAt(b, hash[1]);
  return (
    digest !== undefined && PEER_ID_HASHES.has(hash?.[0] ?? -1) && digest[0] > 0 && digest[1] + digest[0] === b.length
  );
}

/** The multiaddr to dial for `address`. */
function target(address: TransportAddress, { isMultiaddr, multiaddr }: MultiaddrModule): Multiaddr {
  try {
    if (address instanceof URL) throw new Error("not a multiaddr");
    const ma =
      address.kind === "peer-id"
        ? multiaddr(`/p2p/${address.peerId}`)
        : isMultiaddr(address.value)
          ? address.value
          : multiaddr(address.text);
    for (const c of ma.getComponents()) {
      if (c.name === "p2p" && (c.value === undefined || !isPeerId(c.value, multiaddr)))
        throw new Error(`not a peer id: ${c.value}`);
    }
    return ma;
  } catch (cause) {
    const text = address instanceof URL ? address.href : address.kind === "peer-id" ? address.peerId : address.text;
    throw new PointSubError("ERR_UNSUPPORTED_URL", `the libp2p transport takes multiaddrs or peer ids, not ${text}`, {
      cause,
    });
  }
}

/**
 * What a paused stream may buffer: the peer's credit (this side's
 * connection window, 16 MiB by default) plus room for frame headers and
 * control frames. More aborts the stream.
 */
function readBufferBound(options: object): number {
  const w = (options as { connectionWindow?: number }).connectionWindow ?? 16 * MiB;
  return w + Math.ceil(w / 8) + MiB;
}

function wrap(
  stream: Stream,
  connection: Libp2pConnection,
  node: Libp2p,
  options: object,
  onClosed?: () => void,
): Transport {
  return new Libp2pStreamTransport(stream, connection, {
    localPeer: node.peerId.toString(),
    maxReadBufferBytes: readBufferBound(options),
    onClosed,
  });
}

/** The signal for a dial: the caller's, and the connect timeout. */
function dialSignal(options: ConnectOptions): AbortSignal | undefined {
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      "signal must be an AbortSignal (an AbortController's is its .signal)",
    );
  }
  const signals: AbortSignal[] = [];
  if (options.signal !== undefined) signals.push(options.signal);
  const ms = options.connectTimeoutMs;
  // A longer timer fires at once (and AbortSignal.timeout throws a RangeError over 2^32 - 1 ms).
  if (ms !== undefined && ms > 0) signals.push(AbortSignal.timeout(Math.min(ms, MAX_TIMER_MS)));
  return signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
}

function connectError(
  to: Multiaddr,
  err: unknown,
  options: ConnectOptions,
  node: Libp2p,
  signal?: AbortSignal,
): PointSubError {
  if (err instanceof PointSubError) return err;
  if (options.signal?.aborted) {
    return new PointSubError("ERR_CANCELLED", `connect to ${to} aborted`, { cause: options.signal.reason });
  }
  // A stopped (or stopping) node aborts its dials at once with a TimeoutError: not the connect timeout.
  if (node.status !== "started") {
    return new PointSubError(
      "ERR_CONNECT",
      `cannot connect to ${to}: the libp2p node ${node.peerId.toString()} is ${node.status} (options.libp2p must be started)`,
      { cause: err },
    );
  }
  const name = (err as Error | undefined)?.name;
  // An address no transport of the node dials (/ws, /quic-v1 with quic: false, /udp alone) fails every dial:
  // ERR_CONNECT, which connectResilient retries for ever. A peer id alone, or a /dnsaddr/ (resolved anew each
  // dial), may yet gain addresses to dial: those stay ERR_CONNECT.
  const parts = to.getComponents();
  const peerOnly = parts.length === 1 && parts[0].name === "p2p";
  if (name === "NoValidAddressesError" && !peerOnly && !parts.some((c) => c.name === "dnsaddr")) {
    return new PointSubError(
      "ERR_UNSUPPORTED_URL",
      `cannot connect to ${to}: no transport of the libp2p node ${node.peerId.toString()} dials it (createLibp2pNode has TCP, and QUIC when installed; more via its libp2p option)`,
      { cause: err },
    );
  }
  // The node's own peer id: libp2p refuses to dial itself, whatever the retry (ERR_CONNECT was retried for ever).
  // Also an address without /p2p/ that turned out to be the node's own: libp2p learns it in the handshake.
  if (
    parts.some((c) => c.name === "p2p" && c.value === node.peerId.toString()) ||
    (name === "InvalidPeerIdError" && /dial self/i.test((err as Error).message))
  ) {
    return new PointSubError(
      "ERR_UNSUPPORTED_URL",
      `cannot connect to ${to}: that is the libp2p node dialing it (options.libp2p, ${node.peerId.toString()}); a node does not dial itself`,
      { cause: err },
    );
  }
  // A peer id alone dials the addresses the node's peer store holds for it: a node that never met the peer
  // (createLibp2pNode's own, whose store starts empty) has none, and libp2p says only "unknown peer".
  if (name === "NoValidAddressesError" && peerOnly) {
    return new PointSubError(
      "ERR_CONNECT",
      `cannot connect to ${to}: the libp2p node ${node.peerId.toString()} knows no address of that peer (connect to a multiaddr with its address, /ip4/…/tcp/…/p2p/ID, or pass options.libp2p, a node that discovers it)`,
      { cause: err },
    );
  }
  // A timeout only when the connect timeout fired: a peer refusing the dial aborts it too (QUIC's limits).
  if (name === "TimeoutError" || (name === "AbortError" && signal?.aborted === true)) {
    return new PointSubError("ERR_TIMEOUT", `connect to ${to} timed out after ${options.connectTimeoutMs} ms`, {
      cause: err,
    });
  }
  // libp2p may reject with an Event (a stream's abort): its type says more than "[object Event]".
  const message =
    err instanceof Error
      ? err.message
      : typeof (err as { type?: unknown } | undefined)?.type === "string"
        ? `the peer ended the dial (${(err as { type: string }).type})`
        : String(err);
  return new PointSubError("ERR_CONNECT", `cannot connect to ${to}: ${message}`, { cause: err });
}

/**
 * A stream of {@link PROTOCOL_ID} on `connection`, as many as the peer takes:
 * how many pointsub connections one libp2p connection carries is the
 * server's `libp2pMaxInboundStreams`, not js-libp2p's default outbound limit
 * (64 per protocol, which capped a server that allows more).
 */
function newStream(connection: Libp2pConnection, signal: AbortSignal | undefined): Promise<Stream> {
  return connection.newStream(PROTOCOL_ID, { signal, maxOutboundStreams: Number.MAX_SAFE_INTEGER });
}

/** Libp2p connections on which a pointsub stream was negotiated: the peer takes streams on them. */
const negotiated = new WeakSet<Libp2pConnection>();
/** The first stream being negotiated on a libp2p connection (settles, never rejects, once it is done). */
const negotiating = new WeakMap<Libp2pConnection, Promise<void>>();

/** Waits for `p` or for `signal` to abort (then throws its reason). */
function untilSettledOrAborted(p: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return p;
  signal.throwIfAborted();
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    });
  });
}

/**
 * A new stream of {@link PROTOCOL_ID} on `connection`. On a libp2p connection
 * no pointsub stream was negotiated on yet, one stream goes first and the
 * others wait for it: a js-libp2p peer still finishing its side of the
 * upgrade holds the streams opened meanwhile as "early streams", and past
 * 10 of them (its muxer's `maxEarlyStreams`) aborts the whole connection, so
 * a burst of connects right after a dial failed every one of them.
 */
async function openStream(connection: Libp2pConnection, signal: AbortSignal | undefined): Promise<Stream> {
  for (;;) {
    if (negotiated.has(connection)) return newStream(connection, signal);
    const first = negotiating.get(connection);
    if (first === undefined) break;
    await untilSettledOrAborted(first, signal);
  }
  const opening = newStream(connection, signal);
  negotiating.set(
    connection,
    opening.then(
      () => {
        negotiated.add(connection);
        negotiating.delete(connection);
      },
      () => {
        negotiating.delete(connection);
      },
    ),
  );
  return opening;
}

/**
 * Ms a stream on a libp2p connection the node already had may take to open
 * (at most half the connect timeout) before a new connection is dialed
 * alongside; the first stream to open is used. libp2p reuses any open
 * connection to the peer id, whatever address is asked, and one to a peer
 * that vanished stays open: QUIC's until its idle timeout (10 s), TCP's
 * for minutes when no FIN or RST came (a crashed host, a path that died).
 */
export const REUSED_STREAM_WAIT_MS = 2000;

/** A stream and the libp2p connection it is on. */
interface Opened {
  stream: Stream;
  connection: Libp2pConnection;
}

/** `signal` (when given) and `stop`'s, as one. */
function stoppable(signal: AbortSignal | undefined, stop: AbortController): AbortSignal {
  return signal === undefined ? stop.signal : AbortSignal.any([signal, stop.signal]);
}

/**
 * A stream of {@link PROTOCOL_ID} to `to`, on the connection `node.dial`
 * gives; when that is one the node already had and the stream fails or has
 * not opened after {@link REUSED_STREAM_WAIT_MS}, also on a new connection.
 * Before, a connect to a peer restarted at a new address failed (QUIC:
 * "Unexpected EOF" after 10 s; TCP: ERR_TIMEOUT) while such a connection
 * lasted, whatever its address.
 */
async function streamTo(
  node: Libp2p,
  to: Multiaddr,
  signal: AbortSignal | undefined,
  connectTimeoutMs: number | undefined,
): Promise<Opened> {
  let reused = false;
  const onProgress = (e: { type: string }): void => {
    if (e.type === "dial-queue:already-connected") reused = true;
  };
  const connection = await node.dial(to, { signal, onProgress });
  if (!reused) return { stream: await openStream(connection, signal), connection };
  const giveUp = new AbortController();
  const first = openStream(connection, stoppable(signal, giveUp)).then((stream) => ({ stream, connection }));
  first.catch(() => {});
  const wait =
    connectTimeoutMs !== undefined && connectTimeoutMs > 0
      ? Math.min(REUSED_STREAM_WAIT_MS, connectTimeoutMs / 2)
      : REUSED_STREAM_WAIT_MS;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const opened = await Promise.race([
      first,
      new Promise<undefined>((r) => {
        timer = setTimeout(() => r(undefined), wait);
      }),
    ]);
    if (opened !== undefined) return opened;
  } catch (err) {
    // A peer that refused the protocol or reset the stream is there: no new connection for it.
    const name = (err as Error | undefined)?.name;
    if (signal?.aborted === true || name === "UnsupportedProtocolError" || name === "StreamResetError") throw err;
  } finally {
    clearTimeout(timer);
  }
  const giveUpFresh = new AbortController();
  const freshSignal = stoppable(signal, giveUpFresh);
  const fresh = (async (): Promise<Opened> => {
    let c = await node.dial(to, { signal: freshSignal });
    // Still the same (libp2p has not seen it die): a connection of its own.
    if (c === connection) c = await node.dial(to, { signal: freshSignal, force: true });
    return { stream: await openStream(c, freshSignal), connection: c };
  })();
  fresh.catch(() => {});
  let opened: Opened;
  try {
    opened = await Promise.any([first, fresh]);
  } catch (err) {
    throw (err as AggregateError).errors?.[1] ?? err;
  }
  // The other attempt is not used: stopped, or its stream closed if it opens yet.
  const unused = opened.connection === connection ? fresh : first;
  (unused === first ? giveUp : giveUpFresh).abort();
  void unused.then(
    (o) => o.stream.abort(new Error("pointsub used another stream")),
    () => {},
  );
  return opened;
}

/**
 * The error of a node that could not listen on `text`. libp2p reports every
 * address's error in one message, each with its stack: here each address's
 * first line. An address no transport of the node listens on (`/ws` on
 * `createLibp2pNode`'s TCP and QUIC) is ERR_UNSUPPORTED_URL, not ERR_CONNECT
 * as a port in use is.
 */
function listenError(text: string, err: unknown): PointSubError {
  const message = err instanceof Error ? err.message : String(err);
  const reasons = [...message.matchAll(/^\s*(\/\S+): (?:\w*Error: )?(.*)$/gm)].map((m) =>
    m[1] === text ? m[2].trim() : `${m[1]}: ${m[2].trim()}`,
  );
  const why = reasons.length === 0 ? message : reasons.join("; ");
  const unsupported = /UnsupportedListenAddressError/.test(message);
  return new PointSubError(
    unsupported ? "ERR_UNSUPPORTED_URL" : "ERR_CONNECT",
    unsupported
      ? `cannot listen on ${text}: no transport of the node listens there (createLibp2pNode has TCP and QUIC; more via its libp2p option)`
      : `cannot listen on ${text}: ${why}`,
    { cause: err },
  );
}

/** The node's peer id and listen addresses (with and without `/p2p/…`) it answers to. */
function addressesOf(node: Libp2p): { id: string; all: Set<string>; first: string } {
  const id = node.peerId.toString();
  const all = new Set<string>([id, `/p2p/${id}`]);
  let first = `/p2p/${id}`;
  for (const ma of node.getMultiaddrs()) {
    const full = ma.toString();
    if (first === `/p2p/${id}`) first = full;
    all.add(full);
    all.add(full.endsWith(`/p2p/${id}`) ? full.slice(0, -`/p2p/${id}`.length) : full);
  }
  return { id, all, first };
}

/**
 * A libp2p transport adapter: multiaddrs (`/ip4/…/tcp/…/p2p/…`,
 * `/ip4/…/udp/…/quic-v1/p2p/…`) and peer ids (dialed from the addresses the
 * node's peer store knows) reach it through a runtime's registry. Each
 * pointsub connection is one stream of {@link PROTOCOL_ID}; the session's
 * `principal` is the remote peer id.
 *
 * Every call returns an adapter of its own, with its own dial-only node for
 * `connect` calls without `libp2p`. That node is stopped with its last
 * connection and made again for the next one with the same key: its peer
 * id (the principal servers see) stays the adapter's for the process.
 */
export function libp2pTransport(): TransportAdapter<Libp2pTransportOptions> {
  let key: Promise<PrivateKey | undefined> | undefined;
  const dialer = new OwnedNode(async () => {
    // Before, each new node generated a key of its own: a client reconnecting after its last connection
    // closed came back as another peer, and a server authorizing by peer id refused it.
    key ??= dialerKey();
    // No dial deadlines of libp2p's own: connectTimeoutMs (0: none) is the only one. libp2p cut each
    // address's dial at 6 s (addressDialTimeout) and a dial without a signal at 10 s, whatever it said.
    return createLibp2pNode({
      libp2p: {
        privateKey: await key,
        connectionManager: { addressDialTimeout: MAX_TIMER_MS, dialTimeout: MAX_TIMER_MS },
      },
    });
  });
  return {
    schemes: [],
    multiaddrs: true,
    peerIds: true,

    async connect(address, options) {
      const to = target(address, await loadMultiaddr());
      // Before the node is acquired: nothing may throw between acquire and the try below (the node would run on).
      const signal = dialSignal(options);
      const given = givenNode(options);
      const node = given ?? (await dialer.acquire());
      const release = given === undefined ? () => dialer.release() : undefined;
      try {
        const { stream, connection } = await streamTo(node, to, signal, options.connectTimeoutMs);
        return wrap(stream, connection, node, options, release);
      } catch (err) {
        release?.();
        throw connectError(to, err, options, node, signal);
      }
    },

    async listen(address, options, onTransport) {
      // Parsed as connect parses it: a malformed multiaddr is ERR_UNSUPPORTED_URL before any node is made
      // (before, a node was made to listen there, and its parse error was ERR_CONNECT).
      const ma = await loadMultiaddr();
      const parsed = target(address, ma);
      const maxInboundStreams = options.libp2pMaxInboundStreams ?? 32;
      // Before any node is created: libp2p takes anything here (0 or less refused every peer, NaN none).
      if (
        !(Number.isInteger(maxInboundStreams) || maxInboundStreams === Number.POSITIVE_INFINITY) ||
        maxInboundStreams < 1
      ) {
        throw new PointSubError(
          "ERR_INVALID_ARGUMENT",
          `libp2pMaxInboundStreams must be an integer >= 1 (got ${String(maxInboundStreams)})`,
        );
      }
      // In the form libp2p writes addresses: a peer id in base58 (as connect, listen takes its CID form,
      // bafz…, which was refused as not the node's peer id), no trailing "/".
      const canonical = ma.multiaddr(parsed.bytes).toString();
      const listenText =
        !(address instanceof URL) && address.kind === "peer-id" ? canonical.slice("/p2p/".length) : canonical;
      const given = givenNode(options);
      const owned = given === undefined ? new OwnedNode(() => createLibp2pNode({ listen: [listenText] })) : undefined;
      let serving: Libp2p;
      let url: string;
      if (owned === undefined || given !== undefined) {
        serving = given as Libp2p;
        const known = addressesOf(serving);
        if (!known.all.has(listenText)) {
          throw new PointSubError(
            "ERR_INVALID_ARGUMENT",
            `options.libp2p is ${known.id}: listen on its peer id or one of its addresses (${[...known.all].join(", ")}), not ${listenText}`,
          );
        }
        url =
          listenText === known.id
            ? known.first
            : listenText.includes("/p2p/")
              ? listenText
              : `${listenText}/p2p/${known.id}`;
      } else {
        if (address instanceof URL || address.kind !== "multiaddr") {
          throw new PointSubError(
            "ERR_INVALID_ARGUMENT",
            "listening on a peer id needs options.libp2p: the node whose peer id it is",
          );
        }
        // The node created here has a peer id of its own: serving under the one named would tell clients a wrong id.
        if (listenText.includes("/p2p/")) {
          throw new PointSubError(
            "ERR_INVALID_ARGUMENT",
            `listening on ${listenText} needs options.libp2p, the node whose peer id it names: a node created here has a new peer id (listen on the address without /p2p/…)`,
          );
        }
        try {
          serving = await owned.acquire();
        } catch (err) {
          throw err instanceof PointSubError ? err : listenError(listenText, err);
        }
        url = addressesOf(serving).first;
      }
      try {
        await serving.handle(
          PROTOCOL_ID,
          (stream, connection) => {
            owned?.retain();
            onTransport(
              wrap(stream, connection, serving, options, owned === undefined ? undefined : () => owned.release()),
            );
          },
          { maxInboundStreams },
        );
      } catch (err) {
        await owned?.release();
        throw new PointSubError(
          "ERR_INVALID_ARGUMENT",
          `cannot serve ${PROTOCOL_ID} on ${url}: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }
      let closed = false;
      return {
        url,
        async close() {
          if (closed) return;
          closed = true;
          await serving.unhandle(PROTOCOL_ID).catch(() => {});
          if (owned === undefined) return;
          // As a socket server's close: resolved once its connections are gone, here once the node they
          // hold stopped (its port free again: a server closed and listening again on the port got EADDRINUSE).
          const stopped = owned.stopped();
          await owned.release();
          await stopped;
        },
      } satisfies TransportListener;
    },
  };
}
