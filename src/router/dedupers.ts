/**
 * The middleware {@link idempotency} made (router/idempotency.ts): its own module, so that the router can
 * tell whether a chain deduplicates without the middleware's code (the lazily loaded request engine).
 */
export const dedupers = new WeakSet<object>();
