/**
 * `webCompressionCodecs()` in chromium against a deflate bomb: a 1 MB
 * deflate-raw block declaring 1 MiB that inflates to 1 GiB (within a 1 MiB
 * maxFrameSize and the 1024:1 ratio on the wire). Chromium's
 * DecompressionStream inflates a written chunk whole before its reader sees
 * any of it: written at once, the block cost the page 1 GiB and 6–11 s of a
 * frozen main thread before ERR_PROTOCOL. Fed a few KiB at a time, it fails
 * within ms; an honest block still inflates intact. Without chromium it
 * says so in one line (as chromium.test.ts).
 */
import assert from "node:assert/strict";
import http from "node:http";
import { describe, it } from "node:test";
import { deflateRawSync } from "node:zlib";
import { browserBundle, browserReady, openChromium, openPage } from "../helpers/browser.ts";
import { deflateBomb } from "../helpers/data.ts";

/** What the page runs: the bomb, then an honest block, through the web deflate-raw codec. */
const PAGE = `
window.run = async () => {
  const [deflate] = window.codecs.webCompressionCodecs();
  const get = async (path) => new Uint8Array(await (await fetch(path)).arrayBuffer());
  const bomb = await get("/bomb");
  let lag = 0;
  let last = performance.now();
  const tick = setInterval(() => { const now = performance.now(); lag = Math.max(lag, now - last); last = now; }, 10);
  const t0 = performance.now();
  const err = await deflate.decompress(bomb, 1 << 20).then(() => undefined, (e) => ({ code: e.code, message: e.message }));
  const bombMs = performance.now() - t0;
  lag = Math.max(lag, performance.now() - last);
  clearInterval(tick);
  const honest = await deflate.decompress(await get("/honest"), 1 << 20);
  let sum = 0;
  for (let i = 0; i < honest.length; i++) sum = (sum * 31 + honest[i]) >>> 0;
  return { err, bombMs, lagMs: lag, honestLength: honest.length, honestSum: sum };
};
`;

describe("web compression codecs in chromium", () => {
  it("a deflate bomb (1 MB → 1 GiB, declared 1 MiB) fails with ERR_PROTOCOL within ms, the page responsive; an honest block inflates", async (t) => {
    if (!(await browserReady(t))) return;
    const scripts = await browserBundle({ codecs: "src/web/compression.ts" });
    const bomb = deflateBomb(1024);
    const plain = new Uint8Array(1 << 20).map((_, i) => (i % 251) ^ (i >> 12));
    let want = 0;
    for (let i = 0; i < plain.length; i++) want = (want * 31 + plain[i]) >>> 0;
    const bodies: Record<string, [string, string | Uint8Array]> = {
      ...Object.fromEntries([...scripts].map(([path, text]) => [path, ["text/javascript", text]])),
      "/page.js": ["text/javascript", PAGE],
      "/bomb": ["application/octet-stream", bomb],
      "/honest": ["application/octet-stream", deflateRawSync(plain)],
    };
    const web = http.createServer((req, res) => {
      const [type, body] = bodies[req.url ?? ""] ?? [
        "text/html",
        '<!doctype html><script type="module">import * as c from "/js/codecs.js"; window.codecs = c;</script><script type="module" src="/page.js"></script>',
      ];
      res.writeHead(200, { "Content-Type": type });
      res.end(body);
    });
    await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
    const port = (web.address() as { port: number }).port;
    const browser = await openChromium();
    try {
      const { page, errors } = await openPage(browser, `http://127.0.0.1:${port}/`);
      await page.waitForFunction(() => "codecs" in window && "run" in window);
      const r = await page.evaluate(() =>
        (
          window as unknown as {
            run(): Promise<{
              err?: { code: string; message: string };
              bombMs: number;
              lagMs: number;
              honestLength: number;
              honestSum: number;
            }>;
          }
        ).run(),
      );
      t.diagnostic(
        `chromium: the ${bomb.length}-byte bomb failed in ${Math.round(r.bombMs)} ms (main thread held at most ${Math.round(r.lagMs)} ms)`,
      );
      assert.deepEqual(errors, []);
      assert.equal(r.err?.code, "ERR_PROTOCOL");
      assert.match(r.err?.message ?? "", /past its declared 1048576 bytes/);
      // Written whole: 6–11 s on a loaded 2-core machine. In slices: tens of ms.
      assert.ok(r.bombMs < 2000, `the bomb took ${Math.round(r.bombMs)} ms to fail`);
      assert.ok(r.lagMs < 1000, `the page's main thread was held ${Math.round(r.lagMs)} ms`);
      assert.equal(r.honestLength, plain.length);
      assert.equal(r.honestSum, want, "the honest block inflated intact");
    } finally {
      await browser.close();
      await new Promise((resolve) => web.close(resolve));
    }
  });
});
