/**
 * close({ timeoutMs: long }) and then close({ timeoutMs: short }) — a
 * program's second SIGINT, or "graceful first, then give up": the second
 * call is the first's promise, and it ended the wait only at the first's
 * deadline (a handler that never answers held it 10 minutes here). A later
 * close with a shorter timeout now brings the deadline forward; what is
 * still in flight then fails as at any close's deadline.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect, createServer, type PointSubError } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

it("a second close() with a shorter timeout ends the wait by its own deadline, failing what is still in flight", async () => {
  const server = createServer();
  const started = Promise.withResolvers<void>();
  server.handle("/hang/1", (_req, ctx) => {
    started.resolve();
    return new Promise((resolve) => ctx.signal.addEventListener("abort", () => resolve("aborted")));
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url);
  try {
    const call = conn.request("/hang/1", "x", { timeoutMs: 0 }).then(
      () => "answered",
      (e: PointSubError) => e.code,
    );
    await started.promise;
    const first = conn.close({ timeoutMs: 600_000 });
    // The wait begins once the close's module is loaded (a dynamic import).
    await until(() => (conn as unknown as { cut?: unknown }).cut !== undefined);
    const second = conn.close({ timeoutMs: 50 });
    assert.equal(second, first, "the same close");
    await second;
    assert.equal(conn.state, "closed");
    assert.equal(await call, "ERR_CONNECTION_CLOSED");
  } finally {
    conn.destroy();
    await server.close({ timeoutMs: 100 });
  }
});
