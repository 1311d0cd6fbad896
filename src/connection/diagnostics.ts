/**
 * What a connection publishes on its runtime's diagnostics channels
 * (docs/OBSERVABILITY.md): the channel names, the message of each, and the
 * per-connection publisher the engine's parts share. Every publish is
 * guarded by `hasSubscribers`: a channel nobody listens to costs one
 * property read, no message object, no clock read.
 */
import type { ErrorCode } from "../errors/codes.ts";
import type { PointSubError } from "../errors/error.ts";
import type { Diagnostics, DiagnosticsChannel } from "../runtime/runtime.ts";
import type { PendingCall } from "./calls.ts";
import type { Connection } from "./connection.ts";
import type { SizeClass } from "./size-class.ts";

/** Every channel pointsub publishes to, by purpose. */
export const CHANNELS = {
  connectionOpen: "pointsub:connection:open",
  connectionClose: "pointsub:connection:close",
  handshakeError: "pointsub:handshake:error",
  requestStart: "pointsub:request:start",
  requestEnd: "pointsub:request:end",
  callStart: "pointsub:call:start",
  callEnd: "pointsub:call:end",
  message: "pointsub:message",
  streamStart: "pointsub:stream:start",
  streamProgress: "pointsub:stream:progress",
  streamEnd: "pointsub:stream:end",
  error: "pointsub:error",
  refused: "pointsub:refused",
} as const;

/** A channel name. */
export type ChannelName = (typeof CHANNELS)[keyof typeof CHANNELS];

/** Which side of the connection this side is: it dialled (`client`) or accepted (`server`). */
export type Role = "client" | "server";
/** `in`: the peer sent it; `out`: this side sent it. */
export type Direction = "in" | "out";

/** `pointsub:connection:open`: the handshake (and authentication) completed. */
export interface ConnectionOpenMessage {
  connection: Connection;
  role: Role;
}

/** `pointsub:connection:close`: an open connection closed (`error` undefined: gracefully). */
export interface ConnectionCloseMessage {
  connection: Connection;
  role: Role;
  error: PointSubError | undefined;
  /** Milliseconds since it opened. */
  durationMs: number;
}

/** `pointsub:handshake:error`: a connection closed before its handshake completed. */
export interface HandshakeErrorMessage {
  /**
   * The connection; undefined on a server for a client it gave up before
   * the client's HELLO arrived (no session is built before it: see
   * `remoteUrl`).
   */
  connection: Connection | undefined;
  /** The peer's address, when `connection` is undefined. */
  remoteUrl?: string;
  role: Role;
  error: PointSubError;
}

/** `pointsub:request:start`: a complete request from the peer is handed to its route. */
export interface RequestStartMessage {
  connection: Connection;
  /** Stream id of the request (unique among those open on the connection). */
  id: number;
  /** As the peer sent it: unbounded, peer-chosen text. */
  route: string;
  /** Request body bytes. */
  bytes: number;
}

/** `pointsub:request:end`: the request was answered, refused or abandoned. */
export interface RequestEndMessage {
  connection: Connection;
  id: number;
  route: string;
  /** `ok`, or `error` with `code`. */
  status: "ok" | "error";
  /** The error code of an error response (or ERR_CANCELLED, ERR_CONNECTION_CLOSED...); undefined when ok. */
  code: ErrorCode | undefined;
  /**
   * Milliseconds from the arrival of the request's last bytes to its answer
   * being handed to the writer; -1 when nobody subscribed to request:start
   * or end when it started.
   */
  durationMs: number;
  /** Request body bytes. */
  bytesIn: number;
  /** Response body bytes (0 for an error). */
  bytesOut: number;
  /**
   * The route's handler was called. False when the request was refused
   * before: no such route, a middleware (authorization, rate limit), no
   * memory budget. `route` is then any text the peer sent.
   */
  routed: boolean;
}

/** `pointsub:call:start`: this side calls a route of the peer (`conn.request`). */
export interface CallStartMessage {
  connection: Connection;
  route: string;
  /** Request body bytes. */
  bytes: number;
}

/** `pointsub:call:end`: that call settled: answered, failed, timed out, aborted, or lost with the connection. */
export interface CallEndMessage {
  connection: Connection;
  route: string;
  /** The object published on `pointsub:call:start` for this call (undefined when nobody listened there): pairs the two. */
  start: CallStartMessage | undefined;
  status: "ok" | "error";
  code: ErrorCode | undefined;
  /** Milliseconds from `conn.request` to the answer (queueing for the peer's maxConcurrentRequests included); -1 when not observed from the start. */
  durationMs: number;
  /** Request body bytes. */
  bytesOut: number;
  /** Response body bytes (0 for an error). */
  bytesIn: number;
}

/** `pointsub:message`: one message, request body or response body sent or received. */
export interface MessageMessage {
  connection: Connection;
  direction: Direction;
  /** Data bytes. */
  size: number;
  sizeClass: SizeClass;
}

/** `pointsub:stream:start`: a stream began (this side's: its first frame is queued; the peer's: its START arrived). */
export interface StreamStartMessage {
  connection: Connection;
  direction: Direction;
  id: number;
  route: string;
  /** Content bytes in all, when the sender declared them. */
  total: number | undefined;
  /** Where a resumed transfer starts (0 otherwise). */
  offset: number;
}

/** `pointsub:stream:progress`: at most every {@link PROGRESS_INTERVAL_MS} per stream while bytes move. */
export interface StreamProgressMessage {
  connection: Connection;
  direction: Direction;
  id: number;
  route: string;
  /** Content bytes transferred so far (`out`: acknowledged by the receiver; `in`: read by the handler); offset not included. */
  bytes: number;
  /** Bytes since the previous progress message of this stream (sum over progress and end = `bytes` at the end). */
  delta: number;
  total: number | undefined;
}

/** `pointsub:stream:end`: the stream is over in both directions, or failed. */
export interface StreamEndMessage {
  connection: Connection;
  direction: Direction;
  id: number;
  route: string;
  status: "ok" | "error";
  code: ErrorCode | undefined;
  bytes: number;
  delta: number;
  durationMs: number;
}

/** `pointsub:error`: an error counted in the connection's stats (`conn.stats().errors`). */
export interface ErrorMessage {
  connection: Connection;
  code: ErrorCode;
}

/**
 * `pointsub:refused`: a server refused a connection before it became a
 * session (published by the server, not by a connection). Requests the
 * rate limiter refuses are `pointsub:request:end` with ERR_RATE_LIMITED.
 */
export interface RefusedMessage {
  /** The session, when the refusal happened on one. */
  connection: Connection | undefined;
  /** The peer's address, when known (a transport that does not say who connects before its own handshake gives none). */
  remoteUrl: string | undefined;
  /** `connection-limit`, `address-limit`, `closing`. */
  reason: string;
  code: ErrorCode;
}

/** Minimum time between two progress messages of one stream. */
export const PROGRESS_INTERVAL_MS = 250;

/** The channels of one {@link Diagnostics}, looked up once. */
export class Channels {
  readonly connectionOpen: DiagnosticsChannel;
  readonly connectionClose: DiagnosticsChannel;
  readonly handshakeError: DiagnosticsChannel;
  readonly requestStart: DiagnosticsChannel;
  readonly requestEnd: DiagnosticsChannel;
  readonly callStart: DiagnosticsChannel;
  readonly callEnd: DiagnosticsChannel;
  readonly message: DiagnosticsChannel;
  readonly streamStart: DiagnosticsChannel;
  readonly streamProgress: DiagnosticsChannel;
  readonly streamEnd: DiagnosticsChannel;
  readonly error: DiagnosticsChannel;
  readonly refused: DiagnosticsChannel;
  constructor(d: Diagnostics) {
    this.connectionOpen = d.channel(CHANNELS.connectionOpen);
    this.connectionClose = d.channel(CHANNELS.connectionClose);
    this.handshakeError = d.channel(CHANNELS.handshakeError);
    this.requestStart = d.channel(CHANNELS.requestStart);
    this.requestEnd = d.channel(CHANNELS.requestEnd);
    this.callStart = d.channel(CHANNELS.callStart);
    this.callEnd = d.channel(CHANNELS.callEnd);
    this.message = d.channel(CHANNELS.message);
    this.streamStart = d.channel(CHANNELS.streamStart);
    this.streamProgress = d.channel(CHANNELS.streamProgress);
    this.streamEnd = d.channel(CHANNELS.streamEnd);
    this.error = d.channel(CHANNELS.error);
    this.refused = d.channel(CHANNELS.refused);
  }
}

const cache = new WeakMap<Diagnostics, Channels>();

/** The channels of `d`, created on first use and kept as long as `d` (once per runtime). */
export function channelsOf(d: Diagnostics): Channels {
  let c = cache.get(d);
  if (c === undefined) {
    c = new Channels(d);
    cache.set(d, c);
  }
  return c;
}

import type { StreamTrace } from "./publisher.ts";

/**
 * One connection's publisher: the channels plus the connection and its
 * role. Callers test the channel's `hasSubscribers` before calling a
 * `publish…` method, so nothing is built when nobody listens.
 */
/** See {@link ConnectionDiagnostics.inputAt}. */
let inputAt = 0;

/** The origin of {@link ConnectionDiagnostics}' `openedAt` times. */
const EPOCH = performance.now();

/** Whole ms since {@link EPOCH}: `| 0` while in int32 range (a difference of doubles is a box even when whole). */
function sinceEpoch(): number {
  const n = Math.trunc(performance.now() - EPOCH);
  return n <= 0x7fffffff ? n | 0 : n;
}

export class ConnectionDiagnostics {
  readonly ch: Channels;
  readonly connection: Connection;
  readonly role: Role;
  /**
   * performance.now() when the transport chunk being processed arrived (set
   * by the connection for each chunk): the start time of the requests it
   * completes, so timing a request costs one clock read, at its end. One
   * time for every connection (chunks are processed one at a time): a
   * connection keeps no field (and number box) for it. Frames a connection
   * held and processes later (while its stream engine loaded) read the time
   * of the chunk processed last.
   */
  get inputAt(): number {
    return inputAt;
  }
  set inputAt(t: number) {
    inputAt = t;
  }
  /**
   * When the handshake completed: `performance.now()` ms after {@link EPOCH}, a small integer (no number
   * box per connection) for a process's first ~24 days. Not a `Date.now()` one: durationMs is a duration,
   * and the wall clock may be set back or ahead meanwhile.
   */
  private openedAt = 0;

  constructor(d: Diagnostics, connection: Connection, role: Role) {
    this.ch = channelsOf(d);
    this.connection = connection;
    this.role = role;
  }

  /** The handshake completed. */
  opened(): void {
    this.openedAt = sinceEpoch();
    const c = this.ch.connectionOpen;
    if (c.hasSubscribers) c.publish({ connection: this.connection, role: this.role } satisfies ConnectionOpenMessage);
  }

  /** The connection closed; `opened` whether its handshake had completed. */
  closed(opened: boolean, error: PointSubError | undefined, failure: PointSubError): void {
    if (opened) {
      const c = this.ch.connectionClose;
      if (!c.hasSubscribers) return;
      c.publish({
        connection: this.connection,
        role: this.role,
        error,
        durationMs: sinceEpoch() - this.openedAt,
      } satisfies ConnectionCloseMessage);
      return;
    }
    const c = this.ch.handshakeError;
    if (c.hasSubscribers) {
      c.publish({ connection: this.connection, role: this.role, error: failure } satisfies HandshakeErrorMessage);
    }
  }

  /** One message sent or received, of `sizeClass` (guard: `ch.message.hasSubscribers`). */
  publishMessage(direction: Direction, size: number, sizeClass: SizeClass): void {
    this.ch.message.publish({
      connection: this.connection,
      direction,
      size,
      sizeClass,
    } satisfies MessageMessage);
  }

  /** An error counted (guard: `ch.error.hasSubscribers`). */
  publishError(code: ErrorCode): void {
    this.ch.error.publish({ connection: this.connection, code } satisfies ErrorMessage);
  }

  /**
   * A request of the peer starts: returns its start time for
   * {@link requestEnd} (0 when nobody listens to either channel): when the
   * chunk that completed it arrived.
   */
  requestStart(id: number, route: string, bytes: number): number {
    const c = this.ch.requestStart;
    if (c.hasSubscribers) {
      c.publish({ connection: this.connection, id, route, bytes } satisfies RequestStartMessage);
    } else if (!this.ch.requestEnd.hasSubscribers) return 0;
    return this.inputAt;
  }

  /** A request of the peer ended (`code` undefined: answered ok). */
  requestEnd(
    id: number,
    route: string,
    t0: number,
    code: ErrorCode | undefined,
    bytesIn: number,
    bytesOut: number,
    routed: boolean,
  ): void {
    const c = this.ch.requestEnd;
    if (!c.hasSubscribers) return;
    c.publish({
      connection: this.connection,
      id,
      route,
      status: code === undefined ? "ok" : "error",
      code,
      durationMs: t0 === 0 ? -1 : performance.now() - t0,
      bytesIn,
      bytesOut,
      routed,
    } satisfies RequestEndMessage);
  }

  /** This side starts a call (`conn.request`): its start time and message go on the call. */
  callStart(call: PendingCall): void {
    const c = this.ch.callStart;
    if (c.hasSubscribers) {
      const m: CallStartMessage = { connection: this.connection, route: call.route, bytes: call.data.length };
      call.startMessage = m;
      c.publish(m);
    } else if (!this.ch.callEnd.hasSubscribers) return;
    call.startedAt = performance.now();
  }

  /** The call settled (guard: `ch.callEnd.hasSubscribers`). */
  publishCallEnd(call: PendingCall, data: Uint8Array | undefined, err: PointSubError | undefined): void {
    const t0 = call.startedAt ?? 0;
    this.ch.callEnd.publish({
      connection: this.connection,
      route: call.route,
      start: call.startMessage,
      status: err === undefined ? "ok" : "error",
      code: err?.code,
      durationMs: t0 === 0 ? -1 : performance.now() - t0,
      bytesOut: call.data.length,
      bytesIn: data?.length ?? 0,
    } satisfies CallEndMessage);
  }

  /** A stream starts: records its start in `trace`. */
  streamStart(
    trace: StreamTrace,
    direction: Direction,
    id: number,
    route: string,
    total: number | undefined,
    offset: number,
  ): void {
    const c = this.ch.streamStart;
    const e = this.ch.streamEnd;
    if (!c.hasSubscribers && !e.hasSubscribers && !this.ch.streamProgress.hasSubscribers) return;
    trace.t0 = performance.now();
    trace.lastProgress = performance.now();
    if (c.hasSubscribers) {
      c.publish({ connection: this.connection, direction, id, route, total, offset } satisfies StreamStartMessage);
    }
  }

  /** `bytes` of the stream moved: a progress message when the last is old enough. */
  streamProgress(
    trace: StreamTrace,
    direction: Direction,
    id: number,
    route: string,
    bytes: number,
    total: number | undefined,
  ): void {
    const c = this.ch.streamProgress;
    if (!c.hasSubscribers) return;
    const now = performance.now();
    if (now - trace.lastProgress < PROGRESS_INTERVAL_MS) return;
    trace.lastProgress = now;
    const delta = bytes - trace.reported;
    trace.reported = bytes;
    c.publish({
      connection: this.connection,
      direction,
      id,
      route,
      bytes,
      delta,
      total,
    } satisfies StreamProgressMessage);
  }

  /** The stream ended (`code` undefined: ok). */
  streamEnd(
    trace: StreamTrace,
    direction: Direction,
    id: number,
    route: string,
    code: ErrorCode | undefined,
    bytes: number,
  ): void {
    const c = this.ch.streamEnd;
    if (!c.hasSubscribers) return;
    const delta = bytes - trace.reported;
    trace.reported = bytes;
    c.publish({
      connection: this.connection,
      direction,
      id,
      route,
      status: code === undefined ? "ok" : "error",
      code,
      bytes,
      delta,
      durationMs: trace.t0 === 0 ? -1 : performance.now() - trace.t0,
    } satisfies StreamEndMessage);
  }
}
