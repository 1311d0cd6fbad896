/**
 * Errors of calls that failed before anything was sent for them: a graceful
 * close refuses the requests still waiting for a slot (`drain.ts`). A
 * resilient client sends such a request again on its next connection,
 * keyed or not: no handler saw it. A module of its own, shared only by code
 * loaded on demand (a page's first load does not carry it).
 */
export const UNSENT = new WeakSet<object>();
