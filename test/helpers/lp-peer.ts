/**
 * Plain length-prefix peers for the lp tests: a node:net server and client
 * written without pointsub (a u32 big-endian length, then the message), and
 * a Python standard-library peer run as a child process.
 */
import { type ChildProcess, spawn } from "node:child_process";
import net from "node:net";
import { createInterface } from "node:readline";

/** A length and the message, as the wire has them. */
export function lpFrame(data: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(4 + data.length);
  b.writeUInt32BE(data.length, 0);
  b.set(data, 4);
  return b;
}

/** Parses length-prefixed messages out of a byte stream (chunks are joined once a message is whole). */
export function lpParser(onMessage: (m: Buffer) => void): (chunk: Buffer) => void {
  let parts: Buffer[] = [];
  let total = 0;
  /** Length of the message at the front, once its 4 bytes arrived (-1 before). */
  let want = -1;
  return (chunk) => {
    parts.push(chunk);
    total += chunk.length;
    for (;;) {
      if (want < 0 && total >= 4) {
        if (parts[0].length < 4) parts = [Buffer.concat(parts)];
        want = parts[0].readUInt32BE(0);
      }
      if (want < 0 || total < 4 + want) return;
      const all = parts.length === 1 ? parts[0] : Buffer.concat(parts);
      onMessage(Buffer.from(all.subarray(4, 4 + want)));
      const rest = all.subarray(4 + want);
      parts = rest.length === 0 ? [] : [rest];
      total = rest.length;
      want = -1;
    }
  };
}

/** A node:net socket that speaks length-prefixed messages: what it received, and a way to send. */
export interface PlainPeer {
  socket: net.Socket;
  received: Buffer[];
  /** All bytes received, unparsed. */
  raw: Buffer[];
  send(data: Uint8Array): void;
  /** Resolves once `n` messages arrived. */
  waitFor(n: number, ms?: number): Promise<Buffer[]>;
}

function plainPeer(socket: net.Socket): PlainPeer {
  const received: Buffer[] = [];
  const raw: Buffer[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const parse = lpParser((m) => {
    received.push(m);
    for (const w of waiters.splice(0)) {
      if (received.length >= w.n) w.resolve();
      else waiters.push(w);
    }
  });
  socket.on("data", (c: Buffer) => {
    raw.push(c);
    parse(c);
  });
  socket.on("error", () => {});
  return {
    socket,
    received,
    raw,
    send: (data) => socket.write(lpFrame(data)),
    waitFor: (n, ms = 5000) =>
      new Promise((resolve, reject) => {
        if (received.length >= n) return resolve(received);
        const t = setTimeout(() => reject(new Error(`got ${received.length} of ${n} messages`)), ms);
        waiters.push({
          n,
          resolve: () => {
            clearTimeout(t);
            resolve(received);
          },
        });
      }),
  };
}

/** A plain node:net server; `peers` fills as clients connect. `echo` sends every message back. */
export async function plainServer(
  echo: boolean,
  listen: { path: string } | { host: string; port: number } = { host: "127.0.0.1", port: 0 },
): Promise<{ url: string; peers: PlainPeer[]; close(): Promise<void> }> {
  const peers: PlainPeer[] = [];
  const server = net.createServer((socket) => {
    const p = plainPeer(socket);
    peers.push(p);
    if (echo) {
      let done = 0;
      socket.on("data", () => {
        while (done < p.received.length) p.send(p.received[done++]);
      });
    }
  });
  await new Promise<void>((r) => server.listen(listen, r));
  const a = server.address();
  const url = typeof a === "string" || a === null ? `lp+unix://${a}` : `lp+tcp://127.0.0.1:${a.port}`;
  return {
    url,
    peers,
    close: () =>
      new Promise((r) => {
        for (const p of peers) p.socket.destroy();
        server.close(() => r());
      }),
  };
}

/** Connects a plain node:net client to `url` (lp+tcp:// or lp+unix://). */
export function plainClient(url: string): Promise<PlainPeer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s =
      u.protocol === "lp+unix:"
        ? net.connect({ path: u.pathname })
        : net.connect({ host: u.hostname, port: Number(u.port) });
    s.once("connect", () => resolve(plainPeer(s))).once("error", reject);
  });
}

/**
 * A length-prefix peer in Python's standard library (socket, struct), both
 * roles in one process (a Python start costs seconds on a loaded machine):
 * as a server it prints its port, then answers every message with its bytes
 * reversed until the stream ends; then it reads a port from stdin and, as a
 * client, sends a message of each size given in argv (bytes i*7 mod 256),
 * expects each back reversed, and prints "ok".
 */
const PYTHON_PEER = `
import socket, struct, sys
def recv_exact(s, n):
    b = bytearray()
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            return None
        b += c
    return bytes(b)
def read_msg(s):
    h = recv_exact(s, 4)
    if h is None:
        return None
    (n,) = struct.unpack(">I", h)
    return recv_exact(s, n)
def send_msg(s, data):
    s.sendall(struct.pack(">I", len(data)) + data)
def pattern(n):
    unit = bytes((i * 7) & 0xff for i in range(256))
    return (unit * (n // 256 + 1))[:n]
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
c, _ = srv.accept()
while True:
    m = read_msg(c)
    if m is None:
        break
    send_msg(c, m[::-1])
c.close()
s = socket.create_connection(("127.0.0.1", int(sys.stdin.readline())))
for n in map(int, sys.argv[1:]):
    data = pattern(n)
    send_msg(s, data)
    back = read_msg(s)
    if back != data[::-1]:
        print("mismatch", n, None if back is None else len(back), flush=True)
        sys.exit(1)
s.close()
print("ok", flush=True)
`;

/** Runs the Python peer with `args` (the sizes it sends as a client); killed by PID after `ms`. `lines` yields its output. */
export function pythonPeer(
  args: string[],
  ms = 10_000,
): { child: ChildProcess; lines: AsyncIterator<string>; exited: Promise<number | null>; kill(): void } {
  // -I -S: no user site or site-packages, the standard library only.
  const child = spawn("python3", ["-I", "-S", "-c", PYTHON_PEER, ...args], { stdio: ["pipe", "pipe", "inherit"] });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const kill = () => {
    if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, "SIGKILL");
  };
  const t = setTimeout(kill, ms);
  t.unref();
  void exited.then(() => clearTimeout(t));
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
  return { child, lines, exited, kill };
}
