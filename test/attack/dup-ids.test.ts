/**
 * Duplicate ids through the peer's tables (issue 9): a START (of any type,
 * a one-way message's too) for an id still open — as a request being
 * served, a stream, or a call kept in the
 * overflow of the table of calls (its slot taken by a colliding id: the
 * overflow is keyed by the secret permutation `idKey`) — is a typed
 * ERR_PROTOCOL at once, whichever kind came first.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { Feature } from "../../src/codec/settings.ts";
import { encodeStreamHead } from "../../src/codec/stream-prefix.ts";
import { createServer, type PointSubError } from "../../src/index.ts";
import { handshake, rawClient } from "../helpers/raw-peer.ts";
import { sleep } from "../helpers/wait.ts";

function req(id: number, route: string): Uint8Array {
  const r = Buffer.from(route);
  return encodeFrame(FrameType.REQ, Flag.START | Flag.END, id, Buffer.concat([Buffer.from([r.length]), r]));
}

/** A MSG frame with `flags` carrying one byte (a START without END first declares a 2-byte total). */
function msg(id: number, flags: number): Uint8Array {
  return encodeFrame(FrameType.MSG, flags, id, (flags & Flag.END) !== 0 ? Uint8Array.of(7) : Uint8Array.of(2, 7));
}

function streamStart(id: number, route: string): Uint8Array {
  const head = encodeStreamHead({
    total: undefined,
    offset: 0,
    prefixCrc: 0,
    route,
    codec: 0,
    meta: new Uint8Array(0),
  });
  return encodeFrame(FrameType.STREAM, Flag.START, id, head);
}

/** Opens a session, sends `frames` after the handshake, and returns how it closed. */
async function closeOf(frames: Uint8Array[]): Promise<PointSubError | undefined> {
  const server = createServer();
  let release!: () => void;
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  server.handle("/slow", async () => {
    await held;
    return "done";
  });
  server.handleStream("/s", async () => {
    await held;
  });
  const closes: (PointSubError | undefined)[] = [];
  server.on("sessionClose", (_s, err) => closes.push(err));
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const peer = await rawClient(url);
  peer.socket.write(Buffer.concat([handshake({ features: Feature.STREAMS }), ...frames]));
  const deadline = Date.now() + 5_000;
  while (closes.length === 0 && Date.now() < deadline) await sleep(10);
  release();
  peer.socket.destroy();
  await server.close({ timeoutMs: 1_000 });
  return closes[0];
}

describe("attack: duplicate ids", () => {
  it("a stream started and cancelled on a served request's id cannot orphan that request: its handler's signal is aborted when the session closes", async () => {
    // Before: the STREAM START was taken, the stream's call went to the overflow beside the
    // request's, and its CANCEL deleted the request's entry: at the close, 20 of 20 handlers
    // waiting for their signal were never told (held for ever; the peer can repeat it per connection).
    const server = createServer();
    let waiting = 0;
    server.handle(
      "/wait",
      (_r, ctx) =>
        new Promise((resolve) => {
          waiting++;
          ctx.signal.addEventListener("abort", () => {
            waiting--;
            resolve("x");
          });
        }),
    );
    server.handleStream("/s", async () => {});
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const peer = await rawClient(url);
      const frames: Uint8Array[] = [handshake({ features: Feature.STREAMS })];
      for (let i = 0; i < 20; i++) {
        const id = 2 * i + 1;
        frames.push(req(id, "/wait"), streamStart(id, "/s"), encodeFrame(FrameType.CANCEL, 0, id, Uint8Array.of(0, 8)));
      }
      peer.socket.write(Buffer.concat(frames));
      await sleep(100);
      peer.socket.destroy();
      await peer.closed;
      const deadline = Date.now() + 5_000;
      while (waiting > 0 && Date.now() < deadline) await sleep(10);
      assert.equal(waiting, 0, "handlers of the closed session still waiting for their signal");
    } finally {
      await server.close({ timeoutMs: 1_000 });
    }
  });

  const cases: [string, Uint8Array[]][] = [
    [
      "REQ then REQ (call in the overflow: its slot taken by 1)",
      [req(1, "/slow"), req(0x80000001, "/slow"), req(0x80000001, "/slow")],
    ],
    ["STREAM then STREAM", [streamStart(3, "/s"), streamStart(3, "/s")]],
    ["STREAM then REQ", [streamStart(5, "/s"), req(5, "/slow")]],
    ["REQ then STREAM", [req(7, "/slow"), streamStart(7, "/s")]],
    [
      "REQ then STREAM (call in the overflow)",
      [req(1, "/slow"), req(0x80000001, "/slow"), streamStart(0x80000001, "/s")],
    ],
    // A one-way message on an id still open (found by an interop review: it was delivered, and the request answered after it).
    ["REQ then MSG (one frame)", [req(9, "/slow"), msg(9, Flag.START | Flag.END)]],
    ["REQ then MSG (chunked)", [req(11, "/slow"), msg(11, Flag.START)]],
    ["STREAM then MSG (one frame)", [streamStart(13, "/s"), msg(13, Flag.START | Flag.END)]],
  ];
  for (const [name, frames] of cases) {
    it(`${name}: ERR_PROTOCOL`, async () => {
      const err = await closeOf(frames);
      assert.equal(err?.code, "ERR_PROTOCOL", `${name}: closed with ${err?.code} ${err?.message}`);
      assert.match(err?.message ?? "", /started twice/);
    });
  }
});
