/**
 * This side's PINGs (docs/PROTOCOL.md §3.7): comes with housekeeping
 * (`housekeeping.ts`), which sends keepalive pings, so a browser page loads
 * it once a connection is open, not up front; `Connection.ping` waits for
 * that load. Answers to the peer's PINGs are the pinger's (`pinger.ts`).
 * It imports no code (types only): the modules it would need stay in the
 * page's one shared chunk (a static import from here would split them out).
 */
import type { Pinger } from "./pinger.ts";

/** A timer's largest delay (2^31 - 1 ms, ~24.8 days): a value, not an import (see above). */
const MAX_TIMER_MS = 0x7fffffff;

/**
 * Sends a PING; resolves to the round-trip time in ms. After `timeoutMs`
 * (0: never) it is given up: rejected with `timeoutError(timeoutMs)`, or
 * left unsettled without one (housekeeping's probes, whose outcome only
 * their answer tells). A `timeoutMs` beyond a timer's range (2^31 - 1 ms,
 * util/timer-limit.ts's MAX_TIMER_MS, written here: this module imports no
 * code) is waited out that long: a timer given more fires after 1 ms.
 */
export function sendPing(p: Pinger, timeoutMs: number, timeoutError?: (ms: number) => Error): Promise<number> {
  const seq = ++p.seq;
  const d = Promise.withResolvers<number>();
  if (p.pings.size === 0) p.pings = new Map();
  p.pings.set(seq, { start: performance.now(), d, probe: p.writer.pacer?.probesSent ?? 0 });
  p.send(seq);
  if (timeoutMs > 0) {
    // A delay past a timer's largest (Infinity, 3e9) fired after 1 ms: a ping given for ever timed out at
    // once. Such a wait goes in steps of at most MAX_TIMER_MS.
    let left = timeoutMs;
    let t: ReturnType<typeof setTimeout>;
    const arm = (): void => {
      const ms = Math.min(left, MAX_TIMER_MS);
      left -= ms;
      t = setTimeout(() => {
        if (left > 0) arm();
        // Due: looked at again after this turn's I/O (a new timer runs after the poll phase): after a stall
        // of this process, timers run before the answer that came meanwhile is read.
        else
          t = setTimeout(() => {
            if (p.done(seq) && timeoutError !== undefined) d.reject(timeoutError(timeoutMs));
          }, 0);
      }, ms);
    };
    arm();
    d.promise.then(
      () => clearTimeout(t),
      () => clearTimeout(t),
    );
  }
  return d.promise;
}
