/**
 * The live dashboard in chromium: a server that authenticates (a token), its
 * dashboard page opened with `#token=…` (the page is a pointsub browser
 * client of the server over ws://). A Node client connects and streams 2 MiB
 * slowly: the test sees its session appear in the page, its progress bar
 * move, takes a screenshot (a temporary file; `npm run screenshot` writes
 * the README's docs/dashboard.png through POINTSUB_SCREENSHOT), and sees the
 * session disappear when the client closes. Without chromium it says so in one line (as chromium.test.ts).
 */
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { dashboard } from "../../src/dashboard/index.ts";
import { connect, createServer } from "../../src/index.ts";
import { browserReady, openChromium } from "../helpers/browser.ts";

const TOKEN = "dashboard-test-token";

describe("the live dashboard in chromium", () => {
  it("shows a session appear, its transfer's progress bar move, and the session go", async (t) => {
    if (!(await browserReady(t))) return;
    const t0 = performance.now();
    const phases: string[] = [];
    const phase = (name: string) => phases.push(`${name} ${Math.round(performance.now() - t0)} ms`);
    const server = createServer({
      authenticate: (cred) => {
        if (new TextDecoder().decode(cred) !== TOKEN) throw new Error("wrong token");
        return "token:0";
      },
    });
    server.handleStream("/upload/1.0.0", async (s) => {
      let n = 0;
      for await (const c of s) n += c.length;
      return String(n);
    });
    const [tcp] = await server.listen("tcp://127.0.0.1:0");
    const board = await dashboard(server, { listen: "127.0.0.1:0" });
    const browser = await openChromium();
    phase("chromium up");
    try {
      const page = await browser.newPage({ viewport: { width: 900, height: 760 } });
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(String(e)));
      await page.goto(`${board.url}#token=${TOKEN}`);
      await page.waitForFunction(() => document.getElementById("status")?.textContent?.startsWith("live"), null, {
        timeout: 5000,
      });

      phase("page live");
      const client = await connect(tcp, { credentials: TOKEN });
      const id = [...server.sessions]
        .map((s) => s.id)
        .find((sid) => board.snapshot().sessions.some((x) => x.id === sid && x.transport === "tcp"));
      assert.ok(id !== undefined, "the server has the client's session");
      await page.waitForSelector(`#sessions tr[data-key="${id}"]`, { timeout: 5000 });

      // 2 MiB in 32 chunks of 64 KiB, 40 ms apart: about 1.3 s, progress published every 250 ms.
      const chunk = new Uint8Array(64 * 1024).fill(7);
      async function* slow() {
        for (let i = 0; i < 32; i++) {
          yield chunk;
          await new Promise((r) => setTimeout(r, 40));
        }
      }
      const transfer = client.sendStream("/upload/1.0.0", slow(), { total: 32 * chunk.length });
      const pct = async () =>
        Number(
          await page
            .waitForSelector(`#transfers tr[data-key="${id}/in"] .fill`, { timeout: 5000 })
            .then((e) => e.getAttribute("data-pct")),
        );
      await page.waitForFunction(
        (k) => Number(document.querySelector(`#transfers tr[data-key="${k}/in"] .fill`)?.getAttribute("data-pct")) > 0,
        id,
        { timeout: 5000 },
      );
      const first = await pct();
      await page.waitForFunction(
        ([k, p]) =>
          Number(document.querySelector(`#transfers tr[data-key="${k}/in"] .fill`)?.getAttribute("data-pct")) >
          Number(p),
        [id, first] as const,
        { timeout: 5000 },
      );
      const later = await pct();
      t.diagnostic(`progress bar: ${first}% then ${later}%`);
      assert.ok(later > first, "the progress bar moved");
      phase("bar moved");
      const shot = process.env.POINTSUB_SCREENSHOT ?? join(tmpdir(), `pointsub-dashboard-${process.pid}.png`);
      await page.screenshot({ path: shot });
      const png = readFileSync(shot);
      if (process.env.POINTSUB_SCREENSHOT === undefined) rmSync(shot, { force: true });
      assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47], "a PNG"); // "PNG"
      assert.ok(png.length > 10_000, `a screenshot of ${png.length} bytes`);
      assert.equal(new TextDecoder().decode(await transfer), String(32 * chunk.length));

      await client.close();
      await page.waitForSelector(`#sessions tr[data-key="${id}"]`, { state: "detached", timeout: 5000 });
      phase("session gone");
      t.diagnostic(phases.join(", "));
      const routes = await page.textContent("#routes");
      assert.match(routes ?? "", /\/_pointsub\/dashboard\/1/, "the requests-by-route table lists the page's own route");
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await board.close();
      await server.close();
    }
  });

  it("a server that authenticates nobody: the page opened as localhost goes live (it connects by the name it was opened with)", async (t) => {
    if (!(await browserReady(t))) return;
    // The page connected to ws://127.0.0.1:…, to which a page from "localhost" is another site: 403.
    const server = createServer();
    await server.listen("tcp://127.0.0.1:0");
    const board = await dashboard(server, { listen: "127.0.0.1:0" });
    const browser = await openChromium();
    try {
      const page = await browser.newPage();
      await page.goto(board.url.replace("127.0.0.1", "localhost"));
      await page.waitForFunction(() => document.getElementById("status")?.textContent?.startsWith("live"), null, {
        timeout: 10_000,
      });
    } finally {
      await browser.close();
      await board.close();
      await server.close();
    }
  });
});
