import net from "node:net";

/** Which way bytes flow through the proxy: client to server (`up`) or back (`down`). */
export type Direction = "up" | "down";

/** Faults a {@link FaultProxy} injects. */
export interface Faults {
  /** Invert one byte at this offset of the `dir` byte stream. */
  flip?: { dir: Direction; offset: number };
  /** Close both sides once this many bytes went `dir`. */
  cutAfter?: { dir: Direction; bytes: number };
  /**
   * Close the connection in use each time the bytes that went `dir` (over
   * all connections) reach the next of these totals (ascending); later
   * connections pass until the next point.
   */
  cutAt?: { dir: Direction; bytes: number[] };
}

/** A TCP proxy on loopback that forwards to `target` and injects faults. */
export interface FaultProxy {
  url: string;
  /** Bytes forwarded so far per direction. */
  bytes: Record<Direction, number>;
  /** Bytes discarded so far per direction while it was blackholed (see {@link FaultProxy.blackhole}). */
  dropped: Record<Direction, number>;
  /** Closes every proxied pair now. */
  cutAll(): void;
  /** Stops reading the `dir` byte stream (its sender's writes back up, as if the receiver stopped reading). */
  hold(dir: Direction): void;
  /** Reads the `dir` byte stream again. */
  release(dir: Direction): void;
  /**
   * Discards every byte that goes `dir` from now on (counted in `dropped`),
   * while the connection stays open: the peer's writes succeed and vanish,
   * as on a stalled link. E.g. `blackhole("down")` loses the server's
   * answers to requests that still reach it.
   */
  blackhole(dir: Direction): void;
  /** Forwards `dir` again (what was discarded stays lost). */
  unblackhole(dir: Direction): void;
  close(): Promise<void>;
}

/** Starts a fault-injecting proxy in front of `target` (`tcp://host:port`). */
export async function startProxy(target: string, faults: Faults = {}): Promise<FaultProxy> {
  const t = new URL(target);
  const pairs = new Set<[net.Socket, net.Socket]>();
  const bytes: Record<Direction, number> = { up: 0, down: 0 };
  const cutPoints = [...(faults.cutAt?.bytes ?? [])];
  const held: Record<Direction, boolean> = { up: false, down: false };
  const dropped: Record<Direction, number> = { up: 0, down: 0 };
  const blackholed: Record<Direction, boolean> = { up: false, down: false };
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: t.hostname, port: Number(t.port) });
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    const kill = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    const pipe = (from: net.Socket, to: net.Socket, dir: Direction) => {
      from.on("data", (chunk: Buffer) => {
        if (blackholed[dir]) {
          dropped[dir] += chunk.length;
          return;
        }
        let data = chunk;
        const start = bytes[dir];
        const end = start + data.length;
        const f = faults.flip;
        if (f !== undefined && f.dir === dir && f.offset >= start && f.offset < end) {
          data = Buffer.from(data);
          data[f.offset - start] ^= 0xff;
        }
        if (faults.cutAt?.dir === dir && cutPoints.length !== 0 && end >= cutPoints[0]) {
          const at = cutPoints.shift() as number;
          const keep = Math.max(0, at - start);
          bytes[dir] = start + keep;
          if (keep > 0) to.write(data.subarray(0, keep), kill);
          else kill();
          return;
        }
        const c = faults.cutAfter;
        if (c !== undefined && c.dir === dir && end >= c.bytes) {
          const keep = c.bytes - start;
          bytes[dir] = c.bytes;
          if (keep > 0) to.write(data.subarray(0, keep), kill);
          else kill();
          return;
        }
        bytes[dir] = end;
        if (!to.write(data)) {
          from.pause();
          to.once("drain", () => {
            if (!held[dir]) from.resume();
          });
        }
      });
      from.on("error", kill);
      from.on("close", kill);
    };
    pipe(client, upstream, "up");
    pipe(upstream, client, "down");
    if (held.up) client.pause();
    if (held.down) upstream.pause();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  const cutAll = () => {
    for (const [a, b] of pairs) {
      a.destroy();
      b.destroy();
    }
    pairs.clear();
  };
  const sender = (pair: [net.Socket, net.Socket], dir: Direction) => (dir === "up" ? pair[0] : pair[1]);
  return {
    url: `tcp://127.0.0.1:${port}`,
    bytes,
    dropped,
    cutAll,
    hold(dir) {
      held[dir] = true;
      for (const pair of pairs) sender(pair, dir).pause();
    },
    release(dir) {
      held[dir] = false;
      for (const pair of pairs) sender(pair, dir).resume();
    },
    blackhole(dir) {
      blackholed[dir] = true;
    },
    unblackhole(dir) {
      blackholed[dir] = false;
    },
    close() {
      cutAll();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
