/**
 * Handlers whose connection ended while they ran, kept running for a grace
 * period because a retry on another connection will want their answer: the
 * idempotency middleware's keyed calls (`ServerCall.outliveConnection`). A
 * handler honouring `ctx.signal` that a drop aborted freed its key, and the
 * retry ran it again. Bounded per server (its memory budget is the key):
 * at most {@link MAX_ORPHANS} at once (beyond, aborted at once, as before),
 * each aborted after its grace (the middleware's `waitMs`: how long a retry
 * waits for it) and all of them when the server closes.
 */
import type { PointSubError } from "../errors/error.ts";
import type { ServerCall } from "./calls.ts";

/** Orphaned handlers one server lets run on at once. */
export const MAX_ORPHANS = 1024;

/** Each server's orphans (by its memory budget, which its sessions share), with their grace timers. */
const byOwner = new WeakMap<object, Map<ServerCall, ReturnType<typeof setTimeout>>>();
/** Servers closing or closed: a handler whose connection ends is aborted at once. */
const closed = new WeakSet<object>();

/**
 * Lets `call`'s handler run on for `graceMs` after its connection ended
 * with `failure` (then aborts it with that); false when `owner` has
 * {@link MAX_ORPHANS} already (the caller aborts it now).
 */
export function adoptOrphan(owner: object, call: ServerCall, graceMs: number, failure: PointSubError): boolean {
  if (closed.has(owner)) return false;
  let orphans = byOwner.get(owner);
  if (orphans === undefined) {
    orphans = new Map();
    byOwner.set(owner, orphans);
  }
  if (orphans.size >= MAX_ORPHANS) return false;
  const all = orphans;
  const t = setTimeout(
    () => {
      all.delete(call);
      call.abort(failure);
    },
    Math.min(graceMs, 0x7fffffff), // a longer delay fires at once
  );
  (t as { unref?: () => void }).unref?.();
  orphans.set(call, t);
  return true;
}

/** `call`'s handler settled: no longer an orphan of `owner`. */
export function orphanSettled(owner: object, call: ServerCall): void {
  const orphans = byOwner.get(owner);
  const t = orphans?.get(call);
  if (t === undefined) return;
  clearTimeout(t);
  orphans?.delete(call);
}

/** The server closes: every orphan of `owner` is aborted with `reason` now, and none is adopted from now on. */
export function abortOrphans(owner: object, reason: PointSubError): void {
  closed.add(owner);
  const orphans = byOwner.get(owner);
  if (orphans === undefined) return;
  byOwner.delete(owner);
  for (const [call, t] of orphans) {
    clearTimeout(t);
    call.abort(reason);
  }
}

/** Orphans `owner` has now (for tests and diagnostics). */
export function orphanCount(owner: object): number {
  return byOwner.get(owner)?.size ?? 0;
}
