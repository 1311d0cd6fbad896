/**
 * A resilient client's `send` may be fired and forgotten, as a connection's
 * (README: "Unawaited sends never cause unhandled rejections"): one the
 * offline policy refuses, one with a bad payload while not connected, and
 * one after `close()` reject for whoever awaits them, and are no unhandled
 * rejection for whoever does not. Before, each was an unhandled rejection
 * (ERR_OFFLINE, ERR_INVALID_ARGUMENT, ERR_CONNECTION_CLOSED), which ends a
 * Node process by default.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connectResilient, createServer, type PointSubError } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";

describe("ResilientConnection.send left unawaited", () => {
  it("a refused send is no unhandled rejection, and still rejects for an awaiter", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on("unhandledRejection", onUnhandled);
    const server = createServer();
    try {
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const client = await connectResilient(url, {
        offline: { policy: "fail" },
        reconnect: { initialDelayMs: 20, maxDelayMs: 50 },
      });
      await server.close();
      await until(() => client.state !== "connected");

      // Fired and forgotten while offline: refused by the policy, and a payload that is not one.
      client.send("dropped while offline");
      client.send(42 as unknown as string);
      await assert.rejects(client.send("awaited"), (e: PointSubError) => e.code === "ERR_OFFLINE");

      await client.close();
      client.send("after close");
      await assert.rejects(
        client.send("awaited after close"),
        (e: PointSubError) => e.code === "ERR_CONNECTION_CLOSED",
      );

      // Unhandled rejections are reported after the microtasks of the turn that rejected them.
      await sleep(50);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(
        unhandled.map((e) => (e as PointSubError).code ?? String(e)),
        [],
        "no send may surface as an unhandled rejection",
      );
    } finally {
      process.off("unhandledRejection", onUnhandled);
      await server.close();
    }
  });

  it("a held send that ages out of the queue or is ended by close() is no unhandled rejection", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on("unhandledRejection", onUnhandled);
    const server = createServer();
    try {
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const client = await connectResilient(url, {
        offline: { policy: "queue", maxAgeMs: 30 },
        reconnect: { initialDelayMs: 20, maxDelayMs: 50 },
      });
      await server.close();
      await until(() => client.state !== "connected");
      const aged = client.send("held, then too old");
      client.send("held and forgotten, then too old");
      await assert.rejects(aged, (e: PointSubError) => e.code === "ERR_OFFLINE");
      client.send("held and forgotten, then closed");
      await client.close();
      await sleep(50);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(
        unhandled.map((e) => (e as PointSubError).code ?? String(e)),
        [],
        "no held send may surface as an unhandled rejection",
      );
    } finally {
      process.off("unhandledRejection", onUnhandled);
      await server.close();
    }
  });
});
