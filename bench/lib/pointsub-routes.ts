/**
 * The routes every pointsub bench server serves, whatever its transport
 * (tcp/unix in impls/pointsub.ts, libp2p in impls/pointsub-libp2p.ts): a
 * per-session message count, echo (tracing arrivals when
 * POINTSUB_BENCH_TRACE is set) and a sink (which then records what the
 * session's transfer cost the server: trace.ts `traceSinkSession`).
 */
import type { Server } from "../../src/index.ts";
import { TRACE_DIR, traceArrival, traceSinkSession } from "./trace.ts";

export function benchRoutes(srv: Server): void {
  srv.on("session", (session) => {
    let count = 0;
    // large tracing: this process's CPU, event loop, page faults and GC from the client's empty
    // one-way mark (sent just before its big request) to the end of its sink request.
    const sink = traceSinkSession();
    session.on("message", (m) => {
      if (sink !== undefined && m.data.length === 0) sink.start();
      else count++;
    });
    session.handle("/count/1.0.0", () => String(count));
    if (sink !== undefined)
      session.handle("/sink/1.0.0", () => {
        sink.end();
        return undefined;
      });
  });
  srv.handle(
    "/echo/1.0.0",
    TRACE_DIR === undefined
      ? (req) => req.data
      : (req) => {
          traceArrival(req.data);
          return req.data;
        },
  );
  srv.handle("/sink/1.0.0", () => undefined);
}
