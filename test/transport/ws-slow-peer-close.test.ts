/**
 * A ws:// client that stops reading and then goes away: the server reads no
 * further from a peer that does not take the answers it is owed (slow-peer
 * pause), so the client's last requests wait in the transport, and the
 * close after them was reported only once the session read again — which
 * it did only after a drain that a closed socket never reports. The
 * session stayed open, holding what it owed (for ever with
 * slowPeerTimeoutMs 0; ERR_SLOW_PEER 30 s later by default). Now the
 * transport reports the socket gone (`onGone`): the session reads on, takes
 * what is held and closes.
 *
 * The session's own sends waiting for the socket to drain are never
 * written: they reject with the close. (The first fix counted the closed
 * socket as drained, and they resolved as if written; before that, the
 * failed write's callback reported a drain as well.)
 */
import assert from "node:assert/strict";
import type net from "node:net";
import { describe, it } from "node:test";
import { WebSocket } from "ws";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { type Connection, createServer, type PointSubError, type Server } from "../../src/index.ts";
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

interface Paused {
  server: Server;
  ws: WebSocket;
  /** The client's socket, reading nothing. */
  socket: net.Socket;
  session: Connection;
  closed: { error?: PointSubError; done?: true };
}

/** A server whose session is paused as a slow peer by a raw ws client that reads nothing; `body` runs with it. */
async function withPausedClient(body: (p: Paused) => Promise<void>): Promise<void> {
  const server = createServer({ slowPeerBytes: 256 * 1024, slowPeerTimeoutMs: 0, keepAliveMs: 0 });
  let handled = 0;
  server.handle("/big", () => {
    handled++;
    return new Uint8Array(2 * MiB);
  });
  let session: Connection | undefined;
  const closed: Paused["closed"] = {};
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
    // Requests in one go, a WebSocket message each: once answers are owed that the client does not
    // take, the session reads no further (the rest of what it read waits in the transport).
    for (let i = 0; i < REQUESTS; i++) ws.send(request(1 + 2 * i, "/big"));
    await until(() => handled !== 0);
    assert.ok(handled < REQUESTS, `the server paused reading this client (${handled} requests handled)`);
    assert.ok(session);
    await body({ server, ws, socket, session, closed });
  } finally {
    ws.terminate();
    await server.close({ timeoutMs: 100 });
  }
}

describe("ws:// server: a client that stops reading, then goes away", () => {
  it("the session closes with ERR_CONNECTION_CLOSED once the socket does, after the requests held for it", async () => {
    await withPausedClient(async ({ server, socket, session, closed }) => {
      assert.equal(session.state, "open");
      socket.destroy();
      await until(() => closed.done === true);
      assert.equal(closed.error?.code, "ERR_CONNECTION_CLOSED");
      await until(() => server.sessions.size === 0);
    });
  });

  it("the session's sends waiting for a drain each reject with ERR_CONNECTION_CLOSED (none resolves as if written)", async () => {
    await withPausedClient(async ({ socket, session, closed }) => {
      await until(() => !session.writable);
      // The session's own sends wait for a drain that will never come.
      const outcomes: string[] = [];
      for (let i = 0; i < SENDS; i++) {
        session.send(`note ${i}`).then(
          () => outcomes.push("resolved"),
          (e: PointSubError) => outcomes.push(e.code),
        );
      }
      assert.deepEqual(outcomes, [], "nothing written while the client reads nothing");
      socket.destroy();
      await until(() => closed.done === true && outcomes.length === SENDS);
      assert.equal(closed.error?.code, "ERR_CONNECTION_CLOSED");
      assert.deepEqual(outcomes, Array(SENDS).fill("ERR_CONNECTION_CLOSED"));
    });
  });
});
