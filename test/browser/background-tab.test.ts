/**
 * A page in a background tab of a real chromium reads a busy connection as
 * it does in front.
 *
 * Chromium wakes a hidden page's chained 0 ms timers (set from a timer, five
 * deep and more) once a second, and once a minute after five hidden minutes;
 * a 0 ms timer set from a network event runs at once. The read gate's turn
 * end, which works off the input held once a turn's 10 ms budget was spent,
 * used to be a 0 ms timer: a backlog of input, worked off a turn's budget at
 * a time, set each turn end from the one before, and from the sixth on each
 * waited for the once-a-second wake-up. 300 one-way messages sent at once,
 * each with 1 ms of work in the page's listener (30 turns' budget): 97 of 300
 * delivered after 5 s in a background tab (10 a second; all within half a
 * second in front). The turn end is now a posted message
 * (util/next-turn.ts), which no tab throttles: all 300 within half a second
 * in a background tab too. (test/attack/turn-end-throttled.test.ts emulates
 * this in Node.)
 *
 * Playwright's launch turns background throttling off: chromium is started
 * as a user's would be (test/helpers/browser.ts, openThrottlingChromium).
 * The test first checks that the page is hidden and its chained timers
 * throttled (without that it would prove nothing), then counts the messages
 * delivered within a bounded wait; no other timing is asserted.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Connection, createServer } from "../../src/index.ts";
import { browserReady, openPage, openThrottlingChromium, servePointsubPage } from "../helpers/browser.ts";

/** Messages the server sends at once, and the listener's work on each (ms). */
const N = 300;
const WORK_MS = 1;
/** How long the test waits for them all once sent. */
const WAIT_MS = 5000;

const PAGE = `
window.start = async (url) => {
  const conn = await window.pointsub.connect(url);
  window.delivered = 0;
  conn.on("message", () => {
    window.delivered++;
    const until = performance.now() + ${WORK_MS};
    while (performance.now() < until) {}
  });
  await conn.request("/ready/1.0.0", "");
};
window.chainedTimers = (n) => new Promise((resolve) => {
  const t0 = performance.now();
  let i = 0;
  const f = () => (++i >= n ? resolve(performance.now() - t0) : setTimeout(f, 0));
  setTimeout(f, 0);
});
`;

type PageApi = { start(url: string): Promise<void>; chainedTimers(n: number): Promise<number>; delivered: number };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("a page in a background tab (chromium with its throttling)", () => {
  it("input past the turn's budget is all delivered: the turn end is not a throttled 0 ms timer", async (t) => {
    if (!(await browserReady(t))) return;
    const web = await servePointsubPage(PAGE);
    const server = createServer();
    let session: Connection | undefined;
    server.handle("/ready/1.0.0", (_req, ctx) => {
      session = ctx.session;
      return "";
    });
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");

    const chromium = await openThrottlingChromium();
    try {
      const { page, errors } = await openPage(chromium.context, web.url);
      await page.evaluate((u) => (window as unknown as PageApi).start(u), url);
      assert.ok(session, "the page connected");
      // Another tab in front: the page is in the background.
      await (await chromium.context.newPage()).bringToFront();
      assert.equal(await page.evaluate(() => document.visibilityState), "hidden");
      // Eight chained 0 ms timers: the seventh and eighth wait for wake-ups a second apart.
      const chainMs = await page.evaluate(() => (window as unknown as PageApi).chainedTimers(8));
      assert.ok(chainMs >= 500, `the hidden page's chained 0 ms timers are not throttled (8 in ${chainMs} ms)`);

      for (let i = 0; i < N; i++) await session.send("x");
      const delivered = () => page.evaluate(() => (window as unknown as PageApi).delivered);
      const t0 = performance.now();
      let n = await delivered();
      while (n < N && performance.now() - t0 < WAIT_MS) {
        await sleep(50);
        n = await delivered();
      }
      t.diagnostic(
        `background tab: 8 chained 0 ms timers took ${Math.round(chainMs)} ms; ${n} of ${N} messages delivered ${Math.round(performance.now() - t0)} ms after they were sent`,
      );
      assert.equal(n, N, "input held past the turn's budget waited for a throttled turn end");
      assert.deepEqual(errors, []);
    } finally {
      await chromium.close();
      await server.close();
      await web.close();
    }
  });
});
