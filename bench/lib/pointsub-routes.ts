/**
 * The routes every pointsub bench server serves, whatever its transport
 * (tcp/unix in impls/pointsub.ts, libp2p in impls/pointsub-libp2p.ts): a
 * per-session message count, echo (tracing arrivals when
 * POINTSUB_BENCH_TRACE is set) and a sink.
 */
import type { Server } from "../../src/index.ts";
import { TRACE_DIR, traceArrival } from "./trace.ts";

export function benchRoutes(srv: Server): void {
  srv.on("session", (session) => {
    let count = 0;
    session.on("message", () => {
      count++;
    });
    session.handle("/count/1.0.0", () => String(count));
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
