/**
 * `connect`'s `signal` must be an AbortSignal: an AbortController given in
 * its place is ERR_INVALID_ARGUMENT, before any socket is opened (also
 * connectResilient's, pointsub and lp+).
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect, connectResilient, createLpServer, createServer, PointSubError } from "../../src/index.ts";
import { createServer as createP2pServer, connect as p2pConnect } from "../../src/p2p/index.ts";
import { testCerts } from "../helpers/certs.ts";
import { catchingUncaught } from "../helpers/uncaught.ts";

const dir = mkdtempSync(join(tmpdir(), "pointsub-signal-"));

const invalid = (e: unknown) => {
  assert.ok(e instanceof PointSubError, String(e));
  assert.equal(e.code, "ERR_INVALID_ARGUMENT");
  assert.match(e.message, /signal must be an AbortSignal/);
  return true;
};

describe("connect({ signal }) with an AbortController instead of its signal", () => {
  it("tcp, tls, unix, ws, wss, lp+tcp and libp2p: ERR_INVALID_ARGUMENT, no socket left to throw uncaught", async () => {
    const certs = await testCerts();
    const server = createServer({ tls: { cert: certs.serverCert, key: certs.serverKey } });
    server.handle("/echo", (req) => req.data);
    const urls = await server.listen(
      "tcp://127.0.0.1:0",
      "tls://127.0.0.1:0",
      `unix://${join(dir, "s.sock")}`,
      "ws://127.0.0.1:0/p",
      "wss://127.0.0.1:0/p",
    );
    const lp = createLpServer();
    urls.push(...(await lp.listen("lp+tcp://127.0.0.1:0")));
    const p2p = createP2pServer();
    const [p2pUrl] = await p2p.listen("/ip4/127.0.0.1/tcp/0");
    try {
      await catchingUncaught(async (caught) => {
        for (const url of urls) {
          const signal = new AbortController() as unknown as AbortSignal;
          await assert.rejects(connect(url, { signal, tls: { ca: certs.ca } }), invalid);
        }
        await assert.rejects(p2pConnect(p2pUrl, { signal: new AbortController() as unknown as AbortSignal }), invalid);
        // What a socket opened meanwhile would do happens while these connect (and answer).
        for (const url of urls.slice(0, 5)) {
          const conn = await connect(url, { signal: new AbortController().signal, tls: { ca: certs.ca } });
          assert.equal(new TextDecoder().decode(await conn.request("/echo", "hi")), "hi");
          await conn.close();
        }
        // A signal is known by its shape: null is refused (a request with it threw a TypeError once its
        // call was registered), a signal not of this realm's class (an iframe's, a polyfill's) is taken.
        const conn = await connect(urls[0]);
        await assert.rejects(conn.request("/echo", "x", { signal: null as unknown as AbortSignal }), invalid);
        const foreign = Object.assign(new EventTarget(), { aborted: false }) as unknown as AbortSignal;
        const asked = conn.request("/echo", "late", { signal: foreign, timeoutMs: 5000 });
        assert.equal(new TextDecoder().decode(await asked), "late");
        await conn.close();
        assert.deepEqual(caught, []);
      });
    } finally {
      await server.close();
      await lp.close();
      await p2p.close();
    }
  });
});

describe("connectResilient({ signal }) with an AbortController instead of its signal", () => {
  it("pointsub and lp+tcp: ERR_INVALID_ARGUMENT (lp+ threw a raw TypeError)", async () => {
    const server = createServer();
    const lp = createLpServer();
    const urls = [...(await server.listen("tcp://127.0.0.1:0")), ...(await lp.listen("lp+tcp://127.0.0.1:0"))];
    try {
      for (const url of urls) {
        const signal = new AbortController() as unknown as AbortSignal;
        await assert.rejects(connectResilient(url, { signal, reconnect: { maxAttempts: 1 } }), invalid, url);
      }
    } finally {
      await server.close();
      await lp.close();
    }
  });
});
