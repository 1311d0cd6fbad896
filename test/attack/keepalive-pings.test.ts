/**
 * A peer that never answers PINGs but sends a little input whenever a
 * keepalive PING arrives (before the session's silence reaches twice
 * `keepAliveMs`) keeps its session open: each keepalive PING it leaves
 * unanswered must not stay in the session's table of pings in flight for
 * the session's life. Before, every such PING (sent without a timeout) stayed
 * in it: one entry (its promise and resolvers) per keepalive period, for as
 * long as the peer kept it up — memory no budget counts (12 after 12
 * periods here). Keepalive sends no PING while 8 are in flight now; the
 * session closes at its next silence of twice keepAliveMs, as before.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createServer, type Server } from "../../src/index.ts";
import { F, frame, T } from "../helpers/attacker.ts";
import { handshake, type RawPeer, rawClient } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

/** Keepalive periods the peer keeps the session open through. */
const CYCLES = 12;
const KEEPALIVE_MS = 500;

interface PingTable {
  seq: number;
  pings: Map<number, unknown>;
}

describe("attack: keepalive PINGs left unanswered by a peer that keeps sending", () => {
  let server: Server;
  let peer: RawPeer;
  before(async () => {
    server = createServer({ keepAliveMs: KEEPALIVE_MS });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    peer = await rawClient(url);
    peer.socket.write(handshake());
    await peer.waitFor(8);
    await until(() => server.sessions.size === 1);
  });
  after(async () => {
    peer.socket.destroy();
    await server.close({ timeoutMs: 200 });
  });

  it(`${CYCLES} keepalive PINGs unanswered: the table of pings in flight stays small`, async () => {
    const [session] = server.sessions;
    const pinger = (session as unknown as { frames: { pinger: PingTable } }).frames.pinger;
    let id = 1;
    for (let seen = pinger.seq, n = 0; n < CYCLES; n++) {
      // A keepalive PING went out (the session was quiet for keepAliveMs), or none came within 1.8
      // periods (before the close at two): a message, never a PONG.
      const quietUntil = Date.now() + KEEPALIVE_MS * 1.8;
      await until(() => pinger.seq > seen || Date.now() >= quietUntil, 10_000);
      seen = pinger.seq;
      id += 2;
      peer.socket.write(frame(T.MSG, F.START | F.END, id, Uint8Array.of(1)));
    }
    assert.equal(server.sessions.size, 1, "the session is open");
    assert.ok(pinger.pings.size <= 8, `${pinger.pings.size} PINGs in flight after ${CYCLES} unanswered`);
  });
});
