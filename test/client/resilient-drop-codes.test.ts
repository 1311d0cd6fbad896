/**
 * connectResilient: a keyed request pending when its connection is closed
 * with any retryable error — here the server's ERR_SLOW_PEER GOAWAY, not
 * only ERR_CONNECTION_CLOSED — is sent again on the next connection, and the
 * server's idempotency store answers it: the handler runs once. Over real
 * loopback sockets.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connectResilient, createServer, PointSubError } from "../../src/index.ts";

describe("connectResilient: a keyed request lost with a drop of any retryable code", () => {
  it("is sent again after the server closes its session with ERR_SLOW_PEER, and answered from its one run", async () => {
    const server = createServer({ idempotency: true });
    let runs = 0;
    let entered!: () => void;
    const started = new Promise<void>((r) => {
      entered = r;
    });
    let open!: () => void;
    const gate = new Promise<void>((r) => {
      open = r;
    });
    server.handle("/pay/1", async () => {
      runs++;
      entered();
      await gate;
      return `paid ${runs}`;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    try {
      const call = client.request("/pay/1", "100", { idempotencyKey: "order-9", timeoutMs: 60_000 });
      await started;
      const [session] = [...server.sessions];
      session.terminate(new PointSubError("ERR_SLOW_PEER", "reads too slowly"));
      open();
      // Before: rejected with ERR_SLOW_PEER, never sent again (only three drop codes were retried).
      assert.equal(new TextDecoder().decode(await call), "paid 1");
      assert.equal(runs, 1);
    } finally {
      open();
      await client.close();
      await server.close();
    }
  });
});
