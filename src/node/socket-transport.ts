import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { PointSubError } from "../errors/error.ts";
import type { PeerCertificate, Transport, TransportHandlers } from "../transport/transport.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import { type ByteHolder, holdChunks } from "./held-bytes.ts";
import type { SocketReader } from "./socket-reader.ts";
import { tlsError } from "./tls-errors.ts";

/**
 * Bytes queued in the socket before the writer is asked to wait for 'drain'.
 * Enough to keep the kernel fed between event-loop turns, small enough that
 * a message queued behind it waits ~1 ms on loopback.
 */
const WRITE_HIGH_WATER = 1024 * 1024;
/**
 * Bytes a write Node keeps in its own queue counts for besides its own: the
 * entry and the Buffer it makes of the chunk (~150 B of heap measured). A peer
 * that reads nothing while it makes this side write tiny frames one by one (a
 * PING answered per PING, each arriving alone) queued ~70,000 fifteen-byte
 * answers under 1 MiB of bytes, ~10 MB of heap; counted so, ~3,900.
 */
const QUEUED_WRITE_COST = 256;
const NOTHING = new Uint8Array(0);

/**
 * Written chunks of this size (up to {@link STAGE_MAX}) that lie in memory
 * other than the writer's pools — a large message's own bytes — are copied
 * into a staging buffer, reused once the socket wrote it, and the socket
 * writes that (tcp and unix; not tls, which encrypts into buffers of its
 * own). On a VM with shadow paging (this machine: Firecracker, PVM) the
 * kernel's first read of memory the process filled but the kernel never
 * touched faults on every page: 256 MiB filled by the application went to
 * a loopback socket at ~700 MB/s straight, ~4.4 GB/s copied through staging
 * first (memory the kernel had read before). On bare metal the copy costs
 * a memcpy (~10 GB/s).
 */
const STAGE_MIN = 16 * 1024;
const STAGE_MAX = 1024 * 1024;
/** An ArrayBuffer this large or smaller is one of the writer's pools (reused, so the kernel knows it): written as it is. */
const POOL_BYTES = 64 * 1024;
/**
 * Staging memory in the sockets' write queues, all sockets of this thread
 * together, at most (the writer stops at {@link WRITE_HIGH_WATER} per
 * socket: ~2 MiB each); past it chunks are written as they are.
 */
const STAGE_BUDGET = 32 * 1024 * 1024;
/** Free staging buffers kept for reuse, bytes at most (by size class: powers of two from 16 KiB to 1 MiB). */
const STAGE_FREE_MAX = 8 * 1024 * 1024;
let stagedBytes = 0;
let freeBytes = 0;
const freeStages: Uint8Array[][] = [];

function takeStage(n: number): Uint8Array {
  const cls = Math.ceil(Math.log2(n));
  const list = freeStages[cls];
  const b = list?.pop();
  if (b !== undefined) {
    freeBytes -= b.length;
    return b;
  }
  const m = Buffer.allocUnsafeSlow(2 ** cls);
  return new Uint8Array(m.buffer, m.byteOffset, m.length);
}

function giveStage(b: Uint8Array): void {
  if (freeBytes + b.length > STAGE_FREE_MAX) return;
  freeBytes += b.length;
  const cls = Math.log2(b.length);
  const list = freeStages[cls];
  if (list === undefined) freeStages[cls] = [b];
  else list.push(b);
}

/** @internal Staging memory of this thread: in sockets' write queues, and free for reuse (tests). */
export function stagingBytes(): { staged: number; free: number } {
  return { staged: stagedBytes, free: freeBytes };
}

/** A socket's staging buffers in its write queue, oldest first (writes complete in order). */
class Staging {
  readonly queue: Uint8Array[] = [];
  head = 0;
  /** The write callback of every staged write: the oldest staging buffer is free again. */
  readonly written = (): void => {
    const b = this.queue[this.head];
    if (b === undefined) return;
    this.queue[this.head++] = NOTHING;
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    }
    stagedBytes -= b.length;
    giveStage(b);
  };

  /** The socket closed: what it still held is not reused (libuv may have it), only uncounted. */
  drop(): void {
    for (let i = this.head; i < this.queue.length; i++) stagedBytes -= this.queue[i].length;
    this.queue.length = 0;
    this.head = 0;
  }
}

/** A socket's writes Node holds in its queue ({@link QUEUED_WRITE_COST}): counted up when made, down by their callback. */
class QueuedWrites implements ByteHolder {
  n = 0;
  /**
   * While the count is full: the bytes of later writes, copied, written as
   * one write at the drain (undefined: not holding). The writer writes on
   * after "full" — control frames, written whether or not the transport can
   * take them: a peer that never reads made this side answer one CANCEL per
   * read, ~470,000 writes of 11 bytes (~90 MB of heap) before the slow-peer
   * bound stopped reading it.
   */
  held: Uint8Array | undefined = undefined;
  heldLength = 0;
  readonly done = (): void => {
    this.n--;
  };
}

/** Where a socket keeps its transport, for the shared listeners below. */
const TRANSPORT = Symbol("pointsub.transport");
interface Slots {
  [TRANSPORT]: SocketTransport;
}

// Listeners shared by every socket; `this` is the socket. Handlers are called as methods of their object.
function onSocketData(this: Socket, chunk: Buffer): void {
  // Hand the core plain Uint8Array views (same memory), not Buffers.
  (this as unknown as Slots)[TRANSPORT].handlers?.onData(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
}
function onSocketDrain(this: Socket): void {
  const t = (this as unknown as Slots)[TRANSPORT];
  t.writeHeld();
  t.handlers?.onDrain();
}
function onSocketError(this: Socket, err: Error): void {
  const t = (this as unknown as Slots)[TRANSPORT];
  // A TLS alert after the handshake (TLS 1.3 sends "certificate required" then): said plainly, with its code.
  t.error = tlsError(err, t.remoteUrl) ?? err;
  // node:tls only emits a TLS error after the handshake (a record that does not decrypt): the socket
  // stayed open, reading nothing more, and the connection hung (test/transport/tls-bad-record.test.ts).
  // Its 'close' reports the error.
  if (!this.destroyed) this.destroy();
}
/**
 * The peer ended its side (it sent a FIN; every byte it sent was read).
 * Node would end ours next, after what is queued, with a shutdown request,
 * its completion and a 'finish' before the close: with nothing queued,
 * closing is the same on the wire (a FIN) for a third of the work. Sockets
 * of a server (`allowHalfOpen`: Node leaves their end to us) are closed
 * by {@link closeSome}, a bounded number per event-loop turn: thousands of
 * idle peers that leave at once (a slowloris flood hanging up) do not hold
 * the loop for all their closes. TLS sockets end as Node ends them (their
 * close alert goes through `end`).
 */
function onSocketEnd(this: Socket): void {
  (this as unknown as Slots)[TRANSPORT].handlers?.onEnd?.();
  if (this.allowHalfOpen) {
    ending.push(this);
    if (!endingScheduled) {
      endingScheduled = true;
      setImmediate(closeSome);
    }
  } else if (this.writableLength === 0 && (this as Partial<TLSSocket>).encrypted !== true) this.destroy();
}

/** Node's own 'end' listener of every socket (net.js `onReadableStreamEnd`) once found; null: not found. */
let nodeEnd: ((this: Socket) => void) | null | undefined;

/**
 * Listens for 'end' with no listener array per socket: every node:net socket
 * comes with one 'end' listener of Node's own (the same function for all of
 * them), and a second one turns the socket's entry into an array (about 100 B
 * per connection). Ours takes the place of Node's and calls it first (the
 * order of two listeners). A socket whose 'end' listeners are not just that
 * one gets ours beside them.
 */
function listenEnd(s: Socket): void {
  const own = s.listeners("end");
  if (nodeEnd === undefined) {
    const f = own.length === 1 ? own[0] : undefined;
    nodeEnd = f !== undefined && f.name === "onReadableStreamEnd" ? (f as (this: Socket) => void) : null;
  }
  if (nodeEnd !== null && own.length === 1 && own[0] === nodeEnd) {
    s.removeListener("end", nodeEnd);
    s.on("end", onSocketEndAfterNode);
  } else s.on("end", onSocketEnd);
}

function onSocketEndAfterNode(this: Socket): void {
  (nodeEnd as (this: Socket) => void).call(this);
  onSocketEnd.call(this);
}

/** Sockets whose peer ended, closed by {@link closeSome} from `endingHead` on (in order; each once: 'end' is emitted once). */
let ending: Socket[] = [];
let endingHead = 0;
let endingScheduled = false;
/** Most sockets closed per turn, and most time (ms) spent closing them; the rest on the next turns. */
const CLOSE_PER_TURN = 256;
const CLOSE_MS = 2;

/** Closes (or ends, when writes are queued) sockets whose peer ended, within one turn's bound. */
function closeSome(): void {
  endingScheduled = false;
  const t0 = performance.now();
  const q = ending;
  let n = 0;
  while (endingHead < q.length && n < CLOSE_PER_TURN && (n & 15 || performance.now() - t0 < CLOSE_MS)) {
    const s = q[endingHead++];
    n++;
    if (s.destroyed) continue;
    if (s.writableLength === 0 && (s as Partial<TLSSocket>).encrypted !== true) s.destroy();
    else if (!s.writableEnded) s.end();
  }
  if (endingHead === q.length) {
    ending = [];
    endingHead = 0;
  } else {
    // Only sockets still to close stay listed (at most one entry per open socket), even when peers keep leaving faster than this.
    if (endingHead >= 1024) {
      ending = q.slice(endingHead);
      endingHead = 0;
    }
    endingScheduled = true;
    setImmediate(closeSome);
  }
}

function onSocketClose(this: Socket): void {
  const t = (this as unknown as Slots)[TRANSPORT];
  t.reader?.release();
  t.staging?.drop();
  t.handlers?.onClose(t.error);
}

/** Wraps a connected node:net or node:tls socket as a {@link Transport}. */
export class SocketTransport implements Transport {
  readonly localUrl: string;
  readonly remoteUrl: string;
  private readonly socket: Socket;
  /** @internal The reusable-buffer reader, when this socket has one (tests look at it). */
  readonly reader: SocketReader | undefined;
  /** @internal The last socket error (the close reports it). */
  error: Error | undefined;
  /** The callback of an empty write that will report the socket's buffer emptied ({@link idle}). */
  private flushing: (() => void) | undefined = undefined;
  /** @internal What `attach` was given. */
  handlers: TransportHandlers | undefined;
  /** @internal Staging buffers in the write queue (made by the first staged write). */
  staging: Staging | undefined;
  /** Writes made while bytes waited before them, not yet done (made by the first such write; {@link QUEUED_WRITE_COST}). */
  private queued: QueuedWrites | undefined = undefined;

  /**
   * @param reader - set when the socket reads into reusable buffers (Node's
   *   `onread`); its chunks then arrive through it instead of 'data'.
   */
  constructor(socket: Socket, localUrl: string, remoteUrl: string, reader?: SocketReader) {
    this.socket = socket;
    this.localUrl = localUrl;
    this.remoteUrl = remoteUrl;
    this.reader = reader;
    socket.setNoDelay?.(true);
  }

  attach(h: TransportHandlers): void {
    const s = this.socket;
    this.handlers = h;
    this.reader?.attach(h);
    // One set of listener functions for every socket (no closures per
    // connection: an idle socket of a slowloris flood costs less); each finds
    // its transport on the socket. Without a reader (or if the runtime
    // ignored it) bytes come as 'data' events; listening also keeps the
    // socket flowing, so 'end' is emitted.
    (s as unknown as Slots)[TRANSPORT] = this;
    s.on("data", onSocketData);
    s.on("drain", onSocketDrain);
    s.on("error", onSocketError);
    listenEnd(s);
    // 'close' is emitted once.
    s.on("close", onSocketClose);
    if (s.destroyed) queueMicrotask(() => h.onClose(this.error));
    // Its peer ended before we listened: a half-open server socket is ours to close.
    else if (s.readableEnded) onSocketEnd.call(s);
  }

  reattach(h: TransportHandlers): void {
    this.handlers = h;
    this.reader?.attach(h);
  }

  write(chunks: readonly Uint8Array[]): boolean {
    const s = this.socket;
    if (s.destroyed || s.writableEnded) return false;
    // Bytes wait before these: Node keeps these writes in its queue, counted till they are done.
    let q = this.queued;
    if (q?.held !== undefined) {
      // Full by the count: held, in order, for the drain (which idle() made sure of).
      holdChunks(q, chunks);
      return false;
    }
    if (s.writableLength === 0) {
      // Node's queue is empty. Writes it completed whose callbacks are still to come (Node emits
      // 'drain' before it calls them) count no more: their callbacks count down the old count.
      if (q !== undefined && q.n !== 0) this.queued = undefined;
      q = undefined;
    } else if (q === undefined) {
      q = new QueuedWrites();
      this.queued = q;
    }
    if (chunks.length === 1) this.put(s, chunks[0], q);
    else {
      s.cork();
      for (let i = 0; i < chunks.length; i++) this.put(s, chunks[i], q);
      s.uncork();
    }
    const n = this.queued?.n ?? 0;
    if (n === 0) return s.writableLength < WRITE_HIGH_WATER;
    if (s.writableLength + n * QUEUED_WRITE_COST < WRITE_HIGH_WATER) return true;
    // Full by the count of writes: Node emits 'drain' only past its own mark (16 KiB), else the empty
    // write of idle() reports it; nothing left in Node's queue: no drain will come, write on.
    if (this.idle()) return true;
    // Till then, what the writer writes on (control frames) is held, not one more write each.
    (this.queued as QueuedWrites).held = NOTHING;
    return false;
  }

  /** @internal The drain: the bytes held while the count was full go as one write (before anything written after it). */
  writeHeld(): void {
    const q = this.queued;
    const h = q?.held;
    if (q === undefined || h === undefined) return;
    const n = q.heldLength;
    // Node's queue is empty: a new count (the callbacks of the writes done come after the drain).
    this.queued = undefined;
    const s = this.socket;
    if (n !== 0 && !s.destroyed && !s.writableEnded) s.write(h.subarray(0, n));
  }

  /** Writes `c`, through a staging buffer when it is a large message's own memory (see {@link STAGE_MIN}). */
  private put(s: Socket, c: Uint8Array, q: QueuedWrites | undefined): void {
    const n = c.length;
    if (
      n < STAGE_MIN ||
      n > STAGE_MAX ||
      c.buffer.byteLength <= POOL_BYTES ||
      stagedBytes + n > STAGE_BUDGET ||
      (s as Partial<TLSSocket>).encrypted === true
    ) {
      if (q === undefined) s.write(c);
      else {
        q.n++;
        s.write(c, q.done);
      }
      return;
    }
    const b = takeStage(n);
    b.set(c);
    stagedBytes += b.length;
    let st = this.staging;
    if (st === undefined) {
      st = new Staging();
      this.staging = st;
    }
    st.queue.push(b);
    s.write(b.length === n ? b : b.subarray(0, n), st.written);
  }

  /**
   * Nothing written waits in Node's or libuv's buffers (a write the kernel
   * took whole completes at once). When something does and Node will emit no
   * 'drain' for it (it does only after its buffer reached its high-water
   * mark), an empty write's callback reports the drain instead: the writer
   * returns budget charges and reuses memory once the bytes are out.
   */
  idle(): boolean {
    const s = this.socket;
    if (s.writableLength === 0 && this.queued?.held === undefined) return true;
    if (this.flushing === undefined && !s.writableNeedDrain && !s.destroyed && !s.writableEnded) {
      this.flushing = () => this.flushed();
      s.write(NOTHING, this.flushing);
    }
    return false;
  }

  bytesHeld(): number {
    return this.socket.writableLength + (this.queued?.heldLength ?? 0);
  }

  bytesTaken(): number {
    const s = this.socket;
    return s.bytesWritten - s.writableLength;
  }

  /** The empty write {@link idle} queued is done: everything before it went to the kernel. */
  private flushed(): void {
    this.flushing = undefined;
    const s = this.socket;
    if (s.destroyed) return;
    if (s.writableLength === 0) {
      this.writeHeld();
      this.handlers?.onDrain();
    } else this.idle();
  }

  trim(): void {
    this.reader?.trim();
  }

  peerCertificate(): PeerCertificate | undefined {
    return peerCertificateOf(this.socket);
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  end(): void {
    this.writeHeld();
    this.socket.end();
  }

  destroy(error?: Error): void {
    if (error !== undefined) this.error = error;
    this.socket.destroy();
  }
}

/** The certificate the peer of a TLS socket presented, if it asked for one (undefined on plain sockets). */
export function peerCertificateOf(socket: Socket): PeerCertificate | undefined {
  const s = socket as Partial<TLSSocket>;
  if (typeof s.getPeerCertificate !== "function") return undefined;
  const c = s.getPeerCertificate();
  if (c === null || typeof c !== "object" || c.raw === undefined) return undefined;
  const subject: Record<string, string> = {};
  for (const [k, v] of Object.entries(c.subject ?? {})) subject[k] = Array.isArray(v) ? v.join(", ") : String(v);
  return {
    subject,
    fingerprint256: c.fingerprint256,
    raw: new Uint8Array(c.raw.buffer, c.raw.byteOffset, c.raw.length),
    authorized: s.authorized === true,
  };
}

/** `scheme://host:port` with IPv6 hosts in brackets. */
export function hostUrl(scheme: string, host: string | undefined, port: number | undefined): string {
  const h = host === undefined ? "unknown" : host.includes(":") ? `[${host}]` : host;
  // Joined, not concatenated: one flat string kept per connection, not a tree of string pieces.
  return [scheme, "://", h, ":", port ?? 0].join("");
}

/** The host of a URL without IPv6 brackets. */
export function urlHost(url: URL): string {
  const h = url.hostname;
  return h.startsWith("[") && h.endsWith("]") ? h.slice(1, -1) : h;
}

/**
 * A connect's deadline, counted from now whatever arrives meanwhile: `fail`
 * gets ERR_TIMEOUT after `ms` and that turn's I/O (no deadline when it is
 * unset or 0). Clear the returned timer once the connect settled; `fail`
 * must do nothing after that (a due deadline's call may still come).
 */
export function connectDeadline(
  url: URL,
  ms: number | undefined,
  fail: (err: PointSubError) => void,
): ReturnType<typeof setTimeout> | undefined {
  if (ms === undefined || !(ms > 0)) return undefined;
  return setTimeout(
    () =>
      // Due: looked at again after this turn's I/O (setImmediate runs after the poll phase). After a stall of this
      // process the timers run before the connect that completed meanwhile is read: `connect` failed with the
      // connection (and the server's HELLO) in the socket. `fail` does nothing once the connect settled.
      setImmediate(() =>
        fail(new PointSubError("ERR_TIMEOUT", `connect to ${url.href} timed out after ${ms} ms`, { phase: "connect" })),
      ),
    // A longer delay fires at once (~24.8 days at most: a deadline that long never comes).
    Math.min(ms, MAX_TIMER_MS),
  );
}
