/**
 * Inflation work does not outlive what would read it (issue 9: a fuzzing
 * peer's compressed frames kept the server's thread pool busy after every
 * attacker was gone). A block queued for inflation whose stream was
 * abandoned by its turn is not inflated, and a connection that closes drops
 * its streams' still-compressed data instead of inflating it for a handler
 * that drains what arrived.
 */
import assert from "node:assert/strict";
import { availableParallelism } from "node:os";
import { describe, it } from "node:test";
import { brotliCompressSync, deflateRawSync } from "node:zlib";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { Feature } from "../../src/codec/settings.ts";
import { encodeStreamHead } from "../../src/codec/stream-prefix.ts";
import { writeVarint } from "../../src/codec/varint.ts";
import { createServer, type PointSubError } from "../../src/index.ts";
import { inflationsStarted, zlibCodecs } from "../../src/node/zlib-codecs.ts";
import { handshake, rawClient } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;

describe("attack: inflation of abandoned streams", () => {
  it("a queued block whose owner is abandoned by its turn is not inflated (ERR_CANCELLED)", {
    timeout: 20_000,
  }, async () => {
    const brotli = zlibCodecs().find((c) => c.name === "brotli");
    assert.ok(brotli !== undefined);
    // Brotli always runs on the thread pool; 32 MiB of zeros keeps each slot busy a while.
    const big = brotliCompressSync(new Uint8Array(32 * MiB));
    const before = inflationsStarted();
    const busy = Array.from({ length: availableParallelism() }, () => brotli.decompress(big, 32 * MiB));
    // Every slot is taken: this one waits its turn, and its owner gives up before it comes.
    const owner = { abandoned: false };
    const queued = brotli.decompress(big, 32 * MiB, owner);
    owner.abandoned = true;
    await assert.rejects(queued, (err: PointSubError) => err.code === "ERR_CANCELLED");
    for (const out of await Promise.all(busy)) assert.equal(out.length, 32 * MiB);
    assert.equal(inflationsStarted() - before, availableParallelism(), "the abandoned block never started");
  });

  it("thousands of queued blocks abandoned at once end without recursion (no stack overflow)", {
    timeout: 60_000,
  }, async () => {
    const brotli = zlibCodecs().find((c) => c.name === "brotli");
    assert.ok(brotli !== undefined);
    const big = brotliCompressSync(new Uint8Array(MiB));
    const busy = Array.from({ length: availableParallelism() }, () => brotli.decompress(big, MiB, undefined, {}));
    // Before: the slot freed by a running block started the next, whose owner was abandoned, which
    // started the next… one stack frame each: 5,000 overflowed the stack inside a zlib callback.
    const owners = Array.from({ length: 8000 }, () => ({ abandoned: false }));
    const queued = owners.map((o) => brotli.decompress(big, MiB, o, {}).catch((e: PointSubError) => e.code));
    for (const o of owners) o.abandoned = true;
    for (const out of await Promise.all(busy)) assert.equal(out.length, MiB);
    const codes = await Promise.all(queued);
    assert.equal(codes.length, 8000);
    assert.ok(codes.every((c) => c === "ERR_CANCELLED"));
  });

  it("a closed connection's compressed stream data is dropped, not inflated for the handler draining it", {
    timeout: 20_000,
  }, async () => {
    const server = createServer({ maxCompressionRatio: 4096 });
    let closed = false;
    server.on("sessionClose", () => {
      closed = true;
    });
    let read = 0;
    let failure: PointSubError | undefined;
    let startedAtClose = -1;
    server.handleStream("/s", async (stream) => {
      // Reads only once its peer is gone: what arrived is all there is.
      await until(() => closed);
      startedAtClose = inflationsStarted();
      try {
        for await (const c of stream) read += c.length;
      } catch (err) {
        failure = err as PointSubError;
      }
      return "ok";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await rawClient(url);
    peer.socket.write(handshake({ features: Feature.STREAMS | Feature.RESUME, compression: 0b1111 }));
    const head = encodeStreamHead({
      total: undefined,
      offset: 0,
      prefixCrc: 0,
      route: "/s",
      codec: 1,
      meta: new Uint8Array(0),
    });
    // 8 blocks of 256 KiB (over the inline-inflation size: each goes to the thread pool).
    const block = deflateRawSync(new Uint8Array(256 * 1024).fill(7));
    const varint = new Uint8Array(5);
    const declared = varint.subarray(0, writeVarint(varint, 0, 256 * 1024));
    const frames = [encodeFrame(FrameType.STREAM, Flag.START, 1, head)];
    for (let i = 0; i < 8; i++) {
      frames.push(encodeFrame(FrameType.STREAM, Flag.COMPRESSED, 1, Buffer.concat([declared, block])));
    }
    peer.socket.write(Buffer.concat(frames));
    // The frames are in once the first blocks (inflated on arrival) started.
    await until(() => server.stats().streams.bytesReceived >= 8 * 256 * 1024);
    peer.socket.destroy();
    await until(() => failure !== undefined);
    assert.equal(read, 0, "nothing still compressed was inflated for the reader");
    assert.equal(inflationsStarted(), startedAtClose, "no inflation started after the connection closed");
    await server.close();
  });
});
