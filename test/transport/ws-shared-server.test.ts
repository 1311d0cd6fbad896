/**
 * Several pointsub ws:// listeners on one shared http server
 * (`ws.httpServer`): each path is one listener's, and an upgrade request to
 * a path none of them serves is answered, not left hanging.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { describe, it } from "node:test";
import { connect, createServer, type PointSubError } from "../../src/index.ts";

async function webServer(): Promise<{ web: http.Server; port: number; close(): Promise<void> }> {
  const web = http.createServer((_req, res) => res.end("a web page"));
  await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
  const port = (web.address() as { port: number }).port;
  // Every socket is closed at the end, whatever holds it (an upgrade request nobody answered, before).
  const sockets = new Set<import("node:net").Socket>();
  web.on("connection", (s) => sockets.add(s));
  const close = () =>
    new Promise<void>((r) => {
      web.close(() => r());
      for (const s of sockets) s.destroy();
    });
  return { web, port, close };
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("pointsub ws:// listeners sharing one http server", () => {
  it("an upgrade to a path neither of two listeners serves gets 404 (ERR_PROTOCOL: not retryable), not a hang", async () => {
    const { web, port, close } = await webServer();
    const a = createServer({ ws: { httpServer: web } });
    a.handle("/who", () => "a");
    const b = createServer({ ws: { httpServer: web } });
    b.handle("/who", () => "b");
    await a.listen(`ws://127.0.0.1:${port}/a`);
    await b.listen(`ws://127.0.0.1:${port}/b`);
    try {
      await assert.rejects(connect(`ws://127.0.0.1:${port}/c`, { connectTimeoutMs: 10_000 }), (err: PointSubError) => {
        assert.equal(err.code, "ERR_PROTOCOL", err.message);
        assert.match(err.message, /404/);
        return true;
      });
      for (const [p, who] of [
        ["a", "a"],
        ["b", "b"],
      ]) {
        const conn = await connect(`ws://127.0.0.1:${port}/${p}`);
        assert.equal(text(await conn.request("/who", "")), who);
        await conn.close();
      }
    } finally {
      await a.close();
      await b.close();
      assert.equal(web.listenerCount("upgrade"), 0);
      await close();
    }
  });

  it("a second listener on a path already served there is ERR_CONNECT; the first keeps serving it", async () => {
    const { web, port, close } = await webServer();
    const a = createServer({ ws: { httpServer: web } });
    a.handle("/who", () => "a");
    const b = createServer({ ws: { httpServer: web } });
    b.handle("/who", () => "b");
    await a.listen(`ws://127.0.0.1:${port}/p`);
    try {
      await assert.rejects(b.listen(`ws://127.0.0.1:${port}/p`), (err: PointSubError) => {
        assert.equal(err.code, "ERR_CONNECT");
        assert.match(err.message, /serves \/p/);
        return true;
      });
      const conn = await connect(`ws://127.0.0.1:${port}/p`, { connectTimeoutMs: 10_000 });
      assert.equal(text(await conn.request("/who", "")), "a");
      await conn.close();
      // Once the first closed, the path is free again.
      await a.close();
      await b.listen(`ws://127.0.0.1:${port}/p`);
      const again = await connect(`ws://127.0.0.1:${port}/p`, { connectTimeoutMs: 10_000 });
      assert.equal(text(await again.request("/who", "")), "b");
      await again.close();
    } finally {
      await a.close();
      await b.close();
      await close();
    }
  });
});
