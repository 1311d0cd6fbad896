/**
 * A worker's end of an in-memory IPC channel to an {@link IpcRelay} (the relay and engine `serveWorkers`
 * uses; only the channel is not a process's): messages cross as structured clones, a microtask later.
 */
import { EventEmitter } from "node:events";
import type { IpcChannel, IpcRelay, RelayPeer } from "../../src/cluster/index.ts";

/** The channel, how many messages the relay sent through it so far, and the relay's peer (to detach: the worker died). */
export function memoryChannel(relay: IpcRelay): { channel: IpcChannel; received: () => number; peer: RelayPeer } {
  const ee = new EventEmitter();
  let received = 0;
  const peer = {
    send: (m: unknown) => {
      received++;
      queueMicrotask(() => ee.emit("message", structuredClone(m)));
    },
  };
  const channel = {
    connected: true,
    send(m: unknown, _h?: undefined, _o?: undefined, cb?: (err: Error | null) => void) {
      queueMicrotask(() => {
        relay.receive(peer, structuredClone(m));
        cb?.(null);
      });
      return true;
    },
    on: (ev: string, l: (...a: unknown[]) => void) => ee.on(ev, l),
    off: (ev: string, l: (...a: unknown[]) => void) => ee.off(ev, l),
  } as IpcChannel;
  return { channel, received: () => received, peer };
}
