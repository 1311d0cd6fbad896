/**
 * The server side of a ws:// (wss://) connection once `ws` completed the
 * HTTP upgrade: pointsub reads and writes the WebSocket frames itself
 * (RFC 6455 §5), on the raw socket. `ws` would read every socket chunk
 * into a fresh 64 KiB buffer and copy each message that spans two reads
 * into one of its own; behind a large upload that external memory drove
 * most of the server's full garbage collections. Here the socket reads
 * into reused buffers ({@link SocketReader}), each frame's payload is
 * unmasked in place and handed to the connection as a view of the read:
 * a transfer of any size leaves no garbage behind.
 *
 * What a client may send is checked as RFC 6455 requires, and every
 * violation closes the connection with its close code and a typed error:
 * an unmasked frame, reserved bits (no extension is negotiated), an
 * unknown opcode, a fragmented or over-125-byte control frame, a
 * continuation without a message or a message inside a fragmented one, a
 * 64-bit length with its top bit set — 1002; a text message — 1003; a
 * message over {@link WS_MAX_MESSAGE} (refused from its header, nothing is
 * buffered) — 1009; a close frame with an invalid code — 1002, an invalid
 * UTF-8 reason — 1007. Nothing here grows with what a peer sends: payloads
 * go straight to the connection, a control frame's payload (≤ 125 bytes)
 * is gathered in a buffer of its own, a header split across reads in
 * another (14 bytes); both are made when first needed (an idle connection
 * holds neither). Pings are answered once per turn, the newest only,
 * and not while the peer leaves unread what was written to it.
 */
import type { Socket } from "node:net";
import { PointSubError } from "../errors/error.ts";
import type { TransportHandlers } from "../transport/transport.ts";
import { WS_MAX_MESSAGE } from "../transport/ws-mapping.ts";
import { readerForAccepted, type SocketReader } from "./socket-reader.ts";

/** Close codes (RFC 6455 §7.4.1). */
export const CLOSE_PROTOCOL_ERROR = 1002;
const CLOSE_UNSUPPORTED_DATA = 1003;
const CLOSE_NO_STATUS = 1005;
const CLOSE_INVALID_DATA = 1007;
const CLOSE_TOO_BIG = 1009;
/** After this side sent its close frame, the peer has this long to answer before the socket is destroyed (as `ws`). */
const CLOSE_TIMEOUT_MS = 30_000;
/** Pings are not answered while this many bytes written wait unsent (the peer does not read). */
const PONG_HIGH_WATER = 64 * 1024;
/** Chunks shorter than this are unmasked a byte at a time (a word view is not worth making). */
const WORDS_MIN = 64;
/**
 * Frames a socket's reads may parse before it yields the event loop for a
 * turn (its reading paused until the next check phase). Control frames and
 * empty data frames never reach the connection, so its read gate never
 * counted them: a client flooding 10-byte pongs had libuv's 32 reads of 64 KiB
 * a turn parsed in one go (up to 60 ms of parsing in one turn). An honest
 * client's frames carry up to 16 KiB each: it yields every 16 MiB or more.
 */
const FRAMES_PER_TURN = 1024;

/** Where the frames go: the transport over this socket. */
export interface WsFrameOwner {
  /** Binary payload bytes, unmasked, a view of the read. Returns true when views of it were kept. */
  onBinary(chunk: Uint8Array): boolean;
  /** A pong's payload (a view valid during the call). */
  onPong(payload: Uint8Array): void;
  /** The peer broke RFC 6455 or the mapping: the socket is being closed with a close code. */
  onProtocolError(err: PointSubError): void;
  /** The socket failed (a reset): reported with the close that follows. */
  onSocketError(err: Error): void;
  /** The socket closed; `code` is the peer's close code (1006: no close frame came). */
  onWsClose(code: number, reason: string): void;
}

/** `readyState` values (as `ws`'s WebSocket). */
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/** The current frame's masking key as bytes and as a word in the platform's byte order, for unmasking (one frame at a time, synchronously). */
const frameKey = new Uint8Array(4);
const keyWord = new Int32Array(1);
const keyBytes = new Uint8Array(keyWord.buffer);
const EMPTY = new Uint8Array(0);
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Close codes a peer may send (RFC 6455 §7.4.1, §7.4.2; 1004–1006 and 1015 never go on the wire). */
function validCloseCode(code: number): boolean {
  return (
    (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999)
  );
}

/** Where a socket keeps its WebSocket, for the shared listeners below. */
const WS = Symbol("pointsub.ws");
interface Slots {
  [WS]: RawServerWs;
}
const wsOf = (socket: Socket): RawServerWs => (socket as unknown as Slots)[WS];

// Listeners shared by every socket (no closures per connection); `this` is the socket.
function onSocketData(this: Socket, chunk: Buffer): void {
  wsOf(this).onData(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
}
function onSocketError(this: Socket, err: Error): void {
  wsOf(this).socketError(err);
}
function onSocketEnd(this: Socket): void {
  wsOf(this).socketEnded();
}
function onSocketClose(this: Socket): void {
  wsOf(this).socketClosed();
}
function destroySocket(socket: Socket): void {
  socket.destroy();
}

/** Sockets that parsed {@link FRAMES_PER_TURN} frames, reading again at the next check phase (one immediate for all). */
let yielded: RawServerWs[] = [];
function resumeYielded(): void {
  const list = yielded;
  yielded = [];
  for (let i = 0; i < list.length; i++) list[i].turnEnded();
}

/** Control frame payload, then the newest ping's, in one buffer made on the first control frame. */
const PING_AT = 125;

/**
 * A server-side WebSocket on a socket whose upgrade is complete: parses the
 * client's frames from reused read buffers and writes unmasked frames. It
 * has the part of `ws`'s WebSocket interface the transport uses.
 */
export class RawServerWs {
  readyState = OPEN;
  /** Where frames go ({@link start}). */
  private owner: WsFrameOwner | undefined;
  /** Bytes read past the upgrade request, parsed once the owner is known; or the rest of a read while paused. */
  private early: Uint8Array | undefined;
  /** The reusable-buffer reader (undefined: the runtime's internals differ, bytes come as 'data'). */
  readonly reader: SocketReader | undefined;
  private readonly socket: Socket;

  // Parser state.
  /** A frame header split across reads, gathered here (at most 14 bytes; made on the first split). */
  private head: Uint8Array | undefined;
  private headLen = 0;
  /** Payload bytes of the current frame not read yet (-1: a header comes next). */
  private remaining = -1;
  private opcode = 0;
  /** The current frame's masking key (its 4 bytes big-endian), and how many of its payload bytes were unmasked so far. */
  private mask = 0;
  private keyPhase = 0;
  /** A fragmented binary message is in progress. */
  private inMessage = false;
  /** Payload bytes of the current message so far (bounded by {@link WS_MAX_MESSAGE}). */
  private messageBytes = 0;
  /** A control frame's payload, gathered (at most 125 bytes at 0), and the newest ping's (at {@link PING_AT}). */
  private control: Uint8Array | undefined;
  private controlLen = 0;
  /** Nothing more is parsed (a close frame came, or a protocol error). */
  private stopped = false;
  /** The word view of the last read buffer unmasked a word at a time. */
  private words: Int32Array | undefined;
  /** Frame headers parsed since the socket last yielded ({@link FRAMES_PER_TURN}). */
  private frames = 0;
  /** Reading paused by the transport (the connection), and until the next turn by the frame count. */
  private paused = false;
  private yielding = false;

  // Ping answers.
  private pingLen = -1;

  // Close.
  private closeSent = false;
  private closeCode = 1006;
  private closeReason = "";
  private closeTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(socket: Socket, head: Uint8Array) {
    this.socket = socket;
    socket.setTimeout(0);
    socket.setNoDelay(true);
    this.early = head.length !== 0 ? head : undefined;
    this.reader = readerForAccepted(socket);
  }

  /**
   * Starts parsing into `owner` (in the same turn as the construction: the
   * socket reads nothing before), the bytes read past the upgrade request first.
   */
  start(owner: WsFrameOwner): void {
    this.owner = owner;
    const early = this.early;
    this.early = undefined;
    if (early !== undefined) this.onData(early);
    const s = this.socket;
    (s as unknown as Slots)[WS] = this;
    this.reader?.attach(this as unknown as TransportHandlers);
    // With a reader, no 'data' comes; listening keeps the socket flowing, so 'end' is emitted.
    s.on("data", onSocketData);
    s.on("end", onSocketEnd);
    s.on("error", onSocketError);
    s.on("close", onSocketClose); // (emitted once: no once-wrapper per socket)
    if (s.destroyed) queueMicrotask(() => this.socketClosed());
  }

  /**
   * The socket failed. Closed here: node:tls only emits an error after the handshake (a client's 4th
   * TLS 1.2 renegotiation, ERR_TLS_SESSION_ATTACK), leaving the socket open (it renegotiated for ever).
   */
  socketError(err: Error): void {
    this.owner?.onSocketError(err);
    if (!this.socket.destroyed) this.socket.destroy();
  }

  get bufferedAmount(): number {
    return this.socket.writableLength;
  }

  pause(): void {
    this.paused = true;
    this.socket.pause();
  }

  resume(): void {
    this.paused = false;
    if (this.early !== undefined && this.owner !== undefined) {
      const rest = this.early;
      this.early = undefined;
      this.onData(rest);
      // Paused again on the way: the rest waits again.
      if (this.paused) return;
    }
    if (!this.yielding) this.socket.resume();
  }

  /** The turn in which this socket yielded is over: it reads again (unless the connection paused it). */
  turnEnded(): void {
    this.yielding = false;
    this.frames = 0;
    if (!this.paused && this.readyState !== CLOSED) this.socket.resume();
  }

  /** Back to the small read buffer (the connection saw no input for a while). */
  trim(): void {
    this.reader?.trim();
    // The word view would pin the last read buffer unmasked with it (64 KiB of a burst) while the connection idles.
    this.words = undefined;
  }

  /** Sends `data` as one binary message; `cb` when the socket wrote it. */
  send(data: Uint8Array, _options?: unknown, cb?: () => void): void {
    if (this.readyState !== OPEN) return;
    this.frame(0x82, data, cb);
  }

  ping(data: Uint8Array): void {
    if (this.readyState === OPEN) this.frame(0x89, data);
  }

  pong(data: Uint8Array): void {
    if (this.readyState === OPEN) this.frame(0x8a, data);
  }

  /** Sends a close frame (once); the socket ends when the peer answered with its own, or after a timeout. */
  close(code: number, reason = ""): void {
    if (this.closeSent || this.readyState === CLOSED) return;
    this.closeSent = true;
    this.readyState = CLOSING;
    const r = Buffer.from(reason.slice(0, 120));
    const payload = Buffer.allocUnsafe(2 + r.length);
    payload.writeUInt16BE(code, 0);
    r.copy(payload, 2);
    this.frame(0x88, payload);
    if (this.stopped) this.socket.end();
    this.armCloseTimer();
  }

  /** The peer has {@link CLOSE_TIMEOUT_MS} to close its side once the close handshake started, then the socket is destroyed. */
  private armCloseTimer(): void {
    if (this.closeTimer !== undefined || this.readyState === CLOSED) return;
    this.closeTimer = setTimeout(destroySocket, CLOSE_TIMEOUT_MS, this.socket);
    this.closeTimer.unref?.();
  }

  terminate(): void {
    // Destroyed by the transport: the rest of a read left while paused goes with it, unparsed, and so does the
    // rest of a read being parsed (a destroy from a message's handler: 145 more messages were handed on).
    this.early = undefined;
    this.stopped = true;
    this.socket.destroy();
  }

  /** Writes one unmasked frame (RFC 6455 §5.2): its header, then the payload, in one writev. */
  private frame(first: number, payload: Uint8Array, cb?: () => void): void {
    const n = payload.length;
    const h = Buffer.allocUnsafe(n < 126 ? 2 : n < 65536 ? 4 : 10);
    h[0] = first;
    if (n < 126) h[1] = n;
    else if (n < 65536) {
      h[1] = 126;
      h.writeUInt16BE(n, 2);
    } else {
      h[1] = 127;
      h.writeUInt32BE(Math.floor(n / 2 ** 32), 2);
      h.writeUInt32BE(n >>> 0, 6);
    }
    const s = this.socket;
    if (s.destroyed || s.writableEnded) return;
    const cork = !s.writableCorked;
    if (cork) s.cork();
    s.write(h);
    if (n !== 0 || cb !== undefined) s.write(payload, cb);
    if (cork) s.uncork();
  }

  /**
   * The peer ended its side without (or after) a close frame: end ours once
   * what is queued left — within the close timeout (a peer that does not
   * read it does not keep the socket).
   */
  socketEnded(): void {
    this.readyState = CLOSING;
    const s = this.socket;
    if (s.writableLength === 0) s.destroy();
    else {
      s.end();
      this.armCloseTimer();
    }
  }

  /** The socket closed. */
  socketClosed(): void {
    if (this.readyState === CLOSED) return;
    // The rest of a read left while paused is parsed now (its messages held for the connection, the peer's close
    // frame read), as it was before reads stopped at a pause: node:tls reports the peer's end while paused, and
    // the bytes a peer sent before its FIN were dropped, the close reported at once, while paused.
    for (let rest = this.early; rest !== undefined && this.owner !== undefined; rest = this.early) {
      this.early = undefined;
      this.paused = false;
      this.onData(rest);
    }
    this.early = undefined;
    this.readyState = CLOSED;
    this.stopped = true;
    if (this.closeTimer !== undefined) clearTimeout(this.closeTimer);
    this.reader?.release();
    this.owner?.onWsClose(this.closeCode, this.closeReason);
  }

  /** For the reader (called as a method of a `TransportHandlers`); unused. */
  onDrain(): void {}
  onClose(): void {}

  /**
   * Bytes read: parses the frames in them, unmasks payloads in place and
   * hands data payloads to the owner. Returns true when views of `chunk`
   * were kept (the reader then reads the next bytes elsewhere).
   */
  onData(chunk: Uint8Array): boolean {
    const rest = this.early;
    if (rest !== undefined) {
      // Paused with the rest of a read waiting, and more came (node:tls hands over what it had decrypted, paused or
      // not): behind it, copied.
      const joined = new Uint8Array(rest.length + chunk.length);
      joined.set(rest);
      joined.set(chunk, rest.length);
      this.early = joined;
      return false;
    }
    let kept = false;
    const n = chunk.length;
    let p = 0;
    while (p < n && !this.stopped) {
      if (this.paused) {
        // The connection does not read: the rest of the read waits as the bytes it is, parsed on resume (a view
        // kept: the reader reads on elsewhere). Before, it was parsed to its end and every payload held as a view
        // of its own: a 64 KiB read of 1-byte messages, ~9,300 views (`attack/ws-paused-parse.test.ts`).
        this.early = chunk.subarray(p);
        return true;
      }
      if (this.remaining < 0) {
        p = this.readHeader(chunk, p);
        if (this.remaining === 0) this.frameDone();
        continue;
      }
      const take = Math.min(this.remaining, n - p);
      if (take !== 0) {
        this.unmask(chunk, p, take);
        if (this.opcode === 0 || this.opcode === 2) {
          const owner = this.owner;
          if (owner?.onBinary(chunk.subarray(p, p + take))) kept = true;
        } else {
          this.control ??= new Uint8Array(2 * PING_AT);
          this.control.set(chunk.subarray(p, p + take), this.controlLen);
          this.controlLen += take;
        }
        p += take;
        this.remaining -= take;
      }
      if (this.remaining === 0) this.frameDone();
    }
    return kept;
  }

  /** Parses a frame header from `chunk` at `p` (gathering it across reads); returns where it stopped. */
  private readHeader(chunk: Uint8Array, p: number): number {
    let h: Uint8Array;
    let at: number;
    /** Where the payload starts in `chunk`. */
    let next: number;
    const n = chunk.length;
    if (this.headLen === 0 && n - p >= 2 && n - p >= headerLength(chunk[p + 1])) {
      h = chunk;
      at = p;
      next = p + headerLength(chunk[p + 1]);
    } else {
      // Split across reads: gather the header's bytes first.
      this.head ??= new Uint8Array(14);
      const hb = this.head;
      while (p < n && (this.headLen < 2 || this.headLen < headerLength(hb[1]))) hb[this.headLen++] = chunk[p++];
      if (this.headLen < 2 || this.headLen < headerLength(hb[1])) return p;
      h = hb;
      at = 0;
      next = p;
    }
    const b0 = h[at];
    const b1 = h[at + 1];
    this.headLen = 0;
    if (++this.frames === FRAMES_PER_TURN && !this.yielding) {
      // The rest of this read is parsed; the socket reads no more this turn.
      this.yielding = true;
      this.socket.pause();
      if (yielded.length === 0) setImmediate(resumeYielded);
      yielded.push(this);
    }
    const opcode = b0 & 0x0f;
    const fin = (b0 & 0x80) !== 0;
    if ((b0 & 0x70) !== 0) return this.fail(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)");
    if ((b1 & 0x80) === 0) return this.fail(CLOSE_PROTOCOL_ERROR, "an unmasked frame from a client");
    let len = b1 & 0x7f;
    let q = at + 2;
    if (len === 126) {
      len = (h[q] << 8) | h[q + 1];
      q += 2;
    } else if (len === 127) {
      const hi = ((h[q] << 24) | (h[q + 1] << 16) | (h[q + 2] << 8) | h[q + 3]) >>> 0;
      const lo = ((h[q + 4] << 24) | (h[q + 5] << 16) | (h[q + 6] << 8) | h[q + 7]) >>> 0;
      if (hi >= 0x80000000) return this.fail(CLOSE_PROTOCOL_ERROR, "a 64-bit payload length with its top bit set");
      len = hi * 2 ** 32 + lo;
      q += 8;
    }
    if (opcode >= 8) {
      if (opcode > 10) return this.fail(CLOSE_PROTOCOL_ERROR, `unknown opcode ${opcode}`);
      if (!fin) return this.fail(CLOSE_PROTOCOL_ERROR, "a fragmented control frame");
      if (len > 125) return this.fail(CLOSE_PROTOCOL_ERROR, "a control frame over 125 bytes");
      this.controlLen = 0;
    } else if (opcode === 0) {
      if (!this.inMessage) return this.fail(CLOSE_PROTOCOL_ERROR, "a continuation frame without a message");
    } else if (this.inMessage) {
      return this.fail(CLOSE_PROTOCOL_ERROR, "a new message inside a fragmented one");
    } else if (opcode === 1) {
      return this.fail(CLOSE_UNSUPPORTED_DATA, "pointsub takes binary WebSocket messages, not a text message");
    } else if (opcode !== 2) return this.fail(CLOSE_PROTOCOL_ERROR, `unknown opcode ${opcode}`);
    else this.messageBytes = 0;
    if (opcode < 8) {
      this.messageBytes += len;
      if (this.messageBytes > WS_MAX_MESSAGE) {
        return this.fail(CLOSE_TOO_BIG, `WebSocket message over ${WS_MAX_MESSAGE} bytes`);
      }
      this.inMessage = !fin;
    }
    this.mask = (h[q] << 24) | (h[q + 1] << 16) | (h[q + 2] << 8) | h[q + 3];
    this.keyPhase = 0;
    this.opcode = opcode;
    this.remaining = len;
    return next;
  }

  /** Unmasks `len` bytes of `b` from `start` in place (RFC 6455 §5.3), continuing the current frame's key. */
  private unmask(b: Uint8Array, start: number, len: number): void {
    const m = this.mask;
    const key = frameKey;
    key[0] = m >>> 24;
    key[1] = m >>> 16;
    key[2] = m >>> 8;
    key[3] = m;
    const phase = this.keyPhase;
    this.keyPhase = (phase + len) & 3;
    let i = 0;
    if (len >= WORDS_MIN) {
      // Bytes up to a 4-aligned address, then words, then the tail.
      const abs = b.byteOffset + start;
      for (; ((abs + i) & 3) !== 0; i++) b[start + i] ^= key[(phase + i) & 3];
      let words = this.words;
      if (words === undefined || words.buffer !== b.buffer) {
        words = new Int32Array(b.buffer, 0, b.buffer.byteLength >>> 2);
        this.words = words;
      }
      keyBytes[0] = key[(phase + i) & 3];
      keyBytes[1] = key[(phase + i + 1) & 3];
      keyBytes[2] = key[(phase + i + 2) & 3];
      keyBytes[3] = key[(phase + i + 3) & 3];
      const k = keyWord[0];
      const w0 = (abs + i) >>> 2;
      const wEnd = w0 + ((len - i) >>> 2);
      for (let w = w0; w < wEnd; w++) words[w] ^= k;
      i += (wEnd - w0) << 2;
    }
    for (; i < len; i++) b[start + i] ^= key[(phase + i) & 3];
  }

  /** The current frame's payload is all read. */
  private frameDone(): void {
    this.remaining = -1;
    const op = this.opcode;
    if (op < 8) return;
    const data = this.controlLen === 0 ? EMPTY : (this.control as Uint8Array).subarray(0, this.controlLen);
    if (op === 9) this.onPing(data);
    else if (op === 10) this.owner?.onPong(data);
    else this.onCloseFrame(data);
  }

  /**
   * A ping: answered once per turn (after everything read with it was
   * processed), for the newest ping only — RFC 6455 §5.5.3 allows it. A
   * peer that floods pings gets one pong per read, and none while it does
   * not read what was written to it.
   */
  private onPing(data: Uint8Array): void {
    if (this.pingLen < 0) queueMicrotask(() => this.answerPing());
    if (data.length !== 0) {
      this.control ??= new Uint8Array(2 * PING_AT);
      this.control.set(data, PING_AT);
    }
    this.pingLen = data.length;
  }

  private answerPing(): void {
    const n = this.pingLen;
    this.pingLen = -1;
    if (this.readyState === OPEN && this.socket.writableLength < PONG_HIGH_WATER) {
      this.frame(0x8a, n === 0 ? EMPTY : Buffer.from((this.control as Uint8Array).subarray(PING_AT, PING_AT + n)));
    }
  }

  /** The peer's close frame: answered with the same code, then the socket ends. */
  private onCloseFrame(data: Uint8Array): void {
    let code = CLOSE_NO_STATUS;
    let reason = "";
    if (data.length === 1) {
      this.fail(CLOSE_PROTOCOL_ERROR, "a close frame of 1 byte");
      return;
    }
    if (data.length >= 2) {
      code = (data[0] << 8) | data[1];
      if (!validCloseCode(code)) {
        this.fail(CLOSE_PROTOCOL_ERROR, `invalid close code ${code}`);
        return;
      }
      try {
        reason = utf8.decode(data.subarray(2));
      } catch {
        this.fail(CLOSE_INVALID_DATA, "a close reason that is not UTF-8");
        return;
      }
    }
    this.stopped = true;
    this.closeCode = code;
    this.closeReason = reason;
    if (!this.closeSent) {
      this.closeSent = true;
      this.readyState = CLOSING;
      const echo = Buffer.allocUnsafe(code === CLOSE_NO_STATUS ? 0 : 2);
      if (code !== CLOSE_NO_STATUS) echo.writeUInt16BE(code, 0);
      this.frame(0x88, echo);
    }
    this.socket.end();
    // A peer that keeps its TCP side open (and leaves the socket half-open) does not keep it forever.
    this.armCloseTimer();
  }

  /** A protocol error: the owner hears of it, a close frame with `code` goes out, the socket ends. Returns a position past any input. */
  private fail(code: number, message: string): number {
    if (!this.stopped) {
      this.stopped = true;
      const text =
        code === CLOSE_PROTOCOL_ERROR || code === CLOSE_INVALID_DATA ? `WebSocket protocol error: ${message}` : message;
      const err = new PointSubError("ERR_PROTOCOL", text);
      this.owner?.onProtocolError(err);
      if (!this.closeSent) this.close(code, message);
      this.socket.end();
    }
    return Number.MAX_SAFE_INTEGER;
  }
}

/** Bytes of a client frame's header, from its second byte (masking key included). */
function headerLength(b1: number): number {
  const len = b1 & 0x7f;
  return (len < 126 ? 2 : len === 126 ? 4 : 10) + ((b1 & 0x80) !== 0 ? 4 : 0);
}
