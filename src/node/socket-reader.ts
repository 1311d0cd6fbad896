import type { Socket } from "node:net";

/** Bytes per read buffer: what libuv asks for by default. */
const READ_SIZE = 64 * 1024;
/**
 * Reads shorter than this are copied into a buffer of their own size, so a
 * small message kept by the application never pins a whole read buffer.
 */
const COPY_BELOW = 16 * 1024;

/**
 * Reads a node:net socket into reusable buffers (Node's `onread` option)
 * instead of a fresh 64 KiB allocation per read. After each read the
 * connection says whether it kept views of the chunk: if not (a large
 * message is copied into its assembly buffer as it arrives), the next read
 * lands in the same memory, so a multi-gigabyte transfer leaves no garbage
 * behind; if it did, the next read gets a new buffer.
 */
export class SocketReader {
  /** Read buffers allocated so far (1 while nothing was kept). */
  buffers = 1;
  private buf: Uint8Array = newBuffer();
  private sink: ((chunk: Uint8Array) => boolean) | undefined;
  /** Chunks read before {@link attach} (copies). */
  private early: Uint8Array[] = [];

  /** The value for `net.connect({ onread })` / `new net.Socket({ onread })`. */
  readonly onread = {
    buffer: (): Uint8Array => this.buf,
    /** Returns true: keep reading (pausing goes through `socket.pause()`). */
    callback: (n: number): boolean => {
      this.onRead(n);
      return true;
    },
  };

  /** Starts delivering to `sink` (chunks read before this are delivered first). */
  attach(sink: (chunk: Uint8Array) => boolean): void {
    this.sink = sink;
    const early = this.early;
    this.early = [];
    for (const c of early) sink(c);
  }

  private onRead(n: number): void {
    const sink = this.sink;
    if (n < COPY_BELOW || sink === undefined) {
      const copy = this.buf.slice(0, n);
      if (sink === undefined) this.early.push(copy);
      else sink(copy);
      return;
    }
    if (sink(new Uint8Array(this.buf.buffer, this.buf.byteOffset, n))) {
      this.buf = newBuffer();
      this.buffers++;
    }
  }
}

function newBuffer(): Uint8Array {
  const b = Buffer.allocUnsafeSlow(READ_SIZE);
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
}

/** Node's private per-socket slots behind the `onread` option, found by name. */
interface OnreadSlots {
  kBuffer: symbol;
  kBufferCb: symbol;
  kBufferGen: symbol;
}
let slots: OnreadSlots | null | undefined;

function onreadSlots(socket: Socket): OnreadSlots | null {
  if (slots !== undefined) return slots;
  const find = (name: string) => Object.getOwnPropertySymbols(socket).find((s) => s.description === name);
  const kBuffer = find("kBuffer");
  const kBufferCb = find("kBufferCb");
  const kBufferGen = find("kBufferGen");
  slots = kBuffer && kBufferCb && kBufferGen ? { kBuffer, kBufferCb, kBufferGen } : null;
  return slots;
}

/**
 * Switches an accepted socket (node:net and node:tls hand servers sockets
 * they created themselves, and offer `onread` only to sockets you create) to
 * read into a {@link SocketReader}: it sets the same private slots the
 * `onread` option sets and points the handle at the first buffer. Call it in
 * the 'connection' (or 'secureConnection') listener; bytes read before that
 * still come as 'data' events, ahead of the reader's. Returns undefined
 * (the socket keeps emitting 'data') when this runtime's internals differ.
 */
export function readerForAccepted(socket: Socket): SocketReader | undefined {
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (b: Uint8Array) => void } })._handle;
  const s = onreadSlots(socket);
  if (s === null || typeof handle?.useUserBuffer !== "function") return undefined;
  const slotsOf = socket as unknown as Record<symbol, unknown>;
  if (slotsOf[s.kBuffer] !== null || slotsOf[s.kBufferCb] !== null) return undefined;
  const reader = new SocketReader();
  const first = reader.onread.buffer();
  slotsOf[s.kBuffer] = first;
  slotsOf[s.kBufferCb] = reader.onread.callback;
  slotsOf[s.kBufferGen] = reader.onread.buffer;
  handle.useUserBuffer(first);
  return reader;
}
