/**
 * An AbortController given as `signal` where its `.signal` is meant, in
 * chromium against a Node ws:// server: sendStream (the first one, made
 * before the stream engine is loaded, and one made after), a request, a
 * Client's request, connectResilient and a resilient request are
 * ERR_INVALID_ARGUMENT (before: the first Transfer never settled, the next
 * sendStream and the request threw TypeErrors, the Client's failed with
 * ERR_CONNECTION_CLOSED, the resilient client threw TypeErrors), and the
 * connection goes on serving.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createServer } from "../../src/index.ts";
import { browserReady, openChromium, openPage, servePointsubPage } from "../helpers/browser.ts";
import { sha256 } from "../helpers/data.ts";

const SCENARIO = `
window.withController = async (url) => {
  const { connect, connectResilient, Client, PointSubError } = window.pointsub;
  const outcome = async (f) => {
    try {
      const v = await f();
      return { value: v instanceof Uint8Array ? new TextDecoder().decode(v) : String(v) };
    } catch (e) {
      return { name: e?.name, code: e?.code, typed: e instanceof PointSubError, message: String(e?.message) };
    }
  };
  const conn = await connect(url);
  const r = {};
  r.firstStream = await outcome(() => conn.sendStream("/hash", [new Uint8Array(5)], { signal: new AbortController() }));
  r.stream = await outcome(() => conn.sendStream("/hash", [new Uint8Array(5)], { signal: new AbortController() }));
  r.streamAfter = await outcome(() => conn.sendStream("/hash", [new Uint8Array(5)]));
  r.request = await outcome(() => conn.request("/echo", "x", { signal: new AbortController() }));
  r.requestAfter = await outcome(() => conn.request("/echo", "y"));
  r.state = conn.state;
  await conn.close();
  const client = new Client();
  r.client = await outcome(() => client.request(url, "/echo", "x", { signal: new AbortController() }));
  r.clientAfter = await outcome(() => client.request(url, "/echo", "y"));
  await client.close();
  r.resilient = await outcome(() => connectResilient(url, { signal: new AbortController() }));
  const rc = await connectResilient(url);
  r.resilientRequest = await outcome(() => rc.request("/echo", "x", { signal: new AbortController() }));
  r.resilientAfter = await outcome(() => rc.request("/echo", "y"));
  await rc.close();
  return r;
};
`;

interface Outcome {
  value?: string;
  name?: string;
  code?: string;
  typed?: boolean;
  message?: string;
}

describe("an AbortController as signal, in chromium", () => {
  it("sendStream, request, a Client's request, connectResilient and a resilient request: ERR_INVALID_ARGUMENT, nothing left hanging", {
    timeout: 120_000,
  }, async (t) => {
    if (!(await browserReady(t))) return;
    const server = createServer();
    server.handle("/echo", (req) => req.data);
    server.handleStream("/hash", async (s) => sha256(await s.bytes()));
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const web = await servePointsubPage(SCENARIO);
    const browser = await openChromium();
    try {
      const { page, errors } = await openPage(browser, web.url);
      await page.waitForFunction(() => "pointsub" in window && "withController" in window);
      const r = await page.evaluate(
        (u) => (window as unknown as { withController(u: string): Promise<Record<string, Outcome>> }).withController(u),
        url,
      );
      for (const k of ["firstStream", "stream", "request", "client", "resilient", "resilientRequest"]) {
        const o = r[k] as Outcome;
        assert.equal(o.code, "ERR_INVALID_ARGUMENT", `${k}: ${JSON.stringify(o)}`);
        assert.equal(o.typed, true, `${k}: a PointSubError`);
        assert.match(o.message ?? "", /signal must be an AbortSignal/);
      }
      assert.equal(r.streamAfter.value, sha256(new Uint8Array(5)));
      assert.equal(r.requestAfter.value, "y");
      assert.equal(r.clientAfter.value, "y");
      assert.equal(r.resilientAfter.value, "y");
      assert.equal(r.state as unknown as string, "open");
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await web.close();
      await server.close();
    }
  });
});
