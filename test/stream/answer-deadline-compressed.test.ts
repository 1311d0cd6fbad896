/**
 * An answer deadline counted from the last byte sent (`sendResumable` /
 * `sendFile` with `answerTimeoutMs`) starts once the transport wrote the
 * last chunk, compressed or not. Before, a compressed chunk counted as sent
 * as soon as it was compressed (its buffer's release, which is due then,
 * was the only notice): with a receiver reading slowly the deadline ran
 * while up to a queue's worth of compressed frames — a 16 KiB queue holding
 * many times that much content — still waited for its credit, and the
 * attempt failed with ERR_TIMEOUT while bytes were being sent (README:
 * "nothing is timed while bytes are being sent"). A raw receiver holds the
 * credit here, so what was written is known exactly.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { watchLastSent } from "../../src/client/answer-deadline.ts";
import { Feature } from "../../src/codec/settings.ts";
import { connect } from "../../src/index.ts";
import { onChunkSent } from "../../src/stream/release.ts";
import { credit, F, FrameReader, type ParsedFrame, res, T } from "../helpers/attacker.ts";
import { handshake, rawServer } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

const CHUNKS = 8;
const CHUNK = 8 * 1024;

describe("a watched stream's last byte sent, with compression", () => {
  it("is when the last compressed frame was written, not when it was compressed (its buffer is still released at once)", async () => {
    const srv = await rawServer();
    const connecting = connect(srv.url);
    const peer = await srv.peer;
    // A 16 KiB stream window: START and one 8 KiB compressed frame go out, the rest wait for credit.
    peer.socket.write(handshake({ features: Feature.STREAMS, compression: 1, streamWindow: 16 * 1024 }));
    const conn = await connecting;
    let streamId = -1;
    const ended = Promise.withResolvers<void>();
    const reader = new FrameReader((f: ParsedFrame) => {
      if (f.type !== T.STREAM) return;
      if ((f.flags & F.START) !== 0) streamId = f.id;
      if ((f.flags & F.END) !== 0) ended.resolve();
    });
    peer.socket.on("data", (c: Buffer) => reader.push(c));
    let released = 0;
    async function* zeros(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < CHUNKS; i++) {
        const chunk = new Uint8Array(CHUNK);
        onChunkSent(chunk, () => released++);
        yield chunk;
      }
    }
    try {
      const watched = watchLastSent(zeros());
      let sent = false;
      void watched.sent.then(() => {
        sent = true;
      });
      const t = conn.sendStream("/x", watched.source, { compress: "deflate-raw" });
      // Every chunk compressed (the queue of compressed frames is far below its high-water mark)...
      await until(() => conn.stats().compression?.["deflate-raw"]?.compressed === CHUNKS);
      await new Promise((r) => setImmediate(r));
      // ...and every buffer given back at once, as before: the frames carry the compressed copies.
      assert.equal(released, CHUNKS);
      // But not sent: all but the first still wait for the receiver's credit.
      assert.equal(sent, false, "the last chunk counted as sent while its frame waited for credit");
      peer.socket.write(credit(streamId, 1024 * 1024));
      await ended.promise;
      peer.socket.write(res(streamId, new TextEncoder().encode("ok")));
      assert.equal(new TextDecoder().decode(await t), "ok");
      await watched.sent;
    } finally {
      conn.destroy();
      peer.socket.destroy();
      await srv.close();
    }
  });
});
