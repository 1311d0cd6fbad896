/**
 * Client.requestClosest: a keyed call lost after it was sent, with no other
 * node to take it, rejects with that loss (its handler may have run) — not
 * ERR_CONNECT "every node failed", which says no node was reached. Over real
 * loopback sockets, the drop made by a proxy.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client, createServer } from "../../src/index.ts";
import { startProxy } from "../helpers/proxy.ts";

describe("Client: a keyed call lost on its only node", () => {
  it("rejects with the loss (ERR_CONNECTION_CLOSED, may have run), and the same key then gets the answer of its one run", async () => {
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
    const proxy = await startProxy(url);
    const client = new Client().addNode("/pay/1", proxy.url);
    try {
      const call = client.requestClosest("/pay/1", "100", { idempotencyKey: "order-7", timeoutMs: 60_000 });
      await started;
      proxy.cutAll();
      await assert.rejects(call, (err: Error & { code?: string }) => {
        // Before: ERR_CONNECT "every node of /pay/1 failed", as if it had never been sent.
        assert.equal(err.code, "ERR_CONNECTION_CLOSED", String(err));
        assert.match(err.message, /may have run/);
        return true;
      });
      open();
      // Repeated with its key: answered with the one run's result (the handler ran on after the drop).
      const again = await client.requestClosest("/pay/1", "100", { idempotencyKey: "order-7", timeoutMs: 60_000 });
      assert.equal(new TextDecoder().decode(again), "paid 1");
      assert.equal(runs, 1);
    } finally {
      open();
      await client.close();
      await proxy.close();
      await server.close();
    }
  });
});
