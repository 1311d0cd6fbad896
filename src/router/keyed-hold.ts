/**
 * Set by the dispatcher (`dispatch.ts`): the idempotency middleware (router/idempotency.ts) calls `charge`
 * for each keyed request it handles, which charges the memory budget `KEYED_OVERHEAD` (its claim or wait)
 * and throws ERR_OVERLOADED when it does not fit. Its own module: the dispatcher does not load the middleware.
 */
export const keyedHold: { charge: ((ctx: object) => void) | undefined } = { charge: undefined };
