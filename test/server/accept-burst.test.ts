/**
 * A burst of connections that reach the server in one event-loop turn (many
 * WebSocket or TLS handshakes completing together) is set up over several
 * turns: the accepts past one turn's share wait in a queue. Those waiting
 * are not held against each other: with `maxConnections` N, N clients that
 * arrive together all get in.
 */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { describe, it } from "node:test";
import { type Connection, connect, createServer, wsUpgradeHandler } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

describe("server accept burst", () => {
  it("maxConnections 200 admits all 200 clients whose handshakes complete in one turn (it refused the ones queued past the turn's 128 accepts: ERR_OVERLOADED under the limit)", async () => {
    const N = 200;
    const upgrade = wsUpgradeHandler();
    // The application's http server holds the upgrade requests until all N are in, then hands them
    // to pointsub in one loop: all N handshakes complete in the same turn.
    const held: [http.IncomingMessage, Socket, Buffer][] = [];
    let release: () => void = () => {};
    const allIn = new Promise<void>((resolve) => {
      release = resolve;
    });
    const web = http.createServer((_req, res) => res.end());
    web.on("upgrade", (req, socket: Socket, head: Buffer) => {
      held.push([req, socket, head]);
      if (held.length === N) release();
    });
    await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
    const url = `ws://127.0.0.1:${(web.address() as AddressInfo).port}/pointsub`;
    const server = createServer({ ws: { upgrade }, maxConnections: N, handshakeTimeoutMs: 60_000 });
    const refused: string[] = [];
    server.on("reject", (e) => refused.push(`${e.code}: ${e.message}`));
    await server.listen(url);
    const conns: Connection[] = [];
    try {
      const connects = Array.from({ length: N }, () => connect(url, { connectTimeoutMs: 60_000 }));
      await allIn;
      for (const [req, socket, head] of held) upgrade.handleUpgrade(req, socket, head);
      const settled = await Promise.allSettled(connects);
      for (const s of settled) if (s.status === "fulfilled") conns.push(s.value);
      const failed = settled.flatMap((s) => (s.status === "rejected" ? [String((s.reason as Error).message)] : []));
      assert.deepEqual(failed.slice(0, 3), [], `${failed.length} of ${N} clients refused`);
      assert.deepEqual(refused.slice(0, 3), []);
      // Each session opens on the server once its client's opening arrived.
      await until(() => server.sessions.size === N);
    } finally {
      for (const c of conns) c.destroy();
      await server.close({ timeoutMs: 1000 });
      await new Promise<void>((resolve) => web.close(() => resolve()));
    }
  });
});
