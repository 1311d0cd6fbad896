/**
 * The browser entry's connect and close errors, on Node's global WebSocket
 * (undici, the WHATWG API browsers have) against hand-driven ws:// servers:
 * a server that accepts the WebSocket and says nothing fails the handshake
 * with ERR_TIMEOUT (the web transport reported its close synchronously from
 * `destroy`, so the connection closed first as ERR_CONNECTION_CLOSED),
 * `Connection.destroy(err)` closes with `err`, a peer's GOAWAY with an
 * error closes with that error.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { WebSocketServer, type WebSocket as WsSocket } from "ws";
import {
  Client as BrowserClient,
  connect as browserConnect,
  connectResilient as browserResilient,
  createBrowserRuntime,
} from "../../src/browser.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { FrameType } from "../../src/codec/frame.ts";
import { createServer, PointSubError } from "../../src/index.ts";
import { handshake } from "../helpers/raw-peer.ts";

describe("browser entry: connect and close errors over the web WebSocket transport", () => {
  /** A server accepting the subprotocol; `behave` says what it does with each connection. */
  let wss: WebSocketServer;
  let url = "";
  let behave: (ws: WsSocket) => void = () => {};

  before(async () => {
    wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: () => "pointsub.v1" });
    wss.on("connection", (ws) => behave(ws));
    await new Promise((r) => wss.once("listening", r));
    url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}/`;
  });

  after(async () => {
    for (const c of wss.clients) c.terminate();
    await new Promise((r) => wss.close(r));
  });

  it("options that are not an object: ERR_INVALID_ARGUMENT (a rejection from connect and connectResilient), as in Node", async () => {
    // Before: raw TypeErrors, thrown at once by connect (withRuntime read null.runtime), from connectResilient's
    // constructor and Client's; a number went on as no options at all.
    for (const bad of [null, 5, "x"]) {
      const opening = browserConnect(url, bad as never);
      assert.ok(opening instanceof Promise);
      await assert.rejects(opening, { code: "ERR_INVALID_ARGUMENT", message: /options must be an object/ });
      await assert.rejects(browserResilient(url, bad as never), { code: "ERR_INVALID_ARGUMENT" });
      assert.throws(() => new BrowserClient(bad as never), { code: "ERR_INVALID_ARGUMENT" });
    }
  });

  it("a server that says nothing fails connect with ERR_TIMEOUT after handshakeTimeoutMs", async () => {
    behave = () => {};
    const t0 = performance.now();
    await assert.rejects(browserConnect(url, { handshakeTimeoutMs: 300 }), (err: PointSubError) => {
      assert.equal(err.code, "ERR_TIMEOUT", `${err.code}: ${err.message}`);
      assert.match(err.message, /no pointsub handshake .* within 300 ms/);
      return true;
    });
    assert.ok(performance.now() - t0 < 5000);
  });

  it("destroy(err) closes the connection with err: its close event and what was in flight", async () => {
    const server = createServer();
    server.handle("/never/1", () => new Promise<never>(() => {}));
    const [wsUrl] = await server.listen("ws://127.0.0.1:0/pointsub");
    try {
      const conn = await browserConnect(wsUrl);
      const closed = new Promise<Error | undefined>((resolve) => conn.once("close", resolve));
      const call = conn.request("/never/1", "");
      const why = new PointSubError("ERR_CANCELLED", "the page went away");
      conn.destroy(why);
      assert.equal(await closed, why);
      await assert.rejects(call, (err: PointSubError) => err === why);
    } finally {
      await server.close();
    }
  });

  it("a GOAWAY with an error after the handshake closes the connection with the peer's error", async () => {
    // Preface and HELLO, then, once the client's HELLO arrived, GOAWAY 2003 "full".
    behave = (ws) => {
      ws.send(handshake());
      ws.once("message", () => {
        const goAway = Uint8Array.from([0x07, 0xd3, ...new TextEncoder().encode("full")]);
        setTimeout(() => ws.send(encodeFrame(FrameType.GOAWAY, 0, 0, goAway)), 50);
      });
    };
    const conn = await browserConnect(url);
    const err = await new Promise<PointSubError | undefined>((resolve) => conn.once("close", resolve));
    assert.equal(err?.code, "ERR_OVERLOADED", `${err?.code}: ${err?.message}`);
    assert.match(err?.message ?? "", /peer closed the connection: full/);
  });

  it("a connect failing with a revoked Proxy (a custom transport's) rejects with it, no unhandled rejection", async () => {
    // The suggestion is completed after the rejection, from a promise nobody awaits: its brand check (and
    // its resolution with the error, a thenable check) threw on the revoked Proxy, an unhandled rejection.
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    const runtime = createBrowserRuntime({
      transports: [
        {
          schemes: ["revoked"],
          connect: () => Promise.reject(proxy),
          listen: () => Promise.reject(new Error("no")),
        },
      ],
    });
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    try {
      // (Kept, not returned: resolving a promise with a revoked Proxy throws, a thenable check.)
      let got: unknown;
      await browserConnect("revoked://h:1", { runtime }).then(
        () => assert.fail("resolved"),
        (e: unknown) => {
          got = e;
        },
      );
      assert.equal(got, proxy);
      // The suggestions' chunk (imported at once here) and the turns after it.
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
    assert.deepEqual(unhandled.map(String), []);
  });
});
