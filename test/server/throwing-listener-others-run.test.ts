/**
 * An event with two application listeners, the first of which throws (the
 * application's bug): the second still runs, the error surfaces uncaught,
 * and the server or connection goes on. Before, the server, the lp server
 * and lp connections emitted with `eventemitter3`, whose `emit` stops at a
 * throwing listener: the listeners after it never heard the event (a
 * `session` listener that set the session up, a `sessionClose` one that
 * released what it held).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, connectLp, createLpServer, createServer } from "../../src/index.ts";
import { catchingUncaught } from "../helpers/uncaught.ts";
import { until } from "../helpers/wait.ts";

/** Adds to `emitter`'s `event` a listener that throws, then one that records the event in `heard`. */
function throwThenHear(
  emitter: { on(event: string, fn: (...a: unknown[]) => void): unknown },
  event: string,
  heard: string[],
): void {
  emitter.on(event, () => {
    throw new Error(`bug in ${event}`);
  });
  emitter.on(event, () => heard.push(event));
}

describe("an event whose first listener throws: the next ones still run", () => {
  it("server session, message, sessionClose: heard by the second listener, the session served", async () => {
    await catchingUncaught(async (caught) => {
      const server = createServer();
      const heard: string[] = [];
      for (const event of ["session", "message", "sessionClose"]) throwThenHear(server as never, event, heard);
      server.handle("/echo/1", (req) => req.data);
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const client = await connect(url);
      try {
        await until(() => heard.includes("session"));
        assert.equal(new TextDecoder().decode(await client.request("/echo/1", "served")), "served");
        await client.send("one way");
        await until(() => heard.includes("message"));
        await client.close();
        await until(() => heard.includes("sessionClose"));
        assert.deepEqual(heard, ["session", "message", "sessionClose"]);
        await until(() => caught.length === 3);
        assert.deepEqual(caught, ["bug in session", "bug in message", "bug in sessionClose"]);
        assert.equal(server.sessions.size, 0);
      } finally {
        client.destroy();
        await server.close({ timeoutMs: 200 });
      }
    });
  });

  it("lp server session, message, sessionClose and an lp connection's message and close", async () => {
    await catchingUncaught(async (caught) => {
      const server = createLpServer();
      const heard: string[] = [];
      for (const event of ["session", "message", "sessionClose"]) throwThenHear(server as never, event, heard);
      server.on("session", (s) => {
        void s.send("hello");
      });
      const [url] = await server.listen("lp+tcp://127.0.0.1:0");
      const conn = await connectLp(url);
      const client: string[] = [];
      throwThenHear(conn as never, "message", client);
      throwThenHear(conn as never, "close", client);
      try {
        await until(() => client.includes("message"));
        await conn.send("one way");
        await until(() => heard.includes("message"));
        assert.equal(server.sessions.size, 1);
        await conn.close({ timeoutMs: 1000 });
        await until(() => heard.includes("sessionClose") && client.includes("close"));
        assert.deepEqual(heard, ["session", "message", "sessionClose"]);
        assert.deepEqual(client, ["message", "close"]);
        await until(() => caught.length === 5);
        assert.deepEqual(caught.toSorted(), [
          "bug in close",
          "bug in message",
          "bug in message",
          "bug in session",
          "bug in sessionClose",
        ]);
      } finally {
        conn.destroy();
        await server.close({ timeoutMs: 200 });
      }
    });
  });
});
