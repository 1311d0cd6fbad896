/**
 * connect() in a real browser hands the connection over as soon as it is
 * open, while its on-demand chunks (error suggestions, housekeeping) are
 * still being fetched: a message the server sends the moment the session
 * starts, and the close that follows, reach the listeners the page attaches
 * right after `await connect(…)`. Here the page's chunks come 1.5 s late
 * (a slow CDN); before, connect waited for the suggestions, and the message
 * and the close went by with no listener.
 *
 * A connect that fails meanwhile settles at once too: an aborted one (the
 * server never answers the WebSocket upgrade) rejects with ERR_CANCELLED
 * before the suggestions chunk arrived, and its error's suggestion is
 * completed once it did. Before, the rejection waited for the chunk (for
 * ever, had its download stalled).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { createServer } from "../../src/index.ts";
import { browserReady, openChromium, openPage, servePointsubPage } from "../helpers/browser.ts";

const CHUNK_DELAY_MS = 1500;

const PAGE = `
window.run = async (url) => {
  const t0 = performance.now();
  const conn = await window.pointsub.connect(url);
  const connectMs = performance.now() - t0;
  const got = [];
  conn.on("message", (m) => got.push(new TextDecoder().decode(m.data)));
  const closed = await new Promise((resolve) => {
    conn.on("close", () => resolve(true));
    setTimeout(() => resolve(false), ${CHUNK_DELAY_MS + 3000});
  });
  return { got, closed, connectMs, state: conn.state };
};
const suggestionsLoaded = () =>
  performance.getEntriesByType("resource").some((e) => e.name.includes("/suggestions-"));
window.abortEarly = async (url) => {
  const ac = new AbortController();
  const opening = window.pointsub.connect(url, { signal: ac.signal });
  ac.abort();
  const err = await opening.then(() => undefined, (e) => e);
  const loadedAtReject = suggestionsLoaded();
  const early = err?.suggestion;
  // The chunk comes ${CHUNK_DELAY_MS} ms late; the suggestion is completed once it arrived.
  for (let i = 0; i < 1000 && err?.suggestion === early; i++) await new Promise((r) => setTimeout(r, 20));
  return { code: err?.code, loadedAtReject, early, late: err?.suggestion };
};
`;

describe("browser connect() hand-over", () => {
  it("a message and a close sent as the session starts reach the page while its chunks are still loading", async (t) => {
    if (!(await browserReady(t))) return;
    const web = await servePointsubPage(PAGE, CHUNK_DELAY_MS);
    const server = createServer();
    server.on("session", (session) => {
      session.send("welcome").then(
        () => setTimeout(() => void session.close(), 100),
        () => {},
      );
    });
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const browser = await openChromium();
    try {
      const { page, errors } = await openPage(browser, web.url);
      const r = await page.evaluate(
        (u) => (window as unknown as { run(u: string): Promise<Record<string, unknown>> }).run(u),
        url,
      );
      t.diagnostic(`connect settled in ${Math.round(r.connectMs as number)} ms (chunks ${CHUNK_DELAY_MS} ms late)`);
      assert.deepEqual(errors, []);
      assert.deepEqual(r.got, ["welcome"], "the message sent as the session started reached the page's listener");
      assert.equal(r.closed, true, "the server's close reached the page's close listener");
      assert.equal(r.state, "closed");
    } finally {
      await browser.close();
      await server.close();
      await web.close();
    }
  });

  it("a connect aborted while its chunks are still loading rejects at once; its suggestion is completed once they arrive", async (t) => {
    if (!(await browserReady(t))) return;
    const web = await servePointsubPage(PAGE, CHUNK_DELAY_MS);
    // Accepts the TCP connection and never answers the WebSocket upgrade: connect waits until aborted.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const url = `ws://127.0.0.1:${(silent.address() as net.AddressInfo).port}/`;
    const browser = await openChromium();
    try {
      const { page, errors } = await openPage(browser, web.url);
      await page.waitForFunction(() => "pointsub" in window);
      const r = await page.evaluate(
        (u) => (window as unknown as { abortEarly(u: string): Promise<Record<string, unknown>> }).abortEarly(u),
        url,
      );
      assert.deepEqual(errors, []);
      assert.equal(r.code, "ERR_CANCELLED");
      assert.equal(r.loadedAtReject, false, "the abort was reported before the suggestions chunk arrived");
      assert.equal(r.early, "See ERR_CANCELLED in pointsub's docs/PROTOCOL.md (error codes).");
      assert.equal(r.late, "The operation was cancelled by an AbortSignal or by the peer.");
    } finally {
      await browser.close();
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
      await web.close();
    }
  });
});
