/**
 * The engine's guarantees over ws://: large messages both ways and server
 * push, a small request interleaved with a large transfer, a stream resumed
 * after the TCP connection under the WebSocket was cut, typed errors when it
 * drops, and a port shared with a web application (`ws.httpServer`).
 */
import assert from "node:assert/strict";
import http from "node:http";
import { describe, it } from "node:test";
import { type Connection, connect, createServer, type PointSubError, sendResumable } from "../../src/index.ts";
import { blobServer } from "../helpers/blob-sink.ts";
import { MiB, pattern, sha256 } from "../helpers/data.ts";
import { startProxy } from "../helpers/proxy.ts";
import { until } from "../helpers/wait.ts";

/** ws://127.0.0.1:<port of a tcp:// proxy URL>/pointsub. */
const wsVia = (proxyUrl: string) => `ws://127.0.0.1:${new URL(proxyUrl).port}/pointsub`;

describe("pointsub over ws://", () => {
  it("a 16 MiB message both ways (request, response, server push)", async () => {
    const server = createServer({ maxMessageSize: 64 * MiB });
    server.handle("/echo/1.0.0", (req) => req.data);
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    assert.match(url, /^ws:\/\/127\.0\.0\.1:\d+\/pointsub$/);
    const conn = await connect(url, { maxMessageSize: 64 * MiB });
    try {
      const data = pattern(16 * MiB, 5);
      const reply = await conn.request("/echo/1.0.0", data);
      assert.equal(sha256(reply), sha256(data));
      const pushed = new Promise<Uint8Array>((resolve) => conn.once("message", (m) => resolve(m.data)));
      const [session] = server.sessions;
      await server.sendTo(session.id, data);
      assert.equal(sha256(await pushed), sha256(data));
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("a 64-byte request completes while a 256 MiB message is in flight", async () => {
    const server = createServer({ maxMessageSize: 512 * MiB, maxAssemblyBytes: 512 * MiB });
    server.handle("/echo/1.0.0", (req) => req.data);
    server.handle("/size/1.0.0", (req) => String(req.data.length));
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const conn = await connect(url, { maxMessageSize: 512 * MiB });
    try {
      let bigDone = false;
      const big = conn.request("/size/1.0.0", pattern(256 * MiB, 9), { timeoutMs: 120_000 }).then((r) => {
        bigDone = true;
        return r;
      });
      await new Promise((r) => setTimeout(r, 20));
      const small = await conn.request("/echo/1.0.0", pattern(64, 1));
      assert.equal(small.length, 64);
      assert.equal(bigDone, false, "the small request waited for the large one");
      assert.equal(new TextDecoder().decode(await big), String(256 * MiB));
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("resumes a stream after the connection under it was cut twice", async () => {
    const size = 48 * MiB;
    const content = pattern(size, 11);
    const { server, stored } = blobServer(size);
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const proxy = await startProxy(url, {
      cutAt: { dir: "up", bytes: [Math.floor(size * 0.3), Math.floor(size * 0.7)] },
    });
    const offsets: number[] = [];
    try {
      const t = sendResumable(
        () => connect(wsVia(proxy.url)),
        "/blob/1.0.0",
        { size, transferId: "blob-ws", open: (offset) => [content.subarray(offset)] },
        { retryDelayMs: 20, onAttempt: (_n, offset) => offsets.push(offset) },
      );
      assert.equal(new TextDecoder().decode(await t), "stored");
      assert.equal(offsets.length, 3, `offsets ${offsets}`);
      assert.ok(offsets[1] > 0 && offsets[2] > offsets[1], `offsets ${offsets}`);
      assert.equal(sha256(stored.get("blob-ws")?.bytes as Uint8Array), sha256(content));
    } finally {
      await proxy.close();
      await server.close();
    }
  });

  it("a dropped connection fails every pending call at once with ERR_CONNECTION_CLOSED; the server serves on", async () => {
    const server = createServer();
    const closes: (PointSubError | undefined)[] = [];
    server.on("sessionClose", (_s, err) => closes.push(err));
    server.handle("/never/1.0.0", () => new Promise(() => {}));
    server.handle("/echo/1.0.0", (req) => req.data);
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const proxy = await startProxy(url);
    const conn: Connection = await connect(wsVia(proxy.url));
    const calls = [1, 2, 3].map((i) => conn.request("/never/1.0.0", String(i)));
    await new Promise((r) => setTimeout(r, 20));
    const t0 = Date.now();
    proxy.cutAll();
    const results = await Promise.allSettled(calls);
    assert.ok(Date.now() - t0 < 10_000, `${Date.now() - t0} ms (requestTimeoutMs is 30 s)`);
    for (const r of results) {
      assert.equal(r.status, "rejected");
      assert.equal((r as PromiseRejectedResult).reason.code, "ERR_CONNECTION_CLOSED");
    }
    await until(() => closes.length === 1);
    const again = await connect(url);
    assert.equal(new TextDecoder().decode(await again.request("/echo/1.0.0", "still here")), "still here");
    await again.close();
    await proxy.close();
    await server.close();
  });

  it("shares a port with a web application (ws.httpServer): pages, pointsub, 404 for other upgrades", async () => {
    const web = http.createServer((_req, res) => res.end("a web page"));
    await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
    const port = (web.address() as { port: number }).port;
    const server = createServer({ ws: { httpServer: web } });
    server.handle("/echo/1.0.0", (req) => req.data);
    const [url] = await server.listen("ws://127.0.0.1/pointsub");
    assert.equal(url, `ws://127.0.0.1:${port}/pointsub`);
    try {
      const page = await fetch(`http://127.0.0.1:${port}/`);
      assert.equal(await page.text(), "a web page");
      const conn = await connect(url);
      assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "hi")), "hi");
      await conn.close();
      await assert.rejects(connect(`ws://127.0.0.1:${port}/elsewhere`), (err: PointSubError) => {
        assert.equal(err.code, "ERR_PROTOCOL");
        assert.match(err.message, /404/);
        return true;
      });
    } finally {
      await server.close();
      // Closing the pointsub listener detached it; the web server is the application's.
      assert.equal(web.listenerCount("upgrade"), 0);
      assert.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), "a web page");
      await new Promise((r) => web.close(r));
    }
  });
});
