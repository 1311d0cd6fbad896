/**
 * `webCompressionCodecs()`: deflate-raw and gzip on CompressionStream (here
 * Node's, the WHATWG API browsers have) in the browser runtime, against a
 * Node server's zlib codecs over ws://: streams compressed both ways arrive
 * intact and were compressed on the wire; a corrupt block or one that
 * inflates past its declared length is ERR_PROTOCOL; the probe tells text
 * from noise.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { connect as browserConnect, createBrowserRuntime, webCompressionCodecs } from "../../src/browser.ts";
import { createServer } from "../../src/index.ts";
import { sha256 } from "../helpers/data.ts";

/** 4 MiB of text: compresses well. */
const text = new TextEncoder()
  .encode(Array.from({ length: 70_000 }, (_, i) => `line ${i}: the quick brown fox jumps over the lazy dog\n`).join(""))
  .subarray(0, 4 * 1024 * 1024);

describe("web compression codecs (CompressionStream) against Node's zlib", () => {
  it("streams compressed both ways between the browser runtime and a Node server", async () => {
    const server = createServer();
    server.handleStream("/hash/1", async (s) => sha256(await s.bytes()));
    server.handle("/push/1", async (_req, ctx) => ctx.session.sendStream("/page/1", [text], { compress: "gzip" }));
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const runtime = createBrowserRuntime({ codecs: webCompressionCodecs() });
    const conn = await browserConnect(url, { runtime });
    try {
      assert.equal(conn.peerSettings.compression & 0b11, 0b11, "the server offers deflate-raw and gzip");
      // Browser → server, deflate-raw.
      const hash = new TextDecoder().decode(await conn.sendStream("/hash/1", [text], { compress: "deflate-raw" }));
      assert.equal(hash, sha256(text));
      const sent = conn.stats().compression["deflate-raw"];
      assert.ok(sent.compressed > 0 && sent.bytesAfter < sent.bytesBefore / 4, JSON.stringify(sent));
      // Server → browser, gzip: inflated by DecompressionStream.
      conn.handleStream("/page/1", async (s) => sha256(await s.bytes()));
      assert.equal(new TextDecoder().decode(await conn.request("/push/1", "")), sha256(text));
      const [session] = server.sessions;
      const pushed = session.stats().compression.gzip;
      assert.ok(pushed.compressed > 0 && pushed.bytesAfter < pushed.bytesBefore / 4, JSON.stringify(pushed));
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("a corrupt block, or one that inflates past its declared length, is ERR_PROTOCOL; the probe tells text from noise", async () => {
    const [deflate, gzip] = webCompressionCodecs();
    const packed = await gzip.compress(text);
    assert.deepEqual(await gzip.decompress(packed, text.length), text);
    await assert.rejects(gzip.decompress(packed, text.length - 1), { code: "ERR_PROTOCOL", message: /past/ });
    await assert.rejects(deflate.decompress(randomBytes(1000), 1 << 20), { code: "ERR_PROTOCOL" });
    const noise = randomBytes(8192);
    assert.ok(deflate.probe(noise) > noise.length * 0.95, "noise does not look compressible");
    assert.ok(deflate.probe(text.subarray(0, 8192)) < 8192 * 0.9, "text looks compressible");
  });
});
