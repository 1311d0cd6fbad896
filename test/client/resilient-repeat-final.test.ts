/**
 * A keyed request whose repeat (attemptTimeoutMs ran out) waits for the next
 * connection while the first attempt, on a connection draining after a
 * GOAWAY, gets the handler's own error: that error is the answer (the
 * server's store keeps it), the held repeat is not sent.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connectResilient, createServer, type Handler, type PointSubError } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("resilient client: a held repeat after a final error", () => {
  it("the handler's error on the draining connection is the caller's answer; the held repeat is not sent", async () => {
    // Before: the caller waited for the repeat, which went out once reconnected; the restarted server's new
    // store ran the handler a second time and the caller got that run's answer instead of the first's error.
    let runs = 0;
    const gate = Promise.withResolvers<void>();
    const charge: Handler = async () => {
      runs++;
      if (runs > 1) return "charged";
      await gate.promise;
      throw new Error("card declined");
    };
    const a = createServer({ idempotency: true });
    a.handle("/charge/1", charge);
    const [url] = await a.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    const b = createServer({ idempotency: true });
    b.handle("/charge/1", charge);
    b.handle("/echo/1", (r) => r.data);
    try {
      const answer = client.request("/charge/1", "x", {
        idempotencyKey: "order-2",
        attemptTimeoutMs: 50,
        timeoutMs: 60_000,
      });
      const settled = answer.then(
        () => "answered",
        (e: PointSubError) => e.code,
      );
      await until(() => runs === 1);
      const closing = a.close({ timeoutMs: 60_000 }); // GOAWAY: the call in flight finishes on it
      await until(() => client.state === "reconnecting");
      const held = client as unknown as { held: unknown[] };
      await until(() => held.held.length === 1); // the repeat waits for the next connection
      gate.resolve();
      await closing;
      await b.listen(url); // the same port: a restart, with a store of its own
      await client.whenConnected();
      // Held calls go out first on a new connection: this answer comes after the repeat's handler would have begun.
      assert.equal(text(await client.request("/echo/1", "after", { timeoutMs: 10_000 })), "after");
      assert.equal(await settled, "ERR_HANDLER");
      assert.equal(runs, 1);
    } finally {
      gate.resolve();
      await client.close();
      await a.close();
      await b.close();
    }
  });
});

describe("resilient client: an answered request's held repeat", () => {
  it("leaves the offline queue once the request is answered: its bytes are free for new calls", async () => {
    // Before: the repeat, never to be sent, kept its payload counted against offline.maxBytes (and in memory)
    // until the next connection or its deadline; a new call made meanwhile was refused ERR_OFFLINE (queue full).
    let runs = 0;
    const gate = Promise.withResolvers<void>();
    const a = createServer({ idempotency: true });
    a.handle("/charge/1", async () => {
      runs++;
      await gate.promise;
      return "charged";
    });
    const [url] = await a.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, {
      reconnect: { initialDelayMs: 10, maxDelayMs: 50 },
      offline: { maxBytes: 100_000, maxAgeMs: 60_000 },
    });
    const b = createServer({ idempotency: true });
    b.handle("/echo/1", (r) => r.data);
    try {
      const big = new Uint8Array(60_000);
      const answer = client.request("/charge/1", big, {
        idempotencyKey: "order-3",
        attemptTimeoutMs: 50,
        timeoutMs: 60_000,
      });
      await until(() => runs === 1);
      const closing = a.close({ timeoutMs: 60_000 });
      await until(() => client.state === "reconnecting");
      const held = client as unknown as { held: unknown[] };
      await until(() => held.held.length === 1);
      gate.resolve();
      assert.equal(text(await answer), "charged");
      await closing;
      // Still reconnecting (nothing listens): a call as big as the answered one's is held, not refused.
      assert.equal(client.state, "reconnecting");
      const next = client.request("/echo/1", big, { timeoutMs: 60_000 }).then(
        (r) => `${r.length} bytes`,
        (e: PointSubError) => e.code,
      );
      await b.listen(url);
      assert.equal(await next, "60000 bytes");
    } finally {
      gate.resolve();
      await client.close();
      await a.close();
      await b.close();
    }
  });
});
