/** Options are checked once, at construction, with the field and its range in the message; request timeouts scale with the payload. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, connectResilient, createServer, isPointSubError } from "../../src/index.ts";

const bad: [string, Record<string, number>][] = [
  ["keepAliveMs", { keepAliveMs: -5 }],
  ["requestTimeoutMs", { requestTimeoutMs: Number.NaN }],
  ["closeTimeoutMs", { closeTimeoutMs: Number.POSITIVE_INFINITY }],
  ["slowPeerBytes", { slowPeerBytes: 1.5 }],
  ["memoryBudget", { memoryBudget: -1 }],
  ["requestBytesPerSecond", { requestBytesPerSecond: 0 }],
  ["progressTimeoutMs", { progressTimeoutMs: -1 }],
  ["maxMessageSize", { maxMessageSize: 0 }],
  ["maxConnections", { maxConnections: -1 }],
  ["maxConnections", { maxConnections: Number.NaN }],
];

describe("options", () => {
  for (const [field, o] of bad) {
    it(`createServer refuses an invalid ${field} with ERR_INVALID_ARGUMENT naming it`, () => {
      assert.throws(
        () => createServer(o),
        (err: unknown) => isPointSubError(err) && err.code === "ERR_INVALID_ARGUMENT" && err.message.startsWith(field),
      );
    });
  }

  it("connect checks its options before connecting (no ERR_CONNECT for a bad option)", async () => {
    await assert.rejects(connect("tcp://127.0.0.1:1", { keepAliveMs: -1 }), {
      code: "ERR_INVALID_ARGUMENT",
      message: /keepAliveMs must be >= 0/,
    });
  });

  it("connect refuses an invalid connectTimeoutMs at once, naming it (it connected first and blamed handshakeTimeoutMs)", async () => {
    for (const connectTimeoutMs of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      await assert.rejects(connect("tcp://127.0.0.1:1", { connectTimeoutMs }), {
        code: "ERR_INVALID_ARGUMENT",
        message: /^connectTimeoutMs must be/,
      });
    }
  });

  it("connectResilient does not retry what cannot succeed (bad options)", async () => {
    await assert.rejects(connectResilient("tcp://127.0.0.1:1", { requestTimeoutMs: -1 }), {
      code: "ERR_INVALID_ARGUMENT",
    });
  });

  it("a request's default timeout is requestTimeoutMs plus its payload at requestBytesPerSecond", async () => {
    const server = createServer({ maxMessageSize: 8 << 20 });
    server.handle("/slow/1", async (req) => {
      await new Promise((r) => setTimeout(r, 300));
      return String(req.data.length);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // 100 ms base; 4 MiB at 1 MiB/s adds 4 s.
    const conn = await connect(url, { requestTimeoutMs: 100, requestBytesPerSecond: 1 << 20, maxMessageSize: 8 << 20 });
    try {
      await assert.rejects(conn.request("/slow/1", "x"), { code: "ERR_TIMEOUT" });
      assert.equal(new TextDecoder().decode(await conn.request("/slow/1", new Uint8Array(4 << 20))), String(4 << 20));
      // An explicit timeoutMs is taken as given.
      await assert.rejects(conn.request("/slow/1", new Uint8Array(4 << 20), { timeoutMs: 100 }), {
        code: "ERR_TIMEOUT",
      });
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
