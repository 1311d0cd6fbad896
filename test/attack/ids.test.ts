/**
 * Finding 1 of the hardening issue: a peer reusing a request id that is still
 * in flight, or choosing ids that collide in the call table, must cost O(1)
 * (a typed ERR_PROTOCOL, or just a second call), never an event-loop freeze.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { connect, createServer, type PointSubError } from "../../src/index.ts";
import { handshake, rawClient, rawServer } from "../helpers/raw-peer.ts";
import { sleep } from "../helpers/wait.ts";

/** A single-frame REQ to `route`. */
function req(id: number, route: string, data = ""): Uint8Array {
  const r = Buffer.from(route);
  return encodeFrame(
    FrameType.REQ,
    Flag.START | Flag.END,
    id,
    Buffer.concat([Buffer.from([r.length]), r, Buffer.from(data)]),
  );
}

/** Parses the RES frames (single-frame, checksummed) out of what a raw peer received after the handshake. */
function responses(bytes: Buffer): { id: number; status: number }[] {
  const out: { id: number; status: number }[] = [];
  let p = 6;
  while (p < bytes.length) {
    const type = bytes[p] >> 4;
    let q = p + 1;
    let id = 0;
    for (let shift = 0; ; shift += 7) {
      const b = bytes[q++];
      id += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) break;
    }
    let len = 0;
    for (let shift = 0; ; shift += 7) {
      const b = bytes[q++];
      len += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) break;
    }
    if (type === FrameType.RES) out.push({ id, status: bytes[q] });
    p = q + len + 4;
  }
  return out;
}

describe("attack: stream ids", () => {
  it("a second REQ on an id whose handler still runs closes the session with ERR_PROTOCOL at once", async () => {
    const server = createServer();
    server.handle("/slow", async () => {
      await sleep(300);
      return "done";
    });
    const closes: (PointSubError | undefined)[] = [];
    server.on("sessionClose", (_s, err) => closes.push(err));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await rawClient(url);
    peer.socket.write(Buffer.concat([handshake(), req(1, "/slow"), req(1, "/slow")]));
    await peer.closed;
    assert.equal(closes.length, 1);
    assert.equal(closes[0]?.code, "ERR_PROTOCOL");
    assert.match(closes[0]?.message ?? "", /started twice/);
    // The server is still serving.
    const c = await connect(url);
    assert.equal(Buffer.from(await c.request("/slow", "")).toString(), "done");
    await c.close();
    await server.close();
  });

  it("ids 1 and 0x80000001 (same slot in any table up to 2^31) are both answered", async () => {
    const server = createServer();
    server.handle("/slow", async (r) => {
      await sleep(50);
      return r.data;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await rawClient(url);
    const ids = [1, 0x80000001, 0x40000001, 0xc0000001, 3];
    peer.socket.write(Buffer.concat([handshake(), ...ids.map((id) => req(id, "/slow", "x"))]));
    const deadline = Date.now() + 5000;
    while (responses(peer.received().subarray(0)).length < ids.length && Date.now() < deadline) await sleep(10);
    const got = responses(peer.received());
    assert.deepEqual(
      got.map((r) => r.id).sort((a, b) => a - b),
      [...ids].sort((a, b) => a - b),
    );
    assert.ok(got.every((r) => r.status === 0));
    peer.socket.destroy();
    await server.close();
  });

  it("a client's handler is protected the same way (the server side sends the duplicate)", async () => {
    const raw = await rawServer();
    const connP = connect(raw.url);
    const peer = await raw.peer;
    peer.socket.write(handshake());
    const conn = await connP;
    conn.handle("/slow", async () => {
      await sleep(300);
      return "x";
    });
    const closed = new Promise<PointSubError | undefined>((resolve) => conn.once("close", resolve));
    peer.socket.write(Buffer.concat([req(2, "/slow"), req(2, "/slow")]));
    const err = await closed;
    assert.equal(err?.code, "ERR_PROTOCOL");
    await raw.close();
  });
});
