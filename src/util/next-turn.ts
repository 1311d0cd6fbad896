/**
 * Runs `fn` on the next event-loop turn: setImmediate where the runtime has
 * it (Node), else a MessageChannel task (a browser page or worker). Unlike a
 * 0 ms timer, which a background tab throttles to once a second (once a
 * minute after a few hidden minutes), a posted message runs at once. Each
 * call has a channel of its own, closed when it ran: the ports neither keep
 * a process alive (as Node's would) nor stay behind.
 */
export const nextTurn: (fn: () => void) => void =
  typeof setImmediate === "function"
    ? setImmediate
    : (fn) => {
        const { port1, port2 } = new MessageChannel();
        port1.onmessage = () => {
          port1.close();
          fn();
        };
        port2.postMessage(0);
      };
