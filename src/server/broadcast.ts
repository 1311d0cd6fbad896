/**
 * One message to many sessions. The payload is encoded to bytes once and,
 * when it is large enough for the writer to send it without copying
 * (16 KiB and more, up to the single-frame size), checksummed once: every
 * session's frame points at the same bytes and combines that CRC32C with
 * its own few header bytes. Only the frame header (stream id, length — at
 * most 11 bytes) is per session, because stream ids are per connection.
 *
 * A session whose queue already holds more than `highWaterMark` bytes the
 * transport has not taken is a slow reader: by the `slowSessions` policy the
 * message is skipped for it (default) or it is disconnected with
 * ERR_SLOW_PEER — never queued without bound (at most the mark plus one
 * message). One failing session never
 * stops the others; each failure is listed in the result. The broadcast
 * never waits for a session: it resolves once every session wrote or
 * queued the message.
 */
import type { Connection } from "../connection/connection.ts";
import { describeThrown } from "../errors/describe.ts";
import { PointSubError } from "../errors/error.ts";

/** Options of `Server.broadcast`. */
export interface BroadcastOptions {
  /**
   * Only sessions for which this returns true receive the message. One it
   * throws for does not, and is listed in `failed` with ERR_HANDLER.
   * Default: every session.
   */
  filter?: (session: Connection) => boolean;
  /**
   * A session with more than this many bytes queued (`session.bufferedAmount`)
   * is a slow reader: the message is not queued for it, so it holds at most
   * this plus one message. Default 1 MiB.
   */
  highWaterMark?: number;
  /**
   * What happens to a session over `highWaterMark`: `"skip"` (default — it
   * misses this message and stays connected) or `"disconnect"` (closed with
   * ERR_SLOW_PEER). Either way it is listed in `failed` with ERR_SLOW_PEER.
   */
  slowSessions?: "skip" | "disconnect";
}

/** One session a broadcast did not reach. */
export interface BroadcastFailure {
  /** The session's id. */
  readonly session: string;
  /** ERR_SLOW_PEER (over the high-water mark), ERR_CONNECTION_CLOSED, ERR_MESSAGE_TOO_LARGE, ERR_HANDLER (the filter threw), … */
  readonly error: PointSubError;
}

/** What `Server.broadcast` did. */
export interface BroadcastResult {
  /** Sessions whose transport took the message at once. */
  sent: number;
  /**
   * Sessions that were busy and queued it behind what they already had
   * (under the high-water mark): it goes out as they drain, or is lost with
   * the session if it closes first.
   */
  queued: number;
  /** Sessions it was not handed to, and why. */
  failed: BroadcastFailure[];
}

/** Default {@link BroadcastOptions.highWaterMark}. */
export const BROADCAST_HIGH_WATER = 1024 * 1024;

/**
 * Sends `data` (with its CRC32C `crc`, or -1) to every session of
 * `sessions` that passes the filter. Never waits for a session: a busy one
 * queues the message (bounded by the high-water mark), so one stalled
 * reader cannot hold up the broadcast or the next one.
 */
export function broadcastTo(
  sessions: Iterable<Connection>,
  data: Uint8Array,
  crc: number,
  options: BroadcastOptions,
): BroadcastResult {
  const filter = options.filter;
  const high = options.highWaterMark ?? BROADCAST_HIGH_WATER;
  const disconnect = options.slowSessions === "disconnect";
  const result: BroadcastResult = { sent: 0, queued: 0, failed: [] };
  for (const s of sessions) {
    if (filter !== undefined) {
      // A filter that throws fails that session alone: before, the throw ended the broadcast midway, the
      // sessions after it got nothing, and the caller learnt neither which had it nor the result.
      let pass: boolean;
      try {
        pass = filter(s);
      } catch (err) {
        const error = new PointSubError(
          "ERR_HANDLER",
          `broadcast filter threw for session ${s.id}: ${describeThrown(err)}`,
          { cause: err },
        );
        result.failed.push({ session: s.id, error });
        continue;
      }
      if (!pass) continue;
    }
    const buffered = s.bufferedAmount;
    // More than the high-water mark already queued: a slow reader. This message is not counted:
    // with it, a fast reader holding the tail of the last message (pacing keeps it in the queue
    // for some ms) was skipped, or disconnected, by any message over half the mark.
    if (buffered > high) {
      const error = new PointSubError(
        "ERR_SLOW_PEER",
        `session ${s.id} has ${buffered} bytes queued (highWaterMark ${high}): ${disconnect ? "disconnected" : "skipped"}`,
      );
      result.failed.push({ session: s.id, error });
      if (disconnect) s.terminate(error);
      continue;
    }
    const r = s.sendShared(data, crc);
    if (r === undefined) result.sent++;
    else if (r instanceof PointSubError) result.failed.push({ session: s.id, error: r });
    else result.queued++;
  }
  return result;
}
