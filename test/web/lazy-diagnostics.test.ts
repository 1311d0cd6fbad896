/**
 * The diagnostics publisher loaded on demand (what the browser build does):
 * in a process where neither the Node runtime nor a server installed it, a
 * connection on a runtime nobody can listen to gets the silent publisher,
 * and the portable `connect` on a runtime with diagnostics loads the real
 * one first, so its channels see the connection open, its call and its close.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect } from "../../src/client/connect.ts";
import { Connection } from "../../src/connection/connection.ts";
import { ConnectionDiagnostics } from "../../src/connection/diagnostics.ts";
import { publisherFor } from "../../src/connection/publisher.ts";
import { useStreamLoader } from "../../src/connection/stream-engine.ts";
import { createRuntime, localDiagnostics, NO_DIAGNOSTICS } from "../../src/runtime/runtime.ts";
import { memoryTransport } from "../../src/transport/memory.ts";

describe("diagnostics publisher on demand", () => {
  it("silent until loaded; connect with diagnostics loads it and publishes", async () => {
    const probe = { id: "probe" } as unknown as Connection;
    const before = publisherFor(NO_DIAGNOSTICS, probe, "client");
    assert.ok(!(before instanceof ConnectionDiagnostics), "no publisher class installed yet: the silent one");
    assert.equal(before.requestStart(1, "/x", 0), 0);

    // No entry point here: the stream engine (which brings the dispatcher `handle` needs) is loaded as the browser entry does.
    useStreamLoader(() => import("../../src/connection/streams.ts"));
    const memory = memoryTransport();
    const quiet = createRuntime({ name: "quiet", transports: [memory] });
    const sessions: Connection[] = [];
    const listener = await memory.listen(new URL("memory://diag-lazy"), {}, (t) => {
      const s = new Connection(t, {}, { initiator: false, runtime: quiet });
      s.handle("/echo/1.0.0", (req) => req.data);
      sessions.push(s);
    });
    const diagnostics = localDiagnostics();
    const seen: string[] = [];
    for (const name of ["pointsub:connection:open", "pointsub:call:end", "pointsub:connection:close"]) {
      diagnostics.subscribe(name, (m) => seen.push(`${name} ${(m as { role?: string }).role ?? ""}`.trim()));
    }
    const loud = createRuntime({ name: "loud", transports: [memory], diagnostics });
    const conn = await connect("memory://diag-lazy", { runtime: loud });
    assert.deepEqual(new TextDecoder().decode(await conn.request("/echo/1.0.0", "hi")), "hi");
    await conn.close();
    assert.deepEqual(seen, [
      "pointsub:connection:open client",
      "pointsub:call:end",
      "pointsub:connection:close client",
    ]);
    assert.ok(publisherFor(NO_DIAGNOSTICS, probe, "client") instanceof ConnectionDiagnostics, "installed by connect");
    for (const s of sessions) s.destroy();
    await listener.close();
  });
});
