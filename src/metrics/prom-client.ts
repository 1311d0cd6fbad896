/**
 * prom-client, an optional peer dependency, loaded on its first use: `import "pointsub/metrics"`
 * without it loads, and the first call that needs it throws ERR_INVALID_ARGUMENT naming it and the
 * `npm install` line, as pointsub/libp2p and the cluster engines say it. Before, the import itself
 * failed with Node's bare ERR_MODULE_NOT_FOUND. Loaded with `require` (prom-client is CommonJS): the
 * API stays synchronous (`prometheusMetrics()`, `new Registry()`), and no entry point has a top-level
 * `await` (CommonJS code requires the entries).
 */
import { createRequire } from "node:module";
import type * as PromClient from "prom-client";
import { PointSubError } from "../index.ts";

/** prom-client's module. */
export type PromClientModule = typeof PromClient;

let loaded: PromClientModule | undefined;

/** prom-client (loaded once); ERR_INVALID_ARGUMENT when it is not installed or cannot load. */
export function promClient(): PromClientModule {
  if (loaded !== undefined) return loaded;
  try {
    loaded = createRequire(import.meta.url)("prom-client") as PromClientModule;
  } catch (cause) {
    throw loadFailure(cause);
  }
  return loaded;
}

/**
 * Why prom-client did not load, typed: not installed ("npm install prom-client"), or installed and
 * broken (its code or class only: the text names this machine's paths). Never throws itself.
 */
function loadFailure(cause: unknown): PointSubError {
  let code: unknown;
  let missing = false;
  let why = "see the cause";
  try {
    code = (cause as { code?: unknown } | null)?.code;
    // A package prom-client needs that is missing is prom-client's broken install, not it missing.
    missing =
      (code === "MODULE_NOT_FOUND" || code === "ERR_MODULE_NOT_FOUND") &&
      /'prom-client'/.test(String((cause as Error).message));
    if (typeof code === "string" && /^[A-Z][A-Z0-9_]{0,63}$/.test(code)) why = `${code} (see the cause)`;
    else if (cause instanceof Error && /^[A-Za-z]\w{0,63}$/.test(cause.name)) why = `${cause.name} (see the cause)`;
  } catch {}
  if (missing) {
    return new PointSubError(
      "ERR_INVALID_ARGUMENT",
      "pointsub/metrics needs the package prom-client: npm install prom-client",
      { cause },
    );
  }
  return new PointSubError("ERR_INVALID_ARGUMENT", `pointsub/metrics cannot load the package prom-client: ${why}`, {
    cause,
    suggestion:
      "Reinstall prom-client, in a version pointsub supports (its peerDependencies); the cause says what failed.",
  });
}

/**
 * prom-client's `Registry`, loaded when first used: `new Registry()`, `extends Registry`, `instanceof`
 * and its statics (`Registry.merge`, `Registry.PROMETHEUS_CONTENT_TYPE`) reach prom-client's own class —
 * read, set, listed, described, defined and deleted there (before, only read: a static set on `Registry`
 * was lost, `Object.getOwnPropertyNames` and a stub of `Registry.merge` saw none of prom-client's). The
 * target, a bound function, is constructible and has no `prototype` of its own; a property prom-client's
 * class has as non-configurable (`prototype`) is copied to it when described, as a Proxy must.
 */
export const Registry: typeof PromClient.Registry = new Proxy(
  function Registry() {}.bind(undefined) as unknown as typeof PromClient.Registry,
  {
    construct: (_target, args, newTarget) =>
      Reflect.construct(promClient().Registry, args, newTarget === Registry ? promClient().Registry : newTarget),
    get: (_target, key) => Reflect.get(promClient().Registry, key),
    set: (_target, key, value) => Reflect.set(promClient().Registry, key, value),
    has: (_target, key) => Reflect.has(promClient().Registry, key),
    ownKeys: () => Reflect.ownKeys(promClient().Registry),
    getOwnPropertyDescriptor: (target, key) => {
      const d = Reflect.getOwnPropertyDescriptor(promClient().Registry, key);
      if (d !== undefined && d.configurable === false && !Object.hasOwn(target, key)) {
        Object.defineProperty(target, key, d);
      }
      return d;
    },
    defineProperty: (target, key, d) => {
      if (!Reflect.defineProperty(promClient().Registry, key, d)) return false;
      if (d.configurable === false && !Object.hasOwn(target, key)) {
        Object.defineProperty(target, key, Reflect.getOwnPropertyDescriptor(promClient().Registry, key) ?? d);
      }
      return true;
    },
    deleteProperty: (_target, key) => Reflect.deleteProperty(promClient().Registry, key),
    // Called without `new`: prom-client's TypeError, as its class throws.
    apply: (_target, self, args) => Reflect.apply(promClient().Registry as unknown as () => unknown, self, args),
  },
);
/** The instance type of {@link Registry} (prom-client's). */
export type Registry<T extends PromClient.RegistryContentType = PromClient.PrometheusContentType> =
  PromClient.Registry<T>;

/** prom-client's `collectDefaultMetrics`, loaded when first called. */
export const collectDefaultMetrics: typeof PromClient.collectDefaultMetrics = Object.defineProperty(
  ((config?: PromClient.DefaultMetricsCollectorConfiguration<PromClient.RegistryContentType>) =>
    promClient().collectDefaultMetrics(config)) as typeof PromClient.collectDefaultMetrics,
  "metricsList",
  { get: () => promClient().collectDefaultMetrics.metricsList, enumerable: true },
);
