/**
 * When the engine reads its transport (the receive side of backpressure):
 * it yields for an event-loop turn once one peer's input took a few
 * milliseconds of work (fairness between peers and timers), and stops
 * reading a peer that does not read what it is owed (the slow-peer bound),
 * and while middleware holds too many of the peer's one-way messages
 * (`dispatch.ts`: a rate limit slowing a flood by backpressure).
 */
import type { Transport } from "../transport/transport.ts";
import { nextTurn } from "../util/next-turn.ts";
import type { FrameWriter } from "./writer.ts";

/** Gates that yielded this turn, resumed together on the next. */
let yielded: ReadGate[] = [];
let resuming: ReadGate[] = [];

function endYields(): void {
  const gates = yielded;
  yielded = resuming;
  for (let i = 0; i < gates.length; i++) gates[i].endYield();
  gates.length = 0;
  resuming = gates;
}

/** Decoding time (ms) one peer's input may take before its reading yields to the event loop for a turn. */
const YIELD_MS = 4;

export class ReadGate {
  /** Reading is paused because the peer does not read what it is owed. */
  slowPaused = false;
  /** Reading is paused because middleware holds too many of the peer's messages. */
  heldPaused = false;
  /** Called when reading resumes after a held pause (set by the connection: progress counts from then). */
  onHeldResume: (() => void) | undefined;
  /** Reading is paused until the next event-loop turn. */
  private yielding = false;
  /** Milliseconds spent decoding this peer's input since reading last yielded. */
  private busyMs = 0;
  private readonly transport: Transport;
  private readonly writer: FrameWriter;
  private readonly slowPeerBytes: number;
  private readonly isClosed: () => boolean;

  constructor(transport: Transport, writer: FrameWriter, slowPeerBytes: number, isClosed: () => boolean) {
    this.transport = transport;
    this.writer = writer;
    this.slowPeerBytes = slowPeerBytes;
    this.isClosed = isClosed;
  }

  /** Input took `ms` of work: yield and/or stop reading as needed. */
  afterInput(ms: number): void {
    this.busyMs += ms;
    // A busy honest connection pauses a few times a second.
    if (this.busyMs >= YIELD_MS && !this.yielding && !this.isClosed()) {
      this.busyMs = 0;
      this.yielding = true;
      this.transport.pause();
      // One next-turn callback resumes every gate that yielded this turn (no closure per gate).
      if (yielded.length === 0) nextTurn(endYields);
      yielded.push(this);
    }
    // A peer that does not read what it is owed is read no further until it drains.
    const w = this.writer;
    if (!w.writable && !this.slowPaused && w.answerQueued + w.controlBacklog > this.slowPeerBytes) {
      this.slowPaused = true;
      this.transport.pause();
    }
  }

  /** Reading is paused for any reason but a yield: nothing arrives from the peer meanwhile. */
  get paused(): boolean {
    return this.slowPaused || this.heldPaused;
  }

  /** @internal The turn after a yield came. */
  endYield(): void {
    this.yielding = false;
    if (!this.slowPaused && !this.heldPaused && !this.isClosed()) this.transport.resume();
  }

  /** The transport drained. Returns true when reading resumed after a slow-peer pause. */
  onDrain(): boolean {
    if (!this.slowPaused || !this.writer.writable) return false;
    this.slowPaused = false;
    if (!this.yielding && !this.heldPaused) this.transport.resume();
    return true;
  }

  /** Stops (`true`) or restarts (`false`) reading for messages held by middleware. */
  holdMessages(on: boolean): void {
    if (on === this.heldPaused || this.isClosed()) return;
    this.heldPaused = on;
    if (on) {
      this.transport.pause();
      return;
    }
    if (!this.yielding && !this.slowPaused) this.transport.resume();
    this.onHeldResume?.();
  }
}
