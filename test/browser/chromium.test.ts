/**
 * The browser entry in a real browser: Debian's chromium, driven by
 * playwright-core, opens a page served from a local http server whose script
 * is the esbuild bundle of src/browser.ts (ES modules, code splitting), and
 * from the page talks to a Node pointsub server over ws://127.0.0.1: a
 * request, 16 MiB both ways (hashes checked with crypto.subtle on the page
 * and node:crypto here), a 16 MiB server push, then streams (the server's
 * 2 MiB stream to the page, a 4 MiB File uploaded with progress). Chunks
 * fetched on demand: the error suggestions while connecting, housekeeping
 * once open, the stream engine with the first chunked message (its pacer).
 *
 * Needs chromium (`apt-get install -y chromium`, or CHROMIUM_PATH) and
 * playwright-core (a devDependency). Without them it says so in one line and
 * skips; under CI (CI=true) it fails instead, since .ci/run installs them.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createServer } from "../../src/index.ts";
import { browserReady, openChromium, openPage, servePointsubPage } from "../helpers/browser.ts";
import { MiB, sha256 } from "../helpers/data.ts";

/** What the page runs: every result comes back to the test as JSON. */
const SCENARIO = `
window.runScenario = async (url) => {
  const { connect } = window.pointsub;
  const scripts = () => performance.getEntriesByType("resource").filter((e) => e.name.endsWith(".js")).length;
  const scriptsAtStart = scripts();
  const hex = async (b) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", b))].map((x) => x.toString(16).padStart(2, "0")).join("");
  const conn = await connect(url, { maxMessageSize: 64 * 1024 * 1024 });
  // The error suggestions are fetched while the first connection opens (connect does not wait for them).
  const scriptsBefore = scripts();
  const hello = new TextDecoder().decode(await conn.request("/echo/1.0.0", "hello from " + navigator.userAgent.split(" ")[0]));
  // 16 MiB of a simple pattern, hashed here and by the server, then echoed back.
  const big = new Uint8Array(16 * 1024 * 1024);
  let x = 12345;
  for (let i = 0; i < big.length; i++) { x = (x * 1103515245 + 12345) >>> 0; big[i] = x >>> 24; }
  const want = await hex(big);
  const t0 = performance.now();
  const serverHash = new TextDecoder().decode(await conn.request("/hash/1.0.0", big));
  const echoed = await conn.request("/echo/1.0.0", big);
  const echoHash = await hex(echoed);
  const roundTripMs = performance.now() - t0;
  // The server pushes 16 MiB when asked; its hash comes back in the answer.
  const pushed = new Promise((resolve) => conn.once("message", (m) => resolve(m.data)));
  const pushAnswer = new TextDecoder().decode(await conn.request("/push/1.0.0", ""));
  const pushHash = await hex(await pushed);
  // Streams (their chunk came with the first chunked message's pacer): first the server streams
  // to the page, then the page uploads a Blob with progress.
  const t1 = performance.now();
  conn.handleStream("/page/1.0.0", async (s) => hex(await s.bytes()));
  const streamedIn = new TextDecoder().decode(await conn.request("/push-stream/1.0.0", ""));
  const scriptsAfter = scripts();
  // A File as the user picks one: the stream is read from it, its size the total (no options needed).
  const blob = new File([big.subarray(0, 3 * 1024 * 1024), big.subarray(3 * 1024 * 1024, 4 * 1024 * 1024)], "up.bin");
  let progressEvents = 0;
  const transfer = conn.sendStream("/hash-stream/1.0.0", blob, { onProgress: () => progressEvents++ });
  const uploadTotal = transfer.progress.total;
  const uploadHash = new TextDecoder().decode(await transfer);
  const uploadWant = await hex(await blob.arrayBuffer());
  const uploaded = transfer.snapshot();
  const streamsMs = performance.now() - t1;
  await conn.close();
  return {
    hello, want, serverHash, echoLength: echoed.length, echoHash, pushAnswer, pushHash, roundTripMs,
    streamedIn, scriptsAtStart, scriptsBefore, scriptsAfter, uploadHash, uploadWant, progressEvents,
    uploadedBytes: uploaded.bytes, uploadTotal, uploadStatus: uploaded.status, streamsMs,
  };
};
`;

describe("the browser entry in chromium (playwright-core)", () => {
  it("connects over ws:// from a page: request, 16 MiB both ways, 16 MiB server push, streams both ways", async (t) => {
    if (!(await browserReady(t))) return;

    // The page: the browser entry bundled by esbuild as ES modules with code splitting (the
    // stream halves in a chunk of their own, loaded on demand), exposed as window.pointsub.
    const web = await servePointsubPage(SCENARIO);

    const server = createServer({ maxMessageSize: 64 * MiB });
    server.handle("/echo/1.0.0", (req) => req.data);
    server.handle("/hash/1.0.0", (req) => sha256(req.data));
    const push = new Uint8Array(16 * MiB).map((_, i) => (i * 31 + 7) & 0xff);
    server.handle("/push/1.0.0", async (_req, ctx) => {
      await ctx.session.send(push);
      return sha256(push);
    });
    server.handleStream("/hash-stream/1.0.0", async (s) => sha256(await s.bytes()));
    const down = push.subarray(0, 2 * MiB);
    server.handle("/push-stream/1.0.0", async (_req, ctx) => {
      const pageHash = new TextDecoder().decode(await ctx.session.sendStream("/page/1.0.0", [down]));
      return pageHash === sha256(down) ? "intact" : `page hashed ${pageHash}`;
    });
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");

    const browser = await openChromium();
    try {
      const { page, errors } = await openPage(browser, web.url);
      const r = await page.evaluate(
        (u) => (window as unknown as { runScenario(u: string): Promise<Record<string, unknown>> }).runScenario(u),
        url,
      );
      t.diagnostic(
        `chromium: 16 MiB to the server and back (hash + echo) in ${Math.round(r.roundTripMs as number)} ms; streams (2 MiB in, 4 MiB out) in ${Math.round(r.streamsMs as number)} ms`,
      );
      assert.deepEqual(errors, []);
      assert.match(r.hello as string, /^hello from Mozilla/);
      assert.equal(r.serverHash, r.want, "the server received the page's 16 MiB intact");
      assert.equal(r.echoLength, 16 * MiB);
      assert.equal(r.echoHash, r.want, "the page received its 16 MiB back intact");
      assert.equal(r.pushHash, r.pushAnswer, "the page received the server's 16 MiB push intact");
      assert.equal(r.pushAnswer, sha256(push));
      assert.equal(r.streamedIn, "intact", "the server's 2 MiB stream reached the page's stream route intact");
      // The suggestions chunk is asked for while connecting, housekeeping once the connection is
      // open: connect settles without waiting for either (connect-handover.test.ts).
      const atStart = r.scriptsAtStart as number;
      assert.ok(
        (r.scriptsBefore as number) >= atStart && (r.scriptsBefore as number) <= atStart + 2,
        `chunks fetched by the time connect settled: ${r.scriptsBefore} - ${atStart}`,
      );
      assert.equal(
        r.scriptsAfter,
        atStart + 3,
        "three chunks in all: suggestions (connecting), housekeeping (once open) and the stream engine (the first chunked message's pacer, then the streams)",
      );
      assert.equal(r.uploadHash, r.uploadWant, "the page's 4 MiB File reached the server intact");
      assert.equal(r.uploadTotal, 4 * MiB, "the File's size was the total from the start");
      assert.equal(r.uploadedBytes, 4 * MiB);
      assert.equal(r.uploadStatus, "completed");
      assert.ok((r.progressEvents as number) >= 1, "progress events during the upload");
    } finally {
      await browser.close();
      await server.close();
      await web.close();
    }
  });
});
