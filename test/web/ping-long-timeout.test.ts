/**
 * `Connection.ping({ timeoutMs })` in the browser entry, over the web
 * WebSocket transport (Node's global WebSocket) to a Node ws:// server
 * behind a relay that holds every server-to-client message 100 ms (the pong
 * cannot come sooner): a timeout beyond a timer's range (2^31 - 1 ms) is
 * waited out, not fired after 1 ms as a timer given it would be.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { WebSocketServer, WebSocket as WsClient } from "ws";
import { connect as browserConnect } from "../../src/browser.ts";
import { createServer } from "../../src/index.ts";

/** A ws relay to `target` that delays what comes down by `ms` per message, in order. */
async function slowDownRelay(target: string, ms: number): Promise<{ url: string; close(): Promise<void> }> {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: () => "pointsub.v1" });
  await new Promise((r) => wss.once("listening", r));
  wss.on("connection", (down) => {
    const up = new WsClient(target, ["pointsub.v1"]);
    const early: Buffer[] = [];
    down.on("message", (m: Buffer) => (up.readyState === WsClient.OPEN ? up.send(m) : early.push(m)));
    up.once("open", () => {
      for (const m of early.splice(0)) up.send(m);
    });
    let chain = Promise.resolve();
    up.on("message", (m: Buffer) => {
      chain = chain
        .then(() => new Promise((r) => setTimeout(r, ms)))
        .then(() => {
          if (down.readyState === WsClient.OPEN) down.send(m);
        });
    });
    up.on("close", () => down.close());
    down.on("close", () => up.close());
    up.on("error", () => {});
    down.on("error", () => {});
  });
  return {
    url: `ws://127.0.0.1:${(wss.address() as { port: number }).port}/pointsub`,
    close: async () => {
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
    },
  };
}

describe("browser entry: ping with a timeout beyond a timer's range", () => {
  it("ping({ timeoutMs: 2^32 }) and Number.MAX_SAFE_INTEGER wait for the pong", async () => {
    const server = createServer();
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const relay = await slowDownRelay(url, 100);
    const conn = await browserConnect(relay.url);
    try {
      for (const timeoutMs of [2 ** 32, Number.MAX_SAFE_INTEGER]) {
        const rtt = await conn.ping({ timeoutMs });
        assert.equal(typeof rtt, "number");
        assert.ok(rtt > 0);
      }
      assert.equal(conn.state, "open");
    } finally {
      await conn.close();
      await relay.close();
      await server.close();
    }
  });
});
