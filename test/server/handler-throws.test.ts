/**
 * A handler or middleware that throws (or rejects with) a value `String`
 * cannot convert — `Object.create(null)`, an object whose `toString` throws —
 * is answered like any other failure: ERR_HANDLER, the session kept, the
 * process alive. Before, building the error's message threw inside the
 * dispatcher: a synchronous throw closed the session with ERR_PROTOCOL (the
 * client was blamed), an asynchronous one was an unhandled rejection that
 * ended the server's process, its caller waiting for its timeout.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createConnection } from "node:net";
import { describe, it } from "node:test";
import {
  connect,
  createServer,
  type Handler,
  isPointSubError,
  type Middleware,
  PointSubError,
} from "../../src/index.ts";
import { catchingUncaught } from "../helpers/uncaught.ts";
import { sleep, until } from "../helpers/wait.ts";

const unprintable = (): unknown => Object.create(null);
const throwingToString = (): unknown => ({
  toString() {
    throw new Error("no text for you");
  },
});

describe("a handler that throws a value String cannot convert", () => {
  const cases: [string, (bad: () => unknown) => { handler?: Handler; mw?: Middleware; keyed?: boolean }][] = [
    [
      "a synchronous handler",
      (bad) => ({
        handler: () => {
          throw bad();
        },
      }),
    ],
    [
      "an async handler",
      (bad) => ({
        handler: async () => {
          throw bad();
        },
      }),
    ],
    [
      "a middleware",
      (bad) => ({
        mw: () => {
          throw bad();
        },
      }),
    ],
    [
      "a handler behind the idempotency middleware (a keyed request)",
      (bad) => ({
        handler: async () => {
          throw bad();
        },
        keyed: true,
      }),
    ],
  ];
  for (const [name, make] of cases) {
    for (const [kind, bad] of [
      ["Object.create(null)", unprintable],
      ["a throwing toString", throwingToString],
    ] as const) {
      it(`${name} throwing ${kind}: ERR_HANDLER, the session and the process go on`, async () => {
        const setup = make(bad);
        const server = createServer({ idempotency: setup.keyed === true });
        if (setup.mw !== undefined) {
          const mw = setup.mw;
          server.use((ctx, next) => (ctx.route === "/bad/1" ? mw(ctx, next) : next()));
        }
        server.handle("/bad/1", setup.handler ?? (() => "unreached"));
        server.handle("/ok/1", () => "fine");
        const [url] = await server.listen("tcp://127.0.0.1:0");
        const client = await connect(url);
        try {
          const options = { timeoutMs: 5000, ...(setup.keyed === true ? { idempotencyKey: "k1" } : {}) };
          await assert.rejects(client.request("/bad/1", "x", options), (e: unknown) => {
            assert.ok(isPointSubError(e), String(e));
            assert.equal(e.code, "ERR_HANDLER", e.message);
            return true;
          });
          // The same key again: answered from the store (the entry was completed), not left running.
          if (setup.keyed === true) {
            await assert.rejects(client.request("/bad/1", "x", options), (e: unknown) => {
              assert.ok(isPointSubError(e), String(e));
              assert.equal(e.code, "ERR_HANDLER", e.message);
              return true;
            });
          }
          assert.equal(new TextDecoder().decode(await client.request("/ok/1")), "fine");
          assert.equal(client.state, "open");
        } finally {
          await client.close();
          await server.close({ timeoutMs: 1000 });
        }
      });
    }
  }

  it("a stream handler rejecting with Object.create(null): the transfer fails with ERR_HANDLER, the session goes on", async () => {
    const server = createServer();
    server.handleStream("/bad-stream/1", async (stream) => {
      for await (const _ of stream);
      throw unprintable();
    });
    server.handle("/ok/1", () => "fine");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    try {
      await assert.rejects(client.sendStream("/bad-stream/1", [new Uint8Array(10)]).done, (e: unknown) => {
        assert.ok(isPointSubError(e), String(e));
        assert.equal(e.code, "ERR_HANDLER", e.message);
        return true;
      });
      assert.equal(new TextDecoder().decode(await client.request("/ok/1")), "fine");
    } finally {
      await client.close();
      await server.close({ timeoutMs: 1000 });
    }
  });
});

describe("a stream handler rejecting with a PointSubError whose retryAfterMs getter throws", () => {
  it("the transfer fails with ERR_HANDLER, no unhandled rejection, the session goes on", async () => {
    // Before: the getter threw while its answer was encoded, from the handler's promise: an unhandled
    // rejection (the server's process ends), the stream unanswered.
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    const server = createServer();
    server.handleStream("/bad-stream/1", async (stream) => {
      for await (const _ of stream);
      throw Object.defineProperty(new PointSubError("ERR_QUOTA", "full"), "retryAfterMs", {
        get() {
          throw new Error("no hint");
        },
      });
    });
    server.handle("/ok/1", () => "fine");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    try {
      await assert.rejects(client.sendStream("/bad-stream/1", [new Uint8Array(10)]).done, (e: unknown) => {
        assert.ok(isPointSubError(e), String(e));
        assert.equal(e.code, "ERR_HANDLER", e.message);
        return true;
      });
      assert.equal(new TextDecoder().decode(await client.request("/ok/1")), "fine");
      await sleep(10);
      assert.deepEqual(unhandled.map(String), []);
    } finally {
      process.off("unhandledRejection", onUnhandled);
      await client.close();
      await server.close({ timeoutMs: 1000 });
    }
  });
});

describe("a server event listener that throws (the application's bug)", () => {
  it("session, sessionClose and reject: the error surfaces uncaught, the session is served, close() resolves", async () => {
    // Before: a throwing `session` listener closed the session as the client's ERR_PROTOCOL, and a
    // throwing `sessionClose` or `reject` listener left server.close() pending for ever.
    await catchingUncaught(async (caught) => {
      const server = createServer();
      for (const event of ["session", "sessionClose", "reject"] as const) {
        server.on(event, () => {
          throw new Error(`bug in ${event}`);
        });
      }
      server.handle("/echo/1", (req) => req.data);
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const client = await connect(url);
      const silent = createConnection({ host: "127.0.0.1", port: Number(new URL(url).port) });
      silent.on("error", () => {});
      try {
        assert.equal(new TextDecoder().decode(await client.request("/echo/1", "still served")), "still served");
        await once(silent, "connect");
        await until(() => caught.includes("bug in session"));
        // The silent socket is given up at the close's deadline: a reject; the client's session: a sessionClose.
        const closed = await Promise.race([
          server.close({ timeoutMs: 200 }).then(() => "closed"),
          sleep(5000).then(() => "still closing after 5 s"),
        ]);
        assert.equal(closed, "closed");
        await until(() => caught.includes("bug in sessionClose") && caught.includes("bug in reject"));
        assert.equal(server.sessions.size, 0);
      } finally {
        silent.destroy();
        client.destroy();
      }
    });
  });

  it("a session's own close listener: server.close() still resolves", async () => {
    // Before: the listener's throw skipped settling the connection's `closed`, which its graceful close awaits.
    await catchingUncaught(async (caught) => {
      const server = createServer();
      server.on("session", (s) =>
        s.on("close", () => {
          throw new Error("bug in close");
        }),
      );
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const client = await connect(url);
      try {
        await until(() => server.sessions.size === 1);
        const closed = await Promise.race([
          server.close({ timeoutMs: 200 }).then(() => "closed"),
          sleep(5000).then(() => "still closing after 5 s"),
        ]);
        assert.equal(closed, "closed");
        await until(() => caught.includes("bug in close"));
      } finally {
        client.destroy();
      }
    });
  });
});

/** A promise whose `then` throws: adopted through Promise's own `then`, its throw is the handler's failure. */
class ThrowingThen<T> extends Promise<T> {
  // biome-ignore lint/suspicious/noThenProperty: the hostile promise under test
  override then(): never {
    throw new Error("subclass then");
  }
}

/** A promise whose own `then` property throws. */
function ownThen<T>(value: T): Promise<T> {
  const p = Promise.resolve(value);
  // biome-ignore lint/suspicious/noThenProperty: the hostile promise under test
  Object.defineProperty(p, "then", {
    value() {
      throw new Error("own then");
    },
  });
  return p;
}

describe("a handler that fails with a value the dispatcher cannot answer as it is", () => {
  const revoked = (): object => {
    const r = Proxy.revocable({}, {});
    r.revoke();
    return r.proxy;
  };
  /** A PointSubError whose code the application changed to one of its own (the property is writable). */
  const ownCode = (): PointSubError => {
    const e = new PointSubError("ERR_HANDLER", "tagged");
    (e as { code: string }).code = "MY_APP_CODE";
    return e;
  };
  /** A PointSubError whose `retryAfterMs` is a getter that throws (read when its answer is encoded). */
  const throwingRetryAfter = (): PointSubError =>
    Object.defineProperty(new PointSubError("ERR_QUOTA", "full"), "retryAfterMs", {
      get() {
        throw new Error("no hint");
      },
    });
  const cases: [string, Handler][] = [
    [
      "throwing a PointSubError with a code not pointsub's",
      () => {
        throw ownCode();
      },
    ],
    [
      "rejecting with a PointSubError with a code not pointsub's",
      async () => {
        throw ownCode();
      },
    ],
    [
      "rejecting with a PointSubError whose retryAfterMs is a BigInt",
      async () => {
        const e = new PointSubError("ERR_OVERLOADED", "busy");
        (e as { retryAfterMs: unknown }).retryAfterMs = 5n;
        throw e;
      },
    ],
    [
      "throwing a PointSubError whose retryAfterMs getter throws",
      () => {
        throw throwingRetryAfter();
      },
    ],
    [
      "rejecting with a PointSubError whose retryAfterMs getter throws",
      async () => {
        throw throwingRetryAfter();
      },
    ],
    [
      "rejecting with a revoked Proxy",
      async () => {
        throw revoked();
      },
    ],
    ["returning a revoked Proxy", () => revoked() as never],
    [
      "returning a thenable whose then throws",
      () =>
        ({
          // biome-ignore lint/suspicious/noThenProperty: the hostile thenable under test
          then() {
            throw new Error("broken then");
          },
        }) as never,
    ],
    ["returning a Promise subclass whose then throws", () => new ThrowingThen<string>((r) => r("x")) as never],
  ];
  for (const [name, handler] of cases) {
    it(`${name}: the caller gets a typed error at once, the session and the process go on`, async () => {
      const unhandled: unknown[] = [];
      const onUnhandled = (e: unknown) => unhandled.push(e);
      process.on("unhandledRejection", onUnhandled);
      const server = createServer();
      server.handle("/bad/1", handler);
      server.handle("/ok/1", () => "fine");
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const client = await connect(url);
      try {
        // Before: an ERR_PROTOCOL close of the session, or an unhandled rejection and no answer (ERR_TIMEOUT).
        await assert.rejects(client.request("/bad/1", "x", { timeoutMs: 5000 }), (e: unknown) => {
          assert.ok(isPointSubError(e), String(e));
          assert.ok(e.code === "ERR_HANDLER" || e.code === "ERR_OVERLOADED", `${e.code}: ${e.message}`);
          return true;
        });
        assert.equal(new TextDecoder().decode(await client.request("/ok/1")), "fine");
        assert.equal(client.state, "open");
        await sleep(10);
        assert.deepEqual(unhandled.map(String), []);
      } finally {
        process.off("unhandledRejection", onUnhandled);
        await client.close();
        await server.close({ timeoutMs: 1000 });
      }
    });
  }

  it("a PointSubError with a code not pointsub's: its code and message reach the caller in ERR_HANDLER's message", async () => {
    const server = createServer();
    server.handle("/sync/1", () => {
      throw ownCode();
    });
    server.handle("/async/1", async () => {
      throw ownCode();
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    try {
      // Before: "handler for /sync/1 failed: tagged", the application's code lost.
      for (const route of ["/sync/1", "/async/1"]) {
        await assert.rejects(client.request(route, "x", { timeoutMs: 5000 }), {
          code: "ERR_HANDLER",
          message: `handler for ${route} failed: MY_APP_CODE: tagged`,
        });
      }
    } finally {
      await client.close();
      await server.close({ timeoutMs: 1000 });
    }
  });

  it("behind the idempotency middleware, a PointSubError with a code not pointsub's: the key is settled, a duplicate gets the same answer at once", async () => {
    const server = createServer({ idempotency: true });
    let runs = 0;
    server.handle("/bad/1", async () => {
      runs++;
      throw ownCode();
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    try {
      // Before: the middleware threw a TypeError while storing the error, leaving the key claimed: the
      // duplicate waited for an attempt that would never answer (ERR_TIMEOUT).
      for (let i = 0; i < 2; i++) {
        await assert.rejects(client.request("/bad/1", "x", { timeoutMs: 5000, idempotencyKey: "k1" }), {
          code: "ERR_HANDLER",
          // The application's code is kept in the message (before: "handler for /bad/1 failed: tagged").
          message: "handler for /bad/1 failed: MY_APP_CODE: tagged",
        });
      }
      assert.equal(runs, 1);
    } finally {
      await client.close();
      await server.close({ timeoutMs: 1000 });
    }
  });

  it("a request handler, a stream handler and a one-way message's middleware returning a promise whose own then throws: its value is the outcome, the session goes on", async () => {
    const server = createServer();
    let messages = 0;
    server.use((ctx, next) => {
      if (ctx.kind !== "message") return next();
      messages++;
      return ownThen(undefined);
    });
    server.handleStream("/bad-stream/1", () => ownThen("streamed") as never);
    server.handle("/bad/1", () => ownThen("answered") as never);
    server.handle("/ok/1", () => "fine");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    try {
      // Before: the dispatcher called the promise's then, whose throw closed the session as the client's ERR_PROTOCOL.
      const text = (b: Uint8Array) => new TextDecoder().decode(b);
      await client.send("delivered");
      assert.equal(text(await client.request("/bad/1", "x", { timeoutMs: 5000 })), "answered");
      assert.equal(text(await client.sendStream("/bad-stream/1", [new Uint8Array(10)]).done), "streamed");
      assert.equal(messages, 1);
      assert.equal(new TextDecoder().decode(await client.request("/ok/1")), "fine");
      assert.equal(client.state, "open");
    } finally {
      await client.close();
      await server.close({ timeoutMs: 1000 });
    }
  });

  it("a middleware returning a thenable whose then getter throws, for a one-way message and for a request: refused, the session goes on", async () => {
    const server = createServer();
    // biome-ignore lint/suspicious/noThenProperty: the hostile thenable under test
    const broken = Object.defineProperty({}, "then", {
      get() {
        throw new Error("then getter");
      },
    });
    server.use((ctx, next) => (ctx.route === "/ok/1" ? next() : (broken as never)));
    server.handle("/ok/1", () => "fine");
    server.handle("/bad/1", () => "unreached");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    try {
      // Before: run() threw out of the dispatcher, and the session closed as the client's ERR_PROTOCOL.
      await client.send("dropped");
      await assert.rejects(client.request("/bad/1", "x", { timeoutMs: 5000 }), { code: "ERR_HANDLER" });
      assert.equal(new TextDecoder().decode(await client.request("/ok/1")), "fine");
      assert.equal(client.state, "open");
    } finally {
      await client.close();
      await server.close({ timeoutMs: 1000 });
    }
  });
});
