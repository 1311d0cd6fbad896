/**
 * A ws:// client that stops reading and then goes away, while the server's
 * session has sends of its own waiting for the socket to drain: the socket
 * is gone, so none of them is ever written. Since a closed socket whose
 * close waits behind held messages counts as drained (so that the session
 * takes them and closes), those sends were handed to a transport that drops
 * everything, and resolved as if written (and before that, the failed write's
 * callback reported a drain as well). They reject with the close now.
 */
import assert from "node:assert/strict";
import type net from "node:net";
import { describe, it } from "node:test";
import { WebSocket } from "ws";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { type Connection, createServer, type PointSubError } from "../../src/index.ts";
import { handshake } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
const REQUESTS = 10;
const SENDS = 5;

/** A single-frame REQ from the client (odd ids) to `route`. */
function request(id: number, route: string): Uint8Array {
  const r = Buffer.from(route);
  return encodeFrame(FrameType.REQ, Flag.START | Flag.END, id, Buffer.concat([Buffer.from([r.length]), r]));
}

describe("ws:// server: sends waiting for a client that stops reading, then goes away", () => {
  it("each rejects with ERR_CONNECTION_CLOSED (none resolves as if written)", async () => {
    const server = createServer({ slowPeerBytes: 256 * 1024, slowPeerTimeoutMs: 0, keepAliveMs: 0 });
    let handled = 0;
    server.handle("/big", () => {
      handled++;
      return new Uint8Array(2 * MiB);
    });
    let session: Connection | undefined;
    const closed: { error?: PointSubError; done?: true } = {};
    server.on("session", (s) => {
      session = s;
      s.on("close", (e) => {
        closed.error = e;
        closed.done = true;
      });
    });
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const ws = new WebSocket(url, "pointsub.v1");
    ws.on("error", () => {});
    try {
      await new Promise((r) => ws.once("open", r));
      const socket = (ws as unknown as { _socket: net.Socket })._socket;
      socket.pause();
      ws.send(handshake());
      for (let i = 0; i < REQUESTS; i++) ws.send(request(1 + 2 * i, "/big"));
      await until(() => handled !== 0);
      assert.ok(handled < REQUESTS, `the server paused reading this client (${handled} requests handled)`);
      assert.ok(session);
      const s = session;
      await until(() => !s.writable);
      // The session's own sends wait for a drain that will never come.
      const outcomes: string[] = [];
      for (let i = 0; i < SENDS; i++) {
        s.send(`note ${i}`).then(
          () => outcomes.push("resolved"),
          (e: PointSubError) => outcomes.push(e.code),
        );
      }
      assert.deepEqual(outcomes, [], "nothing written while the client reads nothing");
      socket.destroy();
      await until(() => closed.done === true && outcomes.length === SENDS);
      assert.equal(closed.error?.code, "ERR_CONNECTION_CLOSED");
      assert.deepEqual(outcomes, Array(SENDS).fill("ERR_CONNECTION_CLOSED"));
    } finally {
      ws.terminate();
      await server.close({ timeoutMs: 100 });
    }
  });
});
