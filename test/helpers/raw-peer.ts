import net from "node:net";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType, MAGIC } from "../../src/codec/frame.ts";
import { DEFAULT_SETTINGS, encodeSettings, type Settings } from "../../src/codec/settings.ts";
import { writeVarint } from "../../src/codec/varint.ts";

const MiB = 1024 * 1024;

/** The bytes a well-behaved peer sends first: preface and HELLO. */
export function handshake(settings: Partial<Settings> = {}, version: [number, number] = [1, 1]): Uint8Array {
  return Buffer.concat([
    Uint8Array.from([...MAGIC, version[0], version[1]]),
    encodeFrame(FrameType.HELLO, 0, 0, encodeSettings({ ...DEFAULT_SETTINGS, ...settings })),
  ]);
}

/** A hand-driven TCP peer for fault tests: it writes exactly the bytes a test gives it. */
export interface RawPeer {
  socket: net.Socket;
  /** Everything received so far. */
  received(): Buffer;
  /** Resolves once at least `n` bytes arrived. */
  waitFor(n: number): Promise<void>;
  closed: Promise<void>;
}

function wrapSocket(socket: net.Socket): RawPeer {
  const chunks: Buffer[] = [];
  let total = 0;
  let waiters: { n: number; resolve: () => void }[] = [];
  socket.on("data", (c: Buffer) => {
    chunks.push(c);
    total += c.length;
    waiters = waiters.filter((w) => {
      if (total >= w.n) w.resolve();
      return total < w.n;
    });
  });
  socket.on("error", () => {});
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  return {
    socket,
    received: () => Buffer.concat(chunks),
    waitFor: (n) => (total >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }))),
    closed,
  };
}

/** A raw TCP server; resolves its URL and a promise of the first accepted peer. */
export async function rawServer(): Promise<{ url: string; peer: Promise<RawPeer>; close(): Promise<void> }> {
  let accept!: (p: RawPeer) => void;
  const peer = new Promise<RawPeer>((resolve) => {
    accept = resolve;
  });
  const server = net.createServer((s) => accept(wrapSocket(s)));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `tcp://127.0.0.1:${port}`,
    peer,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** A raw TCP client connected to `url`. */
export async function rawClient(url: string): Promise<RawPeer> {
  const u = new URL(url);
  const socket = net.connect({ host: u.hostname, port: Number(u.port) });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return wrapSocket(socket);
}

/** The frames of a chunked REQ to /echo/1.0.0 with `size` bytes of `fill`, in 1 MiB frames. */
export function echoRequest(id: number, size: number, fill: number): Uint8Array[] {
  const route = Buffer.from("/echo/1.0.0");
  const frames: Uint8Array[] = [];
  const chunk = MiB - 64;
  const totalPrefix = new Uint8Array(9);
  const n = writeVarint(totalPrefix, 0, size);
  let off = 0;
  while (off < size) {
    const first = off === 0;
    const data = new Uint8Array(Math.min(chunk, size - off)).fill(fill);
    const payload = first
      ? Buffer.concat([totalPrefix.subarray(0, n), Buffer.from([route.length]), route, data])
      : data;
    off += data.length;
    const flags = (first ? Flag.START : 0) | (off === size ? Flag.END : 0);
    frames.push(encodeFrame(FrameType.REQ, flags, id, payload));
  }
  return frames;
}
