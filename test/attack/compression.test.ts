/**
 * Finding 3 of the hardening issue: compression bombs. A COMPRESSED frame
 * declares its decompressed length; the stream window is charged for it
 * before anything is inflated, a frame may not expand more than the
 * receiver's maxCompressionRatio, and frames are inflated only as the reader
 * gets to them.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { deflateRawSync } from "node:zlib";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { Feature } from "../../src/codec/settings.ts";
import { encodeStreamHead } from "../../src/codec/stream-prefix.ts";
import { writeVarint } from "../../src/codec/varint.ts";
import { connect, createServer, type PointSubError, type ServerOptions } from "../../src/index.ts";
import { handshake, rawClient } from "../helpers/raw-peer.ts";
import { sleep, until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;

async function setup(options: ServerOptions = {}) {
  const server = createServer(options);
  const closes: (PointSubError | undefined)[] = [];
  let reads = 0;
  server.on("sessionClose", (_s, err) => closes.push(err));
  // A handler that reads nothing for a while: received frames pile up unread.
  server.handleStream("/s", async (stream) => {
    await sleep(2000);
    for await (const c of stream) reads += c.length;
    return "ok";
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const peer = await rawClient(url);
  peer.socket.write(handshake({ features: Feature.STREAMS | Feature.RESUME, compression: 0b1111 }));
  return { server, url, peer, closes, reads: () => reads };
}

const start = (id: number) =>
  encodeFrame(
    FrameType.STREAM,
    Flag.START,
    id,
    encodeStreamHead({ total: undefined, offset: 0, prefixCrc: 0, route: "/s", codec: 1, meta: new Uint8Array(0) }),
  );

function compressedFrame(id: number, declared: number, block: Uint8Array): Uint8Array {
  const head = new Uint8Array(5);
  const payload = Buffer.concat([head.subarray(0, writeVarint(head, 0, declared)), block]);
  return encodeFrame(FrameType.STREAM, Flag.COMPRESSED, id, payload);
}

describe("attack: compression bombs", () => {
  it("the stream window is charged for decompressed bytes: 5 frames of 1 MiB zeros (~23 KB on the wire) exceed a 4 MiB window", async () => {
    const { server, peer, closes } = await setup();
    const block = deflateRawSync(new Uint8Array(MiB), { level: 9 });
    assert.ok(block.length * 5 < 64 * 1024);
    const frames = [start(1), ...Array.from({ length: 5 }, () => compressedFrame(1, MiB, block))];
    peer.socket.write(Buffer.concat(frames));
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_FLOW_CONTROL");
    peer.socket.destroy();
    await server.close();
  });

  it("a frame that would expand more than maxCompressionRatio closes the connection with ERR_COMPRESSION before inflating", async () => {
    const { server, peer, closes } = await setup({ maxCompressionRatio: 64 });
    const block = deflateRawSync(new Uint8Array(MiB), { level: 9 }); // ~1000x
    peer.socket.write(Buffer.concat([start(1), compressedFrame(1, MiB, block)]));
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_COMPRESSION");
    peer.socket.destroy();
    await server.close();
  });

  it("a plain frame over maxFrameSize closes the connection with ERR_FRAME_TOO_LARGE from its header, before its body arrived", async () => {
    const { server, peer, closes } = await setup({ maxFrameSize: 64 * 1024 });
    const frame = encodeFrame(FrameType.MSG, Flag.START | Flag.END, 1, new Uint8Array(64 * 1024 + 1));
    try {
      // The header and a few bytes of the body: the rest never comes.
      peer.socket.write(frame.subarray(0, 64));
      await until(() => closes.length === 1);
      assert.equal(closes[0]?.code, "ERR_FRAME_TOO_LARGE");
    } finally {
      peer.socket.destroy();
      await server.close();
    }
  });

  it("a COMPRESSED frame declaring more than maxFrameSize inflated closes the connection with ERR_PROTOCOL", async () => {
    const { server, peer, closes } = await setup({ maxFrameSize: 64 * 1024 });
    peer.socket.write(
      Buffer.concat([start(1), compressedFrame(1, 65 * 1024, deflateRawSync(new Uint8Array(65 * 1024)))]),
    );
    await until(() => closes.length === 1);
    assert.equal(closes[0]?.code, "ERR_PROTOCOL");
    peer.socket.destroy();
    await server.close();
  });

  it("a block that does not decompress fails its stream with ERR_PROTOCOL built without a stack trace (small blocks inflated inline and large ones on the thread pool)", async () => {
    // The peer's bytes cause it: a hostile peer can make a server build one per frame, and capturing a stack
    // costs more than the rest of the error (PointSubError.fromPeer).
    const server = createServer();
    const errors: unknown[] = [];
    server.handleStream("/s", async (stream) => {
      try {
        for await (const _ of stream);
      } catch (err) {
        errors.push(err);
      }
      return "ok";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await rawClient(url);
    peer.socket.write(handshake({ features: Feature.STREAMS | Feature.RESUME, compression: 0b1111 }));
    const garbage = (n: number) => new Uint8Array(n).map((_, i) => (i * 151 + 7) & 0xff);
    // Declared 1,000 bytes (inflated inline) and 512 KiB (on the thread pool), both within the ratio.
    peer.socket.write(
      Buffer.concat([
        start(1),
        compressedFrame(1, 1000, garbage(100)),
        start(3),
        compressedFrame(3, 512 * 1024, garbage(4096)),
      ]),
    );
    try {
      await until(() => errors.length === 2);
      for (const err of errors) {
        const e = err as PointSubError;
        assert.equal(e.code, "ERR_PROTOCOL");
        assert.match(e.message, /does not decompress|inflated to/);
        assert.equal(e.stack?.includes("\n    at "), false, `no stack frames: ${e.stack}`);
      }
    } finally {
      peer.socket.destroy();
      await server.close();
    }
  });

  it("a pointsub sender keeps frames within the receiver's ratio: extreme data goes raw and arrives intact", async () => {
    const server = createServer({ maxCompressionRatio: 8 });
    server.handleStream("/z", async (stream) => String((await stream.bytes()).reduce((a, b) => a + b, 0)));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const c = await connect(url);
    const data = new Uint8Array(4 * MiB).fill(1);
    const answer = await c.sendStream("/z", [data], { compress: "deflate-raw" });
    assert.equal(Buffer.from(answer).toString(), String(4 * MiB));
    const stats = c.stats().compression["deflate-raw"];
    assert.ok(stats !== undefined && stats.raw > 0, "frames over the ratio were sent uncompressed");
    await c.close();
    await server.close();
  });
});
