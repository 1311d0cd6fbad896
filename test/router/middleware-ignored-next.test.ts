/**
 * A middleware that calls `next()` and ignores the promise it returns —
 * not awaited, or called a second time — must not leave an unhandled
 * rejection behind when the handler fails (or the second call is refused):
 * under Node's default (`--unhandled-rejections=throw`) that ended the
 * server's process. The call is answered with what the middleware returned.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Connection, connect, createServer, type Middleware, type Server } from "../../src/index.ts";
import { sleep } from "../helpers/wait.ts";

describe("middleware that ignores next()'s promise", () => {
  let server: Server;
  let client: Connection;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
  before(async () => {
    process.on("unhandledRejection", onUnhandled);
    server = createServer();
    const ignoring: Middleware = (ctx, next) => {
      if (ctx.route === "/twice/1.0.0") {
        void next();
        void next(); // refused: "next() more than once"
        return "twice";
      }
      void next();
      return "ignored";
    };
    server.use(ignoring);
    server.handle("/sync-throw/1.0.0", () => {
      throw new Error("sync failure");
    });
    server.handle("/async-throw/1.0.0", async () => {
      await sleep(1);
      throw new Error("async failure");
    });
    server.handle("/twice/1.0.0", () => "ok");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    client = await connect(url);
  });
  after(async () => {
    process.off("unhandledRejection", onUnhandled);
    await client.close();
    await server.close();
  });

  it("a handler that throws at once, one that rejects later, next() called twice: answered, no unhandled rejection", async () => {
    const text = async (route: string) => new TextDecoder().decode(await client.request(route));
    assert.equal(await text("/sync-throw/1.0.0"), "ignored");
    assert.equal(await text("/async-throw/1.0.0"), "ignored");
    assert.equal(await text("/twice/1.0.0"), "twice");
    // The async handler's rejection comes after its answer: wait for it, and for Node's check.
    await sleep(50);
    await new Promise(setImmediate);
    assert.deepEqual(
      unhandled.map((e) => String(e)),
      [],
    );
  });
});
