/**
 * The peer closes first (server.close(), a session's close, its idle
 * timeout) while this side's sends wait to start (a page's first chunked
 * sends wait for the stream engine). This side holds its GOAWAY until they
 * have started (docs/PROTOCOL.md §3.8); the peer, with nothing in flight,
 * waits for that GOAWAY only 250 ms (or four round trips) and then ends the
 * byte stream: the sends fail with ERR_CONNECTION_CLOSED although both sides
 * close gracefully and the peer would have taken them. Now the side holding
 * its GOAWAY sends a PING every 100 ms meanwhile, and the quiet wait
 * restarts whenever input arrived.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { connect } from "../../src/client/connect.ts";
import { resetDispatcher } from "../../src/connection/dispatch-lazy.ts";
import { resetStreamEngine } from "../../src/connection/stream-engine.ts";
import { createServer } from "../../src/index.ts";
import { heldLoader, portable } from "../helpers/held-loader.ts";
import { closeOutcome, until } from "../helpers/wait.ts";

describe("the peer closes first while this side's sends wait to start", () => {
  after(() => resetStreamEngine());

  it("sends waiting for the stream engine (600 ms) when the server closes the session: all delivered, both close cleanly", async () => {
    const gate = heldLoader();
    const server = createServer({ runtime: portable("close-peer-first") });
    let got = 0;
    let session: import("../../src/index.ts").Connection | undefined;
    let serverOutcome: ReturnType<typeof closeOutcome> | undefined;
    server.on("session", (s) => {
      session = s;
      serverOutcome = closeOutcome(s);
      s.on("message", () => got++);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    resetStreamEngine(gate.load);
    resetDispatcher();
    try {
      const conn = await connect(url, { runtime: portable("close-peer-first") });
      const outcome = closeOutcome(conn);
      await until(() => session !== undefined);
      const chunk = new Uint8Array(512 * 1024).fill(7);
      const sends = Array.from({ length: 4 }, () =>
        conn.send(chunk).then(
          () => "ok",
          (e: { code?: string }) => e.code,
        ),
      );
      const closing = session?.close();
      setTimeout(() => gate.release(), 600);
      await closing;
      assert.deepEqual(await Promise.all(sends), Array(4).fill("ok"));
      await until(() => outcome.closed && serverOutcome?.closed === true);
      assert.equal(got, 4);
      assert.equal(outcome.error, undefined, "the client's close is clean");
      assert.equal(serverOutcome?.error, undefined, "the server's close is clean");
    } finally {
      await server.close();
    }
  });
});
