/** For the tests of what the browser loads on demand: a stream-engine loader the test releases, and a bare runtime. */
import type { StreamEngine } from "../../src/connection/stream-engine.ts";
import * as streams from "../../src/connection/streams.ts";
import { tcpTransport } from "../../src/node/net-adapter.ts";
import { createRuntime, type Runtime } from "../../src/runtime/runtime.ts";

/** A loader that resolves when the test says so, and counts its calls. */
export function heldLoader(): { load: () => Promise<StreamEngine>; release: () => void; calls: () => number } {
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  let calls = 0;
  return {
    load: async () => {
      calls++;
      await gate;
      return streams;
    },
    release,
    calls: () => calls,
  };
}

/** A runtime with nothing installed (the browser's situation), over tcp. */
export const portable = (name: string): Runtime => createRuntime({ name, transports: [tcpTransport] });
