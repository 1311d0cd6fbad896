/**
 * Routes and middleware (docs/ARCHITECTURE.md "Router"). A router maps
 * route names to request and stream handlers and runs middleware around
 * every request, stream and one-way message. A server's router is the
 * parent of each session's own router: lookups fall back to the parent,
 * and the parent's middleware runs first (outermost).
 *
 * Composition is koa-style: a middleware gets the call's context and
 * `next`; it may act before and after `await next()`, answer without
 * calling it, or throw a PointSubError, which becomes the caller's error.
 */
import { MAX_ROUTE } from "../codec/frame.ts";
import { decodeResumeQuery, encodeResumeAnswer, RESUME_ROUTE, type ResumePoint } from "../codec/resume.ts";
import { PointSubError } from "../errors/error.ts";
import { checkFunction, checkRoute } from "./check.ts";
import type { CallContext, Handler, HandlerResult, Middleware, ResumeLookup, StreamRoute } from "./types.ts";

const NO_MIDDLEWARE: readonly Middleware[] = Object.freeze([]);
const NOTHING: ResumePoint = Object.freeze({ offset: 0, crc: 0 });

/** A router's parts most routers never have. */
interface More {
  /** Routes after the first. */
  routes: Map<string, Handler> | undefined;
  streamRoutes: Map<string, StreamRoute> | undefined;
  /** Every middleware, outermost first, as of {@link chainVersion} (the stamp it was built at). */
  chain: readonly Middleware[];
  chainVersion: number;
  /** The built-in resume route's handler, made on first use. */
  resume: Handler | undefined;
}

/** What runs at the end of a middleware chain: the route's handler (or a built-in answer). */
export type Endpoint = (ctx: CallContext) => HandlerResult | Promise<HandlerResult>;

/**
 * Request and stream routes with their middleware: a server's (which its
 * sessions fall back to: the `parent` of each session's own) or a
 * connection's. A route found in neither answers ERR_NO_ROUTE.
 */
export class Router {
  /** Where lookups fall back to, and whose middleware runs first. */
  readonly parent: Router | undefined;
  /** The first route registered, and its handler: a session's own router mostly has one (no Map for it). */
  private route1: string | undefined;
  private handler1: Handler | undefined;
  /** Middleware added here (only ever appended: its length tells a child whether its cached chain is stale). */
  private own: Middleware[] | undefined;
  /** The rest, created on first use: a session's own router mostly has one route and nothing else. */
  private more: More | undefined;

  constructor(parent?: Router) {
    this.parent = parent;
  }

  /** Registers a request handler for `route` (replacing one registered before). */
  handle(route: string, handler: Handler): this {
    checkRoute(route);
    checkFunction(handler, "handler");
    if (this.route1 === undefined || this.route1 === route) {
      this.route1 = route;
      this.handler1 = handler;
    } else {
      const m = this.extra();
      m.routes ??= new Map();
      m.routes.set(route, handler);
    }
    return this;
  }

  /** Registers a stream handler for `route`; `resume` makes the route resumable. */
  handleStream(route: string, handler: StreamRoute["handler"], options: { resume?: ResumeLookup } = {}): this {
    checkRoute(route);
    checkFunction(handler, "handler");
    const m = this.extra();
    m.streamRoutes ??= new Map();
    m.streamRoutes.set(route, { handler, resume: options.resume });
    return this;
  }

  /** Adds a middleware; it runs after those added before it (and after every middleware of the parent). */
  use(mw: Middleware): this {
    checkFunction(mw, "middleware");
    this.own ??= [];
    this.own.push(mw);
    return this;
  }

  private extra(): More {
    this.more ??= {
      routes: undefined,
      streamRoutes: undefined,
      chain: NO_MIDDLEWARE,
      chainVersion: -1,
      resume: undefined,
    };
    return this.more;
  }

  /** The request handler for `route`: this router's, the parent's, or the built-in resume route's. */
  route(route: string): Handler | undefined {
    const h = this.ownRoute(route) ?? this.parent?.routeOwnOrParent(route);
    if (h !== undefined) return h;
    return route === RESUME_ROUTE ? this.resumeHandler : undefined;
  }

  private routeOwnOrParent(route: string): Handler | undefined {
    return this.ownRoute(route) ?? this.parent?.routeOwnOrParent(route);
  }

  private ownRoute(route: string): Handler | undefined {
    return route === this.route1 ? this.handler1 : this.more?.routes?.get(route);
  }

  /** The stream route for `route`: this router's or the parent's. */
  streamRoute(route: string): StreamRoute | undefined {
    return this.more?.streamRoutes?.get(route) ?? this.parent?.streamRoute(route);
  }

  /** Whether any middleware runs (here or in a parent): without, calls go straight to their handler. */
  get hasMiddleware(): boolean {
    // Asked for every message and request: no chain is built for the answer (a loop: a
    // recursive getter is not inlined into the per-message path).
    for (let r: Router | undefined = this; r !== undefined; r = r.parent) if (r.own !== undefined) return true;
    return false;
  }

  /** Every middleware, outermost first. */
  chain(): readonly Middleware[] {
    const m = this.extra();
    const v = this.stamp();
    if (v === m.chainVersion) return m.chain;
    const up = this.parent?.chain() ?? NO_MIDDLEWARE;
    m.chain = this.own === undefined ? up : up.length === 0 ? this.own.slice() : [...up, ...this.own];
    m.chainVersion = v;
    return m.chain;
  }

  /** Changes whenever middleware is added here or in a parent. */
  private stamp(): number {
    return (this.own?.length ?? 0) + (this.parent === undefined ? 0 : this.parent.stamp() * 65536);
  }

  /**
   * Runs `endpoint` for `ctx` inside the middleware chain. Returns what the
   * chain returns — the value itself when every step finished at once
   * (see below), else a promise; a promise rejects with what a middleware
   * or the endpoint threw (never a synchronous throw).
   *
   * `next()` always returns a promise (the middleware contract). A step
   * that finishes at once gets an already-resolved one, and when a
   * middleware hands exactly that promise back (`(ctx, next) => next()`,
   * as the rate limiter does on its fast path) nothing asynchronous
   * happened: the chain's value is known now, and the caller answers
   * without a promise hop, a tracking entry or a microtask per call.
   */
  run(ctx: CallContext, endpoint: Endpoint): HandlerResult | Promise<HandlerResult> {
    const chain = this.chain();
    const n = chain.length;
    let last = -1;
    /** The resolved promise of the last step that finished at once, and its value. */
    let known: Promise<HandlerResult> | undefined;
    let knownValue: HandlerResult;
    const dispatch = (i: number): Promise<HandlerResult> => {
      if (i <= last) {
        return heard(
          Promise.reject(new PointSubError("ERR_INVALID_ARGUMENT", "middleware called next() more than once")),
        );
      }
      last = i;
      let r: HandlerResult | Promise<HandlerResult>;
      try {
        r = i === n ? endpoint(ctx) : chain[i](ctx, () => dispatch(i + 1));
        if (r === known && known !== undefined) return known;
        // In here: a `then` getter (or a Proxy) that throws is the step's failure, not a throw out of run.
        if (r !== null && typeof r === "object" && typeof (r as PromiseLike<HandlerResult>).then === "function") {
          // What next() gives a middleware (i > 0): it may ignore it; the first step's is the caller's.
          return i === 0 ? Promise.resolve(r) : heard(Promise.resolve(r));
        }
      } catch (err) {
        return i === 0 ? Promise.reject(err) : heard(Promise.reject(err));
      }
      knownValue = r as HandlerResult;
      known = Promise.resolve(knownValue);
      return known;
    };
    const result = dispatch(0);
    return result === known ? knownValue : result;
  }

  /**
   * The built-in route of resume queries (docs/PROTOCOL.md §3.11): answers
   * from the `resume` lookup of the stream route asked about.
   */
  get resumeHandler(): Handler {
    const m = this.extra();
    m.resume ??= async (req, ctx) => {
      const { route, transferId } = decodeResumeQuery(req.data);
      const sr = this.streamRoute(route);
      const point = sr?.resume === undefined ? NOTHING : await sr.resume(transferId, { route, session: ctx.session });
      return encodeResumeAnswer(checkPoint(point, route));
    };
    return m.resume;
  }
}

const ignore = (): void => {};
/** Promise's own `then`: a handler's promise may carry a `then` of its own that throws. */
const promiseThen = Promise.prototype.then;

/**
 * `p`, whose rejection counts as handled: a middleware that ignores what
 * `next()` gave it (not awaited, or a second call's refusal) left an
 * unhandled rejection when the handler failed — under Node's default, the
 * end of the server's process. Whoever awaits `p` still gets the rejection.
 */
function heard(p: Promise<HandlerResult>): Promise<HandlerResult> {
  promiseThen.call(p, undefined, ignore);
  return p;
}

/**
 * Throws ERR_INVALID_ARGUMENT for a route over the protocol's MAX_ROUTE bytes of UTF-8: no peer can send a
 * request or stream to it (its own `request` refuses the route), so its handler was registered and never ran.
 * (The server's `handle`/`handleStream` call it: a connection's routes may be kept before its router loads.)
 */
export function checkRouteLength(route: string): void {
  // Up to 3 bytes per UTF-16 unit: only long routes are encoded to be measured.
  if (typeof route === "string" && route.length * 3 > MAX_ROUTE && new TextEncoder().encode(route).length > MAX_ROUTE) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `route longer than ${MAX_ROUTE} bytes of UTF-8: no client could call it (got ${route.slice(0, 40)}…)`,
    );
  }
}

/**
 * A resume lookup's answer, checked before it is encoded: an offset that is
 * an integer from 0 to 2^53 - 1, a CRC32C that is an integer of 32 bits
 * (signed or not; with offset 0 it is not looked at). Else ERR_HANDLER naming what the lookup returned —
 * before, offset Infinity looped for ever in the varint encoder (the
 * server's event loop frozen), a negative or 2^60 offset went out as bytes
 * the sender refused as the peer's ERR_PROTOCOL, and 1.5, NaN or a CRC past
 * 32 bits went out as some other number.
 */
function checkPoint(point: ResumePoint, route: string): ResumePoint {
  const offset: unknown = (point as Partial<ResumePoint> | null | undefined)?.offset;
  // Nothing held: the CRC of no bytes is 0, whatever came with it (`{ offset: 0 }` alone is fine).
  if (offset === 0) return NOTHING;
  const crc: unknown = (point as Partial<ResumePoint> | null | undefined)?.crc;
  if (
    typeof offset !== "number" ||
    !Number.isSafeInteger(offset) ||
    offset < 0 ||
    typeof crc !== "number" ||
    !Number.isInteger(crc) ||
    crc < -(2 ** 31) ||
    crc >= 2 ** 32
  ) {
    throw new PointSubError(
      "ERR_HANDLER",
      `the resume lookup of ${route} returned ${showPoint(point)}: offset must be an integer from 0 to 2^53 - 1 and crc a 32-bit integer`,
    );
  }
  return { offset, crc: crc >>> 0 };
}

function showPoint(point: unknown): string {
  if (point === null || typeof point !== "object") return String(point);
  const p = point as Record<string, unknown>;
  const show = (v: unknown) =>
    typeof v === "string"
      ? JSON.stringify(v)
      : v === null || ["undefined", "number", "bigint", "boolean"].includes(typeof v)
        ? String(v)
        : `a ${typeof v}`;
  return `{ offset: ${show(p.offset)}, crc: ${show(p.crc)} }`;
}
