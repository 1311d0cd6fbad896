/**
 * After a stream's reader left (its handler works on before it answers),
 * what still arrives is dropped uncharged (stream/reader-left-budget): a
 * sender must not make that a way around flow control. The stream window
 * still holds — no credit comes back for dropped frames, and a sender that
 * sends past the window is cut with ERR_FLOW_CONTROL — and the memory
 * budget is never charged, so never released twice nor driven below 0.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { Feature } from "../../src/codec/settings.ts";
import { encodeStreamHead } from "../../src/codec/stream-prefix.ts";
import { createServer, type IncomingStream, type PointSubError } from "../../src/index.ts";
import { handshake, rawClient } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

it("a sender that ignores the window after the reader left is cut with ERR_FLOW_CONTROL; nothing is charged", async () => {
  const window = 64 * 1024;
  const server = createServer({ streamWindow: window });
  const closes: (PointSubError | undefined)[] = [];
  server.on("sessionClose", (_s, err) => closes.push(err));
  const left = Promise.withResolvers<void>();
  server.handleStream("/s", async (stream: IncomingStream, ctx) => {
    for await (const _ of stream) break;
    left.resolve();
    // Works on until its connection ends (a handler still running stays charged: ABANDONED_OVERHEAD).
    await new Promise((r) => ctx.signal.addEventListener("abort", r));
    return "ok";
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const peer = await rawClient(url);
  try {
    peer.socket.write(handshake({ features: Feature.STREAMS, compression: 0 }));
    await peer.waitFor(6);
    const head = encodeStreamHead({
      total: undefined,
      offset: 0,
      prefixCrc: 0,
      route: "/s",
      codec: 0,
      meta: new Uint8Array(0),
    });
    const data = () => encodeFrame(FrameType.STREAM, 0, 1, new Uint8Array(8 * 1024));
    peer.socket.write(encodeFrame(FrameType.STREAM, Flag.START, 1, head));
    peer.socket.write(data());
    await left.promise;
    // Up to the window (the first frame was read and credited back at most in part): accepted, dropped.
    for (let i = 0; i < window / (8 * 1024) - 2; i++) peer.socket.write(data());
    const session = [...server.sessions.values()][0];
    await until(() => session.stats().streams.bytesReceived >= window - 8 * 1024, 10_000);
    assert.equal(closes.length, 0, "cut while within the window");
    // Only the stream's head (while its handler runs), none of the dropped frames.
    assert.ok(server.memory.used < 16 * 1024, `dropped frames were charged: ${server.memory.used} bytes`);
    // Past the window: 16 more frames of 8 KiB with no credit granted for the dropped ones.
    for (let i = 0; i < 16; i++) peer.socket.write(data());
    await until(() => closes.length === 1, 10_000);
    assert.equal(closes[0]?.code, "ERR_FLOW_CONTROL");
    // Its handler settled: nothing is left charged, and nothing was returned twice.
    await until(() => server.memory.used === 0, 10_000);
  } finally {
    peer.socket.destroy();
    await server.close();
  }
});
