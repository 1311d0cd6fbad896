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

class Direction {
  private readonly stats: DirectionStats;
  private readonly queue: Buffer[] = [];
  private queued = 0;
  /** On the wire: delivery time and bytes. */
  private readonly wire: { at: number; buf: Buffer }[] = [];
  private onWire = 0;
  private budget = 0;
  private last = 0;
  private timer: NodeJS.Timeout | undefined;
  private dueAt = 0;
  private ended = false;
  private closed = false;
  private readonly limit: number;
  private readonly from: net.Socket;
  private readonly to: net.Socket;
  private readonly spec: LinkSpec;

  private readonly name: string;

  constructor(from: net.Socket, to: net.Socket, spec: LinkSpec, stats: DirectionStats, name: string) {
    this.stats = stats;
    this.name = name;
    this.from = from;
    this.to = to;
    this.spec = spec;
    this.limit = spec.queueBytes ?? Math.max(256 * 1024, Math.round(spec.rate * 0.05));
    from.on("data", (chunk: Buffer) => {
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
      this.queue.push(chunk);
      this.queued += chunk.length;
      if (this.queued >= this.limit) from.pause();
      if (idle) this.now();
      else this.kick();
    });
    from.on("end", () => {
      this.ended = true;
      this.kick();
    });
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
    this.timer = setTimeout(() => this.tick(), ms);
  }

  private tick(): void {
    this.timer = undefined;
    if (this.closed) return;
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
    if (this.queued > 0 && this.to.writableLength < MAX_UNDELIVERED) {
      this.budget = Math.min(
        this.budget + ((now - this.last) * this.spec.rate) / 1000,
        (this.spec.rate * MAX_CATCH_UP_MS) / 1000,
      );
      while (this.budget >= 1 && this.queue.length > 0) {
        const head = this.queue[0];
        const n = Math.min(head.length, Math.floor(this.budget));
        const part = n === head.length ? head : head.subarray(0, n);
        if (n === head.length) this.queue.shift();
        else this.queue[0] = head.subarray(n);
        this.queued -= n;
        this.budget -= n;
        // Leaves when its last byte is serialised; the budget may run behind by the catch-up allowance.
        this.wire.push({ at: now + this.spec.delayMs, buf: part });
        this.onWire += n;
      }
      if (this.queued < this.limit && this.from.isPaused()) this.from.resume();
    }
    this.last = now;
    // What is due goes out in one writev (cork): the proxy's cost per tick, not per piece.
    const due = this.wire.length > 0 && this.wire[0].at <= now && !this.to.destroyed;
    if (due) this.to.cork();
    while (this.wire.length > 0 && this.wire[0].at <= now) {
      const { buf } = this.wire.shift() as { at: number; buf: Buffer };
      this.onWire -= buf.length;
      this.stats.delivered += buf.length;
      if (!this.to.destroyed) this.to.write(buf);
    }
    if (due) this.to.uncork();
    if (this.queued > 0 || this.wire.length > 0) {
      this.schedule(this.queued > 0 ? 1 : Math.max(1, Math.ceil(this.wire[0].at - now)));
    } else if (this.ended && !this.to.destroyed) {
      this.to.end();
    }
  }
}

/**
 * Starts a shaping proxy on 127.0.0.1 in front of `targetPort` (on
 * 127.0.0.1); `up` shapes the bytes a client sends, `down` those it receives.
 */
export async function startShaper(targetPort: number, up: LinkSpec, down: LinkSpec = up): Promise<Shaper> {
  const stats = { up: { delivered: 0, maxHeld: 0, immediate: 0 }, down: { delivered: 0, maxHeld: 0, immediate: 0 } };
  const live = new Set<{ a: net.Socket; b: net.Socket; dirs: Direction[] }>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: "127.0.0.1", port: targetPort });
    // Counters of every connection through the proxy, together (tests use one connection).
    const u = new Direction(client, upstream, up, stats.up, "up");
    const d = new Direction(upstream, client, down, stats.down, "down");
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
