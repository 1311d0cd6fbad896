/**
 * The js-libp2p node pointsub creates when the caller passes none: TCP with
 * Noise and Yamux, and QUIC (`@chainsafe/libp2p-quic`, its own TLS and
 * streams) when that package is installed. The packages are loaded on first
 * use, so `pointsub/libp2p` with a node of your own loads none of them.
 */
import type {
  ConnectionEncrypter,
  Libp2p,
  MultiaddrConnection,
  SecuredConnection,
  StreamMuxer,
  StreamMuxerFactory,
} from "@libp2p/interface";
import type { Libp2pOptions } from "libp2p";
import { BROKEN_PACKAGE, passingOrKept, TRANSIENT_LOAD_ERRORS } from "../errors/load-failure.ts";
import { PointSubError } from "../index.ts";
import { plaintextTallies } from "./stream-transport.ts";

/**
 * Streams a yamux connection may open before this node finished its side of
 * the upgrade (yamux's `maxEarlyStreams`, 10 by default, past which it aborts
 * the whole connection): a peer whose side finished first may open streams
 * at once, and a burst of connects from a js-libp2p peer that does not wait
 * lost every one of them. The default `libp2pMaxInboundStreams` four times over.
 */
const EARLY_STREAMS = 128;

/** Options of {@link createLibp2pNode}. */
export interface Libp2pNodeOptions {
  /** Multiaddrs to listen on, e.g. `/ip4/127.0.0.1/tcp/0`, `/ip4/0.0.0.0/udp/4001/quic-v1`. Default none (dial only). */
  listen?: readonly string[];
  /** Offer QUIC when `@chainsafe/libp2p-quic` is installed. Default true. */
  quic?: boolean;
  /**
   * Bytes one stream may have in flight (yamux's largest stream window,
   * QUIC's `maxStreamData`). A small request waits behind what is in flight
   * on its stream, at the tens of MB/s Noise and yamux move in JavaScript:
   * 256 KiB keep that wait at a few ms on a LAN, and limit one stream to
   * 256 KiB per round trip (5 MB/s at 50 ms). Raise it for transfers over
   * long fat links (4 MiB: 40 MB/s at 100 ms). Default 256 KiB (yamux's
   * own default is 16 MiB, QUIC's 10 MB). At least 256 KiB.
   */
  streamWindow?: number;
  /** More js-libp2p options, spread over the defaults (`privateKey` for a fixed peer id, `connectionManager`, …). */
  libp2p?: Libp2pOptions;
}

/**
 * Creates and starts a js-libp2p node with pointsub's defaults: TCP + Noise +
 * Yamux, plus QUIC when `@chainsafe/libp2p-quic` is installed (a QUIC listen
 * address without it is ERR_INVALID_ARGUMENT). Needs the optional peer
 * dependencies `libp2p`, `@libp2p/tcp`, `@chainsafe/libp2p-noise` and
 * `@chainsafe/libp2p-yamux` (ERR_INVALID_ARGUMENT naming the missing one and
 * the `npm install` line for all of them).
 */
export async function createLibp2pNode(options: Libp2pNodeOptions = {}): Promise<Libp2p> {
  const listen = [...(options.listen ?? [])];
  const [{ createLibp2p }, { tcp }, { noise }, { yamux }] = await Promise.all([
    loadPeerDependency("libp2p", () => import("libp2p")),
    loadPeerDependency("@libp2p/tcp", () => import("@libp2p/tcp")),
    loadPeerDependency("@chainsafe/libp2p-noise", () => import("@chainsafe/libp2p-noise")),
    loadPeerDependency("@chainsafe/libp2p-yamux", () => import("@chainsafe/libp2p-yamux")),
  ]);
  const streamWindow = options.streamWindow ?? 256 * 1024;
  if (!Number.isInteger(streamWindow) || streamWindow < 256 * 1024 || streamWindow > 2 ** 32 - 1) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `streamWindow must be an integer of 256 KiB to 4 GiB, got ${streamWindow}`,
    );
  }
  const transports: NonNullable<Libp2pOptions["transports"]> = [tcp()];
  const wantsQuic = listen.some((a) => a.includes("/quic"));
  if (options.quic !== false) {
    try {
      const { quic } = await import("@chainsafe/libp2p-quic");
      transports.push(quic({ maxStreamData: streamWindow }));
    } catch (cause) {
      if (wantsQuic) {
        // Installed but failing to load (a native module built for another Node, an error in its code): said
        // as loadPeerDependency says it (before, "need … installed" of a package that was there).
        if (!notInstalled(cause)) await loadPeerDependency("@chainsafe/libp2p-quic", () => Promise.reject(cause));
        throw new PointSubError("ERR_INVALID_ARGUMENT", "QUIC addresses need @chainsafe/libp2p-quic installed", {
          cause,
        });
      }
    }
  } else if (wantsQuic) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "QUIC addresses with quic: false");
  }
  const extra = options.libp2p ?? {};
  return createLibp2p({
    ...extra,
    addresses: { ...extra.addresses, listen: [...listen, ...(extra.addresses?.listen ?? [])] },
    transports: [...transports, ...(extra.transports ?? [])],
    connectionEncrypters: extra.connectionEncrypters ?? [decryptingWithoutCopies(noise())],
    streamMuxers: extra.streamMuxers ?? [
      // Plaintext is freed only when it is this node's own Noise's (whole buffers of their own).
      (extra.connectionEncrypters === undefined ? releasingPlaintext : noWrap)(
        yamux({ maxEarlyStreams: EARLY_STREAMS, streamOptions: { maxStreamWindowSize: streamWindow } }),
      ),
    ],
  });
}

/** The parts of `@chainsafe/libp2p-noise`'s (v17) encrypted stream that {@link decryptingWithoutCopies} replaces or reads. */
interface NoiseStream {
  decrypt(chunk: ListLike): unknown;
  readonly handshake: { decrypt(ciphertext: ListLike, dst?: Uint8Array): unknown };
  /** Open until the stream ends or is aborted. */
  readonly status?: string;
  /** The connection below (for TCP: libp2p's stream of the socket, whose 'message' events carry its reads). */
  readonly stream?: SocketStream;
  /** Noise's length-prefix decoder: `buffer` holds what arrived of the next messages. */
  readonly decoder?: { readonly buffer?: ListLike };
}

/** The parts of `@libp2p/tcp`'s (v11) socket stream that {@link releasingReads} and {@link releasingWrites} use. */
interface SocketStream {
  /** The socket: present on TCP's stream only. */
  readonly socket?: {
    setNoDelay?: unknown;
    write(data: Uint8Array, done?: (error?: Error | null) => void): boolean;
  };
  addEventListener(type: "message", listener: (e: { data: ListLike | Uint8Array }) => void): void;
}

/** A `Uint8ArrayList` (one Noise message, ciphertext and tag) or a `Uint8Array`. */
interface ListLike {
  readonly byteLength: number;
  readonly bufs?: readonly Uint8Array[];
  subarray(start?: number, end?: number): Uint8Array;
}

/** Bytes of the ChaCha20-Poly1305 tag that ends every Noise transport message. */
const TAG_BYTES = 16;

/** Largest Noise transport message (its length is 2 bytes). */
const MAX_MESSAGE = 65_535;

/**
 * Noise (`@chainsafe/libp2p-noise` v17) whose encrypted streams decrypt
 * without the copy Noise makes of every message that spans two socket reads,
 * and over TCP free each socket read as soon as every message in it is
 * decrypted ({@link releasingReads}).
 * Noise passes the decipher a `dst` (the ciphertext's own memory, to decrypt
 * in place) and builds it with `subarray()`, which concatenates a message
 * held in two read buffers into new memory; Node's decipher never writes
 * into `dst`, so those copies (52-56 MiB per 64 MiB received, ~30 % of a
 * receiver's new memory, which drives its major GCs) are garbage at once.
 * Here `dst` is given only when the message lies in one buffer (a view, no
 * copy) and its reads are not released; where they are, never (the
 * plaintext must not live in memory about to be freed). The stream's
 * `decrypt` is replaced only when it and the handshake's are there as
 * expected; anything else is left as Noise made it.
 */
function decryptingWithoutCopies<C>(
  factory: (components: C) => ConnectionEncrypter,
): (components: C) => ConnectionEncrypter {
  return (components) => {
    const encrypter = factory(components);
    const outbound = encrypter.secureOutbound.bind(encrypter);
    const inbound = encrypter.secureInbound.bind(encrypter);
    encrypter.secureOutbound = async (connection, options) => lessCopying(await outbound(connection, options));
    encrypter.secureInbound = async (connection, options) => lessCopying(await inbound(connection, options));
    return encrypter;
  };
}

function lessCopying<T extends SecuredConnection>(secured: T): T {
  const stream = secured.connection as unknown as Partial<NoiseStream>;
  const handshake = stream.handshake;
  if (typeof stream.decrypt !== "function" || typeof handshake?.decrypt !== "function") return secured;
  const own = stream.decrypt.bind(stream);
  const inPlace = !releasingReads(stream);
  releasingWrites(stream);
  // One Noise message per call: the stream's decoder splits on its 2-byte length (at most 65,535 bytes);
  // anything longer (a Noise that hands over more at once) goes to Noise's own decrypt.
  stream.decrypt = (chunk: ListLike): unknown => {
    const n = chunk.byteLength;
    if (n > MAX_MESSAGE) return own(chunk);
    if (n < TAG_BYTES) throw new Error("Invalid chunk");
    if (!inPlace) return handshake.decrypt(chunk, undefined);
    const one = chunk instanceof Uint8Array ? chunk : chunk.bufs?.length === 1 ? chunk.bufs[0] : undefined;
    // In place only where that costs no copy: the message's own memory, in one piece.
    return handshake.decrypt(chunk, one?.byteLength === n ? one.subarray(0, n - TAG_BYTES) : undefined);
  };
  return secured;
}

/** Smallest socket read {@link releasingReads} frees: a smaller one costs more to detach than it weighs. */
const WATCHED_READ_BYTES = 4096;

/**
 * Over TCP, frees each socket read (detaches its ArrayBuffer) once Noise has
 * decrypted every message in it; true when set up. V8 counts a fresh
 * ArrayBuffer as external memory until a GC frees it, and what was
 * allocated since the last full GC counts against the old generation's
 * limit: with the few MiB of room V8 leaves there, the reads of a fast
 * receiver (half its fresh memory, the other half Noise's plaintext) started
 * a full GC every few MiB received (issue 15). A detached buffer is freed at
 * once and no longer counted. Only TCP's stream is trusted: each of its
 * 'message' events carries whole socket reads (Node gives every read an
 * ArrayBuffer of its own, at offset 0), read by nothing but Noise, whose
 * listener runs first and keeps only a read holding the start of a message
 * not yet complete (checked in its decoder's buffer; such a read is freed
 * with a later event). Reads under 4 KiB are left to the GC.
 */
function releasingReads(stream: Partial<NoiseStream>): boolean {
  const below = stream.stream;
  const decoder = stream.decoder;
  if (
    typeof below?.socket?.setNoDelay !== "function" ||
    typeof below.addEventListener !== "function" ||
    decoder?.buffer?.bufs === undefined
  ) {
    return false;
  }
  /** Reads still holding part of a message Noise has not decrypted yet. */
  let waiting: ArrayBuffer[] = [];
  below.addEventListener("message", (e) => {
    if (stream.status !== "open") return;
    const left = decoder.buffer?.bufs;
    if (left === undefined) return;
    const reads = e.data instanceof Uint8Array ? [e.data] : (e.data.bufs ?? []);
    const next: ArrayBuffer[] = [];
    const release = (ab: ArrayBuffer): void => {
      for (const b of left) {
        if (b.buffer === ab) {
          next.push(ab);
          return;
        }
      }
      freeRead(ab);
    };
    for (const ab of waiting) release(ab);
    for (const r of reads) {
      const ab = r.buffer;
      if (r.byteOffset === 0 && ab.byteLength >= WATCHED_READ_BYTES && ab instanceof ArrayBuffer && !ab.resizable) {
        release(ab);
      }
    }
    waiting = next;
  });
  return true;
}

const noWrap = <T>(x: T): T => x;

/** The parts of `@chainsafe/libp2p-yamux`'s (v8) muxer that {@link releasingPlaintext} wraps and reads. */
interface YamuxMuxer {
  onData(data: ListLike | Uint8Array): void;
  handleFrame(frame: { data?: ListLike | null }): void;
  /** Its frame decoder: `buffer` holds what arrived of the next frames. */
  readonly decoder?: { readonly buffer?: ListLike };
}

/** Smallest decrypted buffer {@link releasingPlaintext} watches. */
const WATCHED_PLAINTEXT_BYTES = 4096;

/**
 * Yamux whose muxers free each decrypted buffer (Noise's plaintext) once
 * it is parsed and every data byte in it was consumed by a pointsub
 * connection without keeping a view: with the socket reads freed
 * ({@link releasingReads}), the plaintext was a receiver's only fresh memory
 * (issue 15: V8 counts it against the old generation's limit until a GC).
 * A buffer is watched when it reaches the muxer whole (a view at offset 0 of
 * all its ArrayBuffer, 4 KiB or more): this node's Noise hands over each
 * decrypted message in memory of its own. The muxer's `handleFrame` adds
 * up the data bytes of each watched buffer it hands to a stream
 * ({@link plaintextTallies}), the pointsub transport what it consumed
 * without keeping, and once the muxer's decoder holds nothing of the
 * buffer, equal sums free it: data for any other protocol, a paused stream,
 * a dropped frame or a connection that kept a view leaves it to the GC.
 * Muxers without `onData`, `handleFrame` and `decoder.buffer` as expected
 * are left as they are.
 */
function releasingPlaintext<C>(factory: (components: C) => StreamMuxerFactory): (components: C) => StreamMuxerFactory {
  return (components) => {
    const f = factory(components);
    const create = f.createStreamMuxer.bind(f);
    f.createStreamMuxer = (maConn: MultiaddrConnection): StreamMuxer => {
      const muxer = create(maConn);
      watchPlaintext(muxer as unknown as Partial<YamuxMuxer>);
      return muxer;
    };
    return f;
  };
}

function watchPlaintext(m: Partial<YamuxMuxer>): void {
  const decoder = m.decoder;
  if (typeof m.onData !== "function" || typeof m.handleFrame !== "function" || decoder?.buffer?.bufs === undefined) {
    return;
  }
  const onData = m.onData.bind(m);
  const handleFrame = m.handleFrame.bind(m);
  /** Watched buffers the decoder may still hold part of. */
  let watched: ArrayBuffer[] = [];
  m.handleFrame = (frame) => {
    const d = frame.data;
    if (d !== undefined && d !== null) {
      for (const b of d instanceof Uint8Array ? [d] : (d.bufs ?? [])) {
        const t = plaintextTallies.get(b.buffer);
        if (t !== undefined) t.data += b.byteLength;
      }
    }
    handleFrame(frame);
  };
  m.onData = (data) => {
    for (const b of data instanceof Uint8Array ? [data] : (data.bufs ?? [])) {
      const ab = b.buffer;
      if (
        b.byteOffset === 0 &&
        b.byteLength >= WATCHED_PLAINTEXT_BYTES &&
        ab instanceof ArrayBuffer &&
        ab.byteLength === b.byteLength &&
        !ab.resizable &&
        !plaintextTallies.has(ab)
      ) {
        plaintextTallies.set(ab, { data: 0, consumed: 0 });
        watched.push(ab);
      }
    }
    onData(data);
    const left = decoder.buffer?.bufs ?? [];
    const next: ArrayBuffer[] = [];
    for (const ab of watched) {
      let held = false;
      for (const b of left) {
        if (b.buffer === ab) {
          held = true;
          break;
        }
      }
      if (held) {
        next.push(ab);
        continue;
      }
      const t = plaintextTallies.get(ab);
      plaintextTallies.delete(ab);
      if (t !== undefined && t.data === t.consumed) freePlaintext(ab);
    }
    watched = next;
  };
}

/** Smallest write {@link releasingWrites} frees: smaller ones may share Node's Buffer pool. */
const OWN_WRITE_BYTES = 4096;

/**
 * Over TCP, frees each Noise message once the socket has written it
 * (detaches its ArrayBuffer in the write's callback); true when set up. A
 * sender's new memory is the ciphertext of what it sends: counted by V8 as
 * external memory until a GC frees it, it drove the sender's full-GC loop as
 * the socket reads drove the receiver's ({@link releasingReads}). The
 * socket's `write` is wrapped: a write given a buffer alone (as TCP's
 * `sendData` writes Noise's output), that is a whole ArrayBuffer of its own
 * (Noise's cipher output; 4 KiB or more, so never Node's shared Buffer
 * pool), gets a callback; any other write goes through as it came. Nothing
 * holds a ciphertext once the socket took it. Callbacks come in write
 * order; one with an error (the socket was destroyed) frees nothing.
 */
function releasingWrites(stream: Partial<NoiseStream>): boolean {
  const socket = stream.stream?.socket;
  if (typeof socket?.write !== "function" || typeof socket.setNoDelay !== "function") return false;
  const write = socket.write;
  const written: (ArrayBuffer | undefined)[] = [];
  let head = 0;
  const done = (error?: Error | null): void => {
    const ab = written[head];
    written[head++] = undefined;
    if (head === written.length) {
      written.length = 0;
      head = 0;
    } else if (head >= 1024) {
      written.splice(0, head);
      head = 0;
    }
    if (ab !== undefined && (error === undefined || error === null)) freeSent(ab);
  };
  socket.write = function (this: unknown, data: Uint8Array, ...rest: unknown[]): boolean {
    const ab = data?.buffer;
    if (
      rest.length !== 0 ||
      !(data instanceof Uint8Array) ||
      data.byteLength < OWN_WRITE_BYTES ||
      data.byteOffset !== 0 ||
      !(ab instanceof ArrayBuffer) ||
      ab.byteLength !== data.byteLength ||
      ab.resizable
    ) {
      return (write as (...a: unknown[]) => boolean).call(this, data, ...rest);
    }
    written.push(ab);
    return write.call(this, data, done);
  };
  return true;
}

/**
 * Frees `ab` at once: detached, its memory is released and no longer counted
 * by V8 (a view of it reads as empty). One function per kind of buffer, so a
 * profile or test tells them apart.
 */
function freeRead(ab: ArrayBuffer): void {
  if (!ab.detached) ab.transfer(0);
}

/** As {@link freeRead}, for a ciphertext the socket wrote. */
function freeSent(ab: ArrayBuffer): void {
  if (!ab.detached) ab.transfer(0);
}

/** As {@link freeRead}, for a decrypted buffer nothing holds. */
function freePlaintext(ab: ArrayBuffer): void {
  if (!ab.detached) ab.transfer(0);
}

/** The optional peer dependencies pointsub/libp2p cannot work without (README, "Peer-to-peer: libp2p"). */
const PEER_DEPENDENCIES =
  "libp2p @libp2p/tcp @chainsafe/libp2p-noise @chainsafe/libp2p-yamux @multiformats/multiaddr @libp2p/interface";

/** Whether a failed import's `cause` is its package not installed. Never throws (a revoked Proxy). */
function notInstalled(cause: unknown): boolean {
  try {
    const code = (cause as { code?: unknown } | null)?.code;
    return code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND";
  } catch {
    return false;
  }
}

/**
 * `importer()`, the import of the optional peer dependency `name`; when it fails, ERR_INVALID_ARGUMENT
 * naming it and the command installing all of them (one at a time, a user installed one per error). One
 * installed that fails to load: ERR_CONNECT (retryable) for this machine's passing state (EMFILE), else
 * ERR_INVALID_ARGUMENT (a SyntaxError in its code: no retry repairs it).
 */
export async function loadPeerDependency<T>(name: string, importer: () => Promise<T>): Promise<T> {
  try {
    return await importer();
  } catch (cause) {
    // Only a package that is not there is the caller's to install; another failure to load it is said as it is.
    // Its code or class, never its text: that names this machine's paths and may run over lines (a native
    // module's NODE_MODULE_VERSION); the message may reach a peer. Never throws (a revoked Proxy).
    let code: unknown;
    let why = "see the cause";
    try {
      code = (cause as { code?: unknown } | null)?.code;
      if (typeof code === "string" && /^[A-Z][A-Z0-9_]{0,63}$/.test(code)) why = `${code} (see the cause)`;
      else if (cause instanceof Error && /^[A-Za-z]\w{0,63}$/.test(cause.name)) why = `${cause.name} (see the cause)`;
    } catch {}
    if (code !== "ERR_MODULE_NOT_FOUND" && code !== "MODULE_NOT_FOUND") {
      // Retryable only when this machine's passing state failed it (EMFILE), not a broken package (a
      // SyntaxError in its code): before, ERR_CONNECT for all, retried for ever.
      const message = `pointsub/libp2p cannot load the package ${name}: ${why}`;
      if (typeof code === "string" && TRANSIENT_LOAD_ERRORS.has(code)) throw passingOrKept(cause, message);
      throw new PointSubError("ERR_INVALID_ARGUMENT", message, { cause, suggestion: BROKEN_PACKAGE });
    }
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `pointsub/libp2p needs the package ${name}: npm install ${PEER_DEPENDENCIES}`,
      { cause },
    );
  }
}
