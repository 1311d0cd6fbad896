/**
 * A browser's first stream, whose stream engine cannot be fetched (the
 * chunk refused), with an `onProgress` that throws (the application's bug)
 * when it is told of the failure: the transfer still fails with the typed
 * ERR_CONNECTION_CLOSED, the progress's other listener hears the failure,
 * and the error surfaces. Before, `sendStreamLater` rejected the transfer
 * after the stand-in progress (`LateProgress.fail`) told its listeners:
 * the throw left `done` pending for ever.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { blobServer } from "../helpers/blob-sink.ts";
import { browserReady, openChromium, servePointsubPage } from "../helpers/browser.ts";

const PAGE = `
window.throwingProgress = async (url) => {
  const { connect } = window.pointsub;
  const conn = await connect(url);
  const heard = [];
  const t = conn.sendStream("/blob/1.0.0", [new Uint8Array(3)], {
    onProgress: (s) => {
      heard.push("onProgress " + s.status);
      throw new Error("bug in onProgress");
    },
  });
  t.progress.on("progress", (s) => heard.push("listener " + s.status));
  // A bound, not a measure: a transfer that never settles is reported as such instead of hanging the test.
  const bound = (p) => Promise.race([p, new Promise((r) => setTimeout(() => r("still pending after 5 s"), 5000))]);
  const done = await bound(t.done.then(() => "resolved", (e) => e.code));
  await conn.close();
  return { done, heard };
};
`;

describe("a first stream whose engine cannot be loaded, with a throwing onProgress (chromium)", () => {
  it("the transfer fails ERR_CONNECTION_CLOSED, the other listener hears, the error surfaces", async (t) => {
    if (!(await browserReady(t))) return;
    const web = await servePointsubPage(PAGE);
    const { server } = blobServer(1024);
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const browser = await openChromium();
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(String(e)));
      await page.route(/\/js\/stream-chunk-[^/]*\.js$/, (r) => r.abort());
      await page.goto(web.url);
      await page.waitForFunction(() => "pointsub" in window && "throwingProgress" in window);
      const r = await page.evaluate(
        (u) =>
          (
            window as unknown as {
              throwingProgress(u: string): Promise<{ done: string; heard: string[] }>;
            }
          ).throwingProgress(u),
        url,
      );
      assert.equal(r.done, "ERR_CONNECTION_CLOSED");
      assert.deepEqual(r.heard, ["onProgress failed", "listener failed"]);
      // Surfaced, not swallowed.
      assert.ok(
        errors.some((e) => e.includes("bug in onProgress")),
        errors.join(),
      );
    } finally {
      await browser.close();
      await server.close();
      await web.close();
    }
  });
});
