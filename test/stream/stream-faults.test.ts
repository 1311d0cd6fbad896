import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { deflateRawSync } from "node:zlib";
import { crc32c } from "../../src/codec/crc32c.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { Feature } from "../../src/codec/settings.ts";
import { encodeStreamEnd, encodeStreamHead } from "../../src/codec/stream-prefix.ts";
import { writeVarint } from "../../src/codec/varint.ts";
import { createServer, type PointSubError, type ServerOptions } from "../../src/index.ts";
import { handshake, type RawPeer, rawClient } from "../helpers/raw-peer.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const enc = new TextEncoder();

async function until(pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error("condition not reached");
    await sleep(2);
  }
}

/** A server with a stream route that records what its handler saw, and a raw client after the handshake. */
async function setup(options: ServerOptions = {}, read = true) {
  const server = createServer(options);
  const closes: (PointSubError | undefined)[] = [];
  const seen: { bytes: number; error?: string }[] = [];
  server.on("sessionClose", (_s, err) => closes.push(err));
  server.handleStream("/s", async (stream) => {
    const entry: { bytes: number; error?: string } = { bytes: 0 };
    seen.push(entry);
    if (!read) await new Promise(() => {});
    try {
      for await (const c of stream) entry.bytes += c.length;
    } catch (err) {
      entry.error = (err as PointSubError).code;
      throw err;
    }
    return "ok";
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const peer: RawPeer = await rawClient(url);
  peer.socket.write(handshake({ features: Feature.STREAMS | Feature.RESUME, compression: 0b1111 }));
  await peer.waitFor(6);
  return { server, peer, closes, seen };
}

const start = (id: number, codec = 0, meta = new Uint8Array(0), total: number | undefined = undefined) =>
  encodeFrame(
    FrameType.STREAM,
    Flag.START,
    id,
    encodeStreamHead({ total, offset: 0, prefixCrc: 0, route: "/s", codec, meta }),
  );
const data = (id: number, bytes: Uint8Array, flags = 0) => encodeFrame(FrameType.STREAM, flags, id, bytes);
/** A COMPRESSED frame's payload: the declared decompressed length, then the block. */
const compressed = (length: number, block: Uint8Array) => {
  const head = new Uint8Array(5);
  return Buffer.concat([head.subarray(0, writeVarint(head, 0, length)), block]);
};
const end = (id: number, length: number, crc: number) =>
  encodeFrame(FrameType.STREAM, Flag.END, id, encodeStreamEnd(length, crc));

describe("stream faults: bad input gets a typed error, nothing hangs, memory stays bounded", () => {
  it("a STREAM frame for a stream that was never started closes the connection with ERR_PROTOCOL", async () => {
    const { server, peer, closes } = await setup();
    peer.socket.write(data(1, new Uint8Array(10)));
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_PROTOCOL");
    await peer.closed;
    await server.close();
  });

  it("a codec the receiver did not offer closes with ERR_COMPRESSION; metadata that is not a JSON object, a START flagged COMPRESSED, with ERR_PROTOCOL", async () => {
    const head = encodeStreamHead({
      total: undefined,
      offset: 0,
      prefixCrc: 0,
      route: "/s",
      codec: 1,
      meta: new Uint8Array(0),
    });
    for (const [frame, code] of [
      [start(1, 9), "ERR_COMPRESSION"],
      // Ids past 32 (u8): 33 was taken for deflate-raw's bit (a shift by 32 is one by 0 in JavaScript), the
      // START accepted, and its first COMPRESSED frame closed the connection with ERR_PROTOCOL instead.
      ...[33, 34, 65, 255].map(
        (codec) =>
          [
            Buffer.concat([start(1, codec), data(1, compressed(3, deflateRawSync("abc")), Flag.COMPRESSED)]),
            "ERR_COMPRESSION",
          ] as const,
      ),
      // (It was served, the deflate block inside START inflated: interop review, session 27.)
      [
        encodeFrame(
          FrameType.STREAM,
          Flag.START | Flag.COMPRESSED,
          1,
          Buffer.concat([head, compressed(3, deflateRawSync("abc"))]),
        ),
        "ERR_PROTOCOL",
      ],
      [start(1, 0, enc.encode("[1,2]")), "ERR_PROTOCOL"],
      [start(1, 0, enc.encode("{not json")), "ERR_PROTOCOL"],
    ] as const) {
      const { server, peer, closes } = await setup();
      peer.socket.write(frame);
      await until(() => closes.length === 1);
      assert.equal(closes[0]?.code, code);
      await server.close();
    }
  });

  it("a sender that ignores the stream window is stopped with ERR_FLOW_CONTROL (the slow handler never buffers more)", async () => {
    const { server, peer, closes } = await setup({ streamWindow: 16 * 1024 }, false);
    peer.socket.write(start(1));
    for (let i = 0; i < 4; i++) peer.socket.write(data(1, new Uint8Array(8 * 1024)));
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_FLOW_CONTROL");
    await server.close();
  });

  it("more open streams than maxConcurrentStreams closes with ERR_TOO_MANY_REQUESTS", async () => {
    const { server, peer, closes } = await setup({ maxConcurrentStreams: 2 }, false);
    peer.socket.write(Buffer.concat([start(1), start(3), start(5)]));
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_TOO_MANY_REQUESTS");
    await server.close();
  });

  it("a wrong end-to-end CRC or length fails the stream (ERR_CHECKSUM / ERR_PROTOCOL), answers with that error, and keeps the connection", async () => {
    const { server, peer, closes, seen } = await setup();
    const body = new Uint8Array(5000).fill(9);
    peer.socket.write(Buffer.concat([start(1), data(1, body), end(1, body.length, crc32c(body) ^ 1)]));
    peer.socket.write(
      Buffer.concat([start(3, 0, new Uint8Array(0), 6000), data(3, body), end(3, body.length, crc32c(body))]),
    );
    await until(() => seen.length === 2 && seen.every((s) => s.error !== undefined));
    assert.deepEqual(
      seen.map((s) => s.error),
      ["ERR_CHECKSUM", "ERR_PROTOCOL"],
    );
    await sleep(20);
    assert.equal(closes.length, 0, "the connection stays open");
    // Both error answers (RES with status 1) came back: errno 3002 and 3001 are in the bytes.
    const got = peer.received();
    assert.ok(got.includes(Buffer.from([0x0b, 0xba])), "errno 3002 answered");
    await server.close();
  });

  it("data past the total a START declared fails the stream at once (CANCEL 3001), not at its END; the connection stays", async () => {
    // Before: the receiver took and stored every byte (a file sink's partial grew past the declared
    // size, up to maxFileSize) and refused the stream only at its END.
    const { server, peer, closes, seen } = await setup();
    peer.socket.write(Buffer.concat([start(5, 0, new Uint8Array(0), 3), data(5, new Uint8Array(5).fill(1))]));
    await until(() => seen.length === 1 && seen[0]?.error !== undefined);
    assert.equal(seen[0]?.error, "ERR_PROTOCOL");
    await until(() => peer.received().includes(Buffer.from([0x40, 0x05, 0x02, 0x0b, 0xb9])));
    // Later frames of it are dropped; the connection serves the next stream.
    peer.socket.write(Buffer.concat([data(5, new Uint8Array(100)), end(5, 105, 0)]));
    const body = new Uint8Array(10).fill(2);
    peer.socket.write(Buffer.concat([start(7, 0, new Uint8Array(0), 10), data(7, body), end(7, 10, crc32c(body))]));
    await until(() => seen.length === 2 && seen[1]?.bytes === 10);
    await sleep(20);
    assert.equal(seen[1]?.error, undefined);
    assert.equal(closes.length, 0, "the connection stays open");
    await server.close();
  });

  it("compressed data that does not decompress, or inflates past its declared length, fails the stream with ERR_PROTOCOL", async () => {
    const { server, peer, closes, seen } = await setup({ maxFrameSize: 64 * 1024 });
    // A 16 MiB run of zeros deflates to ~16 KiB: declared as 60,000 bytes, it inflates past that.
    const bomb = deflateRawSync(new Uint8Array(16 * 1024 * 1024));
    assert.ok(bomb.length < 64 * 1024);
    peer.socket.write(Buffer.concat([start(1, 1), data(1, compressed(60_000, bomb), Flag.COMPRESSED)]));
    peer.socket.write(
      Buffer.concat([start(3, 1), data(3, compressed(100, new Uint8Array(100).fill(0xff)), Flag.COMPRESSED)]),
    );
    await until(() => seen.length === 2 && seen.every((s) => s.error !== undefined));
    assert.deepEqual(
      seen.map((s) => s.error),
      ["ERR_PROTOCOL", "ERR_PROTOCOL"],
    );
    assert.equal(closes.length, 0);
    await server.close();
  });
});

describe("a stream whose source cannot be read", () => {
  it("is refused locally with ERR_INVALID_ARGUMENT before the peer's handler starts", async () => {
    const { connect } = await import("../../src/index.ts");
    const server = createServer();
    let handlers = 0;
    server.handleStream("/s", async (stream) => {
      handlers++;
      for await (const _ of stream) {
        // drained
      }
      return "ok";
    });
    server.handle("/echo/1.0.0", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      for (const bad of [42, null, "text", { length: 3 }]) {
        await assert.rejects(
          conn.sendStream("/s", bad as never).done,
          (err: PointSubError) => err.code === "ERR_INVALID_ARGUMENT",
          String(bad),
        );
      }
      // Anything sent before this request has reached the server by its answer.
      await conn.request("/echo/1.0.0", "x");
      assert.equal(handlers, 0, "no stream START went out");
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
