/**
 * Serving requests loaded on demand (a browser connection starts with a
 * `DispatchShell`, `connection/dispatch-lazy.ts`), with a loader the test
 * releases, over tcp:
 * - a one-way message with nothing waiting is delivered at once, without
 *   loading anything;
 * - a route added starts the load; a request that arrives meanwhile waits
 *   and is answered once it loaded, and a message sent after it is
 *   delivered after it (arrival order);
 * - a connection with no routes answers a request with ERR_NO_ROUTE once
 *   loaded, and its connection stays usable;
 * - routes and middleware added before the load (the router comes with the
 *   dispatcher): bad arguments throw at once, the rest apply in the order
 *   added once loaded, and with middleware a message waits for them.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { connect } from "../../src/client/connect.ts";
import { resetDispatcher } from "../../src/connection/dispatch-lazy.ts";
import { resetStreamEngine } from "../../src/connection/stream-engine.ts";
import { type Connection, createServer } from "../../src/index.ts";
import { heldLoader, portable } from "../helpers/held-loader.ts";
import { until } from "../helpers/wait.ts";

/** A server (its sessions built after the reset: shells too) and a client, with the engine behind `gate`. */
async function pair(gate: ReturnType<typeof heldLoader>) {
  const server = createServer({ runtime: portable("lazy-dispatch") });
  const sessions: Connection[] = [];
  server.on("session", (s) => sessions.push(s));
  const [url] = await server.listen("tcp://127.0.0.1:0");
  resetStreamEngine(gate.load);
  resetDispatcher();
  const conn = await connect(url, { runtime: portable("lazy-dispatch") });
  await until(() => sessions.length === 1);
  return { server, conn, session: sessions[0] };
}

describe("request serving loaded on demand", () => {
  after(() => resetStreamEngine());

  it("messages go straight through; a request waits for the load, and a message after it stays after it", async () => {
    const gate = heldLoader();
    const { server, conn, session } = await pair(gate);
    try {
      const events: string[] = [];
      conn.on("message", (m) => events.push(`message:${m.text()}`));
      await session.send("early");
      await until(() => events.length === 1);
      assert.deepEqual(events, ["message:early"]);
      assert.equal(gate.calls(), 0, "a message needs no dispatcher");
      conn.handle("/hello/1", (req) => {
        events.push(`request:${req.text()}`);
        return `hi ${req.text()}`;
      });
      assert.equal(gate.calls(), 1, "a route starts the load");
      const answer = session.request("/hello/1", "x");
      await session.send("after");
      await new Promise((r) => setTimeout(r, 30));
      assert.deepEqual(events, ["message:early"], "the request waits, and the message after it too");
      assert.equal(conn.stats().requests.inFlight, 1, "the waiting request counts as in flight");
      gate.release();
      assert.equal(new TextDecoder().decode(await answer), "hi x");
      await until(() => events.length === 3);
      assert.deepEqual(events, ["message:early", "request:x", "message:after"]);
      // Loaded: the next request is served at once.
      assert.equal(new TextDecoder().decode(await session.request("/hello/1", "y")), "hi y");
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("routes and middleware added before the load: bad arguments throw at once, the rest apply in order once loaded", async () => {
    const gate = heldLoader();
    const { server, conn, session } = await pair(gate);
    try {
      assert.throws(() => conn.handle("", () => "x"), { code: "ERR_INVALID_ARGUMENT" });
      assert.throws(() => conn.handle("/a/1", 42 as never), { code: "ERR_INVALID_ARGUMENT" });
      assert.throws(() => conn.use("mw" as never), { code: "ERR_INVALID_ARGUMENT" });
      assert.throws(() => conn.handleStream("/s/1", undefined as never), { code: "ERR_INVALID_ARGUMENT" });
      assert.equal(gate.calls(), 0, "a refused argument loads nothing");
      const seen: string[] = [];
      conn.use(async (ctx, next) => {
        seen.push(`first:${ctx.kind}:${ctx.route}`);
        return next();
      });
      conn.handle("/a/1", (req) => {
        seen.push(`handler:${req.text()}`);
        return "a";
      });
      conn.use(async (ctx, next) => {
        seen.push(`second:${ctx.kind}`);
        return next();
      });
      conn.handleStream("/s/1", async (s) => String((await s.bytes()).length));
      conn.on("message", (m) => seen.push(`message:${m.text()}`));
      assert.equal(gate.calls(), 1, "one load for all of them");
      await session.send("m");
      await new Promise((r) => setTimeout(r, 30));
      assert.deepEqual(seen, [], "with middleware, a message waits for the dispatcher");
      gate.release();
      assert.equal(new TextDecoder().decode(await session.request("/a/1", "x")), "a");
      assert.deepEqual(seen, [
        "first:message:",
        "second:message",
        "message:m",
        "first:request:/a/1",
        "second:request",
        "handler:x",
      ]);
      assert.equal(new TextDecoder().decode(await session.sendStream("/s/1", [new Uint8Array(1000)])), "1000");
      assert.deepEqual(seen.slice(6), ["first:stream:/s/1", "second:stream"]);
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("no routes: a request loads the dispatcher and gets ERR_NO_ROUTE; the connection stays usable", async () => {
    const gate = heldLoader();
    gate.release();
    const { server, conn, session } = await pair(gate);
    server.handle("/echo/1", (req) => req.data);
    try {
      await assert.rejects(session.request("/nothing/1", "x"), { code: "ERR_NO_ROUTE" });
      assert.equal(gate.calls(), 1);
      assert.equal(new TextDecoder().decode(await conn.request("/echo/1", "still here")), "still here");
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
