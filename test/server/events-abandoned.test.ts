/**
 * `server.events()` streams the application dropped without `return()` (never
 * read, or a loop abandoned mid-way): the server held each for its whole life,
 * with up to `bufferBytes` (16 MiB) of message data and a push per event. Now
 * it holds a stream weakly unless a `next()` waits on it, so a dropped one is
 * collected and unsubscribed; a `for await` loop that nothing else references
 * keeps running.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { type Connection, connect, createServer, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

v8.setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Collects fully, turns between (finalization callbacks run in later turns), until `done()` or `rounds` are over. */
async function collectUntil(done: () => boolean, rounds = 20): Promise<void> {
  for (let i = 0; i < rounds && !done(); i++) {
    gc();
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("server.events() streams the application dropped", () => {
  const toClose: (Server | Connection)[] = [];
  after(async () => {
    for (const c of toClose.reverse()) await c.close().catch(() => {});
  });

  it("a stream dropped without return(), after buffering messages, is collected (the server no longer holds it)", async () => {
    const server = createServer();
    toClose.push(server);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    let messages = 0;
    server.on("message", () => messages++);
    let collected = 0;
    const registry = new FinalizationRegistry(() => collected++);
    // Dropped at once (never read), and one read once then dropped.
    registry.register(server.events(), "unread");
    await (async () => {
      const st = server.events();
      registry.register(st, "read once");
      const c = await connect(url);
      toClose.push(c);
      assert.equal((await st.next()).value?.type, "session");
      for (let i = 0; i < 10; i++) await c.send(new Uint8Array(64 * 1024));
      await until(() => messages === 10);
    })();
    await collectUntil(() => collected === 2);
    // Before, the server's set held both for its life (with 640 KiB of messages each): never collected.
    assert.equal(collected, 2);
  });

  it("a for await loop over events() that nothing else references keeps receiving after collections", async () => {
    const server = createServer();
    toClose.push(server);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const got: string[] = [];
    void (async () => {
      for await (const e of server.events({ types: ["session"] })) got.push(e.type);
    })();
    // The loop waits in next(): only the server can reach it.
    await collectUntil(() => false, 5);
    const c = await connect(url);
    toClose.push(c);
    await until(() => got.length === 1, 10_000);
    assert.deepEqual(got, ["session"]);
  });
});
