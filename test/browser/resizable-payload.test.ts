/**
 * Payloads that are views of a resizable ArrayBuffer (ES2024, what
 * `new ArrayBuffer(n, { maxByteLength })` makes), from a page in chromium:
 * `WebSocket.send` refuses such a view with a TypeError. Before, a write
 * handed one over as is (a message or stream chunk over 16 KiB): the
 * TypeError escaped from the writer uncaught, the call never settled and
 * the connection sent nothing more. Now the transport sends a copy. The
 * web compression codecs' streams refuse them too: a stream of such views
 * sent compressed failed with ERR_COMPRESSION; they compress a copy now.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createServer } from "../../src/index.ts";
import { browserReady, openChromium, openPage, servePointsubPage } from "../helpers/browser.ts";
import { MiB } from "../helpers/data.ts";

const PAGE = `
window.resizable = async (url) => {
  const { connect } = window.pointsub;
  const conn = await connect(url, { requestTimeoutMs: 10000 });
  const view = (n) => {
    const v = new Uint8Array(new ArrayBuffer(n, { maxByteLength: 2 * n }));
    for (let i = 0; i < n; i++) v[i] = i % 251;
    return v;
  };
  const text = (p) => p.then((b) => new TextDecoder().decode(b), (e) => e.code);
  const r = {};
  r.small = await text(conn.request("/sum", view(100)));
  r.frame = await text(conn.request("/sum", view(100000)));
  r.chunked = await text(conn.request("/sum", view(3 * 1024 * 1024)));
  const sent = new Promise((resolve) => conn.once("message", (m) => resolve(new TextDecoder().decode(m.data))));
  r.send = await conn.send(view(200000)).then(() => sent, (e) => e.code);
  r.stream = await text(conn.sendStream("/sum-stream", [view(300000), view(40000)]));
  r.after = await text(conn.request("/sum", "after"));
  await conn.close();
  return r;
};
window.compressed = async (url) => {
  const { connect, createBrowserRuntime, webCompressionCodecs } = window.pointsub;
  const conn = await connect(url, { runtime: createBrowserRuntime({ codecs: webCompressionCodecs() }) });
  const view = (n) => {
    const v = new Uint8Array(new ArrayBuffer(n, { maxByteLength: 2 * n }));
    for (let i = 0; i < n; i++) v[i] = i % 251;
    return v;
  };
  const text = (p) => p.then((b) => new TextDecoder().decode(b), (e) => e.code + " " + e.message);
  const r = {};
  r.gzip = await text(conn.sendStream("/sum-stream", [view(300000)], { compress: "gzip" }));
  r.deflate = await text(conn.sendStream("/sum-stream", [view(100000), view(200000)], { compress: "deflate-raw" }));
  await conn.close();
  return r;
};
`;

const sum = (b: Uint8Array) => `${b.length}:${b.reduce((a, x) => (a + x) % 65521, 0)}`;
const want = (n: number) => sum(new Uint8Array(n).map((_, i) => i % 251));

describe("payloads over a resizable ArrayBuffer from a page (chromium)", () => {
  it("requests, a one-way message and a stream of such views arrive intact; the connection goes on", async (t) => {
    if (!(await browserReady(t))) return;
    const web = await servePointsubPage(PAGE);
    const server = createServer({ maxMessageSize: 16 * MiB });
    server.handle("/sum", (req) => sum(req.data));
    server.handleStream("/sum-stream", async (s) => sum(await s.bytes()));
    server.on("message", (m, session) => void session.send(sum(m.data)).catch(() => {}));
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const browser = await openChromium();
    try {
      const { page, errors } = await openPage(browser, web.url);
      await page.waitForFunction(() => "pointsub" in window && "resizable" in window);
      const r = await page.evaluate(
        (u) => (window as unknown as { resizable(u: string): Promise<Record<string, string>> }).resizable(u),
        url,
      );
      assert.deepEqual(errors, [], "nothing thrown uncaught on the page");
      assert.deepEqual(r, {
        small: want(100),
        frame: want(100000),
        chunked: want(3 * MiB),
        send: want(200000),
        stream: sum(
          new Uint8Array([
            ...new Uint8Array(300000).map((_, i) => i % 251),
            ...new Uint8Array(40000).map((_, i) => i % 251),
          ]),
        ),
        after: sum(new TextEncoder().encode("after")),
      });
    } finally {
      await browser.close();
      await server.close();
      await web.close();
    }
  });

  it("a stream of such views sent compressed (web compression codecs) arrives intact", async (t) => {
    if (!(await browserReady(t))) return;
    const web = await servePointsubPage(PAGE);
    const server = createServer();
    server.handleStream("/sum-stream", async (s) => sum(await s.bytes()));
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const browser = await openChromium();
    try {
      const { page, errors } = await openPage(browser, web.url);
      await page.waitForFunction(() => "pointsub" in window && "compressed" in window);
      const r = await page.evaluate(
        (u) => (window as unknown as { compressed(u: string): Promise<Record<string, string>> }).compressed(u),
        url,
      );
      assert.deepEqual(errors, []);
      const pattern = (n: number) => [...new Uint8Array(n).map((_, i) => i % 251)];
      assert.deepEqual(r, {
        gzip: want(300000),
        deflate: sum(new Uint8Array([...pattern(100000), ...pattern(200000)])),
      });
    } finally {
      await browser.close();
      await server.close();
      await web.close();
    }
  });
});
