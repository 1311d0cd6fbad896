/**
 * Costly compressed blocks do not hold up other connections' (attack
 * review, session 26): a 14-byte brotli block of 16 MiB of zeros
 * (quality 5, a 16 MiB window) cost its decoder ~45–90 ms before the
 * output limit stopped it, whatever length it declared; a block now may ask
 * for a 4 MiB window at most (unless it declares more), ~9 ms for 27 bytes. Inflation slots were
 * given first come first served, so peers sending such blocks on many
 * connections (2 queued per connection) made an honest connection's block
 * wait behind all of theirs. Now a freed slot goes to the waiting
 * connection that used the pool least lately: the honest block is next.
 */
import assert from "node:assert/strict";
import { availableParallelism } from "node:os";
import { describe, it } from "node:test";
import { brotliCompressSync, constants, deflateRawSync } from "node:zlib";
import { crc32c } from "../../src/codec/crc32c.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { Feature } from "../../src/codec/settings.ts";
import { encodeStreamEnd, encodeStreamHead } from "../../src/codec/stream-prefix.ts";
import { writeVarint } from "../../src/codec/varint.ts";
import { createServer } from "../../src/index.ts";
import { brotliWindowBits, inflationsStarted } from "../../src/node/zlib-codecs.ts";
import { handshake, type RawPeer, rawClient } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

const ATTACKERS = 8;
const BLOCKS = 4;

/** A STREAM START on `id` to `route` with `codec`, then one COMPRESSED block declaring `declared` bytes. */
function streamWithBlock(id: number, route: string, codec: number, block: Uint8Array, declared: number): Buffer {
  const head = encodeStreamHead({ total: undefined, offset: 0, prefixCrc: 0, route, codec, meta: new Uint8Array(0) });
  const v = new Uint8Array(5);
  const len = v.subarray(0, writeVarint(v, 0, declared));
  return Buffer.concat([
    encodeFrame(FrameType.STREAM, Flag.START, id, head),
    encodeFrame(FrameType.STREAM, Flag.COMPRESSED, id, Buffer.concat([len, block])),
  ]);
}

describe("attack: costly compressed blocks on many connections", () => {
  it("an honest connection's block is inflated next, not after every queued costly block", {
    timeout: 60_000,
  }, async () => {
    const server = createServer({ maxCompressionRatio: 4096 });
    server.handleStream("/s", async (stream) => {
      try {
        for await (const _ of stream) {
          // a costly block inflates past its declared length: the stream fails
        }
      } catch {
        // expected
      }
      return "ok";
    });
    let atStart = -1;
    let atData = -1;
    server.handleStream("/h", async (stream) => {
      atStart = inflationsStarted();
      let n = 0;
      for await (const c of stream) {
        if (n === 0) atData = inflationsStarted();
        n += c.length;
      }
      return String(n);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // The costliest block a peer may still send: a 4 MiB window (a larger one is refused before any
    // inflation, below), ~9 ms of a pool thread for 27 bytes.
    const costly = brotliCompressSync(new Uint8Array(16 * 1024 * 1024), {
      params: { [constants.BROTLI_PARAM_QUALITY]: 5, [constants.BROTLI_PARAM_LGWIN]: 22 },
    });
    assert.ok(costly.length <= 32, `${costly.length} bytes`);
    const hello = handshake({ features: Feature.STREAMS | Feature.RESUME, compression: 0b1111 });
    const before = inflationsStarted();
    const peers: RawPeer[] = [];
    for (let a = 0; a < ATTACKERS; a++) {
      const p = await rawClient(url);
      peers.push(p);
      const frames: Buffer[] = [Buffer.from(hello)];
      for (let b = 0; b < BLOCKS; b++) frames.push(streamWithBlock(1 + 2 * b, "/s", 4, costly, 32 * 1024));
      p.socket.write(Buffer.concat(frames));
    }
    // Every attacker connection has had blocks inflated (and has more waiting).
    await until(() => inflationsStarted() - before >= 2 * ATTACKERS, 30_000);
    const honest = await rawClient(url);
    peers.push(honest);
    const plain = new Uint8Array(1024 * 1024).fill(7);
    honest.socket.write(
      Buffer.concat([Buffer.from(hello), streamWithBlock(1, "/h", 1, deflateRawSync(plain), plain.length)]),
    );
    await until(() => atData >= 0, 30_000);
    const waited = atData - atStart;
    const queued = ATTACKERS * BLOCKS - (atStart - before);
    // First come first served it waited for every attacker block queued ahead of it (2 per
    // connection: ~14 here); now for the slots running when it came, then itself.
    assert.ok(queued >= ATTACKERS, `${queued} attacker blocks still to inflate when the honest one came`);
    assert.ok(waited <= availableParallelism() + 2, `${waited} inflations started before the honest block's data`);
    for (const p of peers) p.socket.destroy();
    await server.close();
  });

  it("a brotli block asking for a window over 4 MiB (more than it declares) is refused before any inflation; the connection goes on", {
    timeout: 60_000,
  }, async () => {
    const server = createServer({ maxCompressionRatio: 4096 });
    const outcomes: string[] = [];
    server.handleStream("/s", async (stream) => {
      let n = 0;
      try {
        for await (const c of stream) n += c.length;
        outcomes.push(`ok ${n}`);
      } catch (err) {
        outcomes.push(`${(err as { code?: string }).code}: ${(err as Error).message}`);
      }
      return "done";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const zeros = new Uint8Array(16 * 1024 * 1024);
    const wide = brotliCompressSync(zeros, {
      params: { [constants.BROTLI_PARAM_QUALITY]: 5, [constants.BROTLI_PARAM_LGWIN]: 24 },
    });
    assert.equal(brotliWindowBits(wide), 24);
    // What an encoder sends by default (4 MiB window, whatever the input's size).
    const plain = new Uint8Array(20_000).fill(9);
    const honest = brotliCompressSync(plain);
    assert.equal(brotliWindowBits(honest), 22);
    const peer = await rawClient(url);
    const before = inflationsStarted();
    peer.socket.write(
      Buffer.concat([
        Buffer.from(handshake({ features: Feature.STREAMS | Feature.RESUME, compression: 0b1111 })),
        streamWithBlock(1, "/s", 4, wide, 32 * 1024),
      ]),
    );
    await until(() => outcomes.length === 1, 30_000);
    assert.match(outcomes[0], /^ERR_PROTOCOL: brotli data asks for a window of 2\^24 bytes/);
    assert.equal(inflationsStarted(), before, "nothing inflated");
    peer.socket.write(
      Buffer.concat([
        streamWithBlock(3, "/s", 4, honest, plain.length),
        encodeFrame(FrameType.STREAM, Flag.END, 3, encodeStreamEnd(plain.length, crc32c(plain))),
      ]),
    );
    await until(() => outcomes.length === 2, 30_000);
    assert.equal(outcomes[1], `ok ${plain.length}`);
    peer.socket.destroy();
    await server.close();
  });
});
