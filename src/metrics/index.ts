/**
 * `pointsub/metrics` as `pointsub serve --metrics` loads it: the package's entry (`entry.ts`) with
 * prom-client imported up front, so that importing this fails at once (Node's ERR_MODULE_NOT_FOUND)
 * when prom-client is not installed, which serve turns into its usage error. Applications import
 * `pointsub/metrics` (`entry.ts`), which loads without it and says what to install on first use.
 *
 * @packageDocumentation
 */

export { collectDefaultMetrics, Registry } from "prom-client";
export * from "./entry.ts";
