/**
 * A page whose server stops reading and then goes away, in chromium: the
 * page's connection reads no further from a peer that does not take the
 * answers it is owed (slow-peer pause), so the server's last messages wait
 * in the transport, and the close after them was reported only once the
 * connection read again — which it did only after a drain that a closed
 * WebSocket never reports. The connection stayed open and its calls pending
 * (for ever with slowPeerTimeoutMs 0; ERR_SLOW_PEER 30 s later by default).
 * Now the close drains the transport: the held messages are delivered and
 * the pending request fails with ERR_CONNECTION_CLOSED.
 */
import assert from "node:assert/strict";
import type net from "node:net";
import { describe, it } from "node:test";
import { type WebSocket as NodeWebSocket, WebSocketServer } from "ws";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { browserReady, openChromium, openPage, servePointsubPage } from "../helpers/browser.ts";
import { handshake } from "../helpers/raw-peer.ts";

const REQUESTS = 40;
const HELD = 3;

const SCENARIO = `
window.slowPeer = {
  start: async (url) => {
    const { connect, createBrowserRuntime } = window.pointsub;
    const s = window.slowPeer;
    s.seen = 0;
    class Watched extends WebSocket {
      constructor(...args) {
        super(...args);
        s.ws = this;
        this.addEventListener("message", () => s.seen++);
      }
    }
    const runtime = createBrowserRuntime({ webSocket: { WebSocket: Watched } });
    const conn = await connect(url, { runtime, slowPeerBytes: 256 * 1024, slowPeerTimeoutMs: 0, keepAliveMs: 0 });
    s.conn = conn;
    s.handled = 0;
    s.messages = 0;
    conn.handle("/big", () => { s.handled++; return new Uint8Array(512 * 1024); });
    conn.on("message", () => s.messages++);
    conn.on("close", (e) => { s.closeCode = e?.code ?? "clean"; });
    // Never answered: it must fail once the server is gone.
    s.pending = conn.request("/never", "x").then(() => "answered", (e) => e.code);
    // The answers fill what the browser buffers for the server, which reads nothing.
    for (let i = 0; i < 2000 && s.ws.bufferedAmount <= 1024 * 1024; i++) await new Promise((r) => setTimeout(r, 10));
    return { buffered: s.ws.bufferedAmount, seen: s.seen };
  },
  waitSeen: async (n) => {
    const s = window.slowPeer;
    for (let i = 0; i < 2000 && s.seen < n; i++) await new Promise((r) => setTimeout(r, 10));
    return s.seen;
  },
  outcome: async () => {
    const s = window.slowPeer;
    const pending = await Promise.race([s.pending, new Promise((r) => setTimeout(() => r("still pending"), 20000))]);
    return { pending, state: s.conn.state, closeCode: s.closeCode, handled: s.handled, messages: s.messages };
  },
};
`;

interface PageApi {
  slowPeer: {
    start(url: string): Promise<{ buffered: number; seen: number }>;
    waitSeen(n: number): Promise<number>;
    outcome(): Promise<{ pending: string; state: string; closeCode?: string; handled: number; messages: number }>;
  };
}

/** A single-frame REQ from the server (even ids) to `route`. */
function request(id: number, route: string): Uint8Array {
  const r = Buffer.from(route);
  return encodeFrame(FrameType.REQ, Flag.START | Flag.END, id, Buffer.concat([Buffer.from([r.length]), r]));
}

describe("a page's server that stops reading, then goes away (chromium)", () => {
  it("the close is reported, the messages before it delivered, a pending request fails with ERR_CONNECTION_CLOSED", {
    timeout: 120_000,
  }, async (t) => {
    if (!(await browserReady(t))) return;
    let server: { ws: NodeWebSocket; socket: net.Socket } | undefined;
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: () => "pointsub.v1" });
    wss.on("connection", (ws) => {
      ws.on("error", () => {});
      const socket = (ws as unknown as { _socket: net.Socket })._socket;
      server = { ws, socket };
      ws.send(handshake());
      // The page's preface and HELLO: requests whose answers it is then owed, and nothing more is read.
      ws.once("message", () => {
        for (let i = 0; i < REQUESTS; i++) ws.send(request(2 + 2 * i, "/big"));
        socket.pause();
      });
    });
    await new Promise((r) => wss.once("listening", r));
    const url = `ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}/`;
    const web = await servePointsubPage(SCENARIO);
    const browser = await openChromium();
    try {
      const { page, errors } = await openPage(browser, web.url);
      await page.waitForFunction(() => "pointsub" in window && "slowPeer" in window);
      const started = await page.evaluate((u) => (window as unknown as PageApi).slowPeer.start(u), url);
      assert.ok(started.buffered > 1024 * 1024, `the page's answers wait in its WebSocket: ${JSON.stringify(started)}`);
      assert.ok(server);
      // Messages while the page's connection reads no further from this server: the first is read, the
      // rest wait in its transport. Once the page's WebSocket got them all, the server goes away.
      for (let i = 0; i < HELD; i++) {
        server.ws.send(encodeFrame(FrameType.MSG, Flag.START | Flag.END, 1000 + 2 * i, Buffer.from("m")));
      }
      const seen = await page.evaluate((n) => (window as unknown as PageApi).slowPeer.waitSeen(n), started.seen + HELD);
      assert.equal(seen, started.seen + HELD);
      server.socket.destroy();
      const r = await page.evaluate(() => (window as unknown as PageApi).slowPeer.outcome());
      assert.equal(r.pending, "ERR_CONNECTION_CLOSED", JSON.stringify(r));
      assert.equal(r.state, "closed");
      assert.equal(r.closeCode, "ERR_CONNECTION_CLOSED");
      assert.equal(r.handled, REQUESTS);
      assert.equal(r.messages, HELD, "the messages that came before the close were delivered");
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await web.close();
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
    }
  });
});
