/**
 * close() called again from a `close` listener (which close() itself emits)
 * gives the first call's promise: it resolves once the connection has
 * drained, as the first does.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connectResilient, createServer } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

describe("resilient client: close() from a `close` listener", () => {
  it("resolves with the first close(): after the request in flight finished (it resolved at once)", async () => {
    // Before: close() ran the `close` listeners before it kept its promise, so the one a listener got closed
    // nothing (the connection was already taken) and resolved at once, while the first still drained.
    let started = false;
    const gate = Promise.withResolvers<void>();
    const server = createServer();
    server.handle("/slow/1", async () => {
      started = true;
      await gate.promise;
      return "done";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    try {
      let answered = false;
      const call = client.request("/slow/1", "x", { timeoutMs: 60_000 }).then((b) => {
        answered = true;
        return new TextDecoder().decode(b);
      });
      await until(() => started);
      let again: Promise<void> | undefined;
      client.on("close", () => {
        again = client.close();
      });
      const first = client.close();
      assert.ok(again !== undefined);
      // What each close() saw once it resolved: whether the request in flight had its answer.
      const sawFirst = first.then(() => answered);
      const sawAgain = again.then(() => answered);
      gate.resolve();
      assert.equal(await call, "done");
      assert.equal(await sawAgain, true);
      assert.equal(await sawFirst, true);
      assert.equal(again, first);
    } finally {
      gate.resolve();
      await client.close();
      await server.close();
    }
  });
});
