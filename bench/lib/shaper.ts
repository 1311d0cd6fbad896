/**
 * A link-shaping TCP proxy on loopback (issue 17, `hol-slow`): each
 * direction is a link of `rate` bytes/s with a one-way `delayMs`, like a
 * bottleneck router with a short queue. Bytes read from one side wait in a
 * bounded queue (the router's buffer; when it is full the proxy stops
 * reading, so the sender's kernel and socket buffers fill as they would
 * behind a real slow link), are serialised at `rate`, and are delivered
 * `delayMs` after they left. Every buffer is bounded: the queue by
 * `queueBytes`, the wire by rate × delay, the delivery side by
 * `MAX_UNDELIVERED` (a receiver that does not read stops the link, as TCP's
 * window would). Timers run only while bytes move; `close()` ends it all.
 */
import { appendFileSync, mkdirSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { absNow, TRACE_DIR } from "./trace.ts";

/** One direction of the link. */
export interface LinkSpec {
  /** Bytes per second. */
  rate: number;
  /** One-way delay in ms (the round-trip time is the sum of both directions'). */
  delayMs: number;
  /** The router's buffer in bytes (default: 256 KiB or 50 ms at `rate`, the larger). */
  queueBytes?: number;
}

/** Counters of one direction, for tests. */
export interface DirectionStats {
  /** Bytes delivered to the far side. */
  delivered: number;
  /** Largest queue + wire seen on one connection (bytes read and not yet delivered). */
  maxHeld: number;
  /** Chunks that arrived on an idle link and went onto the wire at once (not at the next tick). */
  immediate: number;
}

export interface Shaper {
  /** Loopback port to connect to instead of the target's. */
  port: number;
  /** Client to server (`up`) and back (`down`). */
  stats: { up: DirectionStats; down: DirectionStats };
  close(): Promise<void>;
}

/** Bytes written to a side and not yet taken by its socket beyond which the link stops delivering. */
const MAX_UNDELIVERED = 1024 * 1024;
/**
 * How far behind a late timer the link may catch up (ms of capacity banked
 * while it had bytes waiting): on a loaded machine timers fire 10-30 ms late,
 * and the link must still average its rate.
 */
const MAX_CATCH_UP_MS = 50;

/** Traced: the proxy's late ticks, written to `shaper-<pid>.jsonl` at exit. */
const lateTicks: string[] = [];
if (TRACE_DIR !== undefined) {
  const dir = TRACE_DIR;
  process.once("exit", () => {
    if (lateTicks.length === 0) return;
    mkdirSync(dir, { recursive: true });
    appendFileSync(join(dir, `shaper-${process.pid}.jsonl`), `${lateTicks.join("\n")}\n`);
  });
}

/**
 * Bytes on the wire are delivered up to this early (ms): about the mean
 * lateness of a timer, so the link's delay is on average the one asked for.
 */
const EARLY_MS = 0.5;

/** Bytes one read takes at most (Node's own read size; the static read buffer's). */
const READ = 64 * 1024;

/**
 * One direction of the link. Its bytes live in one ring buffer from the
 * moment they are read until the far side's socket took them: reads land in
 * a static buffer (`onread`) and are copied in, the wire holds positions, and
 * a write's space is reused once its callback says the kernel took it. A
 * proxy that kept each read's own Buffer (100 MB/s of 64 KiB ArrayBuffers)
 * made V8 mark-compact the runner every 100-300 ms (pauses of 2-6 ms, up to
 * 34 ms on a loaded machine) while it held the pings of hol-slow.
 */
class Direction {
  private readonly stats: DirectionStats;
  private readonly ring: Buffer;
  /** Byte positions (monotonic): read in, serialised onto the wire, handed to `to`, taken by `to`'s kernel. */
  private inPos = 0;
  private serPos = 0;
  private delPos = 0;
  private freePos = 0;
  /** On the wire, oldest first: delivery time and the position its bytes end at (flat pairs from `wireHead`). */
  private readonly wire: number[] = [];
  private wireHead = 0;
  /** Ends of the writes handed to `to` whose callback has not come yet, oldest first. */
  private readonly writes: number[] = [];
  private readonly written = (): void => {
    this.freePos = this.writes.shift() ?? this.freePos;
    this.resumeIfRoom();
  };
  private budget = 0;
  private last = 0;
  private timer: NodeJS.Timeout | undefined;
  private dueAt = 0;
  private ended = false;
  private closed = false;
  private readonly limit: number;
  private from: net.Socket | undefined;
  private to: net.Socket | undefined;
  private readonly spec: LinkSpec;
  private readonly name: string;

  constructor(spec: LinkSpec, stats: DirectionStats, name: string) {
    this.stats = stats;
    this.name = name;
    this.spec = spec;
    this.limit = spec.queueBytes ?? Math.max(256 * 1024, Math.round(spec.rate * 0.05));
    // Room for the queue (and the read past its limit), the wire (the delay and a catch-up burst),
    // what `to` may hold undelivered and one more tick's worth: the reader pauses before it could overrun.
    const wire = Math.ceil((spec.rate * (spec.delayMs + MAX_CATCH_UP_MS + 5)) / 1000);
    this.ring = Buffer.allocUnsafe(this.limit + wire + MAX_UNDELIVERED + 4 * READ);
  }

  private get queued(): number {
    return this.inPos - this.serPos;
  }

  private get onWire(): number {
    return this.serPos - this.delPos;
  }

  /** Joins the sockets: bytes read from `from` (via {@link take}) go to `to`. */
  attach(from: net.Socket, to: net.Socket): void {
    this.from = from;
    this.to = to;
    from.on("end", () => {
      this.ended = true;
      this.kick();
    });
  }

  /** `n` bytes read from `from` into `buf`: copied into the ring. False: `from` is paused (the queue is full). */
  take(buf: Uint8Array, n: number): boolean {
    if (this.closed) return false;
    // Nothing was waiting: what arrives now goes onto the wire at once, not at the next tick — a
    // tick late under load would add up to a few ms to every round trip, the proxy measuring
    // itself. The capacity is what accrued since the last tick, at most one tick's worth (an idle
    // link banks no more): resetting it to a tick's worth on every arrival let a sender whose
    // writes each found the queue empty (a paced one) through at any rate (256 MiB through a
    // 100 MB/s link at 240 MB/s).
    const idle = this.queued === 0;
    if (idle) {
      const now = performance.now();
      this.budget = Math.min(this.budget + ((now - this.last) * this.spec.rate) / 1000, this.spec.rate / 1000);
      this.last = now;
    }
    const cap = this.ring.length;
    if (this.inPos + n - this.freePos > cap) throw new Error("shaper: ring overrun");
    const at = this.inPos % cap;
    const first = Math.min(n, cap - at);
    this.ring.set(buf.subarray(0, first), at);
    if (first < n) this.ring.set(buf.subarray(first, n), 0);
    this.inPos += n;
    const full = !this.room();
    if (full) this.from?.pause();
    if (idle) this.now();
    else this.kick();
    return !full;
  }

  /** Whether another read may come: the queue is below its limit and the ring has room for a read. */
  private room(): boolean {
    return this.queued < this.limit && this.ring.length - (this.inPos - this.freePos) >= 2 * READ;
  }

  private resumeIfRoom(): void {
    if (!this.closed && this.from?.isPaused() === true && this.room()) this.from.resume();
  }

  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Ticks now (a pending tick is replaced by the next one it schedules). */
  private now(): void {
    if (this.closed) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.dueAt = 0;
    this.stats.immediate++;
    this.tick();
  }

  /** Makes sure a tick comes within 1 ms (a tick waiting for a delivery may be further away). */
  private kick(): void {
    if (this.closed) return;
    const soon = performance.now() + 1;
    if (this.timer !== undefined) {
      if (this.dueAt <= soon) return;
      clearTimeout(this.timer);
    }
    this.schedule(1);
  }

  private schedule(ms: number): void {
    this.dueAt = performance.now() + ms;
    this.timer = setTimeout(this.tickBound, ms);
  }

  private readonly tickBound = (): void => this.tick();

  private tick(): void {
    this.timer = undefined;
    const to = this.to;
    if (this.closed || to === undefined) return;
    const now = performance.now();
    // Traced (trace.ts): a tick more than 2 ms late while bytes waited — the proxy itself holding them.
    if (TRACE_DIR !== undefined && this.dueAt !== 0 && now - this.dueAt > 2 && this.queued + this.onWire > 0)
      lateTicks.push(
        JSON.stringify({
          t: absNow(),
          dir: this.name,
          late: now - this.dueAt,
          queued: this.queued,
          onWire: this.onWire,
        }),
      );
    this.dueAt = 0;
    const held = this.queued + this.onWire;
    if (held > this.stats.maxHeld) this.stats.maxHeld = held;
    // Serialise onto the wire what the elapsed time allows (the link stops while the far side does not read).
    if (this.queued > 0 && to.writableLength < MAX_UNDELIVERED) {
      this.budget = Math.min(
        this.budget + ((now - this.last) * this.spec.rate) / 1000,
        (this.spec.rate * MAX_CATCH_UP_MS) / 1000,
      );
      const n = Math.min(this.queued, Math.floor(this.budget));
      if (n > 0) {
        this.serPos += n;
        this.budget -= n;
        // Leaves when its last byte is serialised; the budget may run behind by the catch-up allowance.
        this.wire.push(now + this.spec.delayMs, this.serPos);
      }
      this.resumeIfRoom();
    }
    this.last = now;
    // What is due goes out in one writev (cork): the proxy's cost per tick, not per piece.
    let end = this.delPos;
    // Due within half a timer tick counts as due: timers fire 0-1 ms late (libuv's clock is in whole
    // ms), and delivering only what is past due added ~1 ms to each direction of the link.
    const due = now + EARLY_MS;
    while (this.wireHead < this.wire.length && this.wire[this.wireHead] <= due) {
      end = this.wire[this.wireHead + 1];
      this.wireHead += 2;
    }
    if (this.wireHead > 1024) {
      this.wire.splice(0, this.wireHead);
      this.wireHead = 0;
    }
    if (end > this.delPos) {
      this.stats.delivered += end - this.delPos;
      if (to.destroyed) {
        this.delPos = end;
        this.freePos = end;
      } else {
        const cap = this.ring.length;
        const at = this.delPos % cap;
        const first = Math.min(end - this.delPos, cap - at);
        to.cork();
        if (first < end - this.delPos) {
          // Wraps: the ring's tail, then its head (one callback, for the last piece: writes complete in order).
          to.write(this.ring.subarray(at, cap));
          to.write(this.ring.subarray(0, end - this.delPos - first), this.written);
        } else to.write(this.ring.subarray(at, at + first), this.written);
        this.writes.push(end);
        this.delPos = end;
        to.uncork();
      }
    }
    if (this.queued > 0 || this.wireHead < this.wire.length) {
      this.schedule(this.queued > 0 ? 1 : Math.max(1, Math.round(this.wire[this.wireHead] - now)));
    } else if (this.ended && !to.destroyed) {
      to.end();
    }
  }
}

/**
 * A socket whose reads land in one static buffer handed to `dir` (no Buffer
 * per read): `client` is wrapped anew around its handle (accepted with
 * `pauseOnConnect`); without a handle to take (another runtime), its `data`
 * events feed `dir`.
 */
function readInto(dir: Direction, socket?: net.Socket): net.Socket {
  const onread = { buffer: Buffer.allocUnsafe(READ), callback: (n: number, buf: Uint8Array) => dir.take(buf, n) };
  if (socket === undefined) return new net.Socket({ onread });
  const handle = (socket as unknown as { _handle?: unknown })._handle;
  if (handle === undefined || handle === null) {
    socket.on("data", (c: Buffer) => dir.take(c, c.length));
    socket.resume();
    return socket;
  }
  (socket as unknown as { _handle: unknown })._handle = null;
  // The accepted wrapper, now without its handle, closes (the server stops counting it).
  socket.destroy();
  const s = new net.Socket({ handle, onread } as unknown as net.SocketConstructorOpts);
  s.resume();
  return s;
}

/**
 * Starts a shaping proxy on 127.0.0.1 in front of `targetPort` (on
 * 127.0.0.1); `up` shapes the bytes a client sends, `down` those it receives.
 */
export async function startShaper(targetPort: number, up: LinkSpec, down: LinkSpec = up): Promise<Shaper> {
  const stats = { up: { delivered: 0, maxHeld: 0, immediate: 0 }, down: { delivered: 0, maxHeld: 0, immediate: 0 } };
  const live = new Set<{ a: net.Socket; b: net.Socket; dirs: Direction[] }>();
  const server = net.createServer({ pauseOnConnect: true }, (accepted) => {
    // Counters of every connection through the proxy, together (tests use one connection).
    const u = new Direction(up, stats.up, "up");
    const d = new Direction(down, stats.down, "down");
    const client = readInto(u, accepted);
    const upstream = readInto(d).connect({ host: "127.0.0.1", port: targetPort });
    u.attach(client, upstream);
    d.attach(upstream, client);
    const entry = { a: client, b: upstream, dirs: [u, d] };
    live.add(entry);
    const end = () => {
      u.close();
      d.close();
      client.destroy();
      upstream.destroy();
      live.delete(entry);
    };
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      s.on("error", end);
      s.on("close", end);
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    stats,
    close: () =>
      new Promise<void>((r) => {
        for (const e of live) {
          for (const dir of e.dirs) dir.close();
          e.a.destroy();
          e.b.destroy();
        }
        live.clear();
        server.close(() => r());
      }),
  };
}

/** A loopback TCP server that counts what it receives; `all` resolves once `total` bytes arrived (tests, bench/shaper-cost.ts). */
export async function startCountingSink(
  total: number,
): Promise<{ port: number; all: Promise<void>; received: () => number; close: () => void }> {
  let got = 0;
  let done = (): void => {};
  const all = new Promise<void>((r) => {
    done = r;
  });
  const sink = net.createServer((s) =>
    s.on("data", (c: Buffer) => {
      got += c.length;
      if (got >= total) done();
    }),
  );
  await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
  return { port: (sink.address() as net.AddressInfo).port, all, received: () => got, close: () => sink.close() };
}
