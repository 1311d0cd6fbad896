/**
 * Client over a custom transport whose connect fails with a value String
 * cannot convert (Object.create(null)): a call rejects with ERR_CONNECT, and
 * requestClosest's background measure of its nodes raises nothing. Before,
 * wrapping the value threw: `request` rejected with a raw TypeError, and the
 * measure's was an unhandled rejection (which ends a Node process). Over
 * real loopback sockets (the transport delegates to tcp once it works).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client, createServer, isPointSubError, PointSubError } from "../../src/index.ts";
import { flakyRuntime } from "../helpers/flaky-transport.ts";
import { sleep } from "../helpers/wait.ts";

describe("Client: a custom transport's connect failing with Object.create(null)", () => {
  it("a PointSubError whose code getter throws: request rejects with ERR_CONNECT (before: the getter's raw Error), no unhandled rejection", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    const server = createServer();
    server.handle("/ok/1", () => "fine");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const node = url.replace(/^tcp:/, "flaky:");
    const { runtime } = flakyRuntime(3, () =>
      Object.defineProperty(new PointSubError("ERR_CONNECT", "down"), "code", {
        get() {
          throw new Error("no code");
        },
      }),
    );
    const client = new Client({ runtime });
    client.addNode("/ok/1", node);
    try {
      for (const call of [() => client.request(node, "/ok/1", "x"), () => client.requestClosest("/ok/1", "x")]) {
        await assert.rejects(call(), (e: unknown) => {
          assert.ok(isPointSubError(e), String(e));
          assert.equal(e.code, "ERR_CONNECT");
          return true;
        });
      }
      await sleep(50);
      assert.deepEqual(unhandled.map(String), []);
    } finally {
      process.off("unhandledRejection", onUnhandled);
      await client.close();
      await server.close({ timeoutMs: 1000 });
    }
  });

  it("request rejects with ERR_CONNECT; requestClosest's measure raises no unhandled rejection", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    const server = createServer();
    server.handle("/ok/1", () => "fine");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const node = url.replace(/^tcp:/, "flaky:");
    const { runtime } = flakyRuntime(3, () => Object.create(null));
    const client = new Client({ runtime });
    client.addNode("/ok/1", node);
    try {
      await assert.rejects(client.request(node, "/ok/1", "x"), (e: unknown) => {
        assert.ok(isPointSubError(e), String(e));
        assert.equal(e.code, "ERR_CONNECT");
        return true;
      });
      // Its measure and its call both connect (attempts 2 and 3 fail): ERR_CONNECT, every node failed.
      await assert.rejects(client.requestClosest("/ok/1", "x"), (e: unknown) => {
        assert.ok(isPointSubError(e), String(e));
        assert.equal(e.code, "ERR_CONNECT");
        return true;
      });
      await sleep(50);
      assert.deepEqual(unhandled.map(String), []);
    } finally {
      process.off("unhandledRejection", onUnhandled);
      await client.close();
      await server.close({ timeoutMs: 1000 });
    }
  });
});
