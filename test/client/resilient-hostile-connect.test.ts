/**
 * connectResilient over a custom transport whose connect fails with what an
 * application may throw: a PointSubError given a code of its own (no entry in
 * ERROR_CODES), or a value String cannot convert. Each is a failed attempt
 * (retried when retryable, as README says), the client connects once the
 * transport works. Before, the reconnection loop threw on it (looking up the
 * code's retryability, or converting the value for its message): an
 * unhandled rejection, which ends a Node process, and connectResilient never
 * settled. Over real loopback sockets (the transport delegates to tcp).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connectResilient, createServer, isPointSubError, PointSubError } from "../../src/index.ts";
import { flakyRuntime } from "../helpers/flaky-transport.ts";

/** A retryable PointSubError whose code the application changed to its own. */
const ownCode = (base: "ERR_CONNECT" | "ERR_UNAUTHORIZED") =>
  Object.assign(new PointSubError(base, "the transport's own failure"), { code: "MY_TRANSPORT_DOWN" });

describe("connectResilient: a custom transport's connect failing with an application's value", () => {
  const cases: [string, () => unknown][] = [
    ["a retryable PointSubError with a code of its own", () => ownCode("ERR_CONNECT")],
    ["Object.create(null)", () => Object.create(null)],
    [
      "an Error whose message getter throws",
      () =>
        Object.defineProperty(new Error("x"), "message", {
          get() {
            throw new Error("no message");
          },
        }),
    ],
  ];
  for (const [name, bad] of cases) {
    it(`${name}: a failed attempt, retried; the client connects, no unhandled rejection`, async () => {
      const unhandled: unknown[] = [];
      const onUnhandled = (e: unknown) => unhandled.push(e);
      process.on("unhandledRejection", onUnhandled);
      const server = createServer();
      server.handle("/ok/1", () => "fine");
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const { runtime, attempts } = flakyRuntime(2, bad);
      try {
        const client = await connectResilient(url.replace(/^tcp:/, "flaky:"), {
          runtime,
          reconnect: { initialDelayMs: 1, maxDelayMs: 10, maxAttempts: 5 },
        });
        try {
          assert.equal(new TextDecoder().decode(await client.request("/ok/1")), "fine");
          assert.equal(attempts(), 3);
        } finally {
          await client.close();
        }
        assert.deepEqual(unhandled.map(String), []);
      } finally {
        process.off("unhandledRejection", onUnhandled);
        await server.close({ timeoutMs: 1000 });
      }
    });
  }

  // A PointSubError whose fields throw when read: the loop read `retryable` — an unhandled rejection, connectResilient
  // never settled. Wrapped as ERR_CONNECT (retryable): retried, the client connects.
  const throwing = (field: string) => () =>
    Object.defineProperty(new PointSubError("ERR_CONNECT", "the transport's own failure"), field, {
      get() {
        throw new Error(`no ${field}`);
      },
    });
  const fieldCases: [string, () => unknown][] = [
    ["a PointSubError whose retryable getter throws", throwing("retryable")],
    ["a PointSubError whose code getter throws", throwing("code")],
    [
      "a Proxy of a PointSubError whose get trap throws for its fields",
      () =>
        new Proxy(new PointSubError("ERR_CONNECT", "x"), {
          get(target, key) {
            if (typeof key === "symbol") return Reflect.get(target, key);
            throw new Error(`no ${key}`);
          },
        }),
    ],
  ];
  for (const [name, bad] of fieldCases) {
    it(`${name}: a failed attempt (ERR_CONNECT), retried; the client connects, no unhandled rejection`, async () => {
      const unhandled: unknown[] = [];
      let onUnhandled: (e: unknown) => void = () => {};
      // Settles the test at the first unhandled rejection (before the fix connectResilient never settled).
      const failed = new Promise<never>((_, reject) => {
        onUnhandled = (e: unknown) => {
          unhandled.push(e);
          reject(e);
        };
      });
      process.on("unhandledRejection", onUnhandled);
      const server = createServer();
      server.handle("/ok/1", () => "fine");
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const { runtime, attempts } = flakyRuntime(2, bad);
      try {
        const connecting = connectResilient(url.replace(/^tcp:/, "flaky:"), {
          runtime,
          reconnect: { initialDelayMs: 1, maxDelayMs: 10, maxAttempts: 5 },
        });
        const client = await Promise.race([connecting, failed]);
        try {
          assert.equal(new TextDecoder().decode(await client.request("/ok/1")), "fine");
          assert.equal(attempts(), 3);
        } finally {
          await client.close();
        }
        assert.deepEqual(unhandled.map(String), []);
      } finally {
        process.off("unhandledRejection", onUnhandled);
        await server.close({ timeoutMs: 1000 });
      }
    });
  }

  it("a non-retryable PointSubError with a code of its own: connectResilient rejects with it at once", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    const { runtime, attempts } = flakyRuntime(10, () => ownCode("ERR_UNAUTHORIZED"));
    try {
      await assert.rejects(
        connectResilient("flaky://127.0.0.1:1", { runtime, reconnect: { initialDelayMs: 1, maxAttempts: 5 } }),
        (e: unknown) => {
          assert.ok(isPointSubError(e), String(e));
          assert.equal((e as { code: string }).code, "MY_TRANSPORT_DOWN");
          return true;
        },
      );
      assert.equal(attempts(), 1);
      assert.deepEqual(unhandled.map(String), []);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });
});
