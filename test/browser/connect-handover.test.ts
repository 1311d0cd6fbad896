/**
 * connect() in a real browser hands the connection over as soon as it is
 * open, while its on-demand chunks (error suggestions, housekeeping) are
 * still being fetched: a message the server sends the moment the session
 * starts, and the close that follows, reach the listeners the page attaches
 * right after `await connect(…)`. Here the page's chunks come 1.5 s late
 * (a slow CDN); before, connect waited for the suggestions, and the message
 * and the close went by with no listener.
 */
import assert from "node:assert/strict";
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
});
