/**
 * Runs `fn` soon, after pending I/O callbacks of this turn: `setImmediate`
 * where the runtime has it (Node), a MessageChannel or `setTimeout` elsewhere.
 * Used to coalesce writes made in one turn of the event loop into one syscall.
 */
type Scheduler = (fn: () => void) => void;

function pick(): Scheduler {
  const g = globalThis as { setImmediate?: (fn: () => void) => unknown };
  if (typeof g.setImmediate === "function") {
    const si = g.setImmediate;
    return (fn) => {
      si(fn);
    };
  }
  if (typeof MessageChannel === "function") {
    const ch = new MessageChannel();
    const q: (() => void)[] = [];
    ch.port1.onmessage = () => {
      const fn = q.shift();
      if (fn) fn();
    };
    return (fn) => {
      q.push(fn);
      ch.port2.postMessage(0);
    };
  }
  return (fn) => {
    setTimeout(fn, 0);
  };
}

/** Schedules `fn` for after the current turn's I/O (see module doc). */
export const defer: Scheduler = pick();
