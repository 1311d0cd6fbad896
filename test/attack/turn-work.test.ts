/**
 * The read gate's turn budget counts what decoded input set off, not only
 * the decoding: many peers' reads landing in one event-loop turn, each
 * setting off a costly continuation (a handler's work after its first
 * `await`, here a microtask busy-waiting 3 ms), are worked off a few per
 * turn. Before, the budget counted decoding time alone — microseconds per
 * message here — so every peer's read and every continuation ran in the
 * same turn (16 × 3 ms).
 *
 * The test counts messages between two check phases of the event loop —
 * no timing is asserted (a slow or loaded machine only makes turns hold
 * fewer). Every message must still arrive.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createServer, type Server } from "../../src/index.ts";
import { F, frame, T } from "../helpers/attacker.ts";
import { handshake, type RawPeer, rawClient } from "../helpers/raw-peer.ts";
import { TurnCounter, until } from "../helpers/wait.ts";

const PEERS = 16;
/** A continuation's cost (ms of wall time, busy). */
const COST_MS = 3;

/** Busy-waits `ms` of wall time. */
function spin(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // costly continuation
  }
}

describe("attack: the turn budget counts the work decoded input sets off", () => {
  let server: Server;
  let url: string;
  let seen = 0;
  const turns = new TurnCounter();
  const peers: RawPeer[] = [];

  before(async () => {
    server = createServer();
    server.on("message", () => {
      seen++;
      turns.hit();
      // The handler's work after its first await: a microtask, outside the decoding.
      void Promise.resolve().then(() => spin(COST_MS));
    });
    [url] = await server.listen("tcp://127.0.0.1:0");
  });
  after(async () => {
    turns.stop();
    for (const p of peers) p.socket.destroy();
    await server.close();
  });

  it(`${PEERS} peers' messages in one turn, each setting off ${COST_MS} ms of work: a few per turn, all delivered`, async () => {
    for (let i = 0; i < PEERS; i++) {
      const peer = await rawClient(url);
      peers.push(peer);
      peer.socket.write(handshake());
      // The preface and HELLO answer: the session is open.
      await peer.waitFor(8);
    }
    turns.start();
    // All written before the server's next poll: its reads land in the same turn.
    for (const p of peers) p.socket.write(frame(T.MSG, F.START | F.END, 1, Uint8Array.of(1)));
    await until(() => seen === PEERS, 30_000);
    turns.stop();
    // 10 ms of budget at 3 ms a message: 4 (and one step over); old code: all 16 at once.
    assert.ok(turns.most <= 6, `${turns.most} messages between two check phases`);
    assert.ok(turns.most > 0);
  });
});
