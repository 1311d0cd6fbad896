/**
 * What the two sides of a connection agreed on: this side's settings, the
 * peer's (from its HELLO), the stream-id parity of each side and the frame
 * sizes that follow from them. Every part of the engine reads it; only the
 * handshake writes the peer's half.
 */
import { FEATURE_AUTH, FEATURE_IDEMPOTENCY, FEATURE_RESUME, FEATURE_STREAMS, MIN_FRAME_SIZE } from "../codec/frame.ts";
import { DEFAULT_SETTINGS, KEYS, type Settings, validateSettings } from "../codec/settings.ts";
import { PointSubError } from "../errors/error.ts";
import { SINGLE_FRAME_MAX } from "./size-class.ts";
import type { ConnectionOptions } from "./types.ts";

/**
 * Largest data frame payload for the peer `p` (at most `want`): within its
 * maxFrameSize and half of each of its windows. A receiver holds back less
 * than a quarter of a window before returning credit, so a frame of half a
 * window always fits again (docs/PROTOCOL.md §3.2, §3.6).
 */
export function frameLimit(p: Settings, want: number): number {
  return Math.min(want, p.maxFrameSize, p.streamWindow >>> 1, p.connectionWindow >>> 1);
}

/**
 * The credit rule of every receive window (docs/PROTOCOL.md §3.6): consumed
 * bytes are returned once they reach a quarter of the window.
 */
export function creditDue(unacked: number, window: number): boolean {
  return unacked >= window >>> 2;
}

/**
 * @internal This side's settings from its options (a server resolves them
 * once for all sessions); `requireAuth` announces that the peer must
 * authenticate (an AUTH frame) first; `codecMask` is the runtime's
 * compression codecs (HELLO `compression`).
 */
export function resolveSettings(o: ConnectionOptions, requireAuth: boolean, codecMask: number): Settings {
  // The defaults' shape (same keys, same order); each limit the options give replaces its default (the
  // three set below never take an option's value: no boolean lands in a number's place).
  const s: Settings = { ...DEFAULT_SETTINGS };
  for (const k of KEYS) {
    if (k !== "checksum" && k !== "features" && k !== "compression") {
      (s as unknown as Record<string, unknown>)[k] = (o as Record<string, unknown>)[k] ?? s[k];
    }
  }
  s.checksum = o.checksum === false ? 0 : 1;
  s.features = FEATURE_STREAMS | FEATURE_RESUME | FEATURE_IDEMPOTENCY | (requireAuth ? FEATURE_AUTH : 0);
  s.compression = codecMask;
  s.maxAssemblyBytes = o.maxAssemblyBytes ?? s.maxMessageSize + 64 * 1024 * 1024;
  validateSettings(s, false);
  return s;
}

/**
 * @internal The memory budget's size from the options: `memoryBudget`, or
 * the runtime's default (`defaultLimit`: on Node 1 GiB or a quarter of the
 * available memory) but never less than the assembly budget plus 64 MiB, so
 * a message of the largest size configured always fits.
 */
export function budgetLimit(o: ConnectionOptions, local: Settings, defaultLimit: number): number {
  if (o.memoryBudget !== undefined) {
    if (!Number.isSafeInteger(o.memoryBudget) || o.memoryBudget < 0) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `invalid memoryBudget ${o.memoryBudget}`);
    }
    return o.memoryBudget;
  }
  return Math.max(defaultLimit, local.maxAssemblyBytes + 64 * 1024 * 1024);
}

/** Settings of both sides and what follows from them. */
export class Link {
  /** This side's settings (shared by a server's sessions; never modified). */
  declare readonly local: Settings;
  /** The peer's settings as this side sends by them: the defaults until its HELLO arrived. */
  peer: Settings = DEFAULT_SETTINGS;
  /** The peer's settings as its HELLO announced them (`peer` may send smaller frames). */
  announced: Settings = DEFAULT_SETTINGS;
  /** Largest one-way message sent as one frame (from the peer's settings). */
  msgSingleMax = 0;
  /** Low bit of the stream ids this side allocates. */
  declare readonly myParity: number;

  constructor(local: Settings, initiator: boolean) {
    this.local = local;
    this.myParity = initiator ? 1 : 0;
  }

  /** The peer's HELLO arrived; frames sent are at most `maxSendFrame` (the transport's wish) too. */
  setPeer(peer: Settings, maxSendFrame = peer.maxFrameSize): void {
    this.announced = peer;
    const cap = Math.max(MIN_FRAME_SIZE, maxSendFrame);
    this.peer = cap < peer.maxFrameSize ? { ...peer, maxFrameSize: cap } : peer;
    this.msgSingleMax = frameLimit(peer, SINGLE_FRAME_MAX);
  }

  /** Whether `id` is one this side allocates. */
  isMine(id: number): boolean {
    return (id & 1) === this.myParity;
  }

  /** Throws ERR_MESSAGE_TOO_LARGE when the peer declares a message over this side's maxMessageSize. */
  checkIncomingSize(total: number): void {
    if (total > this.local.maxMessageSize) {
      throw PointSubError.fromPeer(
        "ERR_MESSAGE_TOO_LARGE",
        `peer declared a message of ${total} bytes, over maxMessageSize ${this.local.maxMessageSize}`,
      );
    }
  }
}
