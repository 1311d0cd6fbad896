/**
 * A server's events as an async iterable (the seeds' event stream): every
 * `session`, `sessionClose`, `message`, `error` and `reject` event as one
 * typed object, in order. The buffer between the server and a slow reader
 * is bounded by count and by the bytes of the messages it holds: past
 * `bufferSize` events or `bufferBytes` bytes the oldest are dropped and the
 * next event read is an `overflow` saying how many — the server never waits
 * for an observer and never holds more than that for it.
 */
import type { Connection } from "../connection/connection.ts";
import type { Message } from "../connection/types.ts";
import { PointSubError } from "../errors/error.ts";
import { Queue } from "../util/queue.ts";

/** One event of {@link ServerEventStream}. */
export type ServerEvent =
  | { readonly type: "session"; readonly session: Connection }
  | {
      readonly type: "sessionClose";
      readonly session: Connection;
      readonly reason: string;
      readonly error: PointSubError | undefined;
    }
  | { readonly type: "message"; readonly message: Message; readonly session: Connection }
  | { readonly type: "error"; readonly error: PointSubError; readonly session: Connection }
  | { readonly type: "reject"; readonly error: PointSubError }
  /** `dropped` events were lost because the reader fell more than `bufferSize` behind. */
  | { readonly type: "overflow"; readonly dropped: number };

/** The event types a stream can be asked for. */
const EVENT_TYPES: ReadonlySet<string> = new Set<ServerEvent["type"]>([
  "session",
  "sessionClose",
  "message",
  "error",
  "reject",
  "overflow",
]);

/** Options of `Server.events()`. */
export interface ServerEventOptions {
  /** Most events held for a slow reader; older ones are dropped past it. Default 1024. */
  bufferSize?: number;
  /**
   * Most message bytes held for a slow reader (the data of `message` events
   * keeps them alive); older events are dropped past it. Default 16 MiB.
   */
  bufferBytes?: number;
  /** Which event types to receive (another name: ERR_INVALID_ARGUMENT). Default all. */
  types?: readonly ServerEvent["type"][];
}

/** Where a stream registers with its server. */
export interface EventSource {
  add(stream: ServerEventStream): void;
  delete(stream: ServerEventStream): void;
  /** A `next()` waits on `stream` (`true`) or no longer does. */
  waiting(stream: ServerEventStream, waits: boolean): void;
}

/**
 * A server's event streams. Each is held weakly while no `next()` waits on
 * it: one the application dropped without `return()` (never read, or a loop
 * abandoned midway) is collected and unsubscribed — before, the server held
 * it for its life, with up to `bufferBytes` of messages and a push per
 * event. One a `next()` waits on is held: the `for await` loop waiting there
 * may be referenced by nothing else.
 */
export class Subscribers implements EventSource {
  private readonly refs = new Set<WeakRef<ServerEventStream>>();
  private readonly refOf = new WeakMap<ServerEventStream, WeakRef<ServerEventStream>>();
  private readonly waited = new Set<ServerEventStream>();

  /** Streams subscribed (some perhaps collected: dropped at the next {@link publish}). */
  get size(): number {
    return this.refs.size;
  }

  add(stream: ServerEventStream): void {
    const ref = new WeakRef(stream);
    this.refs.add(ref);
    this.refOf.set(stream, ref);
  }

  delete(stream: ServerEventStream): void {
    const ref = this.refOf.get(stream);
    if (ref !== undefined) this.refs.delete(ref);
    this.waited.delete(stream);
  }

  waiting(stream: ServerEventStream, waits: boolean): void {
    if (waits) this.waited.add(stream);
    else this.waited.delete(stream);
  }

  /** Delivers `e` to every stream still there. */
  publish(e: ServerEvent): void {
    for (const ref of this.refs) {
      const st = ref.deref();
      if (st === undefined) this.refs.delete(ref);
      else st.push(e);
    }
  }

  /** Ends every stream (the server closed). */
  endAll(): void {
    for (const ref of [...this.refs]) ref.deref()?.end();
    this.refs.clear();
    this.waited.clear();
  }
}

/** An async iterable of a server's events; `return()` (or `break` in `for await`) unsubscribes. */
export class ServerEventStream implements AsyncIterableIterator<ServerEvent> {
  private readonly buffer = new Queue<ServerEvent>();
  private readonly bufferSize: number;
  private readonly bufferBytes: number;
  private heldBytes = 0;
  private readonly types: ReadonlySet<string> | undefined;
  private dropped = 0;
  private waiter: ((r: IteratorResult<ServerEvent>) => void) | undefined;
  private done = false;
  private readonly source: EventSource;

  constructor(source: EventSource, options: ServerEventOptions = {}) {
    const size = options.bufferSize ?? 1024;
    if (!Number.isSafeInteger(size) || size < 1) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `bufferSize must be an integer >= 1 (got ${size})`);
    }
    this.bufferSize = size;
    const bytes = options.bufferBytes ?? 16 * 1024 * 1024;
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `bufferBytes must be an integer >= 0 (got ${bytes})`);
    }
    this.bufferBytes = bytes;
    const types: unknown = options.types;
    // A misspelt type ("sesion") or a lone string matched nothing: a stream that never yielded an event.
    if (
      types !== undefined &&
      (!Array.isArray(types) || types.some((t) => typeof t !== "string" || !EVENT_TYPES.has(t)))
    ) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `types must be a list of ${[...EVENT_TYPES].join(", ")} (got ${Array.isArray(types) ? `[${types.join(", ")}]` : String(types)})`,
      );
    }
    this.types = options.types === undefined ? undefined : new Set(options.types);
    this.source = source;
    source.add(this);
  }

  /** @internal The server delivers an event. */
  push(e: ServerEvent): void {
    if (this.done || (this.types !== undefined && !this.types.has(e.type))) return;
    const w = this.waiter;
    if (w !== undefined && this.buffer.length === 0 && this.dropped === 0) {
      this.waiter = undefined;
      this.source.waiting(this, false);
      w({ value: e, done: false });
      return;
    }
    const n = bytesOf(e);
    if (n > this.bufferBytes) {
      // Larger than the whole buffer: dropped itself, and only itself (before, the events held were
      // dropped first to make room it could never have: one large message emptied the buffer).
      this.dropped++;
      return;
    }
    while (
      this.buffer.length !== 0 &&
      (this.buffer.length >= this.bufferSize || this.heldBytes + n > this.bufferBytes)
    ) {
      this.heldBytes -= bytesOf(this.buffer.shift() as ServerEvent);
      this.dropped++;
    }
    this.heldBytes += n;
    this.buffer.push(e);
  }

  next(): Promise<IteratorResult<ServerEvent>> {
    if (this.dropped !== 0) {
      const dropped = this.dropped;
      this.dropped = 0;
      return Promise.resolve({ value: { type: "overflow", dropped }, done: false });
    }
    const e = this.buffer.shift();
    if (e !== undefined) {
      this.heldBytes -= bytesOf(e);
      return Promise.resolve({ value: e, done: false });
    }
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    if (this.waiter !== undefined) {
      return Promise.reject(new PointSubError("ERR_INVALID_ARGUMENT", "next() called before the previous one settled"));
    }
    this.source.waiting(this, true);
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  /** Stops the stream: unsubscribes and drops what is buffered. */
  return(): Promise<IteratorResult<ServerEvent>> {
    this.end();
    this.buffer.drain();
    this.heldBytes = 0;
    this.dropped = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Ends the stream after what is buffered (the server closed). */
  end(): void {
    if (this.done) return;
    this.done = true;
    this.source.delete(this);
    const w = this.waiter;
    this.waiter = undefined;
    w?.({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** The bytes an event keeps alive (a message's data). */
function bytesOf(e: ServerEvent): number {
  return e.type === "message" ? e.message.data.length : 0;
}
