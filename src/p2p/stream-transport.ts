/**
 * One libp2p stream as a pointsub {@link Transport}: each pointsub
 * connection runs over its own stream of the protocol `/pointsub/1`.
 */
import type { Connection as Libp2pConnection, Stream, StreamCloseEvent, StreamMessageEvent } from "@libp2p/interface";
import type { Transport, TransportHandlers } from "../index.ts";

/**
 * Bytes a QUIC stream may queue before the writer is asked to wait. A
 * `@chainsafe/libp2p-quic` stream queues every write while its previous
 * native write runs (quinn holds the rest, bounded by the stream's
 * `maxStreamData`), so waiting for an empty queue would leave it one frame
 * per native write. Streams of a libp2p muxer (yamux) have no such queue:
 * see {@link MUXED_WRITE_HIGH_WATER}.
 */
export const WRITE_HIGH_WATER = 256 * 1024;

/**
 * Bytes a yamux (or other libp2p muxer) stream may queue before the writer
 * is asked to wait: none. Such a stream queues only what its send window
 * (256 KiB by default, `createLibp2pNode`'s `streamWindow`) or the
 * connection below it (Noise, the socket) cannot take now, and a small frame
 * written later waits behind all of it; kept in pointsub instead, the bulk
 * waits in the writer, which sends small frames first. (256 KiB queued
 * here as well as 256 KiB in the window: a ping waited behind both, ~13 ms
 * at 40 MB/s.)
 */
export const MUXED_WRITE_HIGH_WATER = 0;

/**
 * Largest frame payload pointsub sends over a libp2p stream
 * ({@link Transport.maxFrameSize}): a frame is handed over whole, so a small
 * frame may wait behind one of these (~1.5 ms at 50 MB/s; the 1 MiB chunks
 * of a transfer over 100 MiB would be ~25 ms).
 */
export const LIBP2P_MAX_FRAME = 64 * 1024;

/**
 * Size of the buffers writes are copied into and reused over yamux and Noise
 * ({@link Libp2pStreamTransport}): one largest frame with its header and a
 * few small frames; a larger write gets a buffer of its own.
 */
const SCRATCH_BYTES = LIBP2P_MAX_FRAME + 4096;

/** Reused write buffers per stream at most (free and lent together). */
const SCRATCH_BUFFERS = 4;

/**
 * Writes up to this size are copied into a buffer of their own size, not a
 * reused one: a session that only handshakes and pings (or sends small
 * answers) holds no 68 KiB scratch buffer — memory outside the budget, per
 * session, that a peer could keep there by talking.
 */
const SMALL_WRITE = 8 * 1024;

/**
 * Bytes a new yamux stream may have in flight (sent, not yet granted back by
 * the peer's window updates) before the writer is asked to wait: one largest
 * frame at first, raised by half of every window update (×1.5 per round
 * trip) until it reaches the stream's window, where yamux alone limits. A
 * new connection is cold on both ends: its first frames are decrypted and
 * parsed several times slower than later ones (measured: ~10 MB/s over the
 * first 50 ms of a transfer, 130 MB/s warm), so a small frame written then
 * waited ~6 ms behind every 64 KiB ahead of it, and the whole window plus a
 * frame yamux queued (320 KiB) was ahead of the first pings of a transfer.
 */
export const START_IN_FLIGHT = LIBP2P_MAX_FRAME;

/**
 * Ms the writer waits for a window update while {@link START_IN_FLIGHT}
 * holds it back; then the cap is lifted. A yamux peer that grants window only
 * after half of it was used (go-yamux) would otherwise never grant any.
 */
export const START_GRANT_WAIT_MS = 100;

/**
 * What became of a decrypted buffer the muxer of `createLibp2pNode` watches
 * (node.ts, `releasingPlaintext`): bytes of it in data frames, and bytes of
 * those the connections here consumed without keeping a view. When the two
 * agree once the muxer is done with the buffer, nothing holds it and it is
 * freed at once.
 */
export interface PlaintextTally {
  /** Bytes of the buffer in data frames the muxer handed to its streams. */
  data: number;
  /** Bytes of them a pointsub connection consumed without keeping a view ({@link TransportHandlers.onData} false). */
  consumed: number;
}

/** The tallies of the decrypted buffers being watched (by their ArrayBuffer). */
export const plaintextTallies = new WeakMap<ArrayBufferLike, PlaintextTally>();

/** The parts of a js-libp2p yamux stream (v8) the start cap reads and wraps. */
interface YamuxSendWindow {
  /** Bytes the peer lets this side send now. */
  sendWindowCapacity: number;
  /** Called by the muxer with each window update from the peer. */
  handleWindowUpdate(frame: unknown): void;
}

/** What the transport needs besides the stream. */
export interface StreamTransportInit {
  /** This node's peer id (the local address). */
  readonly localPeer: string;
  /**
   * Bytes the stream may hold while reading is paused; more aborts the
   * stream. Must exceed what the peer may send unasked (its credit).
   */
  readonly maxReadBufferBytes: number;
  /** Called once, when the transport closed (the owner releases the node). */
  readonly onClosed?: () => void;
}

/** `libp2p:` and the multiaddr, with the peer id: the human-readable form of an end. */
function endUrl(multiaddr: string, peer: string): string {
  const p2p = `/p2p/${peer}`;
  return `libp2p:${multiaddr.endsWith(p2p) ? multiaddr : multiaddr + p2p}`;
}

/**
 * A libp2p (v3) stream as a {@link Transport}. Each `write` is copied into
 * one buffer (one muxer frame; the writer may reuse released stream buffers
 * once drained, and the muxer or Noise may still hold what they were given):
 * over yamux and Noise one of a few reused ones: a buffer whose `send()`
 * returned false may still be held (unencrypted) and is reused only after a
 * later `send()` returns true (the stream takes writes in order, Noise
 * encrypts into new memory).
 * `send()` queues what the muxer cannot take, and the writer waits
 * as soon as a yamux stream queues anything ({@link MUXED_WRITE_HIGH_WATER})
 * or a QUIC stream 256 KiB ({@link WRITE_HIGH_WATER}; frames are at most
 * {@link LIBP2P_MAX_FRAME}), until 'drain'/'idle' bring it under; a new
 * yamux stream also while it has {@link START_IN_FLIGHT} in flight, a cap
 * that grows with the peer's window updates until it reaches the window
 * (or is lifted after {@link START_GRANT_WAIT_MS} without one). Reading is
 * paused with the stream's `pause()` (yamux stops granting window; QUIC
 * keeps reading, bounded by pointsub's own credit) and chunks the stream
 * delivered after a pause are held here until `resume`. The peer closing its
 * write side closes ours (as a socket without half-open does).
 */
export class Libp2pStreamTransport implements Transport {
  readonly localUrl: string;
  readonly remoteUrl: string;
  readonly maxFrameSize = LIBP2P_MAX_FRAME;
  private readonly stream: Stream;
  private readonly remotePeer: string;
  private readonly onClosed: (() => void) | undefined;
  /** Bytes the stream may queue before `write` asks the writer to wait. */
  private readonly highWater: number;
  /**
   * True when a `send` that returns true has already encrypted what it was
   * given (yamux over Noise: the muxer hands the frame to Noise, which
   * encrypts it into new memory before returning, unless the socket is full,
   * and then `send` returns false), so the next write may reuse its memory.
   */
  private readonly consumesAtOnce: boolean;
  /** Write buffers free for the next write (while {@link consumesAtOnce}); dropped on `trim`. */
  private free: Uint8Array[] = [];
  /**
   * Write buffers libp2p may still hold (their `send` returned false). The
   * stream takes writes in order, so a later `send` that returns true
   * frees them all.
   */
  private lent: Uint8Array[] = [];
  /** The yamux stream's send window while the start cap holds ({@link START_IN_FLIGHT}), else undefined. */
  private yamux: YamuxSendWindow | undefined;
  /** Its window update handler, as the stream had it (restored when the cap is lifted). */
  private yamuxUpdate: ((frame: unknown) => void) | undefined;
  /** The send window when the stream was handed over: bytes in flight are this minus what is left. */
  private startWindow = 0;
  /** Bytes in flight the start cap allows now (0: no cap). */
  private startCap = 0;
  /** Lifts the start cap when no window update came for {@link START_GRANT_WAIT_MS} while it held writes back. */
  private capTimer: ReturnType<typeof setTimeout> | undefined;
  private h: TransportHandlers | undefined;
  private paused = false;
  /** Chunks that arrived while paused (or not yet delivered when a pause came). */
  private held: Uint8Array[] = [];
  /** True while {@link deliverHeld} hands held chunks over. */
  private delivering = false;
  private waitingDrain = false;
  private drainCheck = false;
  private ended = false;
  private closed = false;
  /** Set when the stream closed cleanly while chunks were still held: onClose after they are delivered. */
  private closePending = false;
  /** The error a local `destroy` gave (reported instead of the stream's abort error). */
  private destroyedWith: Error | undefined | null = null;

  constructor(stream: Stream, connection: Libp2pConnection, init: StreamTransportInit) {
    this.stream = stream;
    this.remotePeer = connection.remotePeer.toString();
    this.remoteUrl = endUrl(connection.remoteAddr.toString(), this.remotePeer);
    this.localUrl = endUrl("", init.localPeer);
    this.onClosed = init.onClosed;
    this.highWater = connection.multiplexer === "quic" ? WRITE_HIGH_WATER : MUXED_WRITE_HIGH_WATER;
    this.consumesAtOnce = connection.encryption === "/noise" && connection.multiplexer === "/yamux/1.0.0";
    // pointsub's credit bounds what a well-behaved peer sends while this side does not read; more resets the stream.
    stream.maxReadBufferLength = init.maxReadBufferBytes;
    if (connection.multiplexer === "/yamux/1.0.0") this.startSlow(stream as unknown as Partial<YamuxSendWindow>);
  }

  /** Caps the bytes in flight of a new yamux stream ({@link START_IN_FLIGHT}), if its internals are as expected. */
  private startSlow(y: Partial<YamuxSendWindow>): void {
    const update = y.handleWindowUpdate;
    if (typeof y.sendWindowCapacity !== "number" || typeof update !== "function") return;
    if (y.sendWindowCapacity <= START_IN_FLIGHT) return;
    const ys = y as YamuxSendWindow;
    this.yamux = ys;
    this.yamuxUpdate = update;
    this.startWindow = ys.sendWindowCapacity;
    this.startCap = START_IN_FLIGHT;
    ys.handleWindowUpdate = (frame: unknown): void => {
      const before = ys.sendWindowCapacity;
      update.call(ys, frame);
      this.granted(ys.sendWindowCapacity - before);
    };
  }

  /** The peer granted `bytes` more window: the start cap grows by half of them. */
  private granted(bytes: number): void {
    if (this.startCap === 0) return;
    if (this.capTimer !== undefined) {
      clearTimeout(this.capTimer);
      this.capTimer = undefined;
    }
    this.startCap += bytes >>> 1;
    if (this.startCap >= this.startWindow) this.endSlowStart();
    this.onWritable();
  }

  /** Lifts the start cap: from now on the stream's own window limits what is in flight. */
  private endSlowStart(): void {
    this.startCap = 0;
    if (this.capTimer !== undefined) {
      clearTimeout(this.capTimer);
      this.capTimer = undefined;
    }
    const y = this.yamux;
    if (y === undefined) return;
    this.yamux = undefined;
    y.handleWindowUpdate = this.yamuxUpdate as (frame: unknown) => void;
    this.yamuxUpdate = undefined;
  }

  /** True when the writer should wait: the stream queued more than {@link highWater}, or the start cap is reached. */
  private heldBack(): boolean {
    if (this.stream.writeBufferLength > this.highWater) return true;
    const y = this.yamux;
    return y !== undefined && this.startWindow - y.sendWindowCapacity >= this.startCap;
  }

  /** The remote peer id, authenticated by libp2p's Noise (TCP) or TLS (QUIC) handshake. */
  peerId(): string {
    return this.remotePeer;
  }

  attach(handlers: TransportHandlers): void {
    this.h = handlers;
    const s = this.stream;
    s.addEventListener("message", this.onMessage);
    s.addEventListener("drain", this.onWritable);
    s.addEventListener("idle", this.onWritable);
    s.addEventListener("remoteCloseWrite", this.onRemoteCloseWrite);
    s.addEventListener("close", this.onStreamClose);
    if (s.status !== "open" && s.status !== "closing") {
      // Closed before attach: what it buffered is dispatched first (a microtask queued by the 'message' listener).
      const error = s.status === "closed" ? undefined : new Error(`libp2p stream ${s.status}`);
      queueMicrotask(() => this.streamClosed(error));
    } else if (s.remoteWriteStatus === "closed") this.onRemoteCloseWrite();
  }

  write(chunks: readonly Uint8Array[]): boolean {
    if (this.closed || this.ended) return false;
    const s = this.stream;
    let n = 0;
    for (let i = 0; i < chunks.length; i++) n += chunks[i].length;
    if (n === 0) return true;
    // One muxer frame per write, copied: the writer reuses its buffers. Where the stream consumes a write at
    // once, the copy goes into one of a few reused buffers (a fresh 64 KiB per frame drove the sender's full GCs).
    let buf: Uint8Array | undefined;
    if (this.consumesAtOnce && n > SMALL_WRITE && n <= SCRATCH_BYTES) {
      buf = this.free.pop();
      if (buf === undefined && this.lent.length < SCRATCH_BUFFERS) buf = new Uint8Array(SCRATCH_BYTES);
    }
    const data = buf === undefined ? new Uint8Array(n) : buf.subarray(0, n);
    let p = 0;
    for (let i = 0; i < chunks.length; i++) {
      data.set(chunks[i], p);
      p += chunks[i].length;
    }
    let consumed: boolean;
    try {
      consumed = s.send(data);
    } catch (err) {
      // The stream closed for writing (peer reset, muxer gone): its 'close' event reports it.
      this.destroy(err as Error);
      return false;
    }
    if (consumed) {
      // Taken (and everything written before it): every buffer is free again.
      if (this.lent.length !== 0) {
        for (const b of this.lent) this.free.push(b);
        this.lent.length = 0;
      }
      if (buf !== undefined) this.free.push(buf);
    } else if (buf !== undefined) this.lent.push(buf); // libp2p may still hold it, unencrypted
    if (!this.heldBack()) return true;
    this.waitingDrain = true;
    if (this.yamux !== undefined && this.capTimer === undefined && s.writeBufferLength <= this.highWater) {
      // Held back by the start cap alone: a peer that grants late must not stall the stream.
      this.capTimer = setTimeout(() => {
        this.capTimer = undefined;
        this.endSlowStart();
        this.onWritable();
      }, START_GRANT_WAIT_MS);
    }
    return false;
  }

  /** An idle connection keeps no write buffer. */
  trim(): void {
    this.free = [];
    this.lent = [];
  }

  pause(): void {
    if (this.paused || this.closed) return;
    this.paused = true;
    try {
      this.stream.pause();
    } catch {
      // Reading already ended: nothing more to hold back.
    }
  }

  resume(): void {
    if (!this.paused || this.closed) return;
    this.paused = false;
    // Called from an onData of the delivery below (a pause undone at once: the read gate's slow-peer
    // check): that delivery goes on from where it is. Delivering again from here started over at the
    // first held chunk, which was handed over again and again until the stack overflowed.
    if (this.delivering) return;
    this.deliverHeld();
    if (this.paused) return;
    try {
      // Dispatches (synchronously) what the stream buffered while paused.
      this.stream.resume();
    } catch {
      // Reading already ended.
    }
    if (this.closePending && !this.paused && this.held.length === 0) this.finish(undefined);
  }

  end(): void {
    if (this.ended || this.closed) return;
    this.ended = true;
    // Half-closes after what is queued is sent; 'close' follows once the peer closed its side too.
    this.stream.close().catch((err: Error) => this.destroy(err));
  }

  destroy(error?: Error): void {
    if (this.closed) return;
    if (this.destroyedWith === null) this.destroyedWith = error;
    const s = this.stream;
    if (s.status === "open" || s.status === "closing") s.abort(error ?? new Error("pointsub closed the stream"));
    // abort dispatches 'close' synchronously; if the stream was already done, report here.
    this.streamClosed(error);
  }

  private readonly onMessage = (e: StreamMessageEvent): void => {
    const d = e.data;
    if (d instanceof Uint8Array) this.deliver(d);
    else for (const b of d) this.deliver(b);
  };

  private deliver(data: Uint8Array): void {
    if (this.closed || data.length === 0) return;
    // Muxers hand out Node Buffers: the core gets plain Uint8Array views of the same memory.
    const chunk =
      data.constructor === Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (this.paused || this.held.length !== 0) this.held.push(chunk);
    else if (this.h?.onData(chunk) === false) {
      const t = plaintextTallies.get(chunk.buffer);
      if (t !== undefined) t.consumed += chunk.byteLength;
    }
  }

  private deliverHeld(): void {
    const held = this.held;
    let i = 0;
    this.delivering = true;
    try {
      while (i < held.length && !this.paused && !this.closed) this.h?.onData(held[i++]);
    } finally {
      this.delivering = false;
    }
    this.held = i === held.length || this.closed ? [] : held.slice(i);
  }

  private readonly onWritable = (): void => {
    if (!this.waitingDrain || this.drainCheck) return;
    // After the stream's own 'drain' listener queued its send (a microtask), see what is left.
    this.drainCheck = true;
    queueMicrotask(() => {
      this.drainCheck = false;
      if (!this.waitingDrain || this.closed || this.heldBack()) return;
      this.waitingDrain = false;
      this.h?.onDrain();
    });
  };

  private readonly onRemoteCloseWrite = (): void => {
    // No half-open connections: the peer ended, so do we (after what is queued).
    if (!this.ended && !this.closed) this.end();
  };

  private readonly onStreamClose = (e: StreamCloseEvent): void => {
    this.streamClosed(e.error);
  };

  private streamClosed(error: Error | undefined): void {
    if (this.closed) return;
    if (this.destroyedWith !== null) {
      this.finish(this.destroyedWith);
      return;
    }
    if (error === undefined && (this.held.length !== 0 || (this.paused && this.stream.readBufferLength !== 0))) {
      // A clean end while paused: what is left is delivered on resume, then the close.
      this.closePending = true;
      if (!this.paused) {
        this.paused = true;
        this.resume();
      }
      return;
    }
    this.finish(error);
  }

  private finish(error: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.held = [];
    this.trim();
    this.endSlowStart();
    const s = this.stream;
    s.removeEventListener("message", this.onMessage);
    s.removeEventListener("drain", this.onWritable);
    s.removeEventListener("idle", this.onWritable);
    s.removeEventListener("remoteCloseWrite", this.onRemoteCloseWrite);
    s.removeEventListener("close", this.onStreamClose);
    this.onClosed?.();
    // Reported on a microtask, as the other transports do: a connection destroying its transport with an
    // error (a handshake timeout) records that error first, and is not torn down as a plain close.
    const h = this.h;
    if (h !== undefined) queueMicrotask(() => h.onClose(error));
  }
}
