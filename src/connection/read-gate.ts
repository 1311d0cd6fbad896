/**
 * When the engine reads its transport (the receive side of backpressure):
 * it yields for an event-loop turn once one peer's input took a few
 * milliseconds of work (fairness between peers and timers), holds input
 * back unprocessed once all peers' input took its share of one turn (so
 * many peers' reads landing in one turn cannot hold the event loop either)
 * — looking at both every `STEP_FRAMES` (`frame-targets.ts`) frames, not only between
 * reads (one read, or one BATCH, can carry thousands of frames),
 * stops reading a peer that does not read what it is owed (the slow-peer
 * bound), and while middleware holds too many of the peer's one-way
 * messages (`dispatch.ts`: a rate limit slowing a flood by backpressure).
 */
import type { Transport } from "../transport/transport.ts";
import { nextTurn } from "../util/next-turn.ts";
import type { FrameWriter } from "./writer.ts";

/** Decoding time (ms) one peer's input may take before its reading yields to the event loop for a turn. */
const YIELD_MS = 4;
/**
 * Time (ms) an event-loop turn may run once it decoded input: input arriving
 * after it waits, unprocessed and with its peer's reading paused, for a later
 * turn. Wall time from the turn's first decoding, so what that input set off
 * between reads (handlers' continuations, file and socket callbacks, garbage
 * collection) counts as well as the decoding itself. A single peer's decoding
 * alone never reaches it (it yields at YIELD_MS), so it acts when many peers'
 * reads land in the same turn, or when what they set off is costly.
 */
const TURN_MS = 10;

/**
 * When this turn first decoded input (performance.now()); Infinity until it
 * does. Its first decoding schedules the turn's end, which resets it — a
 * turn, not a pause in the wall clock: a process the OS descheduled for a
 * while within a turn (a loaded machine) is still in that turn, its budget
 * spent, where a pause of TURN_MS used to start a fresh budget mid-turn.
 */
let turnStart = Infinity;
/** The turn's budget is spent (at `now`). */
const spent = (now = performance.now()) => now - turnStart >= TURN_MS;
/** A turn end is scheduled. */
let turnEndScheduled = false;
/** Gates that yielded this turn, resumed together at its end. */
const yielded: ReadGate[] = [];
/** Gates with input waiting, oldest first; worked off a piece per gate in turn, a turn's budget at a time. */
const waiting: ReadGate[] = [];

function scheduleTurnEnd(): void {
  if (turnEndScheduled) return;
  turnEndScheduled = true;
  nextTurn(endTurn);
}

/**
 * The end of an event-loop turn with input (a setImmediate, after the
 * turn's I/O; in a browser a posted message, util/next-turn.ts): resumes the gates that yielded, then works off waiting input
 * within what is left of the turn's budget — the I/O phase's decoding
 * counts: a turn is the whole event-loop iteration, not each of its phases
 * (both with a full budget made one iteration hold the loop twice as long
 * under a flood) — the rest waits for the next turn's end, after that
 * turn's timers (its I/O phase holds new input while older input waits, so
 * that turn's end has the whole budget).
 */
function endTurn(): void {
  turnEndScheduled = false;
  for (const gate of yielded.splice(0)) gate.endYield();
  workOff(true);
}

/**
 * Works off waiting input, a piece (a read, or a step of one) per gate in
 * turn — one peer's long input (a BATCH of thousands of frames) does not
 * keep the others' waiting until it is all done — each piece after the
 * microtasks the one before set off (handlers' continuations: their time
 * counts to the turn's), until the turn's budget is spent; at least one
 * piece a turn, whatever ran before it: held input is never starved.
 */
function workOff(first?: boolean): void {
  const gate = waiting[0];
  let more = false;
  try {
    if (gate && (first || !spent())) {
      if (!gate.runWaiting()) waiting.push(gate);
      // (Not before: a gate whose listener threw keeps its place.)
      waiting.shift();
      more = true;
    }
  } finally {
    if (more) queueMicrotask(workOff);
    else {
      // The next iteration's budget starts with its first decoding.
      turnStart = Infinity;
      // Even when a listener threw: what still waits is worked off next turn, not stranded.
      if (waiting[0]) scheduleTurnEnd();
    }
  }
}

/** What the gate asks of its connection's writer (for the slow-peer bound). */
export type GateWriter = Pick<FrameWriter, "answerQueued" | "controlBacklog" | "stalled" | "writable" | "pacer">;

/** What the gate calls on its connection. */
export interface ReadGateHost {
  /** Processes input held back earlier. */
  processInput(chunk: Uint8Array): void;
  /** Reading resumed after a held pause (progress counts from then). */
  readingResumed(): void;
  /** The connection closed for good. */
  isClosed(): boolean;
}

export class ReadGate {
  /** Reading is paused because the peer does not read what it is owed. */
  slowPaused = false;
  /** Reading is paused because middleware holds too many of the peer's messages. */
  heldPaused = false;
  /** The connection's callbacks (set by it right after construction; one object, no closures per connection). */
  declare host: ReadGateHost;
  /** Reading is paused until the next event-loop turn. */
  private yielding = false;
  /**
   * Microseconds spent decoding this peer's input since reading last yielded: a small integer (a field
   * of fractional milliseconds was a 16 B number box in every connection).
   */
  private busyUs = 0;
  /** Input held back, unprocessed, for a later turn (reading is paused meanwhile). */
  private input: Uint8Array[] | undefined;
  /** @internal The transport it pauses and resumes (the dispatcher asks it whether it can tell when it wrote everything). */
  readonly transport: Transport;
  private readonly writer: GateWriter;
  /** @internal Owed bytes past which reading pauses (Infinity once the transport is gone: `onGone`). */
  slowPeerBytes: number;

  constructor(transport: Transport, writer: GateWriter, slowPeerBytes: number) {
    this.transport = transport;
    this.writer = writer;
    this.slowPeerBytes = slowPeerBytes;
  }

  /**
   * Whether input arriving now may be processed now. When not, the caller
   * hands it to {@link hold} (this turn's budget is spent, or older input
   * of any peer waits).
   */
  admits(): boolean {
    return waiting.length === 0 && !this.yielding && !spent();
  }

  /** Input waits unprocessed (see {@link hold}). */
  get holding(): boolean {
    return this.input !== undefined;
  }

  /** Keeps `chunk` for a later turn and stops reading meanwhile. */
  hold(chunk: Uint8Array): void {
    if (this.input !== undefined) {
      this.input.push(chunk);
      return;
    }
    this.input = [chunk];
    waiting.push(this);
    this.transport.pause();
    scheduleTurnEnd();
  }

  /**
   * @internal Processes the next piece of held input (a read, or a step of
   * one); returns true when none is left (reading resumes unless paused for
   * another reason).
   */
  runWaiting(): boolean {
    const input = this.input as Uint8Array[];
    if (input[0] && !this.host.isClosed()) {
      const n = input.length - 1;
      this.host.processInput(input.shift() as Uint8Array);
      // What it held back is the rest of that piece (a step's frames were done): it goes first.
      if (input.length > n) input.unshift(input.pop() as Uint8Array);
      if (input[0] && !this.host.isClosed()) return false;
    }
    this.input = undefined;
    this.resumeIfFree();
    return true;
  }

  /** Decoding input took from `t0` (performance.now()) until now: yield and/or stop reading as needed. */
  afterInput(t0: number): void {
    const now = performance.now();
    this.busyUs += ((now - t0) * 1000 + 0.5) | 0;
    if (turnStart === Infinity) {
      turnStart = t0;
      scheduleTurnEnd();
    }
    // A busy honest connection pauses a few times a second (in a browser page too: its turn end is a
    // posted message, which a background tab does not throttle as it does 0 ms timers; util/next-turn.ts).
    if (this.busyUs >= YIELD_MS * 1000 && !this.yielding && !this.host.isClosed()) {
      this.busyUs = 0;
      this.yielding = true;
      this.transport.pause();
      // One callback at the turn's end resumes every gate that yielded in it (no closure per gate).
      scheduleTurnEnd();
      yielded.push(this);
    }
    // A peer that does not read what it is owed is read no further until it drains.
    // Owed: answers not yet handed to the transport, whether they wait for the
    // transport or for the pacer's acknowledgements (which a peer that never
    // reads never sends).
    const w = this.writer;
    if (!this.slowPaused && w.answerQueued + w.controlBacklog > this.slowPeerBytes && w.stalled) {
      this.slowPaused = true;
      this.transport.pause();
      if (w.writable) {
        // Held by the pacer: no acknowledgement can be read now, so the answers go to
        // the transport, and its drain resumes reading — as without pacing. A transport
        // that took them all is not full: read on.
        w.pacer?.pauseReading(true);
        if (w.writable) this.slowResume();
      }
    }
  }

  /** @internal The turn after a yield came. */
  endYield(): void {
    this.yielding = false;
    this.resumeIfFree();
  }

  /** The transport drained. Returns true when reading resumed after a slow-peer pause. */
  onDrain(): boolean {
    if (!this.slowPaused || !this.writer.writable) return false;
    this.slowResume();
    return true;
  }

  /** @internal The slow-peer pause ends: reading (and pacing) go on. */
  slowResume(): void {
    this.slowPaused = false;
    this.writer.pacer?.pauseReading(false);
    this.resumeIfFree();
  }

  /** Stops (`true`) or restarts (`false`) reading for messages held by middleware. */
  holdMessages(on: boolean): void {
    if (on === this.heldPaused || this.host.isClosed()) return;
    this.heldPaused = on;
    if (on) {
      this.transport.pause();
      return;
    }
    this.resumeIfFree();
    this.host.readingResumed();
  }

  /** Resumes reading unless something still keeps it paused. */
  private resumeIfFree(): void {
    if (!this.yielding && !this.slowPaused && !this.heldPaused && this.input === undefined && !this.host.isClosed())
      this.transport.resume();
  }
}
