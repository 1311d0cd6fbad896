/**
 * The reference: plain node:net with a 4-byte big-endian length prefix,
 * written well: corked writes (cork on the first write of a tick, uncork on
 * process.nextTick), an incremental parser that hands out views when a message
 * is whole in a chunk and preallocates the receive buffer of a large message.
 *
 * With `--slab` it instead copies small frames into a 64 KiB slab written
 * once per turn: hand-rolled coalescing, the upper bound of what JS framing
 * over node:net reaches (reported as `reference-slab`).
 *
 * Frame: u32 BE length (of what follows) | u8 kind | payload.
 * Kinds: 0 one-way, 1 request (echoed as 2), 2 response, 3 count query
 * (answered as 2 with the u32 count), 4 sink request (answered as 2, empty).
 */
import net from "node:net";
import { Parser } from "../lib/length-prefix.ts";
import { clientArgs, serveRole } from "../lib/role.ts";
import { runWorkload } from "../lib/workload.ts";

/** What both writers offer. */
interface FrameWriter {
  writable: boolean;
  send(kind: number, payload: Uint8Array): boolean;
  drained(): Promise<void>;
}

/** Corked writer: header and payload written per message into a corked socket, uncorked next tick. */
class CorkedWriter implements FrameWriter {
  writable = true;
  private corked = false;
  private readonly socket: net.Socket;
  private readonly uncork = () => {
    this.corked = false;
    this.socket.uncork();
  };
  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("drain", () => {
      this.writable = true;
    });
  }
  send(kind: number, payload: Uint8Array): boolean {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    const head = Buffer.allocUnsafe(5);
    head.writeUInt32BE(payload.length + 1, 0);
    head[4] = kind;
    this.socket.write(head);
    this.writable = this.socket.write(payload);
    return this.writable;
  }
  drained(): Promise<void> {
    return this.writable ? Promise.resolve() : new Promise((r) => this.socket.once("drain", () => r()));
  }
}

/** Batching writer: small frames are copied into a slab flushed once per turn. */
class Writer implements FrameWriter {
  private slab = Buffer.allocUnsafe(64 * 1024);
  private start = 0;
  private pos = 0;
  private scheduled = false;
  writable = true;
  private readonly socket: net.Socket;
  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("drain", () => {
      this.writable = true;
    });
  }
  send(kind: number, payload: Uint8Array): boolean {
    const len = payload.length + 1;
    if (payload.length > 16 * 1024) {
      this.flush();
      const head = Buffer.allocUnsafe(5);
      head.writeUInt32BE(len, 0);
      head[4] = kind;
      this.socket.cork();
      this.socket.write(head);
      this.writable = this.socket.write(payload);
      this.socket.uncork();
      return this.writable;
    }
    if (this.slab.length - this.pos < len + 4) {
      this.flush();
      this.slab = Buffer.allocUnsafe(64 * 1024);
      this.start = this.pos = 0;
    }
    this.slab.writeUInt32BE(len, this.pos);
    this.slab[this.pos + 4] = kind;
    this.slab.set(payload, this.pos + 5);
    this.pos += len + 4;
    if (this.pos - this.start >= 32 * 1024) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flush();
      });
    }
    return this.writable;
  }
  flush(): void {
    if (this.pos === this.start) return;
    this.writable = this.socket.write(this.slab.subarray(this.start, this.pos));
    this.start = this.pos;
  }
  drained(): Promise<void> {
    return this.writable ? Promise.resolve() : new Promise((r) => this.socket.once("drain", () => r()));
  }
}

const EMPTY = Buffer.alloc(0);
const slab = process.argv.includes("--slab");
const makeWriter = (socket: net.Socket): FrameWriter => (slab ? new Writer(socket) : new CorkedWriter(socket));

async function server(): Promise<void> {
  await serveRole(async () => {
    const srv = net.createServer({ noDelay: true }, (socket) => {
      let count = 0;
      const w = makeWriter(socket);
      const p = new Parser((kind, payload) => {
        if (kind === 0) count++;
        else if (kind === 1) w.send(2, payload);
        else if (kind === 4) w.send(2, EMPTY);
        else if (kind === 3) {
          const b = Buffer.allocUnsafe(4);
          b.writeUInt32BE(count, 0);
          w.send(2, b);
        }
      });
      socket.on("data", (c: Buffer) => p.push(c));
      socket.on("error", () => {});
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as net.AddressInfo).port;
    return { url: `tcp://127.0.0.1:${port}` };
  });
}

async function client(): Promise<void> {
  const { url, workload, params } = clientArgs();
  const u = new URL(url);
  const socket = net.connect({ host: u.hostname, port: Number(u.port), noDelay: true });
  await new Promise<void>((r) => socket.once("connect", () => r()));
  const w = makeWriter(socket);
  // Responses come back in order: a FIFO of resolvers.
  let waiting: ((b: Buffer) => void)[] = [];
  let head = 0;
  const p = new Parser((_kind, payload) => {
    const r = waiting[head++];
    if (head === waiting.length) {
      waiting = [];
      head = 0;
    }
    r(payload);
  });
  socket.on("data", (c: Buffer) => p.push(c));
  const call = (kind: number, payload: Uint8Array) =>
    new Promise<Buffer>((resolve) => {
      waiting.push(resolve);
      w.send(kind, payload);
    });
  await runWorkload(
    {
      send: (msg) => w.send(0, msg),
      drained: () => w.drained(),
      count: async () => (await call(3, EMPTY)).readUInt32BE(0),
      echo: (msg) => call(1, msg),
      sink: (big) => call(4, big),
      close: () => {
        socket.destroy();
      },
      open: () =>
        new Promise((resolve, reject) => {
          const s = net.connect({ host: u.hostname, port: Number(u.port), noDelay: true });
          // conns-req: one request on this connection (an echo, answered whole before the next is sent).
          const echo = (msg: Uint8Array) =>
            new Promise<void>((done) => {
              const ew = makeWriter(s);
              const ep = new Parser(() => {
                s.removeListener("data", onData);
                done();
              });
              const onData = (c: Buffer) => ep.push(c);
              s.on("data", onData);
              ew.send(1, msg);
            });
          s.once("connect", () => resolve({ close: () => s.destroy(), echo })).once("error", reject);
        }),
    },
    workload,
    params,
  );
}

if (process.argv[2] === "server") await server();
else await client();
