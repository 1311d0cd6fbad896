/**
 * What the caller does with a request whose body or answer goes in frames
 * (those load the stream engine, so none of this is in a page's first
 * load): whether a request timed by default (no `timeoutMs` of its own) is
 * still moving when its deadline comes (`Caller.sweepDeadlines` then gives
 * it another `requestTimeoutMs`), and stopping a body the peer answered
 * before it ended.
 */
import { T_REQ } from "../codec/frame.ts";
import { PointSubError } from "../errors/error.ts";
import type { Caller } from "./caller.ts";
import type { PendingCall } from "./calls.ts";

/**
 * Bytes a second a request timed by default must move (its body out, its
 * answer in) to have its deadline set again: as the receiver's own floor
 * for a message it assembles (`minProgressBytesPerSecond`, 1 KiB/s).
 */
const PROGRESS_FLOOR = 1024;
const REQ = T_REQ;

/**
 * What a request had moved at its last deadline: its body's bytes handed
 * over and its answer's received, where the stream was once all of its
 * body was handed over (-1: not yet), and when it started.
 */
interface Seen {
  body: number;
  got: number;
  end: number;
  start: number;
}

const seen = new WeakMap<PendingCall, Seen>();

/** Where a request body of several frames ended in the byte stream, by its data (set by `bulk-pump.ts`). */
export const bodyEnds: WeakMap<Uint8Array, number> = new WeakMap();

/** The answer arriving in frames to a call, by call (set by `assembly.ts`): its bytes so far. */
export const answering = new WeakMap<PendingCall, { filled: number }>();

/**
 * Whether request `call`, timed by default, moved lately (then its
 * deadline is set `timeoutMs` from now): bytes of its
 * body handed to the transport (a large body goes out in frames as
 * the link takes them) or of its answer received since its
 * deadline was last set, at least {@link PROGRESS_FLOOR} bytes a second over
 * that time; or, its body still queued (waiting its turn behind other
 * bulk, or for the peer's credit) or handed over but not all acknowledged
 * by the pacer's probes, an acknowledgement in the last quarter of that
 * time (the transport's buffers hold much of a body on a slow link: it
 * arrives as they drain) while the body could still be arriving at the
 * floor's rate (a body the peer gives no credit to is also bounded by the
 * writer's stall checks, `progressTimeoutMs`).
 * So `requestTimeoutMs` counts from when body and answer stopped moving: a
 * large request or answer over a slow link (5 MB at 100 KB/s) is not cut
 * while it moves, and one delivered at once to a slow handler, a small one
 * behind another transfer's bulk, or one that stalls or trickles still
 * times out.
 */
export function movedLately(caller: Caller, call: PendingCall): boolean {
  const now = performance.now();
  if (!call.started || !moved(caller, call, now)) return false;
  call.deadline = now + call.timeoutMs;
  return true;
}

function moved(caller: Caller, call: PendingCall, now: number): boolean {
  // A request (not a stream) whose deadline is the default: no timeoutMs of its own (one given that equals
  // the default, 30 s for a small body, was taken for it and given more time).
  if (call.type !== REQ || call.ms !== undefined) return false;
  const writer = caller.outbox.writer;
  const got = answering.get(call)?.filled ?? 0;
  // Bytes of its body handed to the transport so far; -1 when not queued (one frame, or all handed over).
  let sent = -1;
  for (const m of writer.bulkState?.list ?? []) if (m.id === call.id && m.type === REQ) sent = m.offset;
  const body = sent < 0 ? call.data.length : sent;
  const was = seen.get(call);
  // Where the body ended: recorded for one of several frames; else where the stream is once all of it was
  // handed over (an upper bound: another transfer's bytes after it would make their acknowledgements its own).
  const end =
    sent >= 0 ? -1 : (bodyEnds.get(call.data) ?? (was !== undefined && was.end >= 0 ? was.end : writer.position));
  // When it started: its first deadline less its timeout (read before any deadline was set again).
  const start = was?.start ?? call.deadline - call.timeoutMs;
  seen.set(call, { body, got, end, start });
  const period = call.timeoutMs + now - call.deadline;
  // Handed over since (before the first deadline: since the start, if still being handed over), and received.
  const moved = (was === undefined ? (sent >= 0 ? body : 0) : body - was.body) + (got - (was?.got ?? 0));
  if (moved > 0 && moved >= (period * PROGRESS_FLOOR) / 1000) return true;
  // Acknowledgements while the body is still queued, or up to where it ended (recorded for a body of
  // several frames; for one frame, where the stream was when it was seen handed over, so later bulk may
  // follow it there) — counted only while the body could still be arriving at the floor's rate
  // (another transfer's acknowledgements are not a small request's).
  const pacer = writer.pacer;
  return (
    pacer !== undefined &&
    (end < 0 || pacer.acked < end) &&
    pacer.ackedAt >= performance.now() - period / 4 &&
    now - start < (call.data.length * 1000) / PROGRESS_FLOOR
  );
}

/**
 * The answer to `call` came while its body was still being sent (a
 * responder may answer early, docs/PROTOCOL.md §3.4): stops sending it and,
 * when its START went out, ends this side's direction with CANCEL(id, 4004).
 * Only a body of several frames is still being sent then, and those load
 * the stream engine: here, not in a page's first load.
 */
export function stopBody(caller: Caller, call: PendingCall): void {
  const err = new PointSubError("ERR_CANCELLED", `the peer answered the request to ${call.route} early`);
  if (caller.outbox.writer.removeChunked(REQ, call.id, err) === "started")
    caller.outbox.sendCancel(call.id, "ERR_CANCELLED");
}
