/**
 * Serving the peer's requests (`dispatch.ts`: routes, middleware, answers
 * and error answers, held messages) as code loaded on demand. The Node
 * runtime and the server install it up front (with the stream engine,
 * `streams.ts`), so their connections build a {@link Dispatcher} at once.
 * A connection built without it (a browser page, which mostly calls and
 * rarely serves) starts with a {@link DispatchShell}: it delivers the peer's
 * one-way messages itself (no middleware: the `message` event), and the
 * first time the peer sends a request, or the application adds a route or
 * a middleware, it loads `dispatch.ts` (with the stream engine), queues what arrives meanwhile (and
 * pauses reading from the peer until then), then hands the connection to a
 * real dispatcher and replays the queue in order.
 */
import type { PointSubError } from "../errors/error.ts";
import type { Router } from "../router/router.ts";
import { nextTurn } from "../util/next-turn.ts";
import type { MemoryBudget } from "./budget.ts";
import type { ServerCall } from "./calls.ts";
import type { Connection } from "./connection.ts";
import type { Dispatcher, MessageHook } from "./dispatch.ts";
import type { Link } from "./link.ts";
import type { Outbox } from "./outbox.ts";
import type { ReadGate } from "./read-gate.ts";
import type { Stats } from "./stats.ts";
import { loadStreamEngine, type StreamEngine, streamEngine } from "./stream-engine.ts";
import type { Message } from "./types.ts";

const decoder = new TextDecoder();

export { toBytes } from "./to-bytes.ts";

let cls: typeof Dispatcher | undefined;
let routerCls: typeof Router | undefined;
/** The router of a connection that has no routes or middleware of its own and no server. */
let noRouter: Router | undefined;

/** Installs the dispatcher and router classes the stream engine brings. */
function install(e: StreamEngine): typeof Dispatcher {
  cls ??= e.Dispatcher;
  routerCls ??= e.Router;
  return cls;
}

/** The dispatcher class if it is installed or loaded (the stream engine brings it), else undefined. */
export function dispatcherClass(): typeof Dispatcher | undefined {
  if (cls !== undefined) return cls;
  const e = streamEngine();
  return e === undefined ? undefined : install(e);
}

/** The router class; only once {@link dispatcherClass} returned a class (they come together). */
export function routerClass(): typeof Router {
  return routerCls as typeof Router;
}

/** The shared empty router (no routes, no middleware); only once {@link dispatcherClass} returned a class. */
export function emptyRouter(): Router {
  noRouter ??= new (routerClass())();
  return noRouter;
}

/** @internal For tests of the on-demand path: forgets the class (reset the stream engine too: it brings one). */
export function resetDispatcher(): void {
  cls = undefined;
}

/**
 * Loads the dispatcher class: with the stream engine (`streams.ts`, one
 * chunk on demand in a browser bundle — the incoming streams need the
 * dispatcher anyway, and a page that serves requests is rare).
 */
export function loadDispatcher(): Promise<typeof Dispatcher> {
  const c = dispatcherClass();
  if (c !== undefined) return Promise.resolve(c);
  return loadStreamEngine().then(install);
}

class ShellMessage implements Message {
  declare readonly data: Uint8Array;
  constructor(data: Uint8Array) {
    this.data = data;
  }
  text(): string {
    return decoder.decode(this.data);
  }
}

/** What the shell tells its connection: the dispatcher that replaces it (why it could not load: `terminate`). */
export interface ShellHooks {
  replace(d: Dispatcher): void;
}

/**
 * A connection's dispatcher until `dispatch.ts` is needed (see the file's
 * comment). It has the members the connection and the inbound side use.
 */
export class DispatchShell {
  /** Requests queued for the dispatcher (counted as served: a graceful close waits for them). */
  readonly serving = { size: 0, get: (_id: number): ServerCall | undefined => undefined };
  openRequests = 0;
  readonly heldMessages = 0;
  /** The server's router, if any (the dispatcher's, or the parent of the connection's own). */
  declare readonly router: Router | undefined;
  readGate: ReadGate | undefined;
  declare private readonly args: ConstructorParameters<typeof Dispatcher>;
  declare private readonly hooks: ShellHooks;
  /** Routes and middleware the application added meanwhile: applied to the connection's own router once loaded. */
  private setup: ((r: Router) => void)[] | undefined;
  /** Whether middleware is among them (one-way messages then wait for the dispatcher). */
  private middleware = false;
  /** What arrived while the dispatcher loads, in order (undefined: nothing waits). */
  private queue: ((d: Dispatcher) => void)[] | undefined;
  private closed = false;
  private loadStarted = false;

  constructor(
    link: Link,
    outbox: Outbox,
    stats: Stats,
    budget: MemoryBudget,
    session: Connection,
    router: Router | undefined,
    onMessage: MessageHook | undefined,
    hooks: ShellHooks,
  ) {
    // The router is filled in by `become`.
    this.args = [link, outbox, stats, budget, session, router as Router, onMessage];
    this.router = router;
    this.hooks = hooks;
  }

  /** Messages of the turn a client's handshake completed, delivered at the next (see `Dispatcher.holdEarly`). */
  private earlyData: Uint8Array[] | undefined;

  holdEarly(): void {
    const early: Uint8Array[] = [];
    this.earlyData = early;
    nextTurn(() => {
      // Torn down, or handed to the dispatcher (`become`) meanwhile.
      if (this.earlyData !== early) return;
      this.earlyData = undefined;
      for (const data of early) this.deliverMessage(data);
    });
  }

  /** A complete one-way message: the `message` event now, unless middleware runs or requests wait before it. */
  deliverMessage(data: Uint8Array): void {
    if (this.queue === undefined && this.earlyData !== undefined) {
      this.earlyData.push(data);
      return;
    }
    if (this.queue === undefined && !this.middleware && this.router?.hasMiddleware !== true) {
      const msg = new ShellMessage(data);
      const [, , , , session, , onMessage] = this.args;
      try {
        onMessage?.(msg, session);
        session.emit("message", msg);
      } catch (err) {
        // A throwing listener is the application's bug: surface it, keep the connection.
        queueMicrotask(() => {
          throw err;
        });
      }
      return;
    }
    this.enqueue((d) => d.deliverMessage(data));
  }

  handleRequest(id: number, route: string, data: Uint8Array, charged: number, key?: Uint8Array): void {
    this.serving.size++;
    this.enqueue((d) => {
      this.serving.size--;
      d.replayRequest(id, route, data, charged, key);
    });
  }

  cancelServed(id: number, reasonCode: "ERR_TIMEOUT" | "ERR_CANCELLED"): boolean {
    if (this.queue === undefined) return false;
    this.enqueue((d) => d.cancelServed(id, reasonCode));
    return true;
  }

  /**
   * A route or middleware the application added (`apply` adds it to a
   * router, the arguments checked): kept until the dispatcher (and the
   * router) are loaded, which starts now — requests will come.
   */
  configure(apply: (r: Router) => void, middleware: boolean): void {
    this.setup ??= [];
    this.setup.push(apply);
    if (middleware) this.middleware = true;
    this.load();
  }

  /** Starts loading the dispatcher (the application added a route or middleware: requests will come). */
  load(): void {
    if (this.loadStarted || this.closed) return;
    this.loadStarted = true;
    loadDispatcher().then(
      (c) => this.become(c),
      (err: unknown) => {
        this.loadStarted = false;
        if (this.queue !== undefined && !this.closed) {
          // (loadStreamEngine's errors are typed: "cannot load the stream engine: …".)
          (this.args[4] as Connection).terminate(err as PointSubError);
        }
      },
    );
  }

  /** Hands the connection to a real dispatcher now (it is loaded: the stream engine brought it). */
  becomeNow(): Dispatcher | undefined {
    const c = dispatcherClass();
    return c === undefined ? undefined : this.become(c);
  }

  /** The connection closed: what waits is dropped (the requests fail with the connection on the peer's side). */
  teardown(_failure: PointSubError): void {
    this.closed = true;
    this.queue = undefined;
    this.earlyData = undefined;
    this.serving.size = 0;
  }

  private enqueue(work: (d: Dispatcher) => void): void {
    if (this.queue === undefined) {
      this.queue = [];
      // Nothing more is read from the peer until the dispatcher runs what waits (bounded by one read).
      this.readGate?.holdMessages(true);
      // One list from here on: held messages that came first go first (then all wait for the dispatcher).
      const early = this.earlyData;
      if (early !== undefined) {
        for (const data of early) this.queue.push((d) => d.deliverMessage(data));
        early.length = 0;
      }
    }
    this.queue.push(work);
    this.load();
  }

  private become(c: typeof Dispatcher): Dispatcher | undefined {
    if (this.closed) return undefined;
    this.closed = true;
    const args = this.args;
    let router = this.router;
    if (this.setup !== undefined) {
      // The connection's own router, in front of the server's.
      router = new (routerClass())(router);
      for (const apply of this.setup) apply(router);
      this.setup = undefined;
    }
    args[5] = router ?? emptyRouter();
    const d = new c(...args);
    d.readGate = this.readGate;
    d.openRequests = this.openRequests;
    const queue = this.queue;
    this.queue = undefined;
    this.serving.size = 0;
    this.hooks.replace(d);
    const early = this.earlyData;
    if (early !== undefined) {
      // Loaded in the turn they are held for: they, then the queue (if any, it holds them all), wait in the dispatcher.
      this.earlyData = undefined;
      d.holdEarly();
      for (const data of early) d.deliverMessage(data);
    }
    if (queue !== undefined) {
      // Reading resumes (no read happens during the replay; the dispatcher may pause it again for its own held messages).
      this.readGate?.holdMessages(false);
      for (const work of queue) work(d);
    }
    return d;
  }
}
