/**
 * The browser entry's WebSocket transport (`src/web/`), run here on Node's
 * global WebSocket (undici, the WHATWG API browsers have) against a Node
 * pointsub server on ws://: requests, 16 MiB both ways, server push,
 * streams, the paused-read bound, typed errors.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { WebSocketServer } from "ws";
import { connect as browserConnect, createBrowserRuntime } from "../../src/browser.ts";
import { createServer, type PointSubError } from "../../src/index.ts";
import { MiB, pattern, sha256 } from "../helpers/data.ts";
import { until } from "../helpers/wait.ts";

describe("web WebSocket transport (global WebSocket) against a Node ws:// server", () => {
  it("requests, 16 MiB both ways, server push and a stream", async () => {
    const server = createServer({ maxMessageSize: 64 * MiB });
    server.handle("/echo/1.0.0", (req) => req.data);
    server.handleStream("/hash/1.0.0", async (s) => sha256(await s.bytes()));
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const conn = await browserConnect(url, { maxMessageSize: 64 * MiB });
    try {
      assert.equal(conn.remoteUrl, url);
      assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "hello")), "hello");
      const data = pattern(16 * MiB, 3);
      assert.equal(sha256(await conn.request("/echo/1.0.0", data)), sha256(data));
      const pushed = new Promise<Uint8Array>((resolve) => conn.once("message", (m) => resolve(m.data)));
      const [session] = server.sessions;
      await server.sendTo(session.id, data);
      assert.equal(sha256(await pushed), sha256(data));
      const parts = [data.subarray(0, 5 * MiB), data.subarray(5 * MiB)];
      const got = await conn.sendStream("/hash/1.0.0", parts, { total: data.length });
      assert.equal(new TextDecoder().decode(got), sha256(data));
      const calls = Array.from({ length: 200 }, (_, i) => conn.request("/echo/1.0.0", `r${i}`));
      (await Promise.all(calls)).forEach((r, i) => {
        assert.equal(new TextDecoder().decode(r), `r${i}`);
      });
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("a browser cannot listen; a wrong path or a server without the subprotocol fails connect with ERR_CONNECT", async () => {
    const runtime = createBrowserRuntime();
    const server = createServer();
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    try {
      await assert.rejects(
        runtime.transports.resolve("ws://127.0.0.1:0").adapter.listen(new URL("ws://x:1"), {}, () => {}),
        {
          code: "ERR_UNSUPPORTED_URL",
        },
      );
      await assert.rejects(browserConnect(url.replace("/pointsub", "/other")), { code: "ERR_CONNECT" });
    } finally {
      await server.close();
    }
    // A plain WebSocket server that picks no subprotocol.
    const plain = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: () => false });
    await new Promise((r) => plain.once("listening", r));
    const port = (plain.address() as { port: number }).port;
    try {
      await assert.rejects(browserConnect(`ws://127.0.0.1:${port}/`), { code: "ERR_CONNECT" });
    } finally {
      for (const c of plain.clients) c.terminate();
      await new Promise((r) => plain.close(r));
    }
  });

  it("a text message from the server is a typed ERR_PROTOCOL; more than maxPausedBytes while paused is ERR_FLOW_CONTROL", async () => {
    // A hand-driven server speaking just enough: it accepts the subprotocol and sends what the test says.
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: () => "pointsub.v1" });
    await new Promise((r) => wss.once("listening", r));
    const port = (wss.address() as { port: number }).port;
    const runtime = createBrowserRuntime({ webSocket: { maxPausedBytes: 2 * MiB } });
    try {
      for (const attack of ["text", "flood"] as const) {
        wss.once("connection", (ws) => {
          if (attack === "text") ws.send("not binary");
          else for (let i = 0; i < 4; i++) ws.send(new Uint8Array(MiB));
        });
        const { adapter, address } = runtime.transports.resolve(`ws://127.0.0.1:${port}/`);
        const t = await adapter.connect(address, {});
        let closeError: Error | undefined;
        let closed = false;
        let got = 0;
        t.attach({
          onData: (c) => {
            got += c.length;
            return false;
          },
          onDrain() {},
          onClose(e) {
            closed = true;
            closeError = e;
          },
        });
        if (attack === "flood") t.pause();
        await until(() => closed);
        assert.equal(got, 0);
        assert.equal((closeError as PointSubError).code, attack === "text" ? "ERR_PROTOCOL" : "ERR_FLOW_CONTROL");
      }
    } finally {
      await new Promise((r) => wss.close(r));
    }
  });
});
