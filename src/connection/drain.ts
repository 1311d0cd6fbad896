/**
 * The wait of a graceful close (`Connection.close()`): after its GOAWAY, a
 * closing connection waits until nothing is in flight in either direction
 * and the peer's own GOAWAY arrived (or its close timeout passed), then ends
 * its transport. Loaded on the first close (a dynamic import): a page's
 * first load does not carry it; the connection sends its GOAWAY and refuses
 * new work at once, only the wait starts once this is loaded.
 */
import type { PointSubError } from "../errors/error.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import type { Caller } from "./caller.ts";
import type { ConnectionState } from "./types.ts";
import { UNSENT } from "./unsent.ts";
import type { FrameWriter } from "./writer.ts";

/** What a closing connection tells (`Connection`'s internal methods). */
export interface DrainHost {
  readonly state: ConnectionState;
  /** Smoothed round-trip time in ms, if measured. */
  readonly rtt: number | undefined;
  /** Bytes received so far. */
  readonly bytesIn: number;
  /** Resolves once the connection closed. */
  readonly closed: Promise<void>;
  /**
   * What the close still waits for: 2 work in flight (calls, messages,
   * streams, queued output, messages middleware holds), 1 only the peer's
   * GOAWAY, 0 nothing.
   */
  drainWork(): 0 | 1 | 2;
  /** Writes what is queued and ends the transport (the peer closes its side). */
  endTransport(): void;
  destroy(error?: PointSubError): void;
  /** The error of a call made now (a PointSubError: its class, without importing it here). */
  unusableError(): PointSubError;
  /** Set here while the close waits: a later close() with a shorter timeout brings the deadline forward. */
  cut: ((ms: number | undefined) => void) | undefined;
  /** This side's calls (`caller`: a stand-in without `waiting` until the first call). */
  readonly inbound: { readonly caller: Pick<Caller, "waiting" | "abandon" | "streams"> };
}

/** A connection closing gracefully: until when it waits, and for what. */
interface Drain {
  conn: DrainHost;
  deadline: number;
  /** A check found the deadline passed: the next one, after that turn's I/O, acts on it (see {@link drained}). */
  due: boolean;
  /** How long a quiet connection waits for the peer's GOAWAY. */
  peerWait: number;
  /** Since when nothing was in flight and nothing arrived (0: something is, or did since the last check). */
  quietSince: number;
  /** The connection's bytes received at the last check. */
  lastIn: number;
  done: () => void;
  writer: Queued;
  /** When this side last told a peer waiting for its GOAWAY that it is still there (a PING). */
  keptAt: number;
  /** Sends this side's GOAWAY(0); undefined once sent. */
  goAway: (() => void) | undefined;
}

/** What a closing connection's writer tells: sends queued, and the chunked ones among them. */
type Queued = Pick<FrameWriter, "pending" | "bulkState" | "control">;

/**
 * Whether a send accepted before the close has not started yet: a message
 * waiting for credit, for a slot among the peer's open chunked messages
 * (MAX_OPEN_CHUNKED), or for the stream engine (a page's first one).
 */
function unstarted(w: Queued): boolean {
  let started = 0;
  for (const m of w.bulkState?.list ?? []) if (m.started) started++;
  return w.pending > started;
}

/** How long a closing connection with nothing in flight waits for the peer's GOAWAY (at least; 4 RTTs if longer). */
const PEER_GOAWAY_WAIT_MS = 250;
/**
 * Longest wait for the peer's end past the close's deadline for its round trips (two RTTs, at most
 * this): the RTT is the peer's to set — it answers PINGs when it likes — and one PING answered an
 * hour late held a close of any timeout for two (`connection/close-rtt-floor.test.ts`).
 */
const MAX_END_WAIT_MS = 2000;
/** While this side holds its GOAWAY, how often it shows the peer it is there (well within PEER_GOAWAY_WAIT_MS). */
const KEEP_MS = 100;
/**
 * FrameType.PING: a value, not an import of codec/frame.ts (that import split the modules this chunk
 * shares with a page's first load into a chunk of their own: +250 bytes up front).
 */
const PING = 6;
/** A PING with sequence 0 (a float64): its answer matches no ping of this side's (they count from 1) and is ignored. */
const PING_0 = new Uint8Array(8);
/** How often closing connections are checked for work still in flight. */
const DRAIN_POLL_MS = 5;
const noop = () => {};

/** Connections closing gracefully, waiting for their work in flight. */
const draining = new Set<Drain>();
let drainTimer: ReturnType<typeof setInterval> | undefined;

function pollDrains(): void {
  const now = performance.now();
  for (const d of draining) {
    if (!drained(d, now)) continue;
    draining.delete(d);
    d.done();
  }
  if (draining.size === 0 && drainTimer !== undefined) {
    clearInterval(drainTimer);
    drainTimer = undefined;
  }
}

/** Whether a graceful close may stop waiting: closed, out of time, nothing in flight, or only a silent peer's GOAWAY left. */
function drained(d: Drain, now: number): boolean {
  const c = d.conn;
  if (c.state === "closed") return true;
  if (now >= d.deadline) {
    // Out of time: looked at again at the next check, after that turn's I/O — after a stall of this process
    // (a long GC, a busy loop) timers run before the answers that came meanwhile are read, and the close cut
    // work that was done.
    if (d.due) return true;
    d.due = true;
    return false;
  }
  if (d.goAway !== undefined) {
    // GOAWAY says this side starts nothing after it: it waits for the sends queued before the close
    // started. Sent ahead of them, it let the peer end the byte stream once what had started was done
    // (both GOAWAYs seen, nothing in flight), and the rest failed although both sides closed cleanly.
    if (unstarted(d.writer)) {
      // A peer that closed first waits for this GOAWAY only briefly while nothing of ours arrives (the
      // sends may wait for a page's stream engine, sending nothing): a PING now and then keeps it waiting.
      if (now - d.keptAt >= KEEP_MS) {
        d.keptAt = now;
        d.writer.control(PING, 0, 0, PING_0);
      }
      return false;
    }
    d.goAway();
    d.goAway = undefined;
  }
  const work = c.drainWork();
  if (work === 0) return true;
  // Input since the last check: the peer is still sending (what it started before it saw our GOAWAY, or
  // what it held back until its own sends started, with its GOAWAY after them): not quiet.
  if (work === 2 || c.bytesIn !== d.lastIn) {
    d.quietSince = 0;
    d.lastIn = c.bytesIn;
  } else if (d.quietSince === 0) d.quietSince = now;
  else if (now - d.quietSince >= d.peerWait) return true;
  return false;
}

/**
 * Checks the closing connections now, not at the next poll: called when a
 * closing connection received the peer's GOAWAY (most often the last thing
 * its close waited for; the poll would notice up to {@link DRAIN_POLL_MS} later).
 */
export function drainNow(): void {
  if (draining.size > 0) pollDrains();
}

/**
 * Fails the requests still waiting for one of the peer's
 * maxConcurrentRequests slots with ERR_GOING_AWAY (marked {@link UNSENT}):
 * nothing was sent for them, and a closing side starts no new work
 * (docs/PROTOCOL.md §3.8). They went out after this side's GOAWAY when a
 * slot freed, or waited out the close timeout and failed with
 * ERR_CONNECTION_CLOSED, which a resilient client cannot tell from a loss.
 */
function refuseWaiting(conn: DrainHost): void {
  const caller = conn.inbound.caller;
  caller.streams?.refuseWaiting?.();
  const waiting = caller.waiting;
  if (waiting === undefined || waiting.length === 0) return;
  const E = conn.unusableError().constructor as typeof PointSubError;
  for (const call of waiting.drain()) {
    const err = new E("ERR_GOING_AWAY", `request to ${call.route} not sent: the connection is closing`);
    UNSENT.add(err);
    caller.abandon(call, err);
  }
}

/**
 * Sends `conn`'s GOAWAY (unless sent: `goAway` undefined) once every send queued has started, waits (up to
 * `timeoutMs`) for its work in flight and the peer's GOAWAY, then ends its
 * transport; resolves once closed.
 */
export async function drainAndEnd(
  conn: DrainHost,
  timeoutMs: number,
  writer: Queued,
  goAway: (() => void) | undefined,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  refuseWaiting(conn);
  // With nothing in flight, only the peer's GOAWAY is awaited (a START it sent
  // before it saw ours would come first). A conforming peer answers within a
  // round trip; one that never does (idle, old, hostile) must not hold the
  // close for the whole timeout.
  const peerWait = Math.max(PEER_GOAWAY_WAIT_MS, 4 * (conn.rtt ?? 0));
  const d: Drain = {
    conn,
    deadline,
    due: false,
    peerWait,
    quietSince: 0,
    lastIn: conn.bytesIn,
    done: noop,
    writer,
    keptAt: performance.now(),
    goAway,
  };
  // close({ timeoutMs: 60_000 }) then close({ timeoutMs: 0 }): the second is the first's promise, and ended the
  // wait only at the first's deadline.
  conn.cut = (ms) => {
    if (ms !== undefined && ms >= 0) d.deadline = Math.min(d.deadline, performance.now() + ms);
  };
  if (!drained(d, performance.now())) {
    // Checked with every other closing connection by one timer, not a timer each
    // (a server closing 10,000 sessions at once).
    await new Promise<void>((resolve) => {
      d.done = resolve;
      draining.add(d);
      drainTimer ??= setInterval(pollDrains, DRAIN_POLL_MS);
    });
  }
  if (conn.state === "closed") return;
  if (conn.drainWork() === 2) {
    // Out of time with work in flight: what is left fails now, and the close is not a clean one (its
    // `close` event reported none, so nobody could tell a close that cut work from one that did not).
    // The error class reached through the connection: importing it here put the error modules in a
    // chunk of their own, shared with a page's first load (+331 bytes of it).
    const E = conn.unusableError().constructor as typeof PointSubError;
    conn.destroy(
      new E("ERR_CONNECTION_CLOSED", `closed after ${timeoutMs} ms (the close's timeout) with work in flight`),
    );
    return;
  }
  // Out of time before the GOAWAY went out (a session whose handshake ended past the deadline: built from an
  // opening read after a stall of this process): it still goes, before the end (a bare end said nothing).
  d.goAway?.();
  d.goAway = undefined;
  conn.endTransport();
  // The peer closes its side once it read everything (our end included). Not closed by the deadline:
  // the peer took none of what is left (it stopped reading), or said nothing: either way what was sent
  // last may not have arrived, and the close is not a clean one.
  const giveUp = () => {
    const E = conn.unusableError().constructor as typeof PointSubError;
    conn.destroy(
      new E(
        "ERR_CONNECTION_CLOSED",
        `closed after ${timeoutMs} ms (the close's timeout) before the peer closed its side: what was sent last may not have arrived`,
      ),
    );
  };
  // At least two round trips after our end (our end reaching the peer, its own coming back) for a peer far
  // away, up to MAX_END_WAIT_MS; at most a timer's largest delay (close({ timeoutMs: Infinity }): a longer one fired after 1 ms).
  const floor = performance.now() + Math.max(100, Math.min(MAX_END_WAIT_MS, 2 * (conn.rtt ?? 0)));
  // Due: given up after this turn's I/O (a new timer runs after the poll phase): after a stall of this process
  // the timers run before the peer's end that came meanwhile is read (a clean close was cut as unclean).
  const arm = () =>
    setTimeout(
      () => {
        t = setTimeout(giveUp, 0);
      },
      Math.min(MAX_TIMER_MS, Math.max(floor, d.deadline) - performance.now()),
    );
  let t = arm();
  // A later close with a shorter timeout ends this wait too (the timer was armed from the first's deadline).
  conn.cut = (ms) => {
    if (ms === undefined || !(ms >= 0) || performance.now() + ms >= d.deadline) return;
    d.deadline = performance.now() + ms;
    clearTimeout(t);
    t = arm();
  };
  await conn.closed;
  clearTimeout(t);
  conn.cut = undefined;
}
