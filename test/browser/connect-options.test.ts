/**
 * The browser entry's connect options as a page may get them wrong or push
 * to their limits, in chromium against hand-driven ws:// servers: an
 * AbortController given as `signal` (its `.signal` is meant) is a typed
 * ERR_INVALID_ARGUMENT before any WebSocket is made, and a
 * `connectTimeoutMs` beyond a timer's range (2^31 - 1 ms, which chromium
 * fires at once) is waited out. The page counts the WebSockets it makes
 * (a counting subclass given through `createBrowserRuntime`).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { WebSocketServer } from "ws";
import { browserReady, openChromium, openPage, servePointsubPage } from "../helpers/browser.ts";
import { handshake } from "../helpers/raw-peer.ts";

const SCENARIO = `
window.connectWith = async (url, what) => {
  const { connect, createBrowserRuntime, PointSubError } = window.pointsub;
  let made = 0;
  class Counting extends WebSocket {
    constructor(...args) { super(...args); made++; }
  }
  const runtime = createBrowserRuntime({ webSocket: { WebSocket: Counting } });
  const options = what === "controller"
    ? { runtime, signal: new AbortController() }
    : { runtime, connectTimeoutMs: what };
  try {
    const conn = await connect(url, options);
    const state = conn.state;
    conn.destroy();
    return { state, made };
  } catch (e) {
    return { made, name: e?.name, code: e?.code, typed: e instanceof PointSubError, message: String(e?.message) };
  }
};
`;

interface Outcome {
  state?: string;
  made: number;
  name?: string;
  code?: string;
  typed?: boolean;
  message?: string;
}

describe("browser connect options in chromium", () => {
  it("an AbortController as signal is ERR_INVALID_ARGUMENT before any WebSocket; a connectTimeoutMs of 2^32 or MAX_SAFE_INTEGER ms is waited out", async (t) => {
    if (!(await browserReady(t))) return;
    // Takes the subprotocol, answers the upgrade 100 ms late (a timer that fires at once fires
    // before it), then sends preface and HELLO: the connection opens.
    let upgrades = 0;
    const wss = new WebSocketServer({
      host: "127.0.0.1",
      port: 0,
      handleProtocols: () => "pointsub.v1",
      verifyClient: (_info, done) => {
        upgrades++;
        setTimeout(() => done(true), 100);
      },
    });
    wss.on("connection", (ws) => ws.send(handshake()));
    await new Promise((r) => wss.once("listening", r));
    const url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}/pointsub`;
    const web = await servePointsubPage(SCENARIO);
    const browser = await openChromium();
    try {
      const { page, errors } = await openPage(browser, web.url);
      await page.waitForFunction(() => "pointsub" in window && "connectWith" in window);
      const connectWith = (what: string | number) =>
        page.evaluate(
          ([u, w]) =>
            (window as unknown as { connectWith(u: string, w: string | number): Promise<Outcome> }).connectWith(u, w),
          [url, what] as const,
        );

      const controller = await connectWith("controller");
      assert.equal(controller.code, "ERR_INVALID_ARGUMENT", JSON.stringify(controller));
      assert.equal(controller.typed, true, "a PointSubError");
      assert.match(controller.message ?? "", /signal must be an AbortSignal/);
      assert.equal(controller.made, 0, "no WebSocket made");

      for (const ms of [2 ** 32, Number.MAX_SAFE_INTEGER]) {
        const long = await connectWith(ms);
        assert.equal(long.state, "open", `connectTimeoutMs ${ms}: ${JSON.stringify(long)}`);
        assert.equal(long.made, 1);
      }
      assert.equal(upgrades, 2, "the server saw the two connects only");
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await web.close();
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
    }
  });
});
