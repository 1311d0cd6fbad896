/**
 * keepAliveMs takes any finite number of ms. Half of it was computed with
 * `>>> 1`, which takes the value modulo 2^32: keepAliveMs 2^32 (~50 days,
 * "practically never") made half an interval 0 ms, so a side receiving
 * data sent the peer a PING at every housekeeping check ("this side said
 * nothing for half an interval") and dropped its transport's read buffer at
 * each ("no input for half an interval").
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { createServer } from "../../src/index.ts";
import { F, FrameReader, frame, handshake, T } from "../helpers/attacker.ts";
import { rawClient } from "../helpers/raw-peer.ts";
import { sleep, until } from "../helpers/wait.ts";

it("keepAliveMs 2^32: a session receiving messages sends no PING of its own", async () => {
  // slowPeerTimeoutMs 400: housekeeping checks every 100 ms.
  const server = createServer({ keepAliveMs: 2 ** 32, slowPeerTimeoutMs: 400 });
  let received = 0;
  server.on("message", () => {
    received++;
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const peer = await rawClient(url);
  let pings = 0;
  const reader = new FrameReader((f) => {
    if (f.type === T.PING && (f.flags & F.ACK) === 0) pings++;
  });
  peer.socket.on("data", (c: Buffer) => reader.push(c));
  try {
    peer.socket.write(handshake());
    // 2 KiB every 50 ms for 1.5 s: 15 housekeeping checks that each saw the peer sending.
    for (let i = 0, id = 1; i < 30; i++, id += 2) {
      peer.socket.write(frame(T.MSG, F.START | F.END, id, new Uint8Array(2048)));
      await sleep(50);
    }
    await until(() => received === 30);
    assert.equal(pings, 0, `${pings} PINGs from the session`);
  } finally {
    peer.socket.destroy();
    await server.close({ timeoutMs: 100 });
  }
});
