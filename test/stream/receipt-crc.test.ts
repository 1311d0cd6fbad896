/**
 * A receiver's receipt is checked against what was sent. Before, `sendFile`
 * checked the receipt's size only: a receiver (a hostile `serve --dir`, or
 * the asker of a download) that stored other bytes, or answered OK before it
 * had read the whole file, was reported as holding the file. Now the
 * receipt's CRC32C is compared with the content's as this side sent it
 * (`Transfer.contentCrc`), and an answer before the END is no receipt.
 * Real servers, real sockets.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { crc32c } from "../../src/codec/crc32c.ts";
import { type Connection, connect, createServer, FILE_ROUTE, type Server, sendFile } from "../../src/index.ts";

const hex = (n: number) => n.toString(16).padStart(8, "0");

describe("receipts are checked against what was sent", () => {
  let work: string;
  let file: string;
  const content = new Uint8Array(300_000).map((_, i) => (i * 7) & 255);

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-receipt-crc-"));
    file = join(work, "data.bin");
    await writeFile(file, content);
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  /** A server whose file route reads the stream to END, then answers a receipt naming `crcOf(content)`. */
  const serve = async (crcOf: (got: Uint8Array[]) => string): Promise<[Server, Connection]> => {
    const server = createServer();
    server.handleStream(FILE_ROUTE, async (stream) => {
      const got: Uint8Array[] = [];
      for await (const c of stream) got.push(c.slice());
      return JSON.stringify({
        name: "data.bin",
        path: "data.bin",
        size: content.length,
        crc32c: crcOf(got),
        resumedFrom: 0,
      });
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    return [server, await connect(url as string)];
  };

  it("a receipt naming another CRC32C than the content sent fails with ERR_CHECKSUM", async () => {
    const [server, conn] = await serve(() => "0badc0de");
    try {
      await assert.rejects(sendFile(conn, file, { resume: false }).done, (e: { code?: string; message?: string }) => {
        assert.equal(e.code, "ERR_CHECKSUM");
        assert.match(e.message ?? "", /0badc0de/);
        return true;
      });
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("the receipt of an honest receiver is taken, and contentCrc is the content's CRC32C", async () => {
    const [server, conn] = await serve((got) => hex(crc32c(Buffer.concat(got))));
    try {
      const receipt = await sendFile(conn, file, { resume: false });
      assert.equal(receipt.crc32c, hex(crc32c(content)));
      const t = conn.sendStream(FILE_ROUTE, [content.subarray(0, 1000), content.subarray(1000)], {
        total: content.length,
      });
      await t;
      assert.equal(t.contentCrc, crc32c(content));
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("an OK receipt before the END (an early answer) is refused with ERR_PROTOCOL, and contentCrc stays undefined", async () => {
    // The handler returns after the first chunk: the answer comes before the END, with the CRC of the
    // whole file (a receiver that knows the file, or guesses, and never stored it).
    const bigContent = new Uint8Array(8 * 1024 * 1024).fill(3);
    const server = createServer();
    server.handleStream(FILE_ROUTE, async (stream) => {
      for await (const _ of stream) break;
      return JSON.stringify({
        name: "data.bin",
        path: "data.bin",
        size: bigContent.length,
        crc32c: hex(crc32c(bigContent)),
        resumedFrom: 0,
      });
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url as string);
    try {
      // 8 MiB: the receiver's answer comes long before the sender could have sent it all.
      const big = join(work, "big.bin");
      await writeFile(big, bigContent);
      const transfer = sendFile(conn, big, { resume: false });
      await assert.rejects(transfer.done, (e: { code?: string; message?: string }) => {
        assert.equal(e.code, "ERR_PROTOCOL");
        assert.match(e.message ?? "", /before the whole of/);
        return true;
      });
      const t = conn.sendStream(FILE_ROUTE, [new Uint8Array(8 * 1024 * 1024)], { total: 8 * 1024 * 1024 });
      await t;
      assert.equal(t.contentCrc, undefined);
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
