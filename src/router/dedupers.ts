/**
 * The middleware {@link idempotency} made (router/idempotency.ts): its own module, so that the router can
 * tell whether a chain deduplicates without the middleware's code (the lazily loaded request engine).
 */
export const dedupers = new WeakSet<object>();

/**
 * Set by the dispatcher (`dispatch.ts`): the idempotency middleware calls `charge` for each keyed request it
 * handles, which charges the memory budget `KEYED_OVERHEAD` (its claim or wait) for a call the dispatcher
 * did not charge it — the middleware wrapped in one of the application's, which `Router.deduplicates` does
 * not see (`attack/keyed-charge-wrapped-idempotency.test.ts`) — and throws ERR_OVERLOADED when it does not fit.
 */
export const keyedHold: { charge: ((ctx: object) => void) | undefined } = { charge: undefined };
