import type { PointSubError } from "../errors/error.ts";
import type { CallContext } from "../router/types.ts";
import type { IncomingStream } from "../stream/incoming.ts";
import type { Connection } from "./connection.ts";
import type { CallStartMessage } from "./diagnostics.ts";
import type { IncomingRequest, RequestContext } from "./types.ts";

const decoder = new TextDecoder();

/**
 * Server-side state of one request or stream being handled; also the
 * handler's and the middleware's context (one object per call).
 */
export class ServerCall implements RequestContext, IncomingRequest, CallContext {
  readonly kind: "request" | "stream";
  readonly session: Connection;
  readonly route: string;
  readonly id: number;
  readonly data: Uint8Array;
  /**
   * The request's idempotency key (a keyed REQ, docs/PROTOCOL.md §3.4.1),
   * or undefined. A copy: it stays valid after the call.
   */
  readonly idempotencyKey: Uint8Array | undefined;
  /** The incoming stream, for a stream call. */
  stream: IncomingStream | undefined = undefined;
  done = false;
  /** Bytes of the connection's memory budget this call holds until its handler finishes. */
  charged = 0;
  /** performance.now() when a request started, for its diagnostics end message (0: not observed). */
  startedAt = 0;

  /** See {@link CallContext.receivedAt}. */
  get receivedAt(): number {
    return this.startedAt;
  }
  /** Diagnostics: the handler of its route was called (not refused before: no route, middleware, budget). */
  routed = false;
  private ac: AbortController | undefined;
  private abortReason: PointSubError | undefined;
  private state_: Record<string, unknown> | undefined;
  constructor(
    kind: "request" | "stream",
    session: Connection,
    route: string,
    id: number,
    data: Uint8Array,
    idempotencyKey?: Uint8Array,
  ) {
    this.kind = kind;
    this.session = session;
    this.route = route;
    this.id = id;
    this.data = data;
    this.idempotencyKey = idempotencyKey;
  }
  text(): string {
    return decoder.decode(this.data);
  }
  get principal(): unknown {
    return this.session.principal;
  }
  get state(): Record<string, unknown> {
    this.state_ ??= {};
    return this.state_;
  }
  /** Created on first use: most handlers never look. */
  get signal(): AbortSignal {
    if (this.ac === undefined) {
      this.ac = new AbortController();
      if (this.abortReason !== undefined) this.ac.abort(this.abortReason);
    }
    return this.ac.signal;
  }
  abort(reason: PointSubError): void {
    if (this.abortReason !== undefined) return;
    this.abortReason = reason;
    this.ac?.abort(reason);
  }
}

/** Client-side state of one request. */
export interface PendingCall {
  id: number;
  /** REQ, or STREAM for a stream awaiting its answer. */
  type: number;
  route: string;
  head: Uint8Array;
  /** Extra flags of the REQ START frame: `Flag.KEYED` when `head` ends with an idempotency key (absent: none). */
  startFlags?: number;
  data: Uint8Array;
  resolve: (data: Uint8Array) => void;
  reject: (err: PointSubError) => void;
  /** Date.now() after which the call times out; 0 = never (or not stamped yet: see `Caller.stampDeadlines`). */
  deadline: number;
  timeoutMs: number;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** The caller has its answer (or error); a late response is dropped. */
  settled: boolean;
  /** Written to the wire (so a cancel must be sent as a CANCEL frame). */
  started: boolean;
  /** Diagnostics: performance.now() when the call was made, if observed. */
  startedAt?: number;
  /** Diagnostics: what was published on `pointsub:call:start` for it. */
  startMessage?: CallStartMessage;
}
