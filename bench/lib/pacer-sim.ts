/**
 * The pacer (src/connection/pacer.ts) in virtual time: a real FrameWriter
 * and Pacer send one chunked message over a simulated link, with
 * `performance.now` replaced by a clock this loop advances in 0.05 ms steps
 * (and `setTimeout` by timers on that clock, run at the first step due),
 * so the result is the same on any machine at any load (issue 17 tuning:
 * `node bench/hol-sim.ts`; and test/connection/pacer.test.ts).
 *
 * The link: what the writer hands over crosses at `linkMBps` (unbounded by
 * default) into the receiver's buffer; the receiver reads `rateMBps` while
 * present and answers each probe PING once it read every byte before it; the
 * answer reaches the sender `pathMs` (+ up to `jitterMs`) later. Receiver
 * and sender are present for exponential spells of mean `presentMs`, away
 * for spells of mean `awayMs` (0: always present) — a loaded machine, where
 * delivery and acknowledgements come in bursts; an absent sender takes no
 * answers (and so writes nothing). A ping (a real 64 B message through the
 * writer, followed by the pacer's probe as on a socket) written every 10 ms
 * waits until every byte ahead of it was read, plus `pathMs`. `PACER_SIM_DEBUG=1` prints
 * the pacer's state every 10 ms of virtual time.
 */
import { decodePing } from "../../src/codec/control.ts";
import { FrameDecoder } from "../../src/codec/decoder.ts";
import { FrameType, MAGIC } from "../../src/codec/frame.ts";
import { Pacer } from "../../src/connection/pacer.ts";
import { useStreamEngine } from "../../src/connection/stream-engine.ts";
import * as streams from "../../src/connection/streams.ts";
import { FrameWriter, type OutMessage } from "../../src/connection/writer.ts";
import { PointSubError } from "../../src/errors/error.ts";

// The writer's bulk pump comes with the stream engine (installed up front, as the Node entry does).
useStreamEngine(streams);

export interface SimOptions {
  /** What the receiver reads per second while present, MB/s. */
  rateMBps: number;
  /** Round trip of an answer, ms. */
  pathMs: number;
  /** Mean away spell, ms (0: never away). */
  awayMs?: number;
  /** Mean present spell, ms. */
  presentMs?: number;
  /** Bytes sent. */
  bytes: number;
  /** Seeds the spells and jitter. */
  seed?: number;
  /** The link's rate, MB/s (default unbounded). */
  linkMBps?: number;
  /** Answers come up to this much later at random, ms. */
  jitterMs?: number;
  /**
   * The link moves bytes only at ticks this far apart (plus up to as much
   * again at random), what accrued since the last tick at once — as the
   * bench's shaping proxy (bench/lib/shaper.ts), whose 1 ms timers fire late
   * on a loaded machine; 0 (default): continuously.
   */
  tickMs?: number;
}

export interface SimResult {
  /** Waits of the pings, ms, sorted. */
  waits: number[];
  /** Virtual time the transfer took until its last byte was read, ms. */
  ms: number;
  /** MB/s over that time. */
  mbps: number;
  /** Share of what the receiver (or link) could have taken. */
  utilisation: number;
  /** Largest bytes handed over and not yet read. */
  maxInFlight: number;
  /** Largest allowance for acknowledgement bursts the pacer's window held, in ms of its rate. */
  maxExtraMs: number;
}

const EMPTY = new Uint8Array(0);

/** Sends `bytes` through a paced writer over the simulated link; see the module comment. */
export async function simulatePacer(o: SimOptions): Promise<SimResult> {
  const away = o.awayMs ?? 0;
  const presentMean = o.presentMs ?? 8;
  const readPerMs = o.rateMBps * 1000;
  const linkPerMs = (o.linkMBps ?? Number.POSITIVE_INFINITY) * 1000;
  const jitter = o.jitterMs ?? 0;
  const tickMs = o.tickMs ?? 0;
  let seed = (o.seed ?? 1) * 7919;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const exp = (mean: number) => -Math.log(1 - rnd()) * mean;
  const realNow = performance.now;
  const realSetTimeout = globalThis.setTimeout;
  const realClearTimeout = globalThis.clearTimeout;
  let vt = 1000;
  performance.now = () => vt;
  // Timers (the pacer's) run in virtual time too, at the first step at or after their time.
  const timers = new Set<{ at: number; fn: () => void; unref(): void }>();
  globalThis.setTimeout = ((fn: () => void, ms = 0) => {
    const t = { at: vt + ms, fn, unref() {} };
    timers.add(t);
    return t;
  }) as unknown as typeof setTimeout;
  globalThis.clearTimeout = ((t: { at: number; fn: () => void; unref(): void }) => {
    timers.delete(t);
  }) as unknown as typeof clearTimeout;
  const runTimers = () => {
    for (const t of timers) {
      if (t.at > vt) continue;
      timers.delete(t);
      t.fn();
    }
  };
  try {
    const party = () => ({ present: true, until: vt + exp(presentMean), presentMs: 0 });
    const step = (p: ReturnType<typeof party>, dt: number) => {
      if (p.present) p.presentMs += dt;
      if (away !== 0 && vt >= p.until) {
        p.present = !p.present;
        p.until = vt + exp(p.present ? presentMean : away);
      }
    };
    const rx = party();
    const tx = party();
    let written = 0;
    let linked = 0;
    let read = 0;
    let maxInFlight = 0;
    let maxExtraMs = 0;
    let pacer: Pacer | undefined;
    const probes: { pos: number; value: number }[] = [];
    const answers: { at: number; value: number }[] = [];
    const pings: { t: number; pos: number }[] = [];
    const waits: number[] = [];
    const decoder = new FrameDecoder(
      {
        onPreface: () => {},
        onFrame: (type, _f, _id, buf, start, end) => {
          if (type === FrameType.PING) probes.push({ pos: written, value: decodePing(buf.subarray(start, end)) });
        },
      },
      64 * 1024 * 1024,
    );
    decoder.push(new Uint8Array([...MAGIC, 1, 1]));
    const writer = new FrameWriter({
      write(chunks) {
        for (const c of chunks) {
          // Decoded chunk by chunk: a probe's position is at most the end of its chunk.
          decoder.push(c.slice());
          written += c.length;
        }
        return true;
      },
    });
    writer.connCredit = 2 ** 40;
    writer.pacing = (w) => {
      pacer = new Pacer(w);
      return pacer;
    };
    let done = false;
    const m: OutMessage = {
      type: FrameType.MSG,
      id: 1,
      head: new Uint8Array(0),
      data: new Uint8Array(o.bytes),
      crc: -1,
      offset: 0,
      started: false,
      credit: 2 ** 40,
      chunk: 256 * 1024,
      single: false,
      resolve: () => {
        done = true;
      },
      reject: undefined,
    };
    const t0 = vt;
    const flushed = () => new Promise<void>((r) => queueMicrotask(r));
    writer.enqueue(m);
    await flushed();
    const DT = 0.05;
    let nextPing = t0 + 10;
    let pingId = 1;
    const debug = process.env.PACER_SIM_DEBUG === "1";
    let nextDebug = t0;
    let lastTick = vt;
    let nextTick = vt + tickMs;
    while (!(done && read >= written) && vt - t0 < 600_000) {
      vt += DT;
      step(rx, DT);
      step(tx, DT);
      if (tickMs === 0) linked = Math.min(written, linked + linkPerMs * DT);
      else if (vt >= nextTick) {
        // An idle link banks no capacity (as the proxy's).
        linked = Math.min(written, linked + linkPerMs * (vt - lastTick));
        lastTick = vt;
        nextTick = vt + tickMs * (1 + rnd());
      }
      if (rx.present) read = Math.min(linked, read + readPerMs * DT);
      while (rx.present && probes.length !== 0 && probes[0].pos <= read) {
        answers.push({ at: vt + o.pathMs + rnd() * jitter, value: (probes.shift() as { value: number }).value });
      }
      answers.sort((a, b) => a.at - b.at);
      while (tx.present && answers.length !== 0 && answers[0].at <= vt) {
        pacer?.onAck((answers.shift() as { value: number }).value);
      }
      // An absent sender runs no timers either.
      if (tx.present) runTimers();
      while (pings.length !== 0 && pings[0].pos <= read) waits.push(vt + o.pathMs - (pings.shift() as { t: number }).t);
      if (written - read > maxInFlight) maxInFlight = written - read;
      const extra = (pacer as unknown as { extra: number } | undefined)?.extra ?? 0;
      if (pacer !== undefined && pacer.rate > 0 && extra / pacer.rate > maxExtraMs) maxExtraMs = extra / pacer.rate;
      if (debug && vt >= nextDebug && pacer !== undefined) {
        nextDebug += 10;
        const x = pacer as unknown as Record<string, number>;
        console.log(
          `${(vt - t0).toFixed(0)} rate ${x.rate.toFixed(0)} pace ${(x.pace ?? 0).toFixed(0)} minRtt ${x.minRtt.toFixed(1)} win ${(pacer.window() / 1024).toFixed(0)} inflight ${((written - read) / 1024).toFixed(0)} startup ${x.startup}`,
        );
      }
      if (vt >= nextPing) {
        nextPing += 10;
        // A real 64 B message, as the bench's pings (a request goes out at once when it can): the
        // probe the pacer sends after it (at its next pump) is answered after it, as on a socket.
        const ping = new Uint8Array(64);
        pingId += 2;
        if (!writer.trySendNow(FrameType.MSG, pingId, EMPTY, ping)) {
          writer.enqueue({
            type: FrameType.MSG,
            id: pingId,
            head: EMPTY,
            data: ping,
            crc: -1,
            offset: 0,
            started: false,
            credit: 0,
            chunk: 0,
            single: true,
            resolve: undefined,
            reject: undefined,
          });
        }
        await flushed();
        pings.push({ t: vt, pos: written });
      }
      await flushed();
    }
    writer.close(new PointSubError("ERR_CANCELLED", "simulation over"));
    const ms = vt - t0;
    const mbps = o.bytes / 1000 / ms;
    const possible = Math.min(o.linkMBps ?? Number.POSITIVE_INFINITY, (o.rateMBps * rx.presentMs) / ms);
    return { waits: waits.sort((a, b) => a - b), ms, mbps, utilisation: mbps / possible, maxInFlight, maxExtraMs };
  } finally {
    performance.now = realNow;
    globalThis.setTimeout = realSetTimeout;
    globalThis.clearTimeout = realClearTimeout;
  }
}

/** The `p`th percentile of sorted `xs`. */
export function simPercentile(xs: readonly number[], p: number): number {
  return xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
}
