import type { PointSubError } from "../errors/error.ts";
import type { CallContext } from "../router/types.ts";
import type { IncomingStream } from "../stream/incoming.ts";
import type { Connection } from "./connection.ts";
import type { CallStartMessage } from "./diagnostics.ts";
import type { IncomingRequest, RequestContext } from "./types.ts";

const decoder = new TextDecoder();

/** What few calls use (a key, a stream, a signal, state): made on first use, so a plain request's object is smaller. */
interface CallExtra {
  idempotencyKey: Uint8Array | undefined;
  stream: IncomingStream | undefined;
  ac: AbortController | undefined;
  abortReason: PointSubError | undefined;
  state: Record<string, unknown> | undefined;
  /** How long its handler runs on when the connection ends (ms; 0: aborted at once). See {@link ServerCall.outliveConnection}. */
  outlives: number;
  /** Its answer is charged past the memory budget (`dispatch.ts`: one such answer per budget at a time). */
  pastBudget: boolean;
}

/**
 * Server-side state of one request or stream being handled; also the
 * handler's and the middleware's context (one object per call). Allocated
 * for every request the peer makes: what only some calls use lives in
 * {@link CallExtra}, made when first needed (a pipelined server allocates
 * one of these per request; every field is 8 bytes of it).
 */
export class ServerCall implements RequestContext, IncomingRequest, CallContext {
  readonly kind: "request" | "stream";
  readonly session: Connection;
  readonly route: string;
  readonly id: number;
  readonly data: Uint8Array;
  done = false;
  /** Bytes of the connection's memory budget this call holds until its handler finishes. */
  charged = 0;
  /** performance.now() when a request started, for its diagnostics end message (0: not observed). */
  startedAt = 0;
  /** The handler of its route was called (not refused before: no route, middleware, budget): diagnostics, and a handler's ERR_RATE_LIMITED is its failure. */
  routed = false;
  private extra: CallExtra | undefined = undefined;
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
    if (idempotencyKey !== undefined) this.more().idempotencyKey = idempotencyKey;
  }

  private more(): CallExtra {
    this.extra ??= {
      idempotencyKey: undefined,
      stream: undefined,
      ac: undefined,
      abortReason: undefined,
      state: undefined,
      outlives: 0,
      pastBudget: false,
    };
    return this.extra;
  }

  /**
   * The request's idempotency key (a keyed REQ, docs/PROTOCOL.md §3.4.1),
   * or undefined. A copy: it stays valid after the call.
   */
  get idempotencyKey(): Uint8Array | undefined {
    return this.extra?.idempotencyKey;
  }

  /** The incoming stream, for a stream call. */
  get stream(): IncomingStream | undefined {
    return this.extra?.stream;
  }
  set stream(s: IncomingStream | undefined) {
    this.more().stream = s;
  }

  /** See {@link CallContext.receivedAt}. */
  get receivedAt(): number {
    return this.startedAt;
  }
  text(): string {
    return decoder.decode(this.data);
  }
  get principal(): unknown {
    return this.session.principal;
  }
  get state(): Record<string, unknown> {
    const m = this.more();
    m.state ??= {};
    return m.state;
  }
  /**
   * @internal The handler runs on for up to `graceMs` when the connection
   * ends (`orphans.ts`; the caller's CANCEL still aborts it at once): the
   * idempotency middleware's, for a keyed request, whose answer a retry on
   * another connection will want.
   */
  outliveConnection(graceMs: number): void {
    this.more().outlives = graceMs;
  }

  /** @internal Whether its answer is charged past the memory budget (see {@link markPastBudget}). */
  get pastBudget(): boolean {
    return this.extra?.pastBudget === true;
  }
  set pastBudget(v: boolean) {
    this.more().pastBudget = v;
  }

  /** @internal See {@link outliveConnection} (0: none). */
  get outlives(): number {
    return this.extra?.outlives ?? 0;
  }

  /** Created on first use: most handlers never look. */
  get signal(): AbortSignal {
    const m = this.more();
    if (m.ac === undefined) {
      m.ac = new AbortController();
      if (m.abortReason !== undefined) m.ac.abort(m.abortReason);
    }
    return m.ac.signal;
  }
  abort(reason: PointSubError): void {
    const m = this.more();
    if (m.abortReason !== undefined) return;
    m.abortReason = reason;
    m.ac?.abort(reason);
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
  /** `performance.now()` after which the call times out; 0 = never (or not stamped yet: see `Caller.stampDeadlines`). */
  deadline: number;
  timeoutMs: number;
  /** A request's own `timeoutMs` (undefined: timed by default, given more while it moves: `request-progress.ts`). */
  ms?: number | undefined;
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
