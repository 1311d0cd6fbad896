/**
 * A graceful close waits for the peer's GOAWAY (and nothing in flight). The
 * closing connections are checked by one poll timer; the GOAWAY's arrival
 * checks them at once, so a close with nothing else to wait for ends a round
 * trip after it started, not at the poll's next tick (a CLI command's exit).
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect, createServer } from "../../src/index.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

it("close() ends when the peer's GOAWAY arrives, without the drain's poll timer", async (t) => {
  const server = createServer();
  server.handle("/echo/1.0.0", (req) => req.data);
  const [url] = await server.listen("tcp://127.0.0.1:0");
  let conn: Awaited<ReturnType<typeof connect>> | undefined;
  try {
    // A first close loads the drain module (a dynamic import), with real timers.
    const first = await connect(url);
    await first.close();
    conn = await connect(url);
    assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "x")), "x");
    // The poll timer never fires from here on: only the GOAWAY can end the wait.
    t.mock.timers.enable({ apis: ["setInterval"] });
    const outcome = await Promise.race([conn.close().then(() => "closed"), sleep(5000).then(() => "still waiting")]);
    assert.equal(outcome, "closed");
    assert.equal(conn.state, "closed");
  } finally {
    t.mock.timers.reset();
    conn?.destroy();
    await server.close();
  }
});
