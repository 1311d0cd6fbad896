/**
 * A stream's declared `total` is checked where the bytes come from: a
 * source that ends short of it (a file truncated while it is sent) or
 * yields more fails the send with ERR_SOURCE on the sender's side. Before,
 * the receiver refused it with ERR_PROTOCOL ("stream declared … and
 * carried …"), which blames the peer and names no file.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { crc32c } from "../../src/codec/crc32c.ts";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import {
  connectPeer,
  type ParsedFrame,
  parseCancel,
  parseResStart,
  streamData,
  streamEnd,
  streamStart,
  T,
} from "../helpers/attacker.ts";

describe("a stream's declared total", () => {
  let server: Server;
  let conn: Connection;
  let handled = 0;
  before(async () => {
    server = createServer();
    server.handleStream("/up", async (stream) => {
      handled++;
      let n = 0;
      for await (const c of stream) n += c.length;
      return String(n);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    conn = await connect(url);
  });
  after(async () => {
    await conn.close();
    await server.close();
  });

  it("a total START cannot carry (2^53 - 1: the field holds total + 1) is refused before anything is sent", async () => {
    const before = handled;
    for (const total of [Number.MAX_SAFE_INTEGER, 2 ** 53, -1, 1.5]) {
      await assert.rejects(conn.sendStream("/up", [new Uint8Array(10)], { total }).done, {
        code: "ERR_INVALID_ARGUMENT",
        message: /total must be an integer from 0 to 2\^53 - 2/,
      });
    }
    assert.equal(new TextDecoder().decode(await conn.sendStream("/up", [new Uint8Array(10)], { total: 10 })), "10");
    assert.equal(handled, before + 1);
  });

  for (const [what, chunks, message] of [
    [
      "ends short of it",
      [new Uint8Array(40_000), new Uint8Array(10_000)],
      /ended after 50000 of its declared 100000 bytes/,
    ],
    ["yields more", [new Uint8Array(90_000), new Uint8Array(20_000)], /more than its declared 100000 bytes/],
  ] as const) {
    it(`a source that ${what}: ERR_SOURCE on the sender's side, and the connection serves on`, async () => {
      await assert.rejects(conn.sendStream("/up", chunks, { total: 100_000 }).done, (err: PointSubError) => {
        assert.equal(err.code, "ERR_SOURCE");
        assert.match(err.message, message);
        return true;
      });
      const whole = new TextDecoder().decode(
        await conn.sendStream("/up", [new Uint8Array(100_000)], { total: 100_000 }),
      );
      assert.equal(whole, "100000");
      assert.ok(handled >= 1);
    });
  }
});

describe("a stream's declared total, from a raw peer", () => {
  it("a data frame large enough to span reads that runs past the total is refused at once (CANCEL 3001), not handed to the reader", async () => {
    // Before, such a frame (32 KiB or more, received as views of the socket's chunks) was not counted
    // against START's total: the reader got all 256 KiB of a stream that declared 10 bytes, and only
    // END failed it (an error RES), so a sink stored more than the sender declared.
    const server = createServer();
    let read = 0;
    const handled = Promise.withResolvers<unknown>();
    server.handleStream("/up", async (stream) => {
      try {
        for await (const c of stream) read += c.length;
      } catch (err) {
        handled.resolve(err);
        throw err;
      }
      handled.resolve(undefined);
      return String(read);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const answers = new Map<number, PromiseWithResolvers<ParsedFrame>>([
      [1, Promise.withResolvers<ParsedFrame>()],
      [3, Promise.withResolvers<ParsedFrame>()],
    ]);
    const peer = await connectPeer({
      port: Number(new URL(url).port),
      onFrame: (f) => {
        if (f.type === T.CANCEL || f.type === T.RES) answers.get(f.id)?.resolve(f);
      },
    });
    try {
      // 256 KiB in one frame: more than one socket read (at most 64 KiB each), so it arrives in pieces.
      const big = new Uint8Array(256 * 1024).fill(7);
      peer.write(streamStart(1, { total: 10, route: "/up" }));
      peer.write(streamData(1, big));
      peer.write(streamEnd(1, big.length, crc32c(big)));
      const f = await (answers.get(1) as PromiseWithResolvers<ParsedFrame>).promise;
      assert.equal(f.type, T.CANCEL, "the stream is cancelled at once, not answered after its END");
      assert.equal(parseCancel(f.payload as Uint8Array), 3001);
      const err = (await handled.promise) as PointSubError | undefined;
      assert.equal(err?.code, "ERR_PROTOCOL");
      assert.match(err.message, /carried more than the 10 bytes it declared/);
      assert.equal(read, 0, "the reader got nothing past the declared total");
      // The connection stays open: a stream within its total is served.
      const small = new Uint8Array(10).fill(1);
      peer.write(streamStart(3, { total: 10, route: "/up" }));
      peer.write(streamData(3, small));
      peer.write(streamEnd(3, 10, crc32c(small)));
      const r = await (answers.get(3) as PromiseWithResolvers<ParsedFrame>).promise;
      assert.equal(r.type, T.RES);
      assert.equal(parseResStart(r.flags, r.payload as Uint8Array).status, 0);
    } finally {
      peer.destroy();
      await server.close();
    }
  });
});
