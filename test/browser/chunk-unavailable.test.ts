/**
 * A page that cannot fetch pointsub's on-demand chunks (offline, or the
 * chunks gone after a deploy), in chromium: the fetches of housekeeping and
 * of the stream engine are refused. What needs them fails with a typed
 * ERR_CONNECTION_CLOSED naming what could not be loaded: before, `ping()`
 * and `queryResume()` rejected with the browser's raw TypeError ("Failed to
 * fetch dynamically imported module"), and `sendResumable` took it for a
 * fault of its source (ERR_SOURCE, not retried). A `connect` whose runtime has
 * diagnostics someone may listen to loads their publisher first: it rejected
 * with that raw TypeError too. And a browser remembers a failed `import()`
 * of a URL until the page reloads: once the chunks can be fetched again,
 * a later connection's loads still fail, without a request (the loaders'
 * comments said the next caller tried again).
 */
import assert from "node:assert/strict";
import { describe, it, type TestContext } from "node:test";
import type { Page } from "playwright-core";
import { blobServer } from "../helpers/blob-sink.ts";
import { browserReady, openChromium, servePointsubPage } from "../helpers/browser.ts";

const PAGE = `
window.unloadable = async (url) => {
  const { connect, sendResumable, blobSource, PointSubError } = window.pointsub;
  const outcome = (p) => p.then(
    () => ({ settled: "resolved" }),
    (e) => ({ typed: e instanceof PointSubError, code: e?.code, message: String(e?.message) }),
  );
  const conn = await connect(url);
  const ping = await outcome(conn.ping());
  const query = await outcome(conn.queryResume("/blob/1.0.0", "q".repeat(32)));
  const resumable = await outcome(sendResumable(conn, "/blob/1.0.0", blobSource(new Blob(["abc"])), { retries: 0 }));
  await conn.close();
  return { ping, query, resumable };
};
window.diagnosed = async (url) => {
  const { connect, createBrowserRuntime, createRuntime, PointSubError } = window.pointsub;
  // A runtime someone may listen to: connect loads the diagnostics publisher's chunk first.
  const diagnostics = { channel: () => ({ hasSubscribers: true, publish() {} }), subscribe() {}, unsubscribe: () => false };
  const runtime = createRuntime({ ...createBrowserRuntime(), diagnostics });
  return connect(url, { runtime }).then(
    async (c) => { await c.close(); return { settled: "resolved" }; },
    (e) => ({ typed: e instanceof PointSubError, code: e?.code, message: String(e?.message) }),
  );
};
`;

interface Outcome {
  typed?: boolean;
  code?: string;
  message?: string;
  settled?: string;
}

/**
 * Runs `fn` on a new chromium page serving {@link PAGE}, with a pointsub ws:// server's URL and the
 * page's errors (none when chromium is missing: `browserReady` reports it).
 */
async function onPage(
  t: TestContext,
  fn: (page: Page, url: string, pageUrl: string, errors: string[]) => Promise<void>,
): Promise<void> {
  if (!(await browserReady(t))) return;
  const web = await servePointsubPage(PAGE);
  const { server } = blobServer(1024);
  const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
  const browser = await openChromium();
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await fn(page, url, web.url, errors);
  } finally {
    await browser.close();
    await server.close();
    await web.close();
  }
}

describe("a page that cannot fetch pointsub's on-demand chunks (chromium)", () => {
  it("ping, queryResume and sendResumable fail with a typed ERR_CONNECTION_CLOSED, not the browser's TypeError", async (t) => {
    await onPage(t, async (page, url, pageUrl, errors) => {
      // Loaded once the connection opens, and at the first stream or resume query: both refused.
      await page.route(/\/js\/(housekeeping|stream-chunk)-[^/]*\.js$/, (r) => r.abort());
      await page.goto(pageUrl);
      await page.waitForFunction(() => "pointsub" in window && "unloadable" in window);
      const r = await page.evaluate(
        (u) => (window as unknown as { unloadable(u: string): Promise<Record<string, Outcome>> }).unloadable(u),
        url,
      );
      assert.deepEqual(errors, []);
      for (const [what, o] of Object.entries(r)) {
        assert.equal(o.typed, true, `${what}: ${JSON.stringify(o)}`);
        assert.equal(o.code, "ERR_CONNECTION_CLOSED", `${what}: ${JSON.stringify(o)}`);
      }
      assert.match(r.ping.message as string, /^cannot load housekeeping: /);
      assert.match(r.query.message as string, /^cannot load the stream engine: /);
    });
  });

  it("connect with diagnostics someone may listen to fails with a typed ERR_CONNECTION_CLOSED, not the browser's TypeError", async (t) => {
    await onPage(t, async (page, url, pageUrl, errors) => {
      await page.route(/\/js\/diagnostics-[^/]*\.js$/, (r) => r.abort());
      await page.goto(pageUrl);
      await page.waitForFunction(() => "pointsub" in window && "diagnosed" in window);
      const o = await page.evaluate(
        (u) => (window as unknown as { diagnosed(u: string): Promise<Outcome> }).diagnosed(u),
        url,
      );
      assert.deepEqual(errors, []);
      assert.equal(o.typed, true, JSON.stringify(o));
      assert.equal(o.code, "ERR_CONNECTION_CLOSED", JSON.stringify(o));
      assert.match(o.message as string, /^cannot load diagnostics: /);
    });
  });

  it("a later connection, the chunks reachable again, still fails typed: the browser remembers the failed import (no new request)", async (t) => {
    await onPage(t, async (page, url, pageUrl, errors) => {
      let refuse = true;
      const fetched: string[] = [];
      await page.route(/\/js\/(housekeeping|stream-chunk)-[^/]*\.js$/, (r) => {
        fetched.push(new URL(r.request().url()).pathname);
        return refuse ? r.abort() : r.continue();
      });
      await page.goto(pageUrl);
      await page.waitForFunction(() => "pointsub" in window && "unloadable" in window);
      const run = () =>
        page.evaluate(
          (u) => (window as unknown as { unloadable(u: string): Promise<Record<string, Outcome>> }).unloadable(u),
          url,
        );
      const first = await run();
      const requested = fetched.length;
      refuse = false;
      const later = await run();
      assert.deepEqual(errors, []);
      assert.equal(requested, 2, fetched.join());
      assert.deepEqual(fetched.length, requested, `fetched again: ${fetched.join()}`);
      for (const r of [first, later]) {
        for (const [what, o] of Object.entries(r)) {
          assert.equal(o.typed, true, `${what}: ${JSON.stringify(o)}`);
          assert.equal(o.code, "ERR_CONNECTION_CLOSED", `${what}: ${JSON.stringify(o)}`);
        }
      }
    });
  });
});
