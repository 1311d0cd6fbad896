/** Runs `fn` on the next event-loop turn: setImmediate where the runtime has it, else a 0 ms timer. */
export const nextTurn: (fn: () => void) => void =
  typeof globalThis.setImmediate === "function" ? (fn) => setImmediate(fn) : (fn) => setTimeout(fn, 0);
