/**
 * The client's retry delays: exponential backoff with full jitter — each
 * delay uniformly random in [0, ceiling), the ceiling doubling from
 * `initialDelayMs` up to `maxDelayMs` — so that clients cut off together
 * do not come back together. The sequence comes from cockatiel's
 * `ExponentialBackoff` with its `fullJitterGenerator` (a maintained
 * resilience library; see docs/ARCHITECTURE.md "Dependencies"). Only the
 * delays come from it: waiting stays with the callers, who end a wait at
 * once on close() or an abort signal.
 */
import { ExponentialBackoff, fullJitterGenerator, type IBackoff } from "cockatiel";

/** One step of a backoff: its delay in ms, and the step after it. */
export type BackoffStep = IBackoff<unknown>;

/**
 * The first step of a full-jitter exponential backoff: `step.duration` is
 * the delay before the first retry, `step.next(undefined)` the step after.
 */
export function fullJitterBackoff(initialDelayMs: number, maxDelayMs: number): BackoffStep {
  return new ExponentialBackoff({
    generator: fullJitterGenerator,
    initialDelay: initialDelayMs,
    maxDelay: maxDelayMs,
  }).next();
}

/** The delay before retry number `retry` (0 = the first) of a full-jitter exponential backoff. */
export function fullJitterDelay(retry: number, initialDelayMs: number, maxDelayMs: number): number {
  let step = fullJitterBackoff(initialDelayMs, maxDelayMs);
  for (let i = 0; i < retry; i++) step = step.next(undefined);
  return step.duration;
}
