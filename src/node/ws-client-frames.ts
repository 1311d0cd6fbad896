/**
 * A WebSocket client's binary messages, framed and masked (RFC 6455 §5.2,
 * §5.3) into reusable memory and written straight to the socket under the
 * `ws` WebSocket. `ws` itself masks every message a client sends into a
 * new buffer of its size: behind a large upload that is one fresh
 * ArrayBuffer per message, and that external memory drove most of the
 * client's full garbage collections. Here each message is copied (masked)
 * into a slab that is reused once the socket wrote everything in it.
 *
 * Only data messages take this path; `ws` keeps sending pings, pongs and
 * the close frame. Both write to the socket synchronously (`ws` sends
 * through no queue when permessage-deflate is off), so frames stay in
 * order and whole.
 */
import type { Socket } from "node:net";

/**
 * Largest message payload framed here (a write is cut into messages of at
 * most this). Smaller than a socket read (64 KiB): a server on `ws` copies
 * a message that spans two reads into a buffer of its own, so most of
 * these arrive as views of the read, not copies (256 KiB messages: server
 * CPU per 64 MiB ~15 % higher; 8 KiB: no better than 16). A pointsub
 * server parses frames itself (ws-server-socket.ts) and does not care:
 * 60 KiB messages measured no different from 16 KiB against it.
 */
export const MASKED_MESSAGE_MAX = 16 * 1024;
/** Bytes of one slab: 16 messages of the largest size, with their headers. */
const SLAB_BYTES = 16 * (MASKED_MESSAGE_MAX + 16);
/**
 * Bytes of a writer's first slab (again after {@link MaskedFrameWriter.trim}):
 * a client that sends a few small messages (its handshake, a request now and
 * then) holds this, not a whole slab (3,000 idle clients held 585 MB); the
 * next slab it needs is a whole one. Small slabs are not kept for reuse.
 */
const SMALL_SLAB_BYTES = 4096;
/**
 * Free slabs kept per writer for reuse (with the current one: at most
 * 1.25 MiB held by a client that sent bulk, until {@link MaskedFrameWriter.trim}).
 * Writes complete on the turn after they were made, so a turn's writes (up
 * to the 512 KiB in flight and more) hold several slabs at once: with 2
 * kept, half of a long upload's slabs were new (127 MiB of ArrayBuffers per
 * 256 MiB, 8–10 full GCs); with 4, 7 %, and no full GC.
 */
const FREE_MAX = 4;
/** Masking keys drawn from the system's random source in batches of this many bytes. */
const KEY_POOL_BYTES = 8 * 1024;

interface Slab {
  bytes: Uint8Array;
  /** The same memory as 32-bit words (the platform's byte order), for masking. */
  words: Int32Array;
  /** Where the next frame goes. */
  pos: number;
  /** Writes of this slab the socket has not finished. */
  pending: number;
  /** No more frames go into it: reused once `pending` is 0. */
  retired: boolean;
}

/** Masking keys: random bytes drawn in batches, 4 per frame (as `ws` draws them). */
let keyPool: Uint8Array | undefined;
let keyPos = KEY_POOL_BYTES;
/** One key as bytes and as a word in the platform's byte order (a view of `keyWord`). */
const keyWord = new Int32Array(1);
const keyBytes = new Uint8Array(keyWord.buffer);

/** Frames, masks and writes a client's binary messages; see the file comment. */
export class MaskedFrameWriter {
  /** Slabs allocated so far (a long upload reuses a few). */
  slabs = 0;
  /** A small slab was taken since the last trim: the next new one is whole. */
  private tookSmall = false;
  declare private readonly socket: Socket;
  declare private readonly randomFill: (b: Uint8Array) => unknown;
  private slab: Slab | undefined;
  private free: Slab[] = [];
  /** The slab of each write not finished yet, in write order (the socket finishes writes in order). */
  private inFlight: Slab[] = [];
  /** Called after each finished write (the transport's drain check). */
  declare private readonly onWritten: (err?: Error | null) => void;

  constructor(socket: Socket, randomFill: (b: Uint8Array) => unknown, onWritten: (err?: Error | null) => void) {
    this.socket = socket;
    this.randomFill = randomFill;
    this.onWritten = onWritten;
  }

  /** Frames `data` as masked binary messages of at most {@link MASKED_MESSAGE_MAX} bytes and writes them. */
  send(data: Uint8Array): void {
    const n = data.length;
    if (n <= MASKED_MESSAGE_MAX) this.sendOne(data);
    else
      for (let off = 0; off < n; off += MASKED_MESSAGE_MAX) this.sendOne(data.subarray(off, off + MASKED_MESSAGE_MAX));
  }

  /** One message of at most {@link MASKED_MESSAGE_MAX} bytes. */
  private sendOne(payload: Uint8Array): void {
    const len = payload.length;
    const head = len < 126 ? 6 : 8;
    let slab = this.slab;
    // The payload starts 4-aligned, so it is masked a word at a time.
    let at = slab === undefined ? 0 : ((slab.pos + head + 3) & ~3) - head;
    if (slab === undefined || at + head + len > slab.bytes.length) {
      if (slab !== undefined) this.retire(slab);
      slab = this.take(head + 3 + len);
      at = ((head + 3) & ~3) - head;
    }
    const b = slab.bytes;
    b[at] = 0x82; // FIN, binary
    let p = at + 2;
    if (len < 126) b[at + 1] = 0x80 | len;
    else {
      // 16-bit length (MASKED_MESSAGE_MAX < 64 KiB: the 64-bit form is never needed).
      b[at + 1] = 0x80 | 126;
      b[p++] = len >>> 8;
      b[p++] = len & 0xff;
    }
    this.nextKey();
    b[p++] = keyBytes[0];
    b[p++] = keyBytes[1];
    b[p++] = keyBytes[2];
    b[p++] = keyBytes[3];
    b.set(payload, p);
    const words = slab.words;
    const key = keyWord[0];
    const w0 = p >>> 2;
    const wEnd = w0 + (len >>> 2);
    for (let i = w0; i < wEnd; i++) words[i] ^= key;
    for (let i = len & ~3; i < len; i++) b[p + i] ^= keyBytes[i & 3];
    slab.pos = p + len;
    slab.pending++;
    this.inFlight.push(slab);
    this.socket.write(b.subarray(at, p + len), this.written);
  }

  /** A write finished (or failed: the socket is gone, and so is what it held). */
  private readonly written = (err?: Error | null): void => {
    const slab = this.inFlight.shift();
    if (slab !== undefined && --slab.pending === 0 && slab.retired && this.reusable(slab)) {
      slab.retired = false;
      slab.pos = 0;
      this.free.push(slab);
    }
    this.onWritten(err);
  };

  /** Drops the free slabs (the connection went quiet); the next message takes a new one. */
  trim(): void {
    this.free = [];
    this.tookSmall = false;
  }

  /** A slab no write uses any more is kept for reuse: a whole one, while fewer than {@link FREE_MAX} are. */
  private reusable(slab: Slab): boolean {
    return slab.bytes.length === SLAB_BYTES && this.free.length < FREE_MAX;
  }

  private retire(slab: Slab): void {
    this.slab = undefined;
    if (slab.pending === 0) {
      slab.pos = 0;
      if (this.reusable(slab)) this.free.push(slab);
    } else slab.retired = true;
  }

  /** A slab with room for `need` bytes from its start. */
  private take(need: number): Slab {
    let slab = this.free.pop();
    if (slab === undefined) {
      this.slabs++;
      const small = !this.tookSmall && need <= SMALL_SLAB_BYTES;
      if (small) this.tookSmall = true;
      const buffer = new ArrayBuffer(small ? SMALL_SLAB_BYTES : SLAB_BYTES);
      slab = { bytes: new Uint8Array(buffer), words: new Int32Array(buffer), pos: 0, pending: 0, retired: false };
    }
    this.slab = slab;
    return slab;
  }

  private nextKey(): void {
    if (keyPool === undefined || keyPos === KEY_POOL_BYTES) {
      keyPool ??= new Uint8Array(KEY_POOL_BYTES);
      this.randomFill(keyPool);
      keyPos = 0;
    }
    keyBytes[0] = keyPool[keyPos++];
    keyBytes[1] = keyPool[keyPos++];
    keyBytes[2] = keyPool[keyPos++];
    keyBytes[3] = keyPool[keyPos++];
  }
}
