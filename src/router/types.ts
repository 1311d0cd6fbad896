import type { ResumePoint } from "../codec/resume.ts";
import type { Connection } from "../connection/connection.ts";
import type { HandlerResult } from "../connection/types.ts";
import type { IncomingStream } from "../stream/incoming.ts";
import type { StreamHandler } from "../stream/types.ts";

export type { ResumePoint } from "../codec/resume.ts";
export type { Handler, HandlerResult } from "../connection/types.ts";

/** Who asks a resume query: the stream route it is about and the session asking (its `principal`). */
export interface ResumeContext {
  route: string;
  session: Connection;
}

/**
 * Answers a resume query for `transferId` (docs/PROTOCOL.md §3.11): the
 * content bytes held (`offset`, an integer from 0 to 2^53 - 1) and their
 * CRC32C (`crc`, a 32-bit integer, signed or not; not looked at when
 * `offset` is 0). Anything else answers the query with ERR_HANDLER.
 */
export type ResumeLookup = (transferId: string, ctx: ResumeContext) => ResumePoint | Promise<ResumePoint>;

/** A stream route: its handler and, when it can resume, where a transfer stands. */
export interface StreamRoute {
  handler: StreamHandler;
  resume?: ResumeLookup;
}

/** What a middleware sees of one call: a request, a stream or a one-way message from the peer. */
export interface CallContext {
  /** What arrived: a request (answered with the chain's result), a stream (likewise), or a one-way message. */
  readonly kind: "request" | "stream" | "message";
  /** The route (empty for a one-way message). */
  readonly route: string;
  /** The connection it came on. */
  readonly session: Connection;
  /** What the server's `authenticate` hook returned for this session (undefined without authentication). */
  readonly principal: unknown;
  /**
   * Aborted when the caller cancels or times out, or the connection closes
   * — for a keyed request the idempotency middleware runs, its `waitMs`
   * after the connection's close (its retry will want the answer).
   */
  readonly signal: AbortSignal;
  /** The request or message bytes (empty for a stream: read `stream`). */
  readonly data: Uint8Array;
  /**
   * When the bytes that completed this call arrived: the runtime's
   * monotonic clock (`performance.now()`) read once per transport read, so
   * a middleware has a cheap "now" (a rate limiter, a latency metric); 0
   * when unknown (a stream).
   */
  readonly receivedAt: number;
  /** The incoming stream, for kind "stream". */
  readonly stream: IncomingStream | undefined;
  /**
   * The request's idempotency key, when the caller sent one
   * (`request(route, data, { idempotencyKey })`, docs/PROTOCOL.md §3.4.1);
   * undefined for unkeyed requests, streams and one-way messages. The
   * `idempotency()` middleware answers duplicates of a key from its store.
   */
  readonly idempotencyKey: Uint8Array | undefined;
  /** Free per-call storage for middleware (created on first use). */
  readonly state: Record<string, unknown>;
}

/**
 * Runs around a call. Call `next()` (at most once) to run the rest of the
 * chain and the handler, and return (or transform) what it resolves to;
 * return without calling it to answer yourself; throw a PointSubError
 * (e.g. `ERR_UNAUTHORIZED`) to refuse the call with that error. For a
 * one-way message the result is ignored and a throw drops the message.
 *
 * A one-way message whose middleware awaits before calling `next()` is
 * held until its chain settles; while a connection holds more than 64 such
 * messages (or 1 MiB of them) it stops reading from that peer — how
 * `rateLimit()` slows a flood by backpressure. So such a middleware must
 * not wait for something only that peer's later bytes bring (an answer to
 * a request it makes on the same connection): with many messages held it
 * would wait until that request times out.
 */
export type Middleware = (
  ctx: CallContext,
  next: () => Promise<HandlerResult>,
) => HandlerResult | Promise<HandlerResult>;
