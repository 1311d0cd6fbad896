/**
 * A Node runtime with a custom transport, `flaky://host:port`, whose first
 * `failures` connects reject with `bad()` (what an application's adapter may
 * throw) and whose later ones connect over tcp to the same host and port.
 */
import { createNodeRuntime, PointSubError, type Runtime, type TransportAdapter } from "../../src/index.ts";

export function flakyRuntime(failures: number, bad: () => unknown): { runtime: Runtime; attempts: () => number } {
  const runtime = createNodeRuntime();
  const tcp = runtime.transports.resolve("tcp://127.0.0.1:1").adapter;
  let attempts = 0;
  const flaky: TransportAdapter = {
    schemes: ["flaky"],
    connect: (address, options) => {
      if (++attempts <= failures) return Promise.reject(bad());
      const url = new URL(String((address as { url?: URL }).url ?? address).replace(/^flaky:/, "tcp:"));
      return tcp.connect(runtime.transports.resolve(url).address, options);
    },
    listen: () => Promise.reject(new PointSubError("ERR_INVALID_ARGUMENT", "no listening")),
  };
  runtime.transports.add(flaky);
  return { runtime, attempts: () => attempts };
}
