/**
 * Cluster-wide rate limits: `clusterRateLimit(cluster, { perSecond })`, a
 * middleware that admits at most `perSecond` requests per second across
 * every node of the cluster — in all, or per principal. The count of each
 * one-second window (aligned to the wall clock, so every node agrees on it)
 * lives in the engine's key-value store (Redis, NATS JetStream KV, or the
 * workers' primary); a node takes tokens from it in leases of `leaseSize`,
 * so the engine is asked once per lease, not once per request. A node
 * never admits more than it leased, so the cluster never admits more than
 * `perSecond` in a window; tokens a node leased and did not use lapse with
 * the window (the cluster may then admit fewer). As with any fixed window,
 * two windows' worth may pass within one second across a boundary.
 */
import { createHash } from "node:crypto";
import { PointSubError } from "../errors/error.ts";
import { principalScope } from "../router/idempotency.ts";
import type { Middleware } from "../router/types.ts";
import type { Cluster } from "./member.ts";

/** Options of {@link clusterRateLimit}. */
export interface ClusterRateLimitOptions {
  /** Requests admitted per second cluster-wide (per principal with `per: "principal"`). */
  perSecond: number;
  /**
   * `"global"`: one limit for all requests; `"principal"`: one per `session.principal` (all unauthenticated
   * clients share one; an object principal is told by its `id`, else its JSON, as the idempotency store's
   * scopes; any other by `String(principal)`, as earlier versions count it). Default "global".
   */
  per?: "global" | "principal";
  /** The routes it applies to. Default: every request route. */
  routes?: readonly string[];
  /** Tokens a node takes from the shared count at once. Default `ceil(perSecond / 20)`. */
  leaseSize?: number;
  /** Name of this limit's counters, when a cluster has several limits. Default "requests". */
  name?: string;
  /** Most scopes (principals) a node tracks within a window; beyond, the oldest is forgotten (its leased tokens lapse). Default 10,000. */
  maxScopes?: number;
}

const WINDOW_MS = 1000;

interface Scope {
  window: number;
  left: number;
  exhausted: boolean;
  pending: Promise<void> | undefined;
}

function positiveInt(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be an integer ≥ 1, not ${String(v)}`);
  }
  return v;
}

/** `routes` as a set; a bare string made a set of its characters: `"/limited"` limited no route, silently. */
function routeSet(routes: readonly string[]): Set<string> {
  const set =
    typeof routes === "object" && routes !== null && Symbol.iterator in routes ? new Set<unknown>(routes) : undefined;
  if (set === undefined || ![...set].every((r) => typeof r === "string")) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `routes must be a list of route names, not ${String(routes)}`);
  }
  return set as Set<string>;
}

/**
 * A middleware admitting at most `perSecond` requests per second across
 * the cluster (`server.use(clusterRateLimit(cluster, { perSecond: 1000 }))`).
 * A request over the limit is refused before its handler runs with
 * ERR_RATE_LIMITED and `retryAfterMs` (to the next window), like
 * `rateLimit`; one arriving while the engine cannot be reached fails with
 * the engine's error (ERR_CONNECTION_CLOSED, retryable). Messages and
 * streams pass.
 */
export function clusterRateLimit(cluster: Cluster, options: ClusterRateLimitOptions): Middleware {
  // Required: left out, it was 0, and every request was refused ERR_RATE_LIMITED.
  if (options?.perSecond === undefined) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "clusterRateLimit needs perSecond (an integer ≥ 1)");
  }
  const perSecond = positiveInt("perSecond", options.perSecond, 0);
  const leaseSize = Math.min(positiveInt("leaseSize", options.leaseSize, Math.ceil(perSecond / 20)), perSecond);
  const maxScopes = positiveInt("maxScopes", options.maxScopes, 10_000);
  const name = options.name ?? "requests";
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "name: 1 to 64 letters, digits, - or _");
  }
  if (options.per !== undefined && options.per !== "global" && options.per !== "principal") {
    // Anything else was one global limit for every principal together.
    throw new PointSubError("ERR_INVALID_ARGUMENT", `per must be "global" or "principal", not ${String(options.per)}`);
  }
  const byPrincipal = options.per === "principal";
  const routes = options.routes === undefined ? undefined : routeSet(options.routes);
  const scopes = new Map<string, Scope>();

  // An object principal as the idempotency store scopes keys: String(principal) was "[object Object]" for every
  // one (`{ id, roles }` from an authenticate hook), so all of them shared one allowance. Any other keeps
  // String(principal), the key older nodes count it under: during a rolling upgrade a new key counted it twice
  // over (up to twice perSecond admitted). (NUL: an object's scope is not a string principal's.)
  const scopeOf = (ctx: Parameters<Middleware>[0]): string => {
    const p = ctx.principal;
    return (typeof p === "object" && p !== null) || typeof p === "function"
      ? `\0${principalScope(ctx)}`
      : String(p ?? "");
  };
  const scopeKey = (ctx: Parameters<Middleware>[0]): string =>
    byPrincipal ? createHash("sha256").update(scopeOf(ctx)).digest("base64url").slice(0, 22) : "all";

  const lease = async (key: string, s: Scope): Promise<void> => {
    const taken = await cluster.reserve(`${name}.${key}.${s.window}`, leaseSize, perSecond, 2 * WINDOW_MS);
    s.left += taken;
    if (taken === 0) s.exhausted = true;
  };

  return async (ctx, next) => {
    if (ctx.kind !== "request" || (routes !== undefined && !routes.has(ctx.route))) return next();
    const key = scopeKey(ctx);
    for (;;) {
      const now = Date.now();
      const window = Math.floor(now / WINDOW_MS);
      let s = scopes.get(key);
      if (s === undefined || s.window !== window) {
        if (s !== undefined) scopes.delete(key);
        s = { window, left: 0, exhausted: false, pending: undefined };
        scopes.set(key, s);
        if (scopes.size > maxScopes) scopes.delete(scopes.keys().next().value as string);
      }
      if (s.left > 0) {
        s.left--;
        return next();
      }
      if (s.exhausted) {
        const wait = (window + 1) * WINDOW_MS - now;
        throw PointSubError.fromPeer("ERR_RATE_LIMITED", `cluster rate limit exceeded; retry in ${wait} ms`, {
          retryAfterMs: Math.max(1, wait),
        });
      }
      const current = s;
      current.pending ??= lease(key, current).finally(() => {
        current.pending = undefined;
      });
      await current.pending;
    }
  };
}
