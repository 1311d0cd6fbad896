/**
 * `Transfer.contentCrc` of a `sendStream` made before the stream engine was
 * loaded (a browser page's first stream): the transfer handed out is a
 * stand-in whose answer follows the engine's own transfer, and its
 * contentCrc stayed undefined for ever (the engine set it on its own
 * transfer only), so an answer after END looked like an early one; a
 * browser's `sendResumable(..., { resume: false })` carried it on too.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { connect } from "../../src/client/connect.ts";
import { sendResumable } from "../../src/client/resumable.ts";
import { crc32c } from "../../src/codec/crc32c.ts";
import { resetStreamEngine } from "../../src/connection/stream-engine.ts";
import { createServer } from "../../src/index.ts";
import { heldLoader, portable } from "../helpers/held-loader.ts";

describe("contentCrc of a sendStream made before the engine is loaded", () => {
  after(() => resetStreamEngine());

  it("is the content's CRC32C once answered after END, as a stream made once it is loaded", async () => {
    const server = createServer({ runtime: portable("lazy-crc") });
    server.handleStream("/len/1", async (s) => String((await s.bytes()).length));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const gate = heldLoader();
    resetStreamEngine(gate.load);
    const conn = await connect(url, { runtime: portable("lazy-crc") });
    try {
      const data = new Uint8Array(5000).map((_, i) => i & 255);
      const t = conn.sendStream("/len/1", [data.subarray(0, 1000), data.subarray(1000)], { total: data.length });
      const r = sendResumable(
        conn,
        "/len/1",
        { size: data.length, transferId: "x".repeat(32), open: () => [data] },
        { resume: false },
      );
      assert.equal(t.contentCrc, undefined, "not answered yet");
      gate.release();
      assert.equal(new TextDecoder().decode(await t), "5000");
      assert.equal(t.contentCrc, crc32c(data));
      await r;
      assert.equal(r.contentCrc, crc32c(data));
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
