/**
 * `webCompressionCodecs()`: deflate-raw and gzip on CompressionStream (here
 * Node's, the WHATWG API browsers have) in the browser runtime, against a
 * Node server's zlib codecs over ws://: streams compressed both ways arrive
 * intact and were compressed on the wire; a corrupt block or one that
 * inflates past its declared length is ERR_PROTOCOL; the probe tells text
 * from noise; a deflate bomb (1 MB inflating to 1 GiB, declared 1 MiB) goes
 * into the DecompressionStream a few KiB at a time and no further than its
 * declared length (Chromium inflated a chunk written whole at once: 1 GiB
 * and 11 s of a frozen page, `test/browser/compression-bomb.test.ts`).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { connect as browserConnect, createBrowserRuntime, webCompressionCodecs } from "../../src/browser.ts";
import { createServer } from "../../src/index.ts";
import { deflateBomb, sha256 } from "../helpers/data.ts";

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
    // Random bytes are a valid deflate stream (a final block, then junk) about 1 time in 160: Node 22's
    // DecompressionStream ignores bytes after the final block (as node:zlib does), 24 and later reject
    // them. Block type 3 (the first byte's bits 1–2) is reserved: corrupt on every runtime.
    const corrupt = randomBytes(1000);
    corrupt[0] |= 0b110;
    await assert.rejects(deflate.decompress(corrupt, 1 << 20), { code: "ERR_PROTOCOL" });
    const noise = randomBytes(8192);
    assert.ok(deflate.probe(noise) > noise.length * 0.95, "noise does not look compressible");
    assert.ok(deflate.probe(text.subarray(0, 8192)) < 8192 * 0.9, "text looks compressible");
  });

  it("a deflate bomb goes into the DecompressionStream in slices, stopped as soon as its output passes the declared length", async () => {
    const bomb = deflateBomb(1024);
    const Native = globalThis.DecompressionStream;
    /** Bytes the codec wrote into the platform's stream, and its largest write. */
    const fed = { bytes: 0, largest: 0 };
    /** The platform's stream behind a writable side that counts what goes in. */
    class Counting {
      readonly readable: ReadableStream<Uint8Array>;
      readonly writable: WritableStream<Uint8Array>;
      constructor(format: CompressionFormat) {
        const inner = new Native(format);
        const writer = inner.writable.getWriter();
        this.readable = inner.readable as ReadableStream<Uint8Array>;
        this.writable = new WritableStream<Uint8Array>({
          write: (chunk) => {
            fed.bytes += chunk.length;
            fed.largest = Math.max(fed.largest, chunk.length);
            return writer.write(chunk as Uint8Array<ArrayBuffer>);
          },
          close: () => writer.close(),
          abort: (reason) => writer.abort(reason),
        });
      }
    }
    globalThis.DecompressionStream = Counting as unknown as typeof DecompressionStream;
    try {
      const [deflate] = webCompressionCodecs();
      await assert.rejects(deflate.decompress(bomb, 1 << 20), { code: "ERR_PROTOCOL", message: /past/ });
      assert.ok(fed.largest <= 4096, `written in slices of at most 4 KiB, not ${fed.largest} bytes at once`);
      // 4 KiB inflates to 4 MiB here: the first slice passes the declared 1 MiB. Node's stream takes
      // a few slices more into its own buffer (64 KiB) before it pushes back; Chromium takes one.
      assert.ok(fed.bytes <= 256 * 1024, `${fed.bytes} of the bomb's ${bomb.length} bytes went in`);
    } finally {
      globalThis.DecompressionStream = Native;
    }
  });
});
