/**
 * The slow link of the request-timing tests (`bench/lib/shaper.ts`): 60 KB/s
 * towards the server with a 200 ms round trip and a router queue of half a
 * second, 10 MB/s back; a 420 KB body or answer takes ~7 s over it, against
 * a `requestTimeoutMs` of 3 s. Each test's cleanups ({@link cleanupsFor}) run
 * after it, last first: the tests of a file run at once (`concurrency`), each
 * waiting on its own slow link.
 */
import type { TestContext } from "node:test";

export const SLOW = { rate: 60_000, delayMs: 100, queueBytes: 30_000 };
export const FAST = { rate: 10_000_000, delayMs: 100 };
export const SIZE = 420_000;
export const BASE = 3_000;

/** What test `t` starts, to be stopped after it, last first. */
export function cleanupsFor(t: TestContext): (() => Promise<unknown>)[] {
  const cleanups: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  });
  return cleanups;
}
