/**
 * A BATCH split across socket reads is checked by a running CRC that
 * continues its header's (the decoder, session 20): over a real socket, a
 * BATCH whose bytes arrive in two reads at any offset delivers all its
 * frames when intact, and when a bit of it was flipped, or its trailer is
 * the CRC of another combination of its header and payload, closes the
 * session with a typed error having delivered none of its frames.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { crc32c } from "../../src/codec/crc32c.ts";
import { crc32cCombine } from "../../src/codec/crc32c-combine.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { createServer, type PointSubError } from "../../src/index.ts";
import { handshake, rawClient } from "../helpers/raw-peer.ts";
import { sleep } from "../helpers/wait.ts";

const FRAMES = 12;
const inner = Buffer.concat(
  Array.from({ length: FRAMES }, (_, i) =>
    encodeFrame(FrameType.MSG, Flag.START | Flag.END, 2 * i + 1, new Uint8Array(i * 3 + 1).fill(i), false),
  ),
);
const batch = encodeFrame(FrameType.BATCH, 0, 0, inner);
const headLen = batch.length - inner.length - 4;

function withTrailer(crc: number): Uint8Array {
  const b = batch.slice();
  new DataView(b.buffer, b.byteOffset).setUint32(b.length - 4, crc);
  return b;
}

describe("attack: a BATCH split across reads", () => {
  it("intact: every frame at any split; corrupted or with a wrongly combined CRC: a typed close, nothing delivered", async () => {
    const server = createServer();
    const delivered = new Map<number, number>();
    const closes: (PointSubError | undefined)[] = [];
    let session = 0;
    server.on("session", (s) => {
      const n = session++;
      delivered.set(n, 0);
      s.on("message", () => delivered.set(n, (delivered.get(n) ?? 0) + 1));
    });
    server.on("sessionClose", (_s, err) => closes.push(err));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const bad: [string, Uint8Array][] = [
      ["crc(payload)", withTrailer(crc32c(inner))],
      ["crc(header) xor crc(payload)", withTrailer((crc32c(batch.subarray(0, headLen)) ^ crc32c(inner)) >>> 0)],
      ["payload then header", withTrailer(crc32cCombine(crc32c(inner), crc32c(batch.subarray(0, headLen)), headLen))],
    ];
    for (const at of [headLen + 1, headLen + 40, batch.length - 5, batch.length - 2]) {
      const b = batch.slice();
      b[at] ^= 1;
      bad.push([`bit flipped at ${at}`, b]);
    }
    const cases: [string, Uint8Array, number][] = [];
    for (const split of [1, headLen - 1, headLen, headLen + 1, 50, batch.length - 4, batch.length - 1]) {
      cases.push(["intact", batch, split]);
      for (const [name, b] of bad) cases.push([name, b, split]);
    }
    try {
      for (const [i, [name, bytes, split]] of cases.entries()) {
        const peer = await rawClient(url);
        peer.socket.setNoDelay(true);
        peer.socket.write(handshake());
        await peer.waitFor(6);
        await sleep(5);
        peer.socket.write(bytes.subarray(0, split));
        await sleep(5);
        peer.socket.write(bytes.subarray(split));
        if (name === "intact") {
          for (let k = 0; k < 200 && (delivered.get(i) ?? 0) < FRAMES; k++) await sleep(5);
          assert.equal(delivered.get(i), FRAMES, `${name}, split at ${split}`);
          peer.socket.destroy();
          await peer.closed;
        } else {
          await peer.closed;
          assert.equal(delivered.get(i) ?? 0, 0, `${name}, split at ${split}: frames delivered`);
        }
        for (let k = 0; k < 200 && closes.length <= i; k++) await sleep(5);
        const err = closes[i];
        if (name === "intact") assert.notEqual(err?.code, "ERR_CHECKSUM");
        else assert.ok(err?.code === "ERR_CHECKSUM" || err?.code === "ERR_PROTOCOL", `${name}: ${err?.code}`);
      }
    } finally {
      await server.close({ timeoutMs: 500 });
    }
  });
});
